package backend

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// BadgerConfig configures a BadgerStore. Zero fields take the defaults.
type BadgerConfig struct {
	// Dir is the store's own directory.
	Dir string
	// MaxEvents bounds the ring of recent raw events; the oldest go first.
	MaxEvents int // default 100000
	// DedupWindow is how long (agent, seq) markers are kept. A resend older
	// than this would be stored again; agents resend within minutes of a
	// reconnect, so a week is ample and keeps the markers bounded.
	DedupWindow time.Duration // default 7 days
	// Metrics, if set, counts batches, records, duplicates and latency.
	Metrics *Metrics
	// Now is the clock for agents' first/last seen (tests set it).
	Now func() time.Time
	// MaxPendingInventoryBytes bounds the chunks of inventory snapshots
	// still waiting for their other parts; beyond it whole pending snapshots
	// are dropped, oldest first. Default 256 MiB.
	MaxPendingInventoryBytes int64
	// Evaluator, if set, adds the backend's own findings (known
	// vulnerabilities of running images) to each snapshot.
	Evaluator SnapshotEvaluator
	// IncidentWindow is how far apart two alerts may be and still join one
	// incident through what they share (default 30 minutes).
	IncidentWindow time.Duration
	// eventSegmentBytes overrides the event segment size (tests).
	eventSegmentBytes int64
}

const (
	defaultMaxEvents   = 100_000
	defaultDedupWindow = 7 * 24 * time.Hour
	// valueThreshold: values this long go to Badger's value log, shorter
	// ones stay in the LSM tree (Badger's default, named for entrySize).
	valueThreshold = 1 << 20
)

// BadgerStore is the embedded Store for one site: Badger in a low-memory
// profile, one writer at a time.
type BadgerStore struct {
	db  *badger.DB
	cfg BadgerConfig
	log *slog.Logger

	// mu serialises Ingest. One writer keeps the event ring's counters in
	// memory and avoids Badger transaction conflicts; at one site the
	// fsync, not the lock, is the limit.
	mu sync.Mutex
	// Ring positions: events occupy positions [evTail, evHead), stored in
	// pages (one per batch, in segment files: eventlog.go) indexed by the
	// position of their first event; pages lists them, oldest first.
	evHead, evTail uint64
	pages          []pageRef
	events         *eventLog
	// pageBuf is the page buffer Ingest fills and reuses: a page is
	// written to its segment before the next one starts.
	pageBuf []byte
	// Inventory state (inventory*.go), guarded by mu: the next snapshot
	// generation, the bytes of pending chunks, and the current findings per
	// cluster per severity name (for the gauges).
	nextGen      uint64
	pendingBytes int64
	severities   map[string]map[string]int
	// alertSeq is the last alert ingest sequence number committed: every
	// stored or updated alert gets the next one, indexed under o/ in the
	// same transaction (exportsource.go). Written under mu, read by
	// exporters without it.
	alertSeq atomic.Uint64
	// journal is the ingest order of the other kinds exported
	// (exportsource.go).
	journal journal
	// eventHead mirrors evHead for exporters, which read it without mu.
	eventHead atomic.Uint64
	// incidents groups alerts into incidents and indexes them for the
	// alert list (incidents.go); updated after each commit.
	incidents *incidentIndex
}

var _ Store = (*BadgerStore)(nil)

// Key layout. Every key starts with a one-byte kind and a slash; the
// inventory's keys are described in inventory.go, identity's in
// identity.go, the response control's in control.go (TestKeyPrefixesDistinct
// checks that no two parts share a kind).
const (
	prefixSeen     = "s/" // s/<agent>\x00[<spool ID>\x00]<seq BE64> → empty, with TTL
	prefixGap      = "p/" // p/<agent>\x00<class BE32><first><last><count BE64> → empty, with TTL
	prefixAlert    = "a/" // a/<alert id> → api.Alert
	prefixEvent    = "e/" // e/<ring pos of its first event BE64> → event page
	prefixAgent    = "g/" // g/<agent> → JSON agentRecord
	prefixAlertSeq = "o/" // o/<alert ingest seq BE64> → <stored unix ns BE64><alert id>
	prefixExport   = "x/" // x/<destination>\x00... → exporters' cursors and dead letters (backend/export)
	prefixJournal  = "j/" // j/<export kind>\x00<seq BE64> → <stored unix ns BE64><record>: findings and vulnerabilities (<state byte><api.Finding>), responses (JSON)
	keyRingState   = "m/ring"
	// keyStreamPosition is a replica's last applied JetStream sequence
	// (backend/replicate): <BE64>.
	keyStreamPosition = "l/stream"
	// keyIdentitySeq is the stream sequence of the last identity change a
	// replica applied (identity_replica.go): JSON number.
	keyIdentitySeq = "l/identity"
)

// streamPositionKey is where the position in the named stream is ("":
// the records stream).
func streamPositionKey(name string) []byte {
	if name == "" {
		return []byte(keyStreamPosition)
	}
	return []byte(keyStreamPosition + "/" + name)
}

// StreamPosition is the last sequence this replica applied of the named
// stream ("": the records stream; "events": the raw events') (0: none, or
// not a replica).
func (s *BadgerStore) StreamPosition(ctx context.Context, name string) (uint64, error) {
	var pos uint64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(streamPositionKey(name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("stream position: %d bytes, want 8", len(v))
			}
			pos = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return pos, err
}

// SetStreamPosition records the last sequence of the named stream applied.
func (s *BadgerStore) SetStreamPosition(ctx context.Context, name string, seq uint64) error {
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(streamPositionKey(name), binary.BigEndian.AppendUint64(nil, seq))
	})
}

func key(prefix string, rest ...string) []byte {
	k := []byte(prefix)
	for _, r := range rest {
		k = append(k, r...)
	}
	return k
}

// OpenBadgerStore opens (or creates) the store in dir with the defaults.
func OpenBadgerStore(dir string, log *slog.Logger) (*BadgerStore, error) {
	return OpenBadgerStoreConfig(BadgerConfig{Dir: dir}, log)
}

// OpenBadgerStoreConfig opens (or creates) the store described by cfg.
func OpenBadgerStoreConfig(cfg BadgerConfig, log *slog.Logger) (*BadgerStore, error) {
	if cfg.Dir == "" {
		return nil, errors.New("badger store: empty directory")
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = defaultMaxEvents
	}
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = defaultDedupWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxPendingInventoryBytes <= 0 {
		cfg.MaxPendingInventoryBytes = defaultMaxPendingInventoryBytes
	}
	if cfg.eventSegmentBytes <= 0 {
		cfg.eventSegmentBytes = defaultEventSegmentMax
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Badger's defaults need ~600 MB; this profile stays well under 100 MB.
	opts := badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerkv.Logger(log.With("component", "badger"))).
		WithSyncWrites(true). // an ack promises durability
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(4 << 20).
		WithValueLogFileSize(64 << 20).
		WithValueThreshold(valueThreshold).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(8 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false). // expvar is process-global state
		WithDetectConflicts(false) // Ingest is the only writer
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	s := &BadgerStore{db: db, cfg: cfg, log: log, incidents: newIncidentIndex(cfg.IncidentWindow)}
	if err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key(keyRingState))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 16 {
				return fmt.Errorf("ring state: %d bytes, want 16", len(v))
			}
			s.evTail = binary.BigEndian.Uint64(v[:8])
			s.evHead = binary.BigEndian.Uint64(v[8:])
			s.eventHead.Store(s.evHead)
			return nil
		})
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	newestEnd, err := s.loadPages()
	if err == nil {
		s.events, err = openEventLog(filepath.Join(cfg.Dir, eventsDirName), cfg.eventSegmentBytes, s.pages, newestEnd)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	if err := errors.Join(s.loadAlertSeq(), s.loadJournal()); err != nil {
		_ = errors.Join(s.events.close(), db.Close())
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	if err := s.openInventory(); err != nil {
		_ = errors.Join(s.events.close(), db.Close())
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	if err := s.loadIncidents(context.Background()); err != nil {
		_ = errors.Join(s.events.close(), db.Close())
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	return s, nil
}

// Close closes the event log and the database.
func (s *BadgerStore) Close() error {
	if err := errors.Join(s.events.close(), s.db.Close()); err != nil {
		return fmt.Errorf("close badger store: %w", err)
	}
	return nil
}

// Ping reads one key: /readyz uses it to check the store is usable.
func (s *BadgerStore) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key(keyRingState))
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("ping: %w", err)
		}
		return nil
	})
}

// agentPart ends the agent ID with a NUL so that agent "a" never prefixes "ab".
func agentPart(prefix, agentID string) []byte {
	k := make([]byte, 0, len(prefix)+len(agentID)+1+17+8)
	k = append(k, prefix...)
	k = append(k, agentID...)
	return append(k, 0)
}

// seenPrefix starts the de-duplication markers of one agent's spool. A
// spool made afresh numbers from 1 again under a new spool ID; the empty ID
// (spools older than IDs) keeps the key it always had.
func seenPrefix(agentID, spoolID string) []byte {
	k := agentPart(prefixSeen, agentID)
	if spoolID != "" {
		k = append(append(k, spoolID...), 0)
	}
	return k
}

// seenKey is the marker of record seq under prefix (seenPrefix).
func seenKey(prefix []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, len(prefix)+8), prefix...), seq)
}

func gapKey(agentID string, g *api.Gap) []byte {
	k := binary.BigEndian.AppendUint32(agentPart(prefixGap, agentID), uint32(g.GetClass()))
	k = binary.BigEndian.AppendUint64(k, g.GetFirstSeq())
	k = binary.BigEndian.AppendUint64(k, g.GetLastSeq())
	return binary.BigEndian.AppendUint64(k, g.GetCount())
}

func agentKey(id string) []byte { return key(prefixAgent, id) }

func eventKey(pos uint64) []byte {
	return binary.BigEndian.AppendUint64(key(prefixEvent), pos)
}

// getProto reads the message stored at k; the error wraps ErrNotFound when
// there is none.
func getProto[M any, PM interface {
	*M
	proto.Message
}](txn *badger.Txn, k []byte) (PM, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	m := PM(new(M))
	if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, m) }); err != nil {
		return nil, fmt.Errorf("decode %q: %w", k, err)
	}
	return m, nil
}

// getJSON decodes the JSON value at k into v and reports whether there was one.
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
