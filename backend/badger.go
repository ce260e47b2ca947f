package backend

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
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
	// Inventory state (inventory.go), guarded by mu: the next snapshot
	// generation, the bytes of pending chunks, and the current findings per
	// cluster per severity name (for the gauges).
	nextGen      uint64
	pendingBytes int64
	severities   map[string]map[string]int
}

var _ Store = (*BadgerStore)(nil)

// Key layout. Every key starts with a one-byte kind and a slash; the
// inventory's keys are described in inventory.go.
const (
	prefixSeen   = "s/" // s/<agent>\x00[<spool ID>\x00]<seq BE64> → empty, with TTL
	prefixGap    = "p/" // p/<agent>\x00<class BE32><first><last><count BE64> → empty, with TTL
	prefixAlert  = "a/" // a/<alert id> → api.Alert
	prefixEvent  = "e/" // e/<ring pos of its first event BE64> → event page
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
	if cfg.eventSegmentBytes <= 0 {
		cfg.eventSegmentBytes = defaultEventSegmentMax
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Badger's defaults need ~600 MB; this profile stays well under 100 MB.
	opts := badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerLogger{log: log.With("component", "badger")}).
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
	newestEnd, err := s.loadPages()
	if err == nil {
		s.events, err = openEventLog(filepath.Join(cfg.Dir, eventsDirName), cfg.eventSegmentBytes, s.pages, newestEnd)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store %s: %w", cfg.Dir, err)
	}
	if err := s.openInventory(); err != nil {
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
	w := &txnWriter{s: s, txn: s.db.NewTransaction(true), head: s.evHead, tail: s.evTail, pendingBytes: s.pendingBytes,
		inBatch: make(map[uint64]struct{}, len(b.GetRecords())), page: s.pageBuf[:0]}
	defer func() { w.txn.Discard(); s.pageBuf = w.page[:0] }()

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

// Event pages. The events of one batch are stored as one page in a segment
// file (eventlog.go): version 2, then per event its length (BE32) and
// eventHeader + body. A Badger value starting with version 1 is a single
// inline event (the earlier layout, still read). One index key per batch
// instead of one value per event is 512 times fewer keys to write, compact
// and delete, and no event byte is rewritten by compaction.
const (
	pageVersion = 2
	// A page is cut at maxPageEvents events or maxPageBytes, so that it and
	// its events' markers always fit in one Badger transaction.
	maxPageEvents = 1024
	maxPageBytes  = 1 << 20
	// pageBufBytes is a page buffer's first capacity: a batch's page.
	pageBufBytes = 512 << 10
)

// storeEvent adds e to the batch's page; its marker is written with the page.
func (s *BadgerStore) storeEvent(w *txnWriter, e *api.Event, marker *badger.Entry, st *ingestStats) error {
	if w.pageN == 0 {
		if cap(w.page) == 0 {
			w.page = make([]byte, 0, pageBufBytes)
		}
		w.page = append(w.page[:0], pageVersion)
	}
	// The length is filled in after marshalling: no separate size pass.
	at := len(w.page)
	page := eventHeader(append(w.page, 0, 0, 0, 0), e)
	page, err := proto.MarshalOptions{}.MarshalAppend(page, e)
	if err != nil {
		return fmt.Errorf("marshal event: %w", err)
	}
	n := len(page) - at - 4
	if w.pageN > 0 && (w.pageN >= maxPageEvents || len(page) > maxPageBytes) {
		// Full: this event starts the next page, moved to the front of the
		// same buffer once the page before it is written.
		w.page = page[:at]
		if err := w.flushPage(); err != nil {
			return err
		}
		page[0] = pageVersion
		binary.BigEndian.PutUint32(page[1:], uint32(n))
		copy(page[5:], page[at+4:at+4+n])
		page = page[:5+n]
	} else {
		binary.BigEndian.PutUint32(page[at:], uint32(n))
	}
	w.page = page
	w.pageN++
	w.pageMarkers = append(w.pageMarkers, marker)
	st.events++
	return nil
}

// eachPageEvent calls fn with the stored form (eventHeader + body) of each
// event of page v, oldest first.
func eachPageEvent(v []byte, fn func(rec []byte) error) error {
	if len(v) == 0 {
		return errors.New("empty event value")
	}
	switch v[0] {
	case 1: // a single event
		return fn(v)
	case pageVersion:
	default:
		return fmt.Errorf("event page version %d", v[0])
	}
	for v = v[1:]; len(v) > 0; {
		if len(v) < 4 || int(binary.BigEndian.Uint32(v)) > len(v)-4 {
			return errors.New("truncated event page")
		}
		n := int(binary.BigEndian.Uint32(v))
		if err := fn(v[4 : 4+n]); err != nil {
			return err
		}
		v = v[4+n:]
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
		if err := w.commit(); err != nil {
			return err
		}
		w.txn = w.s.db.NewTransaction(true)
		w.count, w.size = 0, 0
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

// set adds e to the transaction, committing first if it is full. A page
// waiting in the writer is not in the transaction, so a commit here never
// separates an event from its marker.
func (w *txnWriter) set(e *badger.Entry) error {
	err := w.txn.SetEntry(e)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.commit(); err != nil {
			return err
		}
		w.txn = w.s.db.NewTransaction(true)
		w.count, w.size = 0, 0
		err = w.txn.SetEntry(e)
	}
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	w.count++
	w.size += entrySize(e)
	return nil
}

func (w *txnWriter) del(k []byte) error {
	err := w.txn.Delete(k)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.commit(); err != nil {
			return err
		}
		w.txn = w.s.db.NewTransaction(true)
		w.count, w.size = 0, 0
		err = w.txn.Delete(k)
	}
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	w.count++
	w.size += entrySize(&badger.Entry{Key: k})
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

// Events walks the ring newest first. Only the newest MaxEvents are
// visible: the ring drops whole pages, so it may hold up to a page more.
func (s *BadgerStore) Events(ctx context.Context, q EventQuery) ([]*api.Event, error) {
	limit := effectiveLimit(q.Limit)
	var out []*api.Event
	pages := &pageReader{dir: filepath.Join(s.cfg.Dir, eventsDirName)}
	defer pages.close()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: key(prefixEvent), Reverse: true})
		defer it.Close()
		var oldest uint64 // positions below this are beyond MaxEvents
		newest := true
		// A reverse iterator must seek past the last key of the prefix.
		for it.Seek(key(prefixEvent, "\xff")); it.Valid() && len(out) < limit; it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.Item().Key()
			if len(k) != len(prefixEvent)+8 {
				return fmt.Errorf("event key %x: bad length", k)
			}
			first := binary.BigEndian.Uint64(k[len(prefixEvent):])
			err := it.Item().Value(func(v []byte) error {
				if len(v) > 0 && v[0] == locVersion {
					loc, err := decodePageLocation(v)
					if err != nil {
						return err
					}
					if v, err = pages.read(loc); err != nil {
						return err
					}
				}
				var recs [][]byte
				if err := eachPageEvent(v, func(rec []byte) error { recs = append(recs, rec); return nil }); err != nil {
					return err
				}
				if newest {
					if end := first + uint64(len(recs)); end > uint64(s.cfg.MaxEvents) {
						oldest = end - uint64(s.cfg.MaxEvents)
					}
					newest = false
				}
				for i := len(recs) - 1; i >= 0 && len(out) < limit; i-- {
					if first+uint64(i) < oldest {
						return nil
					}
					h, err := parseEventHeader(recs[i])
					if err != nil {
						return err
					}
					if (q.Node != "" && h.node != q.Node) ||
						(q.Kind != api.EventKind_EVENT_KIND_UNSPECIFIED && h.kind != q.Kind) ||
						(!q.Since.IsZero() && h.time.Before(q.Since)) {
						continue
					}
					e := &api.Event{}
					if err := proto.Unmarshal(h.body, e); err != nil {
						return err
					}
					out = append(out, e)
				}
				return nil
			})
			if errors.Is(err, fs.ErrNotExist) {
				break // the ring moved past this segment while we read
			}
			if err != nil {
				return fmt.Errorf("event page %x: %w", k, err)
			}
			if first < oldest {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// loadPages lists the stored event pages, oldest first, and returns where
// the newest one ends in its segment.
func (s *BadgerStore) loadPages() (newestEnd uint64, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: key(prefixEvent)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefixEvent)+8 {
				return fmt.Errorf("event key %x: bad length", k)
			}
			p := pageRef{first: binary.BigEndian.Uint64(k[len(prefixEvent):])}
			if err := it.Item().Value(func(v []byte) error {
				if len(v) == 0 || v[0] != locVersion {
					return nil // an inline event of the earlier layout
				}
				loc, err := decodePageLocation(v)
				if err != nil {
					return err
				}
				p.seg, newestEnd = loc.seg, loc.off+uint64(loc.len)
				return nil
			}); err != nil {
				return fmt.Errorf("event page %x: %w", k, err)
			}
			s.pages = append(s.pages, p)
		}
		return nil
	})
	return newestEnd, err
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
