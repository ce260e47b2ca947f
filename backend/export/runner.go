package export

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/api"
)

// Record is one record in its kind's ingest order: exactly one of Alert,
// Finding (findings and vulnerabilities), Response, Event and Triage is set.
type Record struct {
	Seq     uint64
	Stored  time.Time
	Kind    Kind // "" is taken from the payload
	Alert   *api.Alert
	Finding *api.Finding
	// Resolved: the finding is gone from the newest snapshot (fixed, or
	// its object deleted); Finding is its last state.
	Resolved bool
	Response *ResponseAction
	Event    *api.Event
	Triage   *AlertTriage
}

// Source is the store as exporters read it: one ingest order per kind.
type Source interface {
	// RecordsAfter returns up to limit records of kind with Seq > after,
	// in order.
	RecordsAfter(ctx context.Context, kind Kind, after uint64, limit int) ([]Record, error)
	// LastSeq is the newest Seq of kind stored.
	LastSeq(kind Kind) uint64
}

// KV keeps exporters' state (cursors, dead letters) durably: the backend's
// Badger under its own prefix.
type KV interface {
	Get(ctx context.Context, key []byte) ([]byte, error) // nil, nil when absent
	Set(ctx context.Context, key, value []byte) error
	// Scan calls fn for each key under prefix, in key order, until fn
	// returns false.
	Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) bool) error
}

// Options are what every destination shares.
type Options struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
	Version    string                // product version in OCSF and CEF (default: the module's, else "dev")
	Hostname   string                // syslog HOSTNAME of alerts without a node
	Poll       time.Duration         // how often a caught-up exporter looks again (default 250ms)
	// PruneEvery is how often the ingest orders are cut behind the
	// exports (default 1m; needs a Source that is a Pruner).
	PruneEvery time.Duration
	// KeepUnfollowed is how many of the newest entries of a kind no export
	// follows are kept, for an export added later (default 100 000).
	KeepUnfollowed uint64
	Now            func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Version == "" {
		o.Version = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			o.Version = bi.Main.Version
		}
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = time.Minute
	}
	if o.KeepUnfollowed == 0 {
		o.KeepUnfollowed = 100_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Manager runs every configured destination.
type Manager struct {
	runners []*runner
	kv      KV
	src     Source
	opts    Options
}

// Pruner is a Source that can delete the ingest order entries every export
// has passed, so the orders stay bounded.
type Pruner interface {
	// PruneOrder deletes the entries of kind with Seq <= upTo, always
	// keeping the newest (it carries the order's last number across a
	// restart), and returns how many it deleted.
	PruneOrder(ctx context.Context, kind Kind, upTo uint64) (int, error)
}

// ErrUnknownDestination is returned for a name no export has.
var ErrUnknownDestination = errors.New("no export of that name")

// New prepares the exporters; secrets and TLS files are read now, so a
// missing file is an error at start.
func New(cfgs []Config, src Source, kv KV, o Options) (*Manager, error) {
	if err := ValidateAll(cfgs); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	met := newMetrics(o.Registerer)
	m := &Manager{kv: kv, src: src, opts: o}
	for _, c := range cfgs {
		c = c.withDefaults()
		s, err := newSink(c, o.Hostname, o.Version)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", c.Name, err)
		}
		minSev, _ := api.ParseSeverity(c.Filter.MinSeverity)
		if c.Filter.MinSeverity == "" {
			minSev = api.Severity_SEVERITY_UNSPECIFIED
		}
		r := &runner{cfg: c, src: src, kv: kv, sink: s, minSev: minSev, opts: o,
			log: o.Log.With("export", c.Name), met: met.forDestination(c.Name)}
		for _, k := range c.Filter.Kinds {
			r.streams = append(r.streams, &stream{kind: k})
		}
		if c.MaxPerSecond > 0 {
			r.limit = newLimiter(c.MaxPerSecond, o.Now)
		}
		m.runners = append(m.runners, r)
	}
	return m, nil
}

// Run exports until ctx is done; every exporter has stopped and saved its
// cursor when it returns.
func (m *Manager) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, r := range m.runners {
		g.Go(func() error { return r.run(ctx) })
	}
	if p, ok := m.src.(Pruner); ok {
		g.Go(func() error {
			for sleep(ctx, m.opts.PruneEvery) {
				// A failed prune leaves entries for the next one: logged,
				// never a reason to stop exporting.
				if err := m.prune(ctx, p); err != nil && ctx.Err() == nil {
					m.opts.Log.Warn("pruning the export ingest orders failed", "err", err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// prune cuts each kind's ingest order behind the slowest export that
// follows it: nothing an export has not confirmed is ever deleted. A kind
// no export follows keeps its newest KeepUnfollowed entries. The cursors
// of exports no longer configured do not count: a destination added (or
// added back) later starts at the oldest entry left.
func (m *Manager) prune(ctx context.Context, p Pruner) error {
	var errs []error
	for _, kind := range Kinds {
		head := m.src.LastSeq(kind)
		upTo, followed := head-min(head, m.opts.KeepUnfollowed), false
		for _, r := range m.runners {
			r.mu.Lock()
			for _, st := range r.streams {
				if st.kind != kind {
					continue
				}
				if !followed || st.cursor < upTo {
					upTo = st.cursor
				}
				followed = true
			}
			r.mu.Unlock()
		}
		if upTo == 0 {
			continue
		}
		n, err := p.PruneOrder(ctx, kind, upTo)
		if err != nil {
			errs = append(errs, fmt.Errorf("prune %s: %w", kind, err))
			continue
		}
		if n > 0 {
			m.opts.Log.Debug("pruned export ingest order", "kind", kind, "upTo", upTo, "entries", n)
		}
	}
	return errors.Join(errs...)
}

// Status describes each destination, in config order.
func (m *Manager) Status() []Status {
	out := make([]Status, 0, len(m.runners))
	for _, r := range m.runners {
		out = append(out, r.status())
	}
	return out
}

// DeadLetters lists up to limit records the destination name refused, oldest first.
func (m *Manager) DeadLetters(ctx context.Context, name string, limit int) ([]DeadLetter, error) {
	for _, r := range m.runners {
		if r.cfg.Name == name {
			return readDeadLetters(ctx, m.kv, name, limit)
		}
	}
	return nil, fmt.Errorf("export %q: %w", name, ErrUnknownDestination)
}

// Status is one destination's state for GET /api/v1/exports.
type Status struct {
	Name         string       `json:"name"`
	Type         string       `json:"type"`
	Format       string       `json:"format"`
	Target       string       `json:"target"`
	State        string       `json:"state"`  // starting, sending, caught-up, retrying
	Cursor       uint64       `json:"cursor"` // of the first kind sent (alerts unless filter.kinds leaves them out)
	Head         uint64       `json:"head"`
	LagRecords   uint64       `json:"lagRecords"` // all kinds
	Kinds        []KindStatus `json:"kinds"`
	LagSeconds   float64      `json:"lagSeconds"`
	Sent         uint64       `json:"sent"`
	Skipped      uint64       `json:"skipped"`
	Failed       uint64       `json:"failed"`
	Resent       uint64       `json:"resent"`
	Lost         uint64       `json:"lost"` // dropped by the store (the event ring) before they were sent
	DeadLettered uint64       `json:"deadLettered"`
	LastError    string       `json:"lastError,omitempty"`
	LastErrorAt  time.Time    `json:"lastErrorAt,omitzero"`
	NextRetry    time.Time    `json:"nextRetry,omitzero"`
}

// KindStatus is one kind's ingest order as a destination follows it.
type KindStatus struct {
	Kind       Kind   `json:"kind"`
	Cursor     uint64 `json:"cursor"`
	Head       uint64 `json:"head"`
	LagRecords uint64 `json:"lagRecords"`
}

// DeadLetter is a record a destination refused.
type DeadLetter struct {
	Seq      uint64 `json:"seq"` // in its kind's ingest order
	Kind     Kind   `json:"kind"`
	RecordID string `json:"recordId"`
	// AlertID is RecordID for alerts (the field older clients read).
	AlertID string    `json:"alertId,omitempty"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	Record  string    `json:"record"` // the encoded record, at most 64 KiB
}

const maxDeadLetterRecord = 64 << 10

// Keys under the KV: x/<name>\x00c → the alerts' cursor,
// x/<name>\x00c<kind> → another kind's; x/<name>\x00d<seq BE64> → an
// alert's DeadLetter JSON, x/<name>\x00d<kind><seq BE64> → another kind's
// (kinds start with a letter, alert sequence numbers with a 0 byte far
// beyond any count reached).
func cursorKey(name string) []byte  { return append([]byte("x/"+name), 0, 'c') }
func deadPrefix(name string) []byte { return append([]byte("x/"+name), 0, 'd') }

func streamCursorKey(name string, k Kind) []byte {
	if k == KindAlerts {
		return cursorKey(name)
	}
	return append(cursorKey(name), k...)
}

func deadLetterKey(name string, k Kind, seq uint64) []byte {
	p := deadPrefix(name)
	if k != KindAlerts {
		p = append(p, k...)
	}
	return binary.BigEndian.AppendUint64(p, seq)
}

func readDeadLetters(ctx context.Context, kv KV, name string, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	out := []DeadLetter{}
	var decodeErr error
	err := kv.Scan(ctx, deadPrefix(name), func(_, v []byte) bool {
		var d DeadLetter
		if err := json.Unmarshal(v, &d); err != nil {
			decodeErr = fmt.Errorf("dead letter: %w", err)
			return false
		}
		out = append(out, d)
		return len(out) < limit
	})
	return out, errors.Join(err, decodeErr)
}

// runner is one destination's loop.
type runner struct {
	cfg    Config
	src    Source
	kv     KV
	sink   sink
	minSev api.Severity
	limit  *limiter
	opts   Options
	log    *slog.Logger
	met    destMetrics

	mu sync.Mutex
	st Status
	// streams follow the kinds filter.kinds selects, each its own ingest
	// order. Only run's goroutine touches their positions; status reads
	// the saved cursors under mu.
	streams []*stream
}

// stream is one kind's position: pos is the last Seq handed to the sink;
// cursor the last one known delivered (saved, read by status under
// runner.mu); pending the batches written but not yet confirmed, oldest
// first.
type stream struct {
	kind        Kind
	pos, cursor uint64
	pending     []pendingBatch
	lagSeconds  float64
}

type pendingBatch struct {
	last uint64
	at   time.Time
}

func (r *runner) status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.st
	s.Name, s.Type, s.Format, s.Target = r.cfg.Name, r.cfg.Type, r.cfg.Format, r.cfg.target()
	s.Kinds = make([]KindStatus, 0, len(r.streams))
	s.LagRecords, s.LagSeconds = 0, 0
	for i, st := range r.streams {
		head := r.src.LastSeq(st.kind)
		ks := KindStatus{Kind: st.kind, Cursor: st.cursor, Head: head, LagRecords: head - min(head, st.cursor)}
		if i == 0 {
			s.Cursor, s.Head = ks.Cursor, ks.Head
		}
		s.LagRecords += ks.LagRecords
		s.LagSeconds = max(s.LagSeconds, st.lagSeconds)
		s.Kinds = append(s.Kinds, ks)
	}
	return s
}

func (r *runner) update(f func(*Status)) {
	r.mu.Lock()
	f(&r.st)
	r.mu.Unlock()
}

func (r *runner) run(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, r.sink.close()) }()
	// On the way out, what was written but not confirmed will be sent
	// again by the next start: count it as resent.
	defer r.rewind()
	r.update(func(s *Status) { s.State = "starting" })
	for _, st := range r.streams {
		v, err := r.kv.Get(ctx, streamCursorKey(r.cfg.Name, st.kind))
		if err != nil {
			return fmt.Errorf("export %s: read %s cursor: %w", r.cfg.Name, st.kind, err)
		}
		if len(v) == 8 {
			r.mu.Lock()
			st.cursor = binary.BigEndian.Uint64(v)
			r.mu.Unlock()
		}
		st.pos = st.cursor
		r.log.Info("export starting", "target", r.cfg.target(), "format", r.cfg.Format, "kind", st.kind, "cursor", st.cursor)
	}
	attempt := 0
	for {
		if ctx.Err() != nil {
			return r.saveCursors(context.WithoutCancel(ctx))
		}
		sent, err := r.round(ctx)
		if err != nil && ctx.Err() == nil {
			attempt++
			wait := backoff(r.cfg.Retry.Initial.Std(), r.cfg.Retry.Max.Std(), attempt)
			r.met.failed.Inc()
			r.log.Warn("export failed, retrying", "err", err, "attempt", attempt, "retryIn", wait)
			now := r.opts.Now()
			r.update(func(s *Status) {
				s.State, s.Failed, s.LastError, s.LastErrorAt, s.NextRetry = "retrying", s.Failed+1, err.Error(), now, now.Add(wait)
			})
			// Whatever was written but not confirmed goes again.
			r.rewind()
			if !sleep(ctx, wait) {
				return r.saveCursors(context.WithoutCancel(ctx))
			}
			continue
		}
		attempt = 0
		if !sent && !sleep(ctx, r.opts.Poll) {
			return r.saveCursors(context.WithoutCancel(ctx))
		}
	}
}

// round reads the next batch of each kind, sends it, confirms what can be
// confirmed and reports whether there was anything to send.
func (r *runner) round(ctx context.Context) (bool, error) {
	if err := r.confirm(ctx); err != nil {
		return false, err
	}
	sentAny := false
	for _, st := range r.streams {
		sent, err := r.roundOf(ctx, st)
		if err != nil {
			return false, err
		}
		sentAny = sentAny || sent
	}
	if !sentAny {
		r.update(func(s *Status) { s.State, s.NextRetry = "caught-up", time.Time{} })
	}
	return sentAny, nil
}

// roundOf sends the next batch of one kind.
func (r *runner) roundOf(ctx context.Context, st *stream) (bool, error) {
	recs, err := r.src.RecordsAfter(ctx, st.kind, st.pos, r.cfg.BatchSize)
	if err != nil {
		return false, fmt.Errorf("read store (%s): %w", st.kind, err)
	}
	r.setLag(st, recs)
	if len(recs) == 0 {
		return false, nil
	}
	// A gap before the first record: the store dropped records this
	// destination had not sent yet (the event ring is bounded by size).
	if first := recs[0].Seq; st.pos > 0 && first > st.pos+1 {
		lost := first - st.pos - 1
		r.met.lost.Add(float64(lost))
		r.update(func(s *Status) { s.Lost += lost })
		r.log.Warn("records dropped by the store before they were exported", "kind", st.kind, "records", lost, "after", st.pos)
	}
	r.update(func(s *Status) { s.State, s.NextRetry = "sending", time.Time{} })
	msgs := make([]message, 0, len(recs))
	var skipped uint64
	for _, rec := range recs {
		rec.Kind = st.kind
		head := rec.head()
		if !r.cfg.Filter.match(st.kind, head, r.minSev) {
			skipped++
			continue
		}
		body, err := encodeRecord(r.cfg.Format, rec, r.opts.Version)
		if errors.Is(err, errNotCarried) {
			skipped++
			continue
		}
		if err != nil {
			if err := r.deadLetter(ctx, message{seq: rec.Seq, kind: st.kind, head: head}, err.Error()); err != nil {
				return false, err
			}
			continue
		}
		msgs = append(msgs, message{seq: rec.Seq, kind: st.kind, head: head, body: body})
	}
	r.met.skipped.Add(float64(skipped))
	r.update(func(s *Status) { s.Skipped += skipped })
	for len(msgs) > 0 {
		if r.limit != nil {
			if err := r.limit.wait(ctx, len(msgs)); err != nil {
				return false, err
			}
		}
		n, err := r.sink.send(ctx, msgs)
		r.delivered(msgs[:n])
		if n > 0 {
			// Everything up to the last record delivered is done (the
			// records between were skipped or dead-lettered): a failure
			// after it must not send them again.
			r.advance(st, msgs[n-1].seq)
		}
		var rej *RejectedError
		if errors.As(err, &rej) && n < len(msgs) {
			if err := r.deadLetter(ctx, msgs[n], rej.Reason); err != nil {
				return false, err
			}
			r.advance(st, msgs[n].seq)
			msgs = msgs[n+1:]
			continue
		}
		if err != nil {
			return false, errors.Join(err, r.confirm(ctx))
		}
		msgs = nil
	}
	r.advance(st, recs[len(recs)-1].Seq)
	return true, r.confirm(ctx)
}

func (r *runner) delivered(ms []message) {
	if len(ms) == 0 {
		return
	}
	r.met.sent.Add(float64(len(ms)))
	r.update(func(s *Status) { s.Sent += uint64(len(ms)) })
}

// advance records that everything of st's kind up to seq was handed to
// the sink.
func (r *runner) advance(st *stream, seq uint64) {
	if seq <= st.pos {
		return
	}
	st.pos = seq
	st.pending = append(st.pending, pendingBatch{last: seq, at: r.opts.Now()})
}

// rewind goes back to the last confirmed record of every kind after a
// failure: what was written since is sent again (the duplicates
// at-least-once allows).
func (r *runner) rewind() {
	for _, st := range r.streams {
		if st.pos > st.cursor {
			n := st.pos - st.cursor
			r.met.resent.Add(float64(n))
			r.update(func(s *Status) { s.Resent += n })
		}
		st.pos, st.pending = st.cursor, nil
	}
}

// confirm moves the durable cursors over the batches the sink counts as
// delivered.
func (r *runner) confirm(ctx context.Context) error {
	waiting := false
	for _, st := range r.streams {
		waiting = waiting || len(st.pending) > 0
	}
	if !waiting {
		return nil
	}
	if err := r.sink.check(); err != nil {
		return err
	}
	cutoff := r.opts.Now().Add(-r.sink.confirmAfter())
	for _, st := range r.streams {
		i := 0
		for i < len(st.pending) && !st.pending[i].at.After(cutoff) {
			i++
		}
		if i == 0 {
			continue
		}
		r.mu.Lock()
		st.cursor = st.pending[i-1].last
		r.mu.Unlock()
		st.pending = st.pending[i:]
		if err := r.saveCursor(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) saveCursors(ctx context.Context) error {
	var errs []error
	for _, st := range r.streams {
		errs = append(errs, r.saveCursor(ctx, st))
	}
	return errors.Join(errs...)
}

func (r *runner) saveCursor(ctx context.Context, st *stream) error {
	if err := r.kv.Set(ctx, streamCursorKey(r.cfg.Name, st.kind), binary.BigEndian.AppendUint64(nil, st.cursor)); err != nil {
		return fmt.Errorf("export %s: save %s cursor: %w", r.cfg.Name, st.kind, err)
	}
	r.setLagRecords()
	return nil
}

// setLagRecords sets the lag metric: records stored, of every kind sent,
// not yet confirmed delivered.
func (r *runner) setLagRecords() {
	var lag uint64
	for _, st := range r.streams {
		head := r.src.LastSeq(st.kind)
		lag += head - min(head, st.cursor)
	}
	r.met.lagRecords.Set(float64(lag))
}

// setLag notes the age of st's oldest record not yet sent; the metric is
// the oldest of all kinds.
func (r *runner) setLag(st *stream, next []Record) {
	lag := 0.0
	if len(next) > 0 {
		lag = max(0, r.opts.Now().Sub(next[0].Stored).Seconds())
	}
	r.mu.Lock()
	st.lagSeconds = lag
	worst := 0.0
	for _, o := range r.streams {
		worst = max(worst, o.lagSeconds)
	}
	r.mu.Unlock()
	r.met.lagSeconds.Set(worst)
	r.setLagRecords()
}

func (r *runner) deadLetter(ctx context.Context, m message, reason string) error {
	rec := m.body
	if len(rec) > maxDeadLetterRecord {
		rec = rec[:maxDeadLetterRecord]
	}
	d := DeadLetter{Seq: m.seq, Kind: m.kind, RecordID: m.head.GetId(), Reason: reason, At: r.opts.Now().UTC(), Record: string(rec)}
	if m.kind == KindAlerts {
		d.AlertID = d.RecordID
	}
	v, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	if err := r.kv.Set(ctx, deadLetterKey(r.cfg.Name, m.kind, m.seq), v); err != nil {
		return fmt.Errorf("export %s: dead letter: %w", r.cfg.Name, err)
	}
	r.met.dead.Inc()
	r.update(func(s *Status) { s.DeadLettered++ })
	r.log.Warn("record dead-lettered", "kind", m.kind, "id", m.head.GetId(), "seq", m.seq, "reason", reason)
	return nil
}

// backoff is the wait before attempt n (1, 2, ...): exponential from
// initial, capped at max, with equal jitter (half fixed, half random) so
// many backends do not retry in step.
func backoff(initial, maxWait time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	half := d / 2
	return half + rand.N(half+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// limiter is a token bucket: rate records per second, a burst of one
// second's worth.
type limiter struct {
	rate   float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newLimiter(rate float64, now func() time.Time) *limiter {
	return &limiter{rate: rate, tokens: max(1, rate), last: now(), now: now}
}

func (l *limiter) wait(ctx context.Context, n int) error {
	burst := max(1, l.rate)
	for {
		now := l.now()
		l.tokens = min(burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		need := min(float64(n), burst)
		if l.tokens >= need {
			l.tokens -= float64(n) // may go negative: a large batch borrows ahead
			return nil
		}
		if !sleep(ctx, time.Duration((need-l.tokens)/l.rate*float64(time.Second))) {
			return ctx.Err()
		}
	}
}
