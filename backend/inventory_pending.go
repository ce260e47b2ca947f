package backend

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// storeChunk keeps one chunk until its snapshot is complete. Every outcome
// but a storage error acks the record: a chunk that is malformed, stale or
// evicted would be just as unusable when resent.
func (s *BadgerStore) storeChunk(w *txnWriter, agentID string, seq uint64, c *api.InventoryChunk, st *ingestStats) error {
	st.invChunks++
	if reason, detail := validateChunk(c); reason != "" {
		s.rejectChunk(agentID, seq, c, reason, detail, st)
		return nil
	}
	ref := snapRef{cluster: c.GetCluster(), id: c.GetSnapshotId()}
	var meta pendingMeta
	known, err := getJSON(w.txn, pendingMetaKey(ref), &meta)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if known && meta.Parts != c.GetParts() {
		s.rejectChunk(agentID, seq, c, rejectPartsChanged, fmt.Sprintf("parts %d, earlier chunks of this snapshot said %d", c.GetParts(), meta.Parts), st)
		return nil
	}
	if !known {
		now := s.cfg.Now().UTC()
		meta = pendingMeta{Parts: c.GetParts(), Time: now, Node: c.GetNode(), Arrived: now}
		if c.GetTime() != nil {
			meta.Time = c.GetTime().AsTime().UTC()
		}
	}
	cur, hasCur, err := loadClusterMeta(w.txn, ref.cluster)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if hasCur && (cur.SnapshotID == ref.id || meta.Time.Before(cur.Time)) {
		st.invDropped[dropStale]++
		s.log.Info("inventory chunk dropped: its snapshot is not newer than the current one",
			"agent", agentID, "seq", seq, "cluster", ref.cluster, "snapshot", ref.id, "current", cur.SnapshotID)
		return nil
	}
	ck := pendingChunkKey(ref, c.GetPart())
	have, err := exists(w.txn, ck)
	if err != nil {
		return err
	}
	w.touch(ref)
	if have {
		return nil // the same part again under another seq: already kept
	}
	v, err := proto.Marshal(c)
	if err != nil {
		return fmt.Errorf("ingest: marshal inventory chunk: %w", err)
	}
	if fits, err := s.makeRoom(w, ref, int64(len(v)), st); err != nil || !fits {
		return err
	}
	if !known {
		mb, err := json.Marshal(meta)
		if err != nil {
			return fmt.Errorf("ingest: marshal pending snapshot: %w", err)
		}
		if err := w.set(badger.NewEntry(pendingMetaKey(ref), mb)); err != nil {
			return err
		}
	}
	if err := w.set(badger.NewEntry(ck, v)); err != nil {
		return err
	}
	w.pendingBytes += int64(len(v))
	return nil
}

func (s *BadgerStore) rejectChunk(agentID string, seq uint64, c *api.InventoryChunk, reason, detail string, st *ingestStats) {
	st.invRejected[reason]++
	s.log.Warn("inventory chunk rejected", "agent", agentID, "seq", seq, "reason", reason, "detail", detail,
		"cluster", c.GetCluster(), "snapshot", c.GetSnapshotId(), "part", c.GetPart(), "parts", c.GetParts())
}

// pendingSnapshot is a pending snapshot with its stored size.
type pendingSnapshot struct {
	ref    snapRef
	meta   pendingMeta
	bytes  int64
	chunks int
}

// pendingSnapshots lists pending snapshots (of one cluster, or all when
// cluster is nil), oldest first.
func pendingSnapshots(txn *badger.Txn, cluster *string) ([]pendingSnapshot, error) {
	prefix := key(prefixPendingMeta)
	if cluster != nil {
		prefix = append(key(prefixPendingMeta, *cluster), 0)
	}
	var out []pendingSnapshot
	// The scan ends (its iterator closed) before pendingSize opens one:
	// an ingest transaction allows one iterator at a time.
	for item := range badgerkv.Prefix(txn, prefix) {
		ref, ok := parsePendingMetaKey(item.Key())
		if !ok {
			return nil, fmt.Errorf("pending snapshot key %q: malformed", item.Key())
		}
		p := pendingSnapshot{ref: ref}
		if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &p.meta) }); err != nil {
			return nil, fmt.Errorf("pending snapshot %q/%q: %w", ref.cluster, ref.id, err)
		}
		out = append(out, p)
	}
	for i := range out {
		out[i].bytes, out[i].chunks = pendingSize(txn, out[i].ref)
	}
	slices.SortFunc(out, func(a, b pendingSnapshot) int {
		return cmp.Or(a.meta.Time.Compare(b.meta.Time), a.meta.Arrived.Compare(b.meta.Arrived),
			strings.Compare(a.ref.cluster, b.ref.cluster), strings.Compare(a.ref.id, b.ref.id))
	})
	return out, nil
}

// pendingSize sums the chunks stored for a pending snapshot, from keys only.
func pendingSize(txn *badger.Txn, ref snapRef) (size int64, chunks int) {
	for item := range badgerkv.Prefix(txn, pendingChunkPrefix(ref)) {
		size += item.ValueSize()
		chunks++
	}
	return size, chunks
}

// makeRoom keeps the pending chunks within MaxPendingInventoryBytes by
// dropping whole pending snapshots, oldest first (a snapshot missing a
// chunk can never complete, so dropping part of one would only waste the
// rest). When ref's own chunks alone do not fit, ref is dropped and the
// chunk is not stored (fits false).
func (s *BadgerStore) makeRoom(w *txnWriter, ref snapRef, size int64, st *ingestStats) (fits bool, err error) {
	limit := s.cfg.MaxPendingInventoryBytes
	if w.pendingBytes+size <= limit {
		return true, nil
	}
	pend, err := pendingSnapshots(w.txn, nil)
	if err != nil {
		return false, fmt.Errorf("ingest: %w", err)
	}
	var own *pendingSnapshot
	for i := range pend {
		p := &pend[i]
		if p.ref == ref {
			own = p
			continue
		}
		if w.pendingBytes+size <= limit {
			return true, nil
		}
		if err := s.dropPending(w, *p, dropPendingBytes, st); err != nil {
			return false, err
		}
	}
	if w.pendingBytes+size <= limit {
		return true, nil
	}
	st.invDropped[dropPendingBytes]++ // the chunk in hand
	if own != nil {
		if err := s.dropPending(w, *own, dropPendingBytes, st); err != nil {
			return false, err
		}
	}
	s.log.Warn("inventory snapshot dropped: larger than the pending limit", "cluster", ref.cluster, "snapshot", ref.id,
		"limit_bytes", limit)
	return false, nil
}

// deleter is what dropPending needs from a txnWriter or a WriteBatch.
type deleter interface{ del(k []byte) error }

type batchDeleter struct{ wb *badger.WriteBatch }

func (b batchDeleter) del(k []byte) error { return b.wb.Delete(k) }

func (s *BadgerStore) dropPending(w *txnWriter, p pendingSnapshot, reason string, st *ingestStats) error {
	if err := deletePending(w.txn, w, p.ref); err != nil {
		return err
	}
	w.pendingBytes -= p.bytes
	st.invDropped[reason] += uint64(p.chunks)
	s.log.Warn("pending inventory snapshot dropped", "reason", reason, "cluster", p.ref.cluster, "snapshot", p.ref.id,
		"chunks", p.chunks, "parts", p.meta.Parts, "bytes", p.bytes)
	return nil
}

// deletePending deletes a pending snapshot's meta and chunks; keys are read
// through txn.
func deletePending(txn *badger.Txn, d deleter, ref snapRef) error {
	keys := collectKeys(txn, pendingChunkPrefix(ref))
	keys = append(keys, pendingMetaKey(ref))
	for _, k := range keys {
		if err := d.del(k); err != nil {
			return err
		}
	}
	return nil
}

func collectKeys(txn *badger.Txn, prefix []byte) [][]byte {
	var keys [][]byte
	for item := range badgerkv.Prefix(txn, prefix) {
		keys = append(keys, item.KeyCopy(nil))
	}
	return keys
}

// dropPendingNow deletes a pending snapshot outside an ingest transaction.
func (s *BadgerStore) dropPendingNow(rt *badger.Txn, p pendingSnapshot, reason string) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := deletePending(rt, batchDeleter{wb}, p.ref); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("drop pending snapshot: %w", err)
	}
	s.pendingBytes = max(0, s.pendingBytes-p.bytes)
	s.cfg.Metrics.add(metricInventoryDropped, uint64(p.chunks), reason)
	s.log.Info("pending inventory snapshot dropped", "reason", reason, "cluster", p.ref.cluster, "snapshot", p.ref.id)
	return nil
}
