package backend

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// completeSnapshots makes every complete pending snapshot of the touched
// clusters current, oldest first (so the newest wins). It runs after the
// chunks' commit, with s.mu held; looking at the whole cluster, not only
// the touched snapshot, retries a switch an earlier error left undone.
func (s *BadgerStore) completeSnapshots(ctx context.Context, touched []snapRef) error {
	clusters := map[string]bool{}
	for _, r := range touched {
		clusters[r.cluster] = true
	}
	var complete []pendingSnapshot
	err := s.db.View(func(txn *badger.Txn) error {
		for cl := range clusters {
			pend, err := pendingSnapshots(txn, &cl)
			if err != nil {
				return err
			}
			for _, p := range pend {
				if p.chunks >= int(p.meta.Parts) {
					complete = append(complete, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	slices.SortFunc(complete, func(a, b pendingSnapshot) int { return a.meta.Time.Compare(b.meta.Time) })
	for _, p := range complete {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.switchSnapshot(p); err != nil {
			return fmt.Errorf("inventory: snapshot %q of cluster %q: %w", p.ref.id, p.ref.cluster, err)
		}
	}
	return nil
}

// switchSnapshot writes a complete pending snapshot as a new generation and
// makes it the cluster's current one. s.mu is held.
func (s *BadgerStore) switchSnapshot(p pendingSnapshot) error {
	rt := s.db.NewTransaction(false)
	defer rt.Discard()
	old, hasOld, err := loadClusterMeta(rt, p.ref.cluster)
	if err != nil {
		return err
	}
	if hasOld && (old.SnapshotID == p.ref.id || p.meta.Time.Before(old.Time)) {
		// Completed after a newer one became current (it cannot, since stale
		// chunks are dropped on arrival, but a store written by an older
		// version might hold one): not a regression, just garbage.
		return s.dropPendingNow(rt, p, dropSuperseded)
	}
	gen := s.nextGen
	s.nextGen++
	meta := clusterMeta{SnapshotID: p.ref.id, Gen: gen, Time: p.meta.Time, Node: p.meta.Node,
		Completed: s.cfg.Now().UTC(), Kinds: map[string]int{}, Severities: map[string]int{}}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	sevOf := map[string]api.Severity{} // finding IDs written, for counting duplicates once
	// changed are the findings this snapshot makes new or different, in
	// the order written: what exports send (a finding that stays as it was
	// is not sent again).
	changed := map[string]*api.Finding{}
	var changedOrder []string
	// writeFinding stores one finding of the new generation; a carried
	// finding (its kind was not listed this time) keeps the time it was last
	// evaluated.
	writeFinding := func(f *api.Finding, carried bool) error {
		last := f.GetLastSeen()
		normaliseFinding(f, p, meta.Time)
		if carried && last != nil {
			f.LastSeen = last
		}
		var prev *api.Finding
		if hasOld {
			var err error
			prev, err = getProto[api.Finding](rt, findingKey(p.ref.cluster, old.Gen, f.GetId()))
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if prev.GetFirstSeen() != nil && prev.GetFirstSeen().AsTime().Before(f.GetFirstSeen().AsTime()) {
				f.FirstSeen = prev.GetFirstSeen()
			}
		}
		if !carried && findingChanged(prev, f) {
			if _, again := changed[f.GetId()]; !again {
				changedOrder = append(changedOrder, f.GetId())
			}
			changed[f.GetId()] = f
		}
		if sev, dup := sevOf[f.GetId()]; dup {
			meta.Severities[sev.String()]--
		} else {
			meta.Findings++
		}
		sevOf[f.GetId()] = f.GetSeverity()
		meta.Severities[f.GetSeverity().String()]++
		v, err := proto.Marshal(f)
		if err != nil {
			return fmt.Errorf("marshal finding: %w", err)
		}
		if err := wb.Set(findingKey(p.ref.cluster, gen, f.GetId()), v); err != nil {
			return fmt.Errorf("write finding: %w", err)
		}
		return nil
	}
	eval := s.cfg.Evaluator
	if eval != nil {
		eval.Refresh()
	}
	// Kinds the leader could not list (RBAC, a group not served): their
	// objects are unknown, not gone.
	kindErrors := map[string]bool{}
	for part := uint32(0); part < p.meta.Parts; part++ {
		c, err := getChunk(rt, pendingChunkKey(p.ref, part))
		if err != nil {
			return err
		}
		if meta.Node == "" {
			meta.Node = c.GetNode()
		}
		for kind := range c.GetErrors() {
			kindErrors[kind] = true
		}
		for i, it := range c.GetItems() {
			v, err := proto.Marshal(it)
			if err != nil {
				return fmt.Errorf("marshal item: %w", err)
			}
			if err := wb.Set(itemKey(p.ref.cluster, gen, part, uint32(i)), v); err != nil {
				return fmt.Errorf("write item: %w", err)
			}
			meta.Items++
			meta.Kinds[cmp.Or(it.GetObject().GetKind(), "unknown")]++
			if eval == nil {
				continue
			}
			for _, f := range eval.ItemFindings(it) {
				if err := writeFinding(f, false); err != nil {
					return err
				}
			}
		}
		for _, f := range c.GetFindings() {
			if err := writeFinding(proto.CloneOf(f), false); err != nil {
				return err
			}
		}
	}
	if hasOld && len(kindErrors) > 0 {
		if err := carryOver(rt, wb, p.ref.cluster, old.Gen, gen, p.meta.Parts, kindErrors, &meta, writeFinding); err != nil {
			return err
		}
	}
	for name, n := range meta.Severities {
		if n == 0 {
			delete(meta.Severities, name)
		}
	}
	// The changed findings join their kinds' export order in the same
	// batch: a crash before the switch below makes the reopen switch (and
	// journal) the snapshot again, so exports may repeat, never miss, a
	// change.
	byKind := map[export.Kind][][]byte{}
	add := func(f *api.Finding, state byte) error {
		v, err := proto.MarshalOptions{}.MarshalAppend([]byte{state}, f)
		if err != nil {
			return fmt.Errorf("marshal finding: %w", err)
		}
		k := export.KindOfFinding(f)
		byKind[k] = append(byKind[k], v)
		return nil
	}
	for _, id := range changedOrder {
		if err := add(changed[id], journalFindingOpen); err != nil {
			return err
		}
	}
	// The previous snapshot's findings this one no longer has are resolved
	// (fixed, or their object is gone). Carried findings were written, so
	// a kind that could not be listed resolves nothing.
	if hasOld {
		for kv := range badgerkv.Prefix(rt, genPrefix(prefixFinding, p.ref.cluster, old.Gen)) {
			f := &api.Finding{}
			if err := kv.Value(func(v []byte) error { return proto.Unmarshal(v, f) }); err != nil {
				return fmt.Errorf("resolved finding: %w", err)
			}
			if _, still := sevOf[f.GetId()]; still {
				continue
			}
			if err := add(f, journalFindingResolved); err != nil {
				return err
			}
		}
	}
	finish, err := s.journalBatch(wb, byKind)
	if err != nil {
		return err
	}
	err = wb.Flush()
	finish(err == nil)
	if err != nil {
		return fmt.Errorf("write generation: %w", err)
	}
	// The switch: one small transaction.
	mb, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("marshal snapshot meta: %w", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(clusterKey(p.ref.cluster), mb); err != nil {
			return err
		}
		return txn.Delete(pendingMetaKey(p.ref))
	}); err != nil {
		return fmt.Errorf("switch snapshot: %w", err)
	}
	s.severities[p.ref.cluster] = meta.Severities
	s.cfg.Metrics.add(metricSnapshotsCompleted, 1)
	s.cfg.Metrics.setFindings(s.severities)
	s.log.Info("inventory snapshot current", "cluster", p.ref.cluster, "snapshot", p.ref.id, "node", meta.Node,
		"items", meta.Items, "findings", meta.Findings, "previous", old.SnapshotID)

	// Clean up: the snapshot's chunks, the old generation, and pending
	// snapshots the new one supersedes. A failure here leaves only garbage
	// that the next open deletes.
	rt2 := s.db.NewTransaction(false)
	defer rt2.Discard()
	cw := s.db.NewWriteBatch()
	defer cw.Cancel()
	d := batchDeleter{cw}
	for _, k := range collectKeys(rt2, pendingChunkPrefix(p.ref)) {
		if err := d.del(k); err != nil {
			return fmt.Errorf("clean up: %w", err)
		}
	}
	s.pendingBytes = max(0, s.pendingBytes-p.bytes)
	if hasOld {
		if err := deleteGeneration(rt2, d, p.ref.cluster, old.Gen); err != nil {
			return fmt.Errorf("clean up: %w", err)
		}
	}
	pend, err := pendingSnapshots(rt2, &p.ref.cluster)
	if err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	for _, q := range pend {
		if q.ref == p.ref || !q.meta.Time.Before(meta.Time) {
			continue
		}
		if err := deletePending(rt2, d, q.ref); err != nil {
			return fmt.Errorf("clean up: %w", err)
		}
		s.pendingBytes = max(0, s.pendingBytes-q.bytes)
		s.cfg.Metrics.add(metricInventoryDropped, uint64(q.chunks), dropSuperseded)
		s.log.Info("pending inventory snapshot dropped", "reason", dropSuperseded, "cluster", q.ref.cluster,
			"snapshot", q.ref.id, "chunks", q.chunks, "parts", q.meta.Parts)
	}
	if err := cw.Flush(); err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	return nil
}

func deleteGeneration(txn *badger.Txn, d deleter, cluster string, gen uint64) error {
	for _, prefix := range []string{prefixItem, prefixFinding} {
		for _, k := range collectKeys(txn, genPrefix(prefix, cluster, gen)) {
			if err := d.del(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// normaliseFinding fills what the backend knows better than, or in
// addition to, the leader: the snapshot's cluster, ID and time.
func normaliseFinding(f *api.Finding, p pendingSnapshot, at time.Time) {
	f.Cluster = p.ref.cluster
	f.SnapshotId = p.ref.id
	if f.GetNode() == "" {
		f.Node = p.meta.Node
	}
	if f.GetId() == "" {
		f.Id = fallbackFindingID(f)
	}
	f.LastSeen = timestamppb.New(at)
	if f.GetFirstSeen() == nil || f.GetFirstSeen().AsTime().After(at) {
		f.FirstSeen = timestamppb.New(at)
	}
}

// fallbackFindingID derives a stable ID from what the proto says the ID is
// stable over (check, cluster, object, container), for a leader that sent
// none.
func fallbackFindingID(f *api.Finding) string {
	o := f.GetObject()
	h := sha256.New()
	for _, part := range []string{f.GetCheckId(), f.GetCluster(), o.GetKind(), o.GetNamespace(), o.GetName(), f.GetContainer()} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "f-" + hex.EncodeToString(h.Sum(nil)[:12])
}

// openInventory restores the in-memory inventory state at open and finishes
// what a crash interrupted: it deletes generations no cluster names and
// pending snapshots the current ones supersede, and switches to any pending
// snapshot that is complete.
func (s *BadgerStore) openInventory() error {
	s.severities = map[string]map[string]int{}
	var metas map[string]clusterMeta
	var pend []pendingSnapshot
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if metas, err = currentMetas(txn, ""); err != nil {
			return err
		}
		pend, err = pendingSnapshots(txn, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	s.nextGen = 1
	for cl, m := range metas {
		s.nextGen = max(s.nextGen, m.Gen+1)
		s.severities[cl] = m.Severities
	}
	s.cfg.Metrics.setFindings(s.severities)

	// Orphaned generations: everything under i/ and f/ that no c/ names.
	rt := s.db.NewTransaction(false)
	defer rt.Discard()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	orphans := 0
	for _, prefix := range []string{prefixItem, prefixFinding} {
		for item := range badgerkv.Prefix(rt, key(prefix)) {
			cl, gen, ok := parseGenKey(prefix, item.Key())
			if m, cur := metas[cl]; ok && cur && m.Gen == gen {
				continue
			}
			if ok {
				s.nextGen = max(s.nextGen, gen+1)
			}
			if err := wb.Delete(item.KeyCopy(nil)); err != nil {
				return fmt.Errorf("inventory: delete orphan: %w", err)
			}
			orphans++
		}
	}
	s.pendingBytes = 0
	var complete []pendingSnapshot
	for _, p := range pend {
		if m, ok := metas[p.ref.cluster]; ok && (m.SnapshotID == p.ref.id || p.meta.Time.Before(m.Time)) {
			if err := deletePending(rt, batchDeleter{wb}, p.ref); err != nil {
				return fmt.Errorf("inventory: %w", err)
			}
			s.cfg.Metrics.add(metricInventoryDropped, uint64(p.chunks), dropSuperseded)
			continue
		}
		s.pendingBytes += p.bytes
		if p.chunks >= int(p.meta.Parts) {
			complete = append(complete, p)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("inventory: clean up: %w", err)
	}
	if orphans > 0 {
		s.log.Info("deleted inventory entries of unfinished or replaced snapshots", "keys", orphans)
	}
	for _, p := range complete { // already oldest first
		if err := s.switchSnapshot(p); err != nil {
			return fmt.Errorf("inventory: snapshot %q of cluster %q: %w", p.ref.id, p.ref.cluster, err)
		}
	}
	return nil
}

// carryOver copies into generation gen the previous generation's items and
// findings of the kinds the new snapshot could not list, so that a
// partial snapshot does not look like deletions. Carried items take the
// part number after the snapshot's last.
func carryOver(rt *badger.Txn, wb *badger.WriteBatch, cluster string, oldGen, gen uint64, part uint32,
	kinds map[string]bool, meta *clusterMeta, writeFinding func(*api.Finding, bool) error) error {
	var index uint32
	for kv := range badgerkv.Prefix(rt, genPrefix(prefixItem, cluster, oldGen)) {
		item := &api.InventoryItem{}
		if err := kv.Value(func(v []byte) error { return proto.Unmarshal(v, item) }); err != nil {
			return fmt.Errorf("carry over item: %w", err)
		}
		kind := item.GetObject().GetKind()
		if !kinds[kind] {
			continue
		}
		v, err := proto.Marshal(item)
		if err != nil {
			return fmt.Errorf("carry over item: %w", err)
		}
		if err := wb.Set(itemKey(cluster, gen, part, index), v); err != nil {
			return fmt.Errorf("carry over item: %w", err)
		}
		index++
		meta.Items++
		meta.Kinds[kind]++
	}
	for kv := range badgerkv.Prefix(rt, genPrefix(prefixFinding, cluster, oldGen)) {
		f := &api.Finding{}
		if err := kv.Value(func(v []byte) error { return proto.Unmarshal(v, f) }); err != nil {
			return fmt.Errorf("carry over finding: %w", err)
		}
		if !kinds[f.GetObject().GetKind()] {
			continue
		}
		if err := writeFinding(f, true); err != nil {
			return err
		}
	}
	return nil
}

// findingChanged reports whether f, as evaluated now, says something prev
// (the same finding in the previous snapshot, nil if none) did not: what
// makes exports send it.
func findingChanged(prev, f *api.Finding) bool {
	return prev == nil || prev.GetSeverity() != f.GetSeverity() || prev.GetTitle() != f.GetTitle() ||
		prev.GetDetail() != f.GetDetail() || prev.GetRemediation() != f.GetRemediation() ||
		!slices.Equal(prev.GetStandards(), f.GetStandards())
}
