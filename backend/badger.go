package backend

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
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
	// GCInterval is how often value-log GC runs at the latest; it also runs
	// after every valueLogFileSize of values written. Default 1 minute.
	GCInterval time.Duration

	// valueLogFileSize overrides the value-log file size (tests).
	valueLogFileSize int64
}

const (
	defaultMaxEvents        = 100_000
	defaultDedupWindow      = 7 * 24 * time.Hour
	defaultGCInterval       = time.Minute
	defaultValueLogFileSize = 64 << 20
	// valueThreshold: values at least this long go to the value log, the LSM
	// tree keeps a pointer. Raw events (~900 bytes) are most of what is
	// written and are deleted as the ring turns; inline, every byte was
	// rewritten by each compaction (4x the CPU of ingest itself). In the
	// value log they are written once and their files reclaimed by GC.
	// Alerts, markers and agent records stay inline.
	valueThreshold = 256
	// gcDiscardRatio: a value-log file is rewritten once half of it is
	// garbage. The ring deletes oldest first, so whole files empty out.
	gcDiscardRatio = 0.5
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
	// Ring positions: events occupy keys [evTail, evHead).
	evHead, evTail uint64
	// Inventory state (inventory.go), guarded by mu: the next snapshot
	// generation, the bytes of pending chunks, and the current findings per
	// cluster per severity name (for the gauges).
	nextGen      uint64
	pendingBytes int64
	severities   map[string]map[string]int
	// valueLogWritten counts value bytes sent to the value log since GC was
	// last asked for, guarded by mu.
	valueLogWritten int64

	// gcKick asks the GC goroutine to run now; stopGC and gcDone end it.
	gcKick chan struct{}
	stopGC context.CancelFunc
	gcDone chan struct{}
}

var _ Store = (*BadgerStore)(nil)

// Key layout. Every key starts with a one-byte kind and a slash; the
// inventory's keys are described in inventory.go.
const (
	prefixSeen   = "s/" // s/<agent>\x00<seq BE64> → empty, with TTL
	prefixGap    = "p/" // p/<agent>\x00<class BE32><first><last><count BE64> → empty, with TTL
	prefixAlert  = "a/" // a/<alert id> → api.Alert
	prefixEvent  = "e/" // e/<ring pos BE64> → eventHeader + api.Event
	prefixAgent  = "g/" // g/<agent> → JSON agentRecord
	keyRingState = "m/ring"
)

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
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = defaultGCInterval
	}
	if cfg.valueLogFileSize <= 0 {
		cfg.valueLogFileSize = defaultValueLogFileSize
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Badger's defaults need ~600 MB; this profile stays well under 100 MB.
	opts := badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerLogger{log: log.With("component", "badger")}).
		WithSyncWrites(true). // an ack promises durability
		WithMemTableSize(4 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(4 << 20).
		WithValueLogFileSize(cfg.valueLogFileSize).
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
	s := &BadgerStore{db: db, cfg: cfg, log: log}
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
			return nil
		})
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	if err := s.openInventory(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	gcCtx, stop := context.WithCancel(context.Background())
	s.gcKick, s.stopGC, s.gcDone = make(chan struct{}, 1), stop, make(chan struct{})
	go s.collectGarbage(gcCtx)
	return s, nil
}

// collectGarbage runs value-log GC every GCInterval and whenever Ingest
// asks for it, until ctx ends.
func (s *BadgerStore) collectGarbage(ctx context.Context) {
	defer close(s.gcDone)
	t := time.NewTicker(s.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.gcKick:
		}
		if err := s.RunValueLogGC(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("value-log GC", "err", err)
		}
	}
}

// RunValueLogGC rewrites value-log files that are at least half garbage
// (deleted events) until none is left, counting each file rewritten. The
// store runs it by itself; tests and tools call it to reclaim space now.
func (s *BadgerStore) RunValueLogGC(ctx context.Context) error {
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(gcDiscardRatio)
		switch {
		case err == nil:
			s.cfg.Metrics.add(metricValueLogGC, 1)
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return nil
		default:
			return fmt.Errorf("value-log GC: %w", err)
		}
	}
	return nil
}

// Close stops GC and closes the database.
func (s *BadgerStore) Close() error {
	s.stopGC()
	<-s.gcDone
	if err := s.db.Close(); err != nil {
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

// agentRecord is the stored form of AgentInfo; health stays protobuf.
type agentRecord struct {
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
	Records   uint64            `json:"records"`
	Gaps      map[string]uint64 `json:"gaps,omitempty"` // by RecordClass name
	Health    []byte            `json:"health,omitempty"`
}

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
	w := &txnWriter{s: s, txn: s.db.NewTransaction(true), head: s.evHead, tail: s.evTail, pendingBytes: s.pendingBytes}
	defer func() { w.txn.Discard() }()

	agent, err := s.loadAgent(w.txn, agentID)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	if agent.FirstSeen.IsZero() {
		agent.FirstSeen = now
	}
	agent.LastSeen = now

	acked := make([]uint64, 0, len(b.GetRecords()))
	for _, r := range b.GetRecords() {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
		st.records[r.GetClass()]++
		seen := seenKey(agentID, r.GetSeq())
		dup, err := exists(w.txn, seen)
		if err != nil {
			return nil, err
		}
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
		if err := s.storeRecord(w, agentID, r, st); err != nil {
			return nil, err
		}
		if err := w.set(badger.NewEntry(seen, nil).WithTTL(s.cfg.DedupWindow)); err != nil {
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
	if err := w.commit(); err != nil {
		return nil, err
	}
	if s.valueLogWritten += w.valueLogBytes; s.valueLogWritten >= s.cfg.valueLogFileSize {
		s.valueLogWritten = 0
		select {
		case s.gcKick <- struct{}{}:
		default: // a run is already due
		}
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

func (s *BadgerStore) storeRecord(w *txnWriter, agentID string, r *api.Record, st *ingestStats) error {
	switch p := r.GetPayload().(type) {
	case *api.Record_Alert:
		return s.storeAlert(w, agentID, r.GetSeq(), p.Alert, st)
	case *api.Record_Event:
		return s.storeEvent(w, p.Event, st)
	case *api.Record_Inventory:
		return s.storeChunk(w, agentID, r.GetSeq(), p.Inventory, st)
	default:
		// Nothing we can store (e.g. a class this backend does not know yet):
		// ack it anyway, or the agent would resend it forever.
		s.log.Debug("record without a known payload", "agent", agentID, "seq", r.GetSeq(), "class", r.GetClass().String())
		return nil
	}
}

func (s *BadgerStore) storeAlert(w *txnWriter, agentID string, seq uint64, a *api.Alert, st *ingestStats) error {
	if a == nil {
		return nil
	}
	a = proto.CloneOf(a)
	if a.GetId() == "" {
		a.Id = fmt.Sprintf("%s-%d", agentID, seq) // keyless alerts still need an address
	}
	k := key(prefixAlert, a.GetId())
	old, err := getAlert(w.txn, k)
	switch {
	case errors.Is(err, ErrNotFound):
		st.alertsNew++
	case err != nil:
		return err
	default:
		mergeAlert(a, old)
		st.alertsUpdated++
	}
	v, err := proto.Marshal(a)
	if err != nil {
		return fmt.Errorf("marshal alert %s: %w", a.GetId(), err)
	}
	return w.set(badger.NewEntry(k, v))
}

// mergeAlert makes the incoming repeat a of an alert keep what the stored one
// knew: updates can arrive out of order after an outage.
func mergeAlert(a, old *api.Alert) {
	a.Count = max(a.GetCount(), old.GetCount())
	if old.GetLastSeen() != nil && (a.GetLastSeen() == nil || old.GetLastSeen().AsTime().After(a.GetLastSeen().AsTime())) {
		a.LastSeen = old.GetLastSeen()
	}
	if old.GetFirstSeen() != nil && (a.GetFirstSeen() == nil || old.GetFirstSeen().AsTime().Before(a.GetFirstSeen().AsTime())) {
		a.FirstSeen = old.GetFirstSeen()
	}
	if len(a.GetEvidence()) == 0 {
		a.Evidence = old.GetEvidence()
	}
}

// eventHeader precedes each stored event so queries can filter on time, kind
// and node without unmarshalling the event: version(1) time-ns(8) kind(4)
// node-len(2) node. It is appended to h.
func eventHeader(h []byte, e *api.Event) []byte {
	h = append(h, 1)
	h = binary.BigEndian.AppendUint64(h, uint64(e.GetTime().AsTime().UnixNano()))
	h = binary.BigEndian.AppendUint32(h, uint32(e.GetKind()))
	node := eventNode(e)
	h = binary.BigEndian.AppendUint16(h, uint16(len(node)))
	return append(h, node...)
}

// eventNode is the node name as the header holds it.
func eventNode(e *api.Event) string {
	node := e.GetNode()
	if len(node) > 0xffff {
		node = node[:0xffff]
	}
	return node
}

type parsedHeader struct {
	time time.Time
	kind api.EventKind
	node string
	body []byte
}

func parseEventHeader(v []byte) (parsedHeader, error) {
	if len(v) < 15 || v[0] != 1 {
		return parsedHeader{}, errors.New("bad event header")
	}
	n := int(binary.BigEndian.Uint16(v[13:15]))
	if len(v) < 15+n {
		return parsedHeader{}, errors.New("short event header")
	}
	return parsedHeader{
		time: time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))),
		kind: api.EventKind(binary.BigEndian.Uint32(v[9:13])),
		node: string(v[15 : 15+n]),
		body: v[15+n:],
	}, nil
}

func (s *BadgerStore) storeEvent(w *txnWriter, e *api.Event, st *ingestStats) error {
	if e == nil {
		return nil
	}
	// Header and body go into one slice carved from the batch's slab: one
	// allocation per batch instead of three per event.
	size := proto.Size(e)
	v := eventHeader(w.alloc(15+len(eventNode(e))+size), e)
	v, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(v, e)
	if err != nil {
		return fmt.Errorf("marshal event: %w", err)
	}
	if err := w.set(badger.NewEntry(eventKey(w.head), v)); err != nil {
		return err
	}
	w.head++
	st.events++
	for w.head-w.tail > uint64(s.cfg.MaxEvents) {
		if err := w.del(eventKey(w.tail)); err != nil {
			return err
		}
		w.tail++
	}
	return nil
}

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
	// slab holds the batch's event values until they are committed.
	slab []byte
	// valueLogBytes sums the values long enough for the value log.
	valueLogBytes int64
}

// slabSize is what alloc carves event values from: a batch of 512 events
// of ~900 bytes takes two.
const slabSize = 256 << 10

// alloc returns an empty slice with capacity n from the slab. Badger keeps
// a reference to each value until the commit, so the slab is not reused.
func (w *txnWriter) alloc(n int) []byte {
	if cap(w.slab)-len(w.slab) < n {
		w.slab = make([]byte, 0, max(n, slabSize))
	}
	l := len(w.slab)
	w.slab = w.slab[:l+n]
	return w.slab[l : l : l+n]
}

func (w *txnWriter) touch(r snapRef) {
	if !slices.Contains(w.touched, r) {
		w.touched = append(w.touched, r)
	}
}

func (w *txnWriter) set(e *badger.Entry) error {
	if len(e.Value) >= valueThreshold {
		w.valueLogBytes += int64(len(e.Value))
	}
	err := w.txn.SetEntry(e)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.commit(); err != nil {
			return err
		}
		w.txn = w.s.db.NewTransaction(true)
		err = w.txn.SetEntry(e)
	}
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	return nil
}

func (w *txnWriter) del(k []byte) error {
	err := w.txn.Delete(k)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.commit(); err != nil {
			return err
		}
		w.txn = w.s.db.NewTransaction(true)
		err = w.txn.Delete(k)
	}
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	return nil
}

// commit writes the ring state into the current transaction and commits it.
// The in-memory ring moves only once the commit is durable.
func (w *txnWriter) commit() error {
	v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, w.tail), w.head)
	if err := w.txn.Set(key(keyRingState), v); err != nil {
		return fmt.Errorf("ingest: ring state: %w", err)
	}
	if err := w.txn.Commit(); err != nil {
		return fmt.Errorf("ingest: commit: %w", err)
	}
	w.s.evHead, w.s.evTail = w.head, w.tail
	// Sizes of values in the value log are approximate: never below zero.
	w.s.pendingBytes = max(0, w.pendingBytes)
	return nil
}

func (s *BadgerStore) loadAgent(txn *badger.Txn, id string) (agentRecord, error) {
	var a agentRecord
	item, err := txn.Get(agentKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return a, nil
	}
	if err != nil {
		return a, fmt.Errorf("load agent %q: %w", id, err)
	}
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &a) }); err != nil {
		return a, fmt.Errorf("load agent %q: %w", id, err)
	}
	return a, nil
}

// Alerts scans every alert. Alerts are de-duplicated on the nodes, so even a
// busy site holds thousands, not millions; a fleet store would index.
func (s *BadgerStore) Alerts(ctx context.Context, q AlertQuery) ([]*api.Alert, error) {
	var out []*api.Alert
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: key(prefixAlert)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			a := &api.Alert{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, a) }); err != nil {
				return fmt.Errorf("alert %q: %w", it.Item().Key(), err)
			}
			if alertMatches(a, q) {
				out = append(out, a)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	slices.SortFunc(out, func(x, y *api.Alert) int {
		if c := y.GetLastSeen().AsTime().Compare(x.GetLastSeen().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(x.GetId(), y.GetId())
	})
	if l := effectiveLimit(q.Limit); len(out) > l {
		out = out[:l]
	}
	return out, nil
}

// Alert returns one alert.
func (s *BadgerStore) Alert(ctx context.Context, id string) (*api.Alert, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var a *api.Alert
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		a, err = getAlert(txn, key(prefixAlert, id))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("alert %q: %w", id, err)
	}
	return a, nil
}

func getAlert(txn *badger.Txn, key []byte) (*api.Alert, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	a := &api.Alert{}
	if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, a) }); err != nil {
		return nil, fmt.Errorf("decode alert: %w", err)
	}
	return a, nil
}

// Agents lists every agent that has uploaded.
func (s *BadgerStore) Agents(ctx context.Context) ([]AgentInfo, error) {
	var out []AgentInfo
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: key(prefixAgent)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			info, err := readAgent(it.Item())
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// Events walks the ring newest first.
func (s *BadgerStore) Events(ctx context.Context, q EventQuery) ([]*api.Event, error) {
	limit := effectiveLimit(q.Limit)
	var out []*api.Event
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: key(prefixEvent), Reverse: true})
		defer it.Close()
		// A reverse iterator must seek past the last key of the prefix.
		for it.Seek(key(prefixEvent, "\xff")); it.Valid() && len(out) < limit; it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			err := it.Item().Value(func(v []byte) error {
				h, err := parseEventHeader(v)
				if err != nil {
					return err
				}
				if (q.Node != "" && h.node != q.Node) ||
					(q.Kind != api.EventKind_EVENT_KIND_UNSPECIFIED && h.kind != q.Kind) ||
					(!q.Since.IsZero() && h.time.Before(q.Since)) {
					return nil
				}
				e := &api.Event{}
				if err := proto.Unmarshal(h.body, e); err != nil {
					return err
				}
				out = append(out, e)
				return nil
			})
			if err != nil {
				return fmt.Errorf("event %x: %w", it.Item().Key(), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
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

// agentPart ends the agent ID with a NUL so that agent "a" never prefixes "ab".
func agentPart(prefix, agentID string) []byte {
	k := make([]byte, 0, len(prefix)+len(agentID)+1+17+8)
	k = append(k, prefix...)
	k = append(k, agentID...)
	return append(k, 0)
}

func seenKey(agentID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(agentPart(prefixSeen, agentID), seq)
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

// badgerLogger sends Badger's log to slog; Info and Debug are dropped
// because Badger is chatty at those levels.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error("badger", "detail", strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger", "detail", strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

// readAgent decodes one agent record (its key under prefixAgent).
func readAgent(item *badger.Item) (AgentInfo, error) {
	id := string(bytes.TrimPrefix(item.Key(), key(prefixAgent)))
	var rec agentRecord
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) }); err != nil {
		return AgentInfo{}, fmt.Errorf("agent %q: %w", id, err)
	}
	info := AgentInfo{ID: id, FirstSeen: rec.FirstSeen, LastSeen: rec.LastSeen, Records: rec.Records}
	if len(rec.Gaps) > 0 {
		info.Gaps = make(map[api.RecordClass]uint64, len(rec.Gaps))
		for name, n := range rec.Gaps {
			info.Gaps[api.RecordClass(api.RecordClass_value[name])] += n
		}
	}
	if len(rec.Health) > 0 {
		info.Health = &api.AgentHealth{}
		if err := proto.Unmarshal(rec.Health, info.Health); err != nil {
			return AgentInfo{}, fmt.Errorf("agent %q health: %w", id, err)
		}
	}
	return info, nil
}
