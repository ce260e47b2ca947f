// Package backend is Harrier's receiving service: it stores what agents
// upload (alerts, recent raw events, agent health and gaps), serves them over
// an HTTP API and a small web UI, and exposes Prometheus metrics.
//
// Storage sits behind the Store interface so that a fleet deployment (several
// stateless ingest replicas publishing to NATS JetStream or Kafka, consumers
// writing to a shared store) is a new implementation, not a rewrite. The
// default implementation is BadgerStore, embedded in the process.
package backend

import (
	"context"
	"errors"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// ErrNotFound is returned by Store.Alert and Store.Finding for an unknown ID.
var ErrNotFound = errors.New("not found")

// Store is the backend's storage seam. Ingest must be idempotent on
// (agentID, record seq) and durable before it returns: the agent deletes from
// its spool what Ingest acks. Inventory chunks (api.InventoryChunk) are kept
// until all parts of their snapshot arrived; the complete snapshot then
// replaces the cluster's inventory and findings at once, and an incomplete
// one never does.
type Store interface {
	// Ingest stores a batch and returns the sequence numbers now durably
	// stored, including those that were already stored before.
	Ingest(ctx context.Context, agentID string, b *api.Batch) (acked []uint64, err error)
	// Alerts lists alerts matching q, most recently seen first.
	Alerts(ctx context.Context, q AlertQuery) ([]*api.Alert, error)
	// Alert returns one alert by ID, or an error wrapping ErrNotFound.
	Alert(ctx context.Context, id string) (*api.Alert, error)
	// Agents lists every agent that has uploaded, ordered by ID.
	Agents(ctx context.Context) ([]AgentInfo, error)
	// Events lists recent raw events matching q, newest first.
	Events(ctx context.Context, q EventQuery) ([]*api.Event, error)
	// Snapshots describes each cluster's current inventory snapshot,
	// ordered by cluster.
	Snapshots(ctx context.Context) ([]SnapshotInfo, error)
	// Inventory lists items of the current snapshots matching q, ordered by
	// cluster, kind, namespace and name.
	Inventory(ctx context.Context, q InventoryQuery) ([]InventoryEntry, error)
	// Findings lists findings of the current snapshots matching q, most
	// severe first, then by cluster and object.
	Findings(ctx context.Context, q FindingQuery) ([]*api.Finding, error)
	// Finding returns one current finding by ID, or an error wrapping
	// ErrNotFound.
	Finding(ctx context.Context, id string) (*api.Finding, error)
	Close() error
}

// AlertQuery selects alerts. Zero fields do not filter.
type AlertQuery struct {
	Detection string       // detection ID, e.g. "sensitive-files"
	Severity  api.Severity // minimum severity
	Cluster   string
	Node      string
	Namespace string    // pod namespace
	Since     time.Time // last seen at or after
	Limit     int       // 0: DefaultLimit
}

// EventQuery selects recent raw events. Zero fields do not filter.
type EventQuery struct {
	Node  string
	Kind  api.EventKind
	Since time.Time // event time at or after
	Limit int       // 0: DefaultLimit
	// The events explorer's filters (eventMatches, events_search.go).
	Search EventSearch
}

// Query limits shared by every Store so the API behaves the same whatever
// the storage.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// AgentInfo is what the backend knows about one agent.
type AgentInfo struct {
	ID        string
	FirstSeen time.Time
	LastSeen  time.Time
	// Records counts records stored (duplicates not included).
	Records uint64
	// Gaps sums the records the agent reported it had to evict, per class.
	Gaps map[api.RecordClass]uint64
	// Health is the last health the agent sent (nil before its first heartbeat).
	Health *api.AgentHealth
	// UsualGap is the agent's usual time between uploads (0 until its
	// second upload).
	UsualGap time.Duration
}

// Sink adapts a Store to the QUIC transport's Sink interface, which names
// its method Store. (Go forbids a field and a method of the same name, so the
// wrapped store is the field Inner.)
type Sink struct{ Inner Store }

// NewSink wraps s for the transport.
func NewSink(s Store) Sink { return Sink{Inner: s} }

// Store stores a batch; see Store.Ingest.
func (s Sink) Store(ctx context.Context, agentID string, b *api.Batch) ([]uint64, error) {
	return s.Inner.Ingest(ctx, agentID, b)
}

func effectiveLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}
