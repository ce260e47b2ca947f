package store

import (
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// persist writes the class's metadata, the acked keys to delete and to add,
// and a gap, then syncs.
func (s *Spool) persist(c Class, del []uint64, add map[uint64]uint32, gap *Gap) error {
	cs := &s.cls[c]
	type op struct {
		key, val []byte
	}
	ops := make([]op, 0, len(del)+len(add)+2)
	for _, seq := range del {
		ops = append(ops, op{key: ackedKey(c, seq)})
	}
	for seq, size := range add {
		ops = append(ops, op{key: ackedKey(c, seq), val: encodeAckedValue(size)})
	}
	if gap != nil {
		ops = append(ops, op{gapKey(c, gap.FirstSeq), gap.encodeValue()})
	}
	m := classMeta{next: cs.next, head: cs.head, headSeg: cs.headSeg, headOff: uint64(cs.headOff), acked: cs.ackedN, evicted: cs.evictedN}
	ops = append(ops, op{metaKey(c), m.encode()})
	for start := 0; start < len(ops); start += metaTxnEntries {
		chunk := ops[start:min(start+metaTxnEntries, len(ops))]
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, o := range chunk {
				var err error
				if o.val == nil {
					err = txn.Delete(o.key)
				} else {
					err = txn.Set(o.key, o.val)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return s.writeError("write metadata", err)
		}
	}
	if err := s.db.Sync(); err != nil {
		return s.writeError("sync metadata", err)
	}
	if err := compactIfNeeded(s.db); err != nil {
		s.log.Warn("spool metadata", "err", err) // the write is durable; the next one retries
	}
	return nil
}

// Ack deletes acknowledged records. Unknown, already acknowledged or evicted
// IDs are ignored. It fsyncs, so a restart does not resend them.
func (s *Spool) Ack(ids ...RecordID) error {
	var byClass [numClasses + 1][]uint64
	for _, id := range ids {
		if !id.Class.valid() {
			return fmt.Errorf("%w: ack of class %d", ErrInvalid, id.Class)
		}
		byClass[id.Class] = append(byClass[id.Class], id.Seq)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		if len(byClass[c]) > 0 {
			if err := s.ackClass(c, byClass[c]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Spool) ackClass(c Class, seqs []uint64) error {
	cs := &s.cls[c]
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	changed := false
	for _, seq := range seqs {
		if seq < cs.head || seq >= cs.next {
			continue
		}
		if _, done := cs.acked[seq]; done {
			continue
		}
		loc, err := s.locate(c, seq)
		if err != nil {
			if errors.Is(err, errCorrupt) {
				// Next evicts the damaged segment; the ack cannot matter.
				s.log.Error("acknowledging a record in a damaged segment", "class", c.String(), "seq", seq, "err", err)
				continue
			}
			return fmt.Errorf("store: ack in %s: %w", s.cfg.Dir, err)
		}
		cs.acked[seq] = ackEntry{size: loc.size}
		cs.ackedN++
		cs.liveBytes -= min(cs.liveBytes, uint64(loc.size))
		changed = true
	}
	if !changed {
		return nil
	}
	// Move the head over the acknowledged run at its front.
	var passed []uint64
	for cs.head < cs.next {
		a, ok := cs.acked[cs.head]
		if !ok {
			break
		}
		loc, err := s.locate(c, cs.head)
		if err != nil {
			break
		}
		if a.stored {
			passed = append(passed, cs.head)
		}
		delete(cs.acked, cs.head)
		cs.head++
		cs.window = cs.window[1:]
		cs.headSeg, cs.headOff = loc.seg, loc.off+int64(loc.size)
		if idx := s.segIndex(c, loc.seg); cs.head >= cs.segs[idx].end && idx+1 < len(cs.segs) {
			cs.headSeg, cs.headOff = cs.segs[idx+1].first, 0
		}
	}
	if len(cs.window) == 0 {
		cs.window = nil // let a large walk's array go
	}
	add := map[uint64]uint32{}
	for seq, a := range cs.acked {
		if !a.stored {
			add[seq] = a.size
			cs.acked[seq] = ackEntry{size: a.size, stored: true}
		}
	}
	if err := s.persist(c, passed, add, nil); err != nil {
		return err
	}
	// Segments wholly below the head go now that the head is durable; a
	// drained class keeps its last segment until it grows past a quarter of
	// a segment, so a fast uplink does not create a file per batch.
	if err := s.dropPassed(c); err != nil {
		return err
	}
	if cs.live() == 0 && cs.last().size >= s.segSize/4 {
		if err := s.releaseDrained(); err != nil {
			return err
		}
	}
	s.refreshOldest(c)
	return nil
}
