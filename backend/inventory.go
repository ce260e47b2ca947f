package backend

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// Inventory snapshots arrive in chunks (api.InventoryChunk). Chunks wait
// under q/ until all parts of their snapshot are there; the snapshot is then
// written as a new generation of the cluster's items (i/) and findings (f/)
// and becomes current by rewriting one small key (c/<cluster>) in one
// transaction. Readers read c/ and the generation it names in one Badger
// read transaction, so they see either the old or the new snapshot, never a
// mix, however many transactions writing the generation took. Generations
// that no c/ key names (the old one after a switch, or a half-written one
// after a crash) are deleted after the switch and again at open.
const (
	prefixPendingMeta  = "w/" // w/<cluster>\x00<snapshot id> → JSON pendingMeta
	prefixPendingChunk = "q/" // q/<cluster>\x00<snapshot id>\x00<part BE32> → api.InventoryChunk as received
	prefixCluster      = "c/" // c/<cluster> → JSON clusterMeta: the current snapshot
	prefixItem         = "i/" // i/<cluster>\x00<gen BE64><part BE32><index BE32> → api.InventoryItem
	prefixFinding      = "f/" // f/<cluster>\x00<gen BE64><finding id> → api.Finding
)

// Bounds on what a chunk may name; longer values are malformed, not keys.
const (
	maxClusterNameLen = 253
	maxSnapshotIDLen  = 256
	maxSnapshotParts  = 100_000

	defaultMaxPendingInventoryBytes = 256 << 20
)

// Reasons a chunk is rejected or dropped: the label values of the
// inventory metrics (a fixed set, so label cardinality stays bounded).
const (
	rejectEmptySnapshotID = "empty_snapshot_id"
	rejectPartsZero       = "parts_zero"
	rejectPartOutOfRange  = "part_out_of_range"
	rejectPartsChanged    = "parts_changed"
	rejectBadName         = "bad_name"
	rejectTooManyParts    = "too_many_parts"
	rejectNoChunk         = "no_chunk"

	dropStale        = "stale"         // the snapshot is not newer than the current one
	dropSuperseded   = "superseded"    // a newer snapshot of the cluster completed first
	dropPendingBytes = "pending_bytes" // evicted to stay within MaxPendingInventoryBytes
)

// InventoryQuery selects inventory items of the clusters' current
// snapshots. Zero fields do not filter.
type InventoryQuery struct {
	Cluster   string
	Kind      string // exact, case-insensitive ("deployment" matches "Deployment")
	Namespace string
	Name      string // substring of the object's name
	Node      string // pods: the node they run on
	Image     string // substring of any container image
	// Workloads keeps only objects with container images and no
	// controlling owner: Deployments, DaemonSets, bare Pods, ...
	Workloads bool
	Limit     int // 0: DefaultLimit
}

// FindingQuery selects findings of the clusters' current snapshots. Zero
// fields do not filter.
type FindingQuery struct {
	Cluster   string
	Check     string       // check ID, e.g. "pss-privileged"
	Severity  api.Severity // minimum severity
	Namespace string
	Kind      string // object kind, exact, case-insensitive
	Category  string // e.g. "pod-security"
	Limit     int    // 0: DefaultLimit
}

// InventoryEntry is one item of a cluster's current snapshot (the item
// itself does not name its cluster).
type InventoryEntry struct {
	Cluster string
	Item    *api.InventoryItem
}

// SnapshotInfo describes a cluster's current snapshot.
type SnapshotInfo struct {
	Cluster    string
	SnapshotID string
	Time       time.Time // when the leader took it (its clock)
	Node       string    // the agent that took it
	Completed  time.Time // when the backend made it current (backend clock)
	Items      int
	Findings   int
	Kinds      map[string]int       // items per object kind
	Severities map[api.Severity]int // findings per severity
}

// pendingMeta describes a snapshot whose chunks are still arriving.
type pendingMeta struct {
	Parts uint32 `json:"parts"`
	// Time is the snapshot's time from its first chunk, or the backend's
	// clock when that chunk had none.
	Time    time.Time `json:"time"`
	Node    string    `json:"node,omitempty"`
	Arrived time.Time `json:"arrived"`
}

// clusterMeta is the stored form of SnapshotInfo plus the generation.
type clusterMeta struct {
	SnapshotID string         `json:"snapshot_id"`
	Gen        uint64         `json:"gen"`
	Time       time.Time      `json:"time"`
	Node       string         `json:"node,omitempty"`
	Completed  time.Time      `json:"completed"`
	Items      int            `json:"items"`
	Findings   int            `json:"findings"`
	Kinds      map[string]int `json:"kinds,omitempty"`
	Severities map[string]int `json:"severities,omitempty"` // by severity name, e.g. "SEVERITY_HIGH"
}

func (m clusterMeta) info(cluster string) SnapshotInfo {
	si := SnapshotInfo{Cluster: cluster, SnapshotID: m.SnapshotID, Time: m.Time, Node: m.Node, Completed: m.Completed,
		Items: m.Items, Findings: m.Findings, Kinds: map[string]int{}, Severities: map[api.Severity]int{}}
	for k, n := range m.Kinds {
		si.Kinds[k] = n
	}
	for name, n := range m.Severities {
		si.Severities[api.Severity(api.Severity_value[name])] += n
	}
	return si
}

// decodeClusterMeta is the one decoder of c/ values.
func decodeClusterMeta(v []byte) (clusterMeta, error) {
	var m clusterMeta
	if err := json.Unmarshal(v, &m); err != nil {
		return m, fmt.Errorf("decode snapshot meta: %w", err)
	}
	if m.Gen == 0 || m.SnapshotID == "" {
		return m, errors.New("decode snapshot meta: no generation or snapshot ID")
	}
	return m, nil
}

// snapRef names one snapshot.
type snapRef struct{ cluster, id string }

func clusterKey(cluster string) []byte { return key(prefixCluster, cluster) }

func pendingMetaKey(r snapRef) []byte {
	return append(append(key(prefixPendingMeta, r.cluster), 0), r.id...)
}

// pendingChunkPrefix ends with the NUL after the snapshot ID so that
// snapshot "a" never prefixes "ab".
func pendingChunkPrefix(r snapRef) []byte {
	return append(append(append(key(prefixPendingChunk, r.cluster), 0), r.id...), 0)
}

func pendingChunkKey(r snapRef, part uint32) []byte {
	return binary.BigEndian.AppendUint32(pendingChunkPrefix(r), part)
}

// genPrefix is <prefix><cluster>\x00<gen BE64>.
func genPrefix(prefix, cluster string, gen uint64) []byte {
	return binary.BigEndian.AppendUint64(append(key(prefix, cluster), 0), gen)
}

func itemKey(cluster string, gen uint64, part, index uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(genPrefix(prefixItem, cluster, gen), part), index)
}

func findingKey(cluster string, gen uint64, id string) []byte {
	return append(genPrefix(prefixFinding, cluster, gen), id...)
}

// parseGenKey splits an i/ or f/ key into cluster and generation. Cluster
// names never hold NUL (validateChunk refuses them), so the first NUL ends
// the cluster.
func parseGenKey(prefix string, k []byte) (cluster string, gen uint64, ok bool) {
	rest, found := bytes.CutPrefix(k, []byte(prefix))
	if !found {
		return "", 0, false
	}
	name, tail, found := bytes.Cut(rest, []byte{0})
	if !found || len(tail) < 8 {
		return "", 0, false
	}
	return string(name), binary.BigEndian.Uint64(tail[:8]), true
}

// parsePendingMetaKey splits a w/ key into cluster and snapshot ID.
func parsePendingMetaKey(k []byte) (snapRef, bool) {
	rest, found := bytes.CutPrefix(k, []byte(prefixPendingMeta))
	if !found {
		return snapRef{}, false
	}
	name, id, found := bytes.Cut(rest, []byte{0})
	if !found || len(id) == 0 {
		return snapRef{}, false
	}
	return snapRef{cluster: string(name), id: string(id)}, true
}

// validateChunk says what is wrong with a chunk: a reason (metric label)
// and a detail for the log; empty when the chunk is usable.
func validateChunk(c *api.InventoryChunk) (reason, detail string) {
	switch {
	case c == nil:
		return rejectNoChunk, "record of class FINDING without an inventory chunk"
	case c.GetSnapshotId() == "":
		return rejectEmptySnapshotID, "snapshot_id is empty"
	case c.GetParts() == 0:
		return rejectPartsZero, "parts is 0"
	case c.GetPart() >= c.GetParts():
		return rejectPartOutOfRange, fmt.Sprintf("part %d is not below parts %d (parts are 0-based)", c.GetPart(), c.GetParts())
	case c.GetParts() > maxSnapshotParts:
		return rejectTooManyParts, fmt.Sprintf("parts %d exceeds %d", c.GetParts(), maxSnapshotParts)
	case strings.ContainsRune(c.GetCluster(), 0) || strings.ContainsRune(c.GetSnapshotId(), 0):
		return rejectBadName, "cluster or snapshot_id contains a NUL byte"
	case len(c.GetCluster()) > maxClusterNameLen:
		return rejectBadName, fmt.Sprintf("cluster name is %d bytes, at most %d", len(c.GetCluster()), maxClusterNameLen)
	case len(c.GetSnapshotId()) > maxSnapshotIDLen:
		return rejectBadName, fmt.Sprintf("snapshot_id is %d bytes, at most %d", len(c.GetSnapshotId()), maxSnapshotIDLen)
	}
	return "", ""
}

func getJSON[T any](txn *badger.Txn, k []byte, v *T) (bool, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := item.Value(func(b []byte) error { return json.Unmarshal(b, v) }); err != nil {
		return false, fmt.Errorf("decode %q: %w", k, err)
	}
	return true, nil
}

func loadClusterMeta(txn *badger.Txn, cluster string) (clusterMeta, bool, error) {
	item, err := txn.Get(clusterKey(cluster))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return clusterMeta{}, false, nil
	}
	if err != nil {
		return clusterMeta{}, false, fmt.Errorf("snapshot meta %q: %w", cluster, err)
	}
	var m clusterMeta
	err = item.Value(func(v []byte) error {
		m, err = decodeClusterMeta(v)
		return err
	})
	if err != nil {
		return clusterMeta{}, false, fmt.Errorf("snapshot meta %q: %w", cluster, err)
	}
	return m, true, nil
}

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
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		ref, ok := parsePendingMetaKey(it.Item().Key())
		if !ok {
			return nil, fmt.Errorf("pending snapshot key %q: malformed", it.Item().Key())
		}
		p := pendingSnapshot{ref: ref}
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &p.meta) }); err != nil {
			return nil, fmt.Errorf("pending snapshot %q/%q: %w", ref.cluster, ref.id, err)
		}
		out = append(out, p)
	}
	it.Close()
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
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: pendingChunkPrefix(ref)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		size += it.Item().ValueSize()
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
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	return keys
}

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
	// writeFinding stores one finding of the new generation; a carried
	// finding (its kind was not listed this time) keeps the time it was last
	// evaluated.
	writeFinding := func(f *api.Finding, carried bool) error {
		last := f.GetLastSeen()
		normaliseFinding(f, p, meta.Time)
		if carried && last != nil {
			f.LastSeen = last
		}
		if hasOld {
			prev, err := getFinding(rt, findingKey(p.ref.cluster, old.Gen, f.GetId()))
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if prev.GetFirstSeen() != nil && prev.GetFirstSeen().AsTime().Before(f.GetFirstSeen().AsTime()) {
				f.FirstSeen = prev.GetFirstSeen()
			}
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
	if err := wb.Flush(); err != nil {
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

func getChunk(txn *badger.Txn, k []byte) (*api.InventoryChunk, error) {
	item, err := txn.Get(k)
	if err != nil {
		return nil, fmt.Errorf("read chunk %q: %w", k, err)
	}
	c := &api.InventoryChunk{}
	if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, c) }); err != nil {
		return nil, fmt.Errorf("decode chunk %q: %w", k, err)
	}
	return c, nil
}

func getFinding(txn *badger.Txn, k []byte) (*api.Finding, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	f := &api.Finding{}
	if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, f) }); err != nil {
		return nil, fmt.Errorf("decode finding: %w", err)
	}
	return f, nil
}

// openInventory restores the in-memory inventory state at open and finishes
// what a crash interrupted: it deletes generations no cluster names and
// pending snapshots the current ones supersede, and switches to any pending
// snapshot that is complete.
func (s *BadgerStore) openInventory() error {
	s.severities = map[string]map[string]int{}
	metas := map[string]clusterMeta{}
	var pend []pendingSnapshot
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: key(prefixCluster)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			cl := string(bytes.TrimPrefix(it.Item().Key(), key(prefixCluster)))
			err := it.Item().Value(func(v []byte) error {
				m, err := decodeClusterMeta(v)
				metas[cl] = m
				return err
			})
			if err != nil {
				return fmt.Errorf("snapshot meta %q: %w", cl, err)
			}
		}
		it.Close()
		var err error
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
		it := rt.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: key(prefix)})
		for it.Rewind(); it.Valid(); it.Next() {
			cl, gen, ok := parseGenKey(prefix, it.Item().Key())
			if m, cur := metas[cl]; ok && cur && m.Gen == gen {
				continue
			}
			if ok {
				s.nextGen = max(s.nextGen, gen+1)
			}
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				it.Close()
				return fmt.Errorf("inventory: delete orphan: %w", err)
			}
			orphans++
		}
		it.Close()
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

// currentMetas reads every cluster's current snapshot meta (one cluster
// when cluster is non-empty) in txn.
func currentMetas(txn *badger.Txn, cluster string) (map[string]clusterMeta, error) {
	out := map[string]clusterMeta{}
	if cluster != "" {
		m, ok, err := loadClusterMeta(txn, cluster)
		if ok {
			out[cluster] = m
		}
		return out, err
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: key(prefixCluster)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		cl := string(bytes.TrimPrefix(it.Item().Key(), key(prefixCluster)))
		err := it.Item().Value(func(v []byte) error {
			m, err := decodeClusterMeta(v)
			out[cl] = m
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("snapshot meta %q: %w", cl, err)
		}
	}
	return out, nil
}

// Snapshots describes every cluster's current snapshot, ordered by cluster.
func (s *BadgerStore) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, "")
		for cl, m := range metas {
			out = append(out, m.info(cl))
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int { return strings.Compare(a.Cluster, b.Cluster) })
	return out, nil
}

// Inventory scans the current snapshots' items. A site's inventory is
// thousands of objects; a fleet store would index.
func (s *BadgerStore) Inventory(ctx context.Context, q InventoryQuery) ([]InventoryEntry, error) {
	var out []InventoryEntry
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, q.Cluster)
		if err != nil {
			return err
		}
		for cl, m := range metas {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: genPrefix(prefixItem, cl, m.Gen)})
			for it.Rewind(); it.Valid(); it.Next() {
				if err := ctx.Err(); err != nil {
					it.Close()
					return err
				}
				item := &api.InventoryItem{}
				if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, item) }); err != nil {
					it.Close()
					return fmt.Errorf("item %q: %w", it.Item().Key(), err)
				}
				if inventoryMatches(item, q) {
					out = append(out, InventoryEntry{Cluster: cl, Item: item})
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list inventory: %w", err)
	}
	slices.SortFunc(out, func(a, b InventoryEntry) int {
		x, y := a.Item.GetObject(), b.Item.GetObject()
		return cmp.Or(strings.Compare(a.Cluster, b.Cluster), strings.Compare(x.GetKind(), y.GetKind()),
			strings.Compare(x.GetNamespace(), y.GetNamespace()), strings.Compare(x.GetName(), y.GetName()),
			strings.Compare(x.GetUid(), y.GetUid()))
	})
	if l := effectiveLimit(q.Limit); len(out) > l {
		out = out[:l]
	}
	return out, nil
}

// inventoryMatches is the one definition of InventoryQuery's filters.
func inventoryMatches(it *api.InventoryItem, q InventoryQuery) bool {
	o := it.GetObject()
	if q.Kind != "" && !strings.EqualFold(o.GetKind(), q.Kind) {
		return false
	}
	if q.Namespace != "" && o.GetNamespace() != q.Namespace {
		return false
	}
	if q.Name != "" && !strings.Contains(o.GetName(), q.Name) {
		return false
	}
	if q.Node != "" && it.GetNode() != q.Node {
		return false
	}
	if q.Image != "" && !slices.ContainsFunc(it.GetImages(), func(img string) bool { return strings.Contains(img, q.Image) }) {
		return false
	}
	if q.Workloads && (len(it.GetImages()) == 0 || it.GetOwner().GetKind() != "") {
		return false
	}
	return true
}

// Findings scans the current snapshots' findings, most severe first, then
// by object.
func (s *BadgerStore) Findings(ctx context.Context, q FindingQuery) ([]*api.Finding, error) {
	var out []*api.Finding
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, q.Cluster)
		if err != nil {
			return err
		}
		for cl, m := range metas {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: genPrefix(prefixFinding, cl, m.Gen)})
			for it.Rewind(); it.Valid(); it.Next() {
				if err := ctx.Err(); err != nil {
					it.Close()
					return err
				}
				f := &api.Finding{}
				if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, f) }); err != nil {
					it.Close()
					return fmt.Errorf("finding %q: %w", it.Item().Key(), err)
				}
				if findingMatches(f, q) {
					out = append(out, f)
				}
			}
			it.Close()
		}
		nodes, err := s.nodeFindings(txn)
		if err != nil {
			return err
		}
		for _, f := range nodes {
			if (q.Cluster == "" || f.GetCluster() == q.Cluster) && findingMatches(f, q) {
				out = append(out, f)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	slices.SortFunc(out, compareFindings)
	if l := effectiveLimit(q.Limit); len(out) > l {
		out = out[:l]
	}
	return out, nil
}

func compareFindings(a, b *api.Finding) int {
	x, y := a.GetObject(), b.GetObject()
	return cmp.Or(cmp.Compare(b.GetSeverity(), a.GetSeverity()),
		strings.Compare(a.GetCluster(), b.GetCluster()), strings.Compare(x.GetKind(), y.GetKind()),
		strings.Compare(x.GetNamespace(), y.GetNamespace()), strings.Compare(x.GetName(), y.GetName()),
		strings.Compare(a.GetContainer(), b.GetContainer()), strings.Compare(a.GetCheckId(), b.GetCheckId()),
		strings.Compare(a.GetId(), b.GetId()))
}

// findingMatches is the one definition of FindingQuery's filters.
func findingMatches(f *api.Finding, q FindingQuery) bool {
	switch {
	case q.Check != "" && f.GetCheckId() != q.Check,
		f.GetSeverity() < q.Severity,
		q.Namespace != "" && f.GetObject().GetNamespace() != q.Namespace,
		q.Kind != "" && !strings.EqualFold(f.GetObject().GetKind(), q.Kind),
		q.Category != "" && f.GetCategory() != q.Category:
		return false
	}
	return true
}

// Finding returns one finding of a current snapshot by ID. Finding IDs
// include the cluster, so the first cluster holding the ID is the one.
func (s *BadgerStore) Finding(ctx context.Context, id string) (*api.Finding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var f *api.Finding
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, "")
		if err != nil {
			return err
		}
		clusters := make([]string, 0, len(metas))
		for cl := range metas {
			clusters = append(clusters, cl)
		}
		slices.Sort(clusters)
		for _, cl := range clusters {
			f, err = getFinding(txn, findingKey(cl, metas[cl].Gen, id))
			if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		nodes, err := s.nodeFindings(txn)
		if err != nil {
			return err
		}
		for _, nf := range nodes {
			if nf.GetId() == id {
				f = nf
				return nil
			}
		}
		return ErrNotFound
	})
	if err != nil {
		return nil, fmt.Errorf("finding %q: %w", id, err)
	}
	return f, nil
}

// nodeFindingsMaxAge is how long a silent agent's node findings are still
// listed: a node that has not sent a heartbeat for a day is likely gone.
const nodeFindingsMaxAge = 24 * time.Hour

// nodeFindings are the findings agents report about their own node (the
// kubelet's settings) in their last heartbeat, which replaces the previous
// heartbeat's.
func (s *BadgerStore) nodeFindings(txn *badger.Txn) ([]*api.Finding, error) {
	var out []*api.Finding
	now := s.cfg.Now()
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: key(prefixAgent)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		info, err := readAgent(it.Item())
		if err != nil {
			return nil, err
		}
		if now.Sub(info.LastSeen) > nodeFindingsMaxAge {
			continue
		}
		for _, f := range info.Health.GetNodeFindings() {
			if f.GetId() == "" {
				f.Id = fallbackFindingID(f)
			}
			out = append(out, f)
		}
	}
	return out, nil
}

// carryOver copies into generation gen the previous generation's items and
// findings of the kinds the new snapshot could not list, so that a
// partial snapshot does not look like deletions. Carried items take the
// part number after the snapshot's last.
func carryOver(rt *badger.Txn, wb *badger.WriteBatch, cluster string, oldGen, gen uint64, part uint32,
	kinds map[string]bool, meta *clusterMeta, writeFinding func(*api.Finding, bool) error) error {
	it := rt.NewIterator(badger.IteratorOptions{Prefix: genPrefix(prefixItem, cluster, oldGen)})
	defer it.Close()
	var index uint32
	for it.Rewind(); it.Valid(); it.Next() {
		item := &api.InventoryItem{}
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, item) }); err != nil {
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
	fit := rt.NewIterator(badger.IteratorOptions{Prefix: genPrefix(prefixFinding, cluster, oldGen)})
	defer fit.Close()
	for fit.Rewind(); fit.Valid(); fit.Next() {
		f := &api.Finding{}
		if err := fit.Item().Value(func(v []byte) error { return proto.Unmarshal(v, f) }); err != nil {
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
