package backend

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

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

func getChunk(txn *badger.Txn, k []byte) (*api.InventoryChunk, error) {
	c, err := getProto[api.InventoryChunk](txn, k)
	if err != nil {
		return nil, fmt.Errorf("chunk %q: %w", k, err)
	}
	return c, nil
}
