package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// Ingest stores b for agentID. Each record is stored together with its
// (agent, seq) marker, so a record is never half-stored and a resend is
// acked without being stored twice. The batch is one transaction unless it
// exceeds Badger's transaction size, in which case it is committed in parts;
// every part is synced (SyncWrites) before anything is acked.
func (s *BadgerStore) Ingest(ctx context.Context, agentID string, b *api.Batch) ([]uint64, error) {
	start := time.Now()
	var st ingestStats
	acked, err := s.ingest(ctx, agentID, b, &st)
	s.cfg.Metrics.recordIngest(st, time.Since(start), err)
	return acked, err
}

func (s *BadgerStore) ingest(ctx context.Context, agentID string, b *api.Batch, st *ingestStats) ([]uint64, error) {
	if agentID == "" {
		return nil, errors.New("ingest: empty agent ID")
	}
	if b == nil {
		return nil, errors.New("ingest: nil batch")
	}
	if b.GetAgentId() != "" && b.GetAgentId() != agentID {
		return nil, fmt.Errorf("ingest: batch names agent %q, connection is agent %q", b.GetAgentId(), agentID)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	st.records = map[api.RecordClass]uint64{}
	st.gaps = map[api.RecordClass]uint64{}
	st.invRejected = map[string]uint64{}
	st.invDropped = map[string]uint64{}
	w := &txnWriter{s: s, txn: s.db.NewTransaction(true), head: s.evHead, tail: s.evTail, pendingBytes: s.pendingBytes,
		inBatch: make(map[uint64]struct{}, len(b.GetRecords())), page: s.pageBuf[:0],
		alertSeq: s.alertSeq.Load()}
	defer func() { w.txn.Discard(); s.pageBuf = w.page[:0] }()

	agent, err := s.loadAgent(w.txn, agentID)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	if agent.FirstSeen.IsZero() {
		agent.FirstSeen = now
	}
	if !agent.LastSeen.IsZero() {
		agent.UsualGap = usualGap(agent.UsualGap, now.Sub(agent.LastSeen))
	}
	agent.LastSeen = now

	acked := make([]uint64, 0, len(b.GetRecords()))
	seenAt := seenPrefix(agentID, b.GetSpoolId())
	for _, r := range b.GetRecords() {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
		st.records[r.GetClass()]++
		seen := seenKey(seenAt, r.GetSeq())
		// An event's marker waits in the writer with its page, so a repeat
		// within this batch is caught here rather than by the lookup.
		_, dup := w.inBatch[r.GetSeq()]
		if !dup {
			var err error
			if dup, err = exists(w.txn, seen); err != nil {
				return nil, err
			}
		}
		w.inBatch[r.GetSeq()] = struct{}{}
		if dup {
			st.duplicates++
			acked = append(acked, r.GetSeq())
			if c := r.GetInventory(); c != nil {
				if reason, _ := validateChunk(c); reason == "" {
					w.touch(snapRef{cluster: c.GetCluster(), id: c.GetSnapshotId()}) // retry a switch that failed
				}
			}
			continue
		}
		if err := s.storeRecord(w, agentID, r, seen, st); err != nil {
			return nil, err
		}
		agent.Records++
		acked = append(acked, r.GetSeq())
	}
	for _, g := range b.GetGaps() {
		// Gaps travel in batches too, so a resent batch must not count them twice.
		k := gapKey(agentID, g)
		dup, err := exists(w.txn, k)
		if err != nil {
			return nil, err
		}
		if dup {
			continue
		}
		if agent.Gaps == nil {
			agent.Gaps = map[string]uint64{}
		}
		agent.Gaps[g.GetClass().String()] += g.GetCount()
		st.gaps[g.GetClass()] += g.GetCount()
		if err := w.set(badger.NewEntry(k, nil).WithTTL(s.cfg.DedupWindow)); err != nil {
			return nil, err
		}
	}
	if h := b.GetHealth(); h != nil {
		hb, err := proto.Marshal(h)
		if err != nil {
			return nil, fmt.Errorf("ingest: marshal health: %w", err)
		}
		agent.Health = hb
	}
	ab, err := json.Marshal(agent)
	if err != nil {
		return nil, fmt.Errorf("ingest: marshal agent: %w", err)
	}
	if err := w.set(badger.NewEntry(agentKey(agentID), ab)); err != nil {
		return nil, err
	}
	if err := w.flushPage(); err != nil {
		return nil, err
	}
	if err := w.commit(); err != nil {
		return nil, err
	}
	// The chunks are durable; a snapshot they complete becomes current now.
	// If that fails the batch is refused, the agent resends it, the resent
	// chunks are acked as duplicates and the switch is tried again.
	if len(w.touched) > 0 {
		if err := s.completeSnapshots(ctx, w.touched); err != nil {
			s.log.Error("inventory snapshot could not be made current", "err", err)
			return nil, err
		}
	}
	return acked, nil
}

// storeRecord stores r and its de-dup marker seen in the same transaction.
func (s *BadgerStore) storeRecord(w *txnWriter, agentID string, r *api.Record, seen []byte, st *ingestStats) error {
	marker := badger.NewEntry(seen, nil).WithTTL(s.cfg.DedupWindow)
	var err error
	switch p := r.GetPayload().(type) {
	case *api.Record_Alert:
		err = s.storeAlert(w, agentID, r.GetSeq(), p.Alert, st)
	case *api.Record_Event:
		if p.Event != nil {
			return s.storeEvent(w, p.Event, marker, st) // the page carries the marker
		}
	case *api.Record_Inventory:
		err = s.storeChunk(w, agentID, r.GetSeq(), p.Inventory, st)
	default:
		// Nothing we can store (e.g. a class this backend does not know yet):
		// ack it anyway, or the agent would resend it forever.
		s.log.Debug("record without a known payload", "agent", agentID, "seq", r.GetSeq(), "class", r.GetClass().String())
	}
	if err != nil {
		return err
	}
	return w.set(marker)
}

func exists(txn *badger.Txn, k []byte) (bool, error) {
	_, err := txn.Get(k)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("ingest: lookup: %w", err)
}
