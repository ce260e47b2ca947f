package backend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/api"
)

// txnWriter commits and starts over when a batch outgrows one Badger
// transaction, saving the ring positions with every part.
type txnWriter struct {
	s          *BadgerStore
	txn        *badger.Txn
	head, tail uint64
	// pendingBytes follows the inventory chunks written and dropped.
	pendingBytes int64
	// touched lists the snapshots whose chunks this batch carried.
	touched []snapRef
	// alertSeq is the last alert ingest sequence number this writer gave.
	alertSeq uint64
	// alerts are the alerts stored in the open transaction, for the
	// incident index once it commits.
	alerts []*api.Alert
	// inBatch holds the sequence numbers seen in this batch.
	inBatch map[uint64]struct{}

	// The page being filled, its event count and its events' markers.
	page        []byte
	pageN       uint64
	pageMarkers []*badger.Entry
	// count and size follow Badger's accounting of the open transaction,
	// so that a page and its markers go into one.
	count, size int64
	// Changes to s.pages not committed yet: pages dropped from the front,
	// pages added.
	dropped  int
	newPages []pageRef
}

// entrySize is Badger's estimate of what an entry takes in a transaction
// (Txn.checkSize), plus a margin.
func entrySize(e *badger.Entry) int64 {
	if len(e.Value) < valueThreshold {
		return int64(len(e.Key)+len(e.Value)) + 2 + 10 + 8
	}
	return int64(len(e.Key)) + 12 + 2 + 10 + 8
}

// pageStart is the first position of the i-th page of the ring as this
// writer sees it (committed pages not dropped, then new ones).
func (w *txnWriter) pageStart(i int) (uint64, bool) {
	old := len(w.s.pages) - w.dropped
	switch {
	case i < old:
		return w.s.pages[w.dropped+i].first, true
	case i-old < len(w.newPages):
		return w.newPages[i-old].first, true
	}
	return 0, false
}

// flushPage writes the pending page and its markers into one transaction,
// committing what came before first if they might not fit, then drops the
// oldest pages while the newer ones still hold MaxEvents.
func (w *txnWriter) flushPage() error {
	if w.pageN == 0 {
		return nil
	}
	loc, err := w.s.events.append(w.head, w.page)
	if err != nil {
		return err
	}
	page := badger.NewEntry(eventKey(w.head), loc.encode())
	count, size := int64(2+len(w.pageMarkers)), entrySize(page)+64 // +1 and 64: the ring state
	for _, m := range w.pageMarkers {
		size += entrySize(m)
	}
	if w.count+count >= w.s.db.MaxBatchCount() || w.size+size >= w.s.db.MaxBatchSize() {
		if err := w.commitAndContinue(); err != nil {
			return err
		}
	}
	if err := w.txn.SetEntry(page); err != nil {
		return fmt.Errorf("ingest: event page: %w", err)
	}
	w.size += entrySize(page)
	for _, e := range w.pageMarkers {
		if err := w.txn.SetEntry(e); err != nil {
			return fmt.Errorf("ingest: event page: %w", err)
		}
		w.size += entrySize(e)
	}
	w.count += count - 1
	w.newPages = append(w.newPages, pageRef{first: w.head, seg: loc.seg})
	w.head += w.pageN
	w.page, w.pageN, w.pageMarkers = w.page[:0], 0, w.pageMarkers[:0]
	for {
		next, ok := w.pageStart(1)
		if !ok || w.head-next < uint64(w.s.cfg.MaxEvents) {
			return nil
		}
		if err := w.del(eventKey(w.tail)); err != nil {
			return err
		}
		if w.dropped < len(w.s.pages) {
			w.dropped++
		} else {
			w.newPages = w.newPages[1:]
		}
		w.tail = next
	}
}

func (w *txnWriter) touch(r snapRef) {
	if !slices.Contains(w.touched, r) {
		w.touched = append(w.touched, r)
	}
}

// setTogether adds entries to one transaction: if they might not fit in
// the open one, it commits that first.
func (w *txnWriter) setTogether(entries ...*badger.Entry) error {
	var size int64
	for _, e := range entries {
		size += entrySize(e)
	}
	if w.count+int64(len(entries))+1 >= w.s.db.MaxBatchCount() || w.size+size+64 >= w.s.db.MaxBatchSize() {
		if err := w.commitAndContinue(); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := w.set(e); err != nil {
			return err
		}
	}
	return nil
}

// set adds e to the transaction, committing first if it is full. A page
// waiting in the writer is not in the transaction, so a commit here never
// separates an event from its marker.
func (w *txnWriter) set(e *badger.Entry) error {
	return w.write(func(txn *badger.Txn) error { return txn.SetEntry(e) }, entrySize(e))
}

func (w *txnWriter) del(k []byte) error {
	return w.write(func(txn *badger.Txn) error { return txn.Delete(k) }, entrySize(&badger.Entry{Key: k}))
}

// write applies op, an entry of size bytes, to the transaction; when the
// transaction is full it commits it and applies op to the next one.
func (w *txnWriter) write(op func(*badger.Txn) error, size int64) error {
	err := op(w.txn)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.commitAndContinue(); err != nil {
			return err
		}
		err = op(w.txn)
	}
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	w.count++
	w.size += size
	return nil
}

// commitAndContinue commits the open transaction and starts the next.
func (w *txnWriter) commitAndContinue() error {
	if err := w.commit(); err != nil {
		return err
	}
	w.txn = w.s.db.NewTransaction(true)
	w.count, w.size = 0, 0
	return nil
}

// commit writes the ring state into the current transaction and commits it.
// The in-memory ring moves only once the commit is durable.
func (w *txnWriter) commit() error {
	v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, w.tail), w.head)
	if err := w.txn.Set(key(keyRingState), v); err != nil {
		return fmt.Errorf("ingest: ring state: %w", err)
	}
	// The pages the transaction indexes are durable before it is.
	if err := w.s.events.sync(); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if err := w.txn.Commit(); err != nil {
		return fmt.Errorf("ingest: commit: %w", err)
	}
	w.s.evHead, w.s.evTail = w.head, w.tail
	w.s.eventHead.Store(w.head)
	w.s.alertSeq.Store(w.alertSeq)
	for _, a := range w.alerts {
		w.s.incidents.add(a)
	}
	w.alerts = nil
	firstSeg := func() uint64 {
		if len(w.s.pages) == 0 {
			return 0
		}
		return w.s.pages[0].seg
	}
	before := firstSeg()
	w.s.pages = append(w.s.pages[w.dropped:], w.newPages...)
	w.dropped, w.newPages = 0, nil
	// A segment can go only once the oldest page has moved out of it: most
	// commits drop a page or two inside the same segment.
	if after := firstSeg(); after != 0 && after != before {
		// Open removes what a failure here leaves behind.
		if err := w.s.events.dropBefore(w.s.pages[0].seg); err != nil {
			w.s.log.Warn("old event segments not removed", "err", err)
		}
	}
	// Sizes of values in the value log are approximate: never below zero.
	w.s.pendingBytes = max(0, w.pendingBytes)
	return nil
}
