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

// Record is one alert in the store's ingest order.
type Record struct {
	Seq    uint64
	Stored time.Time
	Alert  *api.Alert
}

// Source is the store as exporters read it.
type Source interface {
	// AlertsAfter returns up to limit records with Seq > after, in order.
	AlertsAfter(ctx context.Context, after uint64, limit int) ([]Record, error)
	// LastAlertSeq is the newest Seq stored.
	LastAlertSeq() uint64
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
	Now        func() time.Time
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
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Manager runs every configured destination.
type Manager struct {
	runners []*runner
	kv      KV
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
	m := &Manager{kv: kv}
	for _, c := range cfgs {
		c = c.withDefaults()
		s, err := newSink(c, o.Hostname, o.Version)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", c.Name, err)
		}
		enc, err := encoderFor(c.Format)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", c.Name, err)
		}
		minSev, _ := api.ParseSeverity(c.Filter.MinSeverity)
		if c.Filter.MinSeverity == "" {
			minSev = api.Severity_SEVERITY_UNSPECIFIED
		}
		r := &runner{cfg: c, src: src, kv: kv, sink: s, enc: enc, minSev: minSev, opts: o,
			log: o.Log.With("export", c.Name), met: met.forDestination(c.Name)}
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
	return g.Wait()
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
	Name         string    `json:"name"`
	Type         string    `json:"type"`
	Format       string    `json:"format"`
	Target       string    `json:"target"`
	State        string    `json:"state"` // starting, sending, caught-up, retrying
	Cursor       uint64    `json:"cursor"`
	Head         uint64    `json:"head"`
	LagRecords   uint64    `json:"lagRecords"`
	LagSeconds   float64   `json:"lagSeconds"`
	Sent         uint64    `json:"sent"`
	Skipped      uint64    `json:"skipped"`
	Failed       uint64    `json:"failed"`
	Resent       uint64    `json:"resent"`
	DeadLettered uint64    `json:"deadLettered"`
	LastError    string    `json:"lastError,omitempty"`
	LastErrorAt  time.Time `json:"lastErrorAt,omitzero"`
	NextRetry    time.Time `json:"nextRetry,omitzero"`
}

// DeadLetter is a record a destination refused.
type DeadLetter struct {
	Seq     uint64    `json:"seq"`
	AlertID string    `json:"alertId"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	Record  string    `json:"record"` // the encoded record, at most 64 KiB
}

const maxDeadLetterRecord = 64 << 10

// Keys under the KV: x/<name>\x00c → cursor; x/<name>\x00d<seq BE64> → DeadLetter JSON.
func cursorKey(name string) []byte  { return append([]byte("x/"+name), 0, 'c') }
func deadPrefix(name string) []byte { return append([]byte("x/"+name), 0, 'd') }

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
	enc    encoder
	minSev api.Severity
	limit  *limiter
	opts   Options
	log    *slog.Logger
	met    destMetrics

	mu sync.Mutex
	st Status
	// pos is the last Seq handed to the sink; cursor the last one known
	// delivered (saved); pending the batches written but not yet
	// confirmed, oldest first.
	pos, cursor uint64
	pending     []pendingBatch
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
	s.Cursor, s.Head = r.cursor, r.src.LastAlertSeq()
	s.LagRecords = s.Head - min(s.Head, s.Cursor)
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
	v, err := r.kv.Get(ctx, cursorKey(r.cfg.Name))
	if err != nil {
		return fmt.Errorf("export %s: read cursor: %w", r.cfg.Name, err)
	}
	if len(v) == 8 {
		r.cursor = binary.BigEndian.Uint64(v)
	}
	r.pos = r.cursor
	r.log.Info("export starting", "target", r.cfg.target(), "format", r.cfg.Format, "cursor", r.cursor)
	attempt := 0
	for {
		if ctx.Err() != nil {
			return r.saveCursor(context.WithoutCancel(ctx))
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
				return r.saveCursor(context.WithoutCancel(ctx))
			}
			continue
		}
		attempt = 0
		if !sent && !sleep(ctx, r.opts.Poll) {
			return r.saveCursor(context.WithoutCancel(ctx))
		}
	}
}

// round reads the next batch, sends it, confirms what can be confirmed and
// reports whether there was anything to send.
func (r *runner) round(ctx context.Context) (bool, error) {
	if err := r.confirm(ctx); err != nil {
		return false, err
	}
	recs, err := r.src.AlertsAfter(ctx, r.pos, r.cfg.BatchSize)
	if err != nil {
		return false, fmt.Errorf("read store: %w", err)
	}
	r.setLag(recs)
	if len(recs) == 0 {
		r.update(func(s *Status) { s.State, s.NextRetry = "caught-up", time.Time{} })
		return false, nil
	}
	r.update(func(s *Status) { s.State, s.NextRetry = "sending", time.Time{} })
	msgs := make([]message, 0, len(recs))
	var skipped uint64
	for _, rec := range recs {
		if !r.cfg.Filter.match(rec.Alert, r.minSev) {
			skipped++
			continue
		}
		body, err := r.enc(rec.Alert, r.opts.Version)
		if err != nil {
			if err := r.deadLetter(ctx, message{seq: rec.Seq, alert: rec.Alert}, err.Error()); err != nil {
				return false, err
			}
			continue
		}
		msgs = append(msgs, message{seq: rec.Seq, alert: rec.Alert, body: body})
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
			r.advance(msgs[n-1].seq)
		}
		var rej *RejectedError
		if errors.As(err, &rej) && n < len(msgs) {
			if err := r.deadLetter(ctx, msgs[n], rej.Reason); err != nil {
				return false, err
			}
			r.advance(msgs[n].seq)
			msgs = msgs[n+1:]
			continue
		}
		if err != nil {
			return false, errors.Join(err, r.confirm(ctx))
		}
		msgs = nil
	}
	r.advance(recs[len(recs)-1].Seq)
	return true, r.confirm(ctx)
}

func (r *runner) delivered(ms []message) {
	if len(ms) == 0 {
		return
	}
	r.met.sent.Add(float64(len(ms)))
	r.update(func(s *Status) { s.Sent += uint64(len(ms)) })
}

// advance records that everything up to seq was handed to the sink.
func (r *runner) advance(seq uint64) {
	if seq <= r.pos {
		return
	}
	r.pos = seq
	r.pending = append(r.pending, pendingBatch{last: seq, at: r.opts.Now()})
}

// rewind goes back to the last confirmed record after a failure: what was
// written since is sent again (the duplicates at-least-once allows).
func (r *runner) rewind() {
	if r.pos > r.cursor {
		n := r.pos - r.cursor
		r.met.resent.Add(float64(n))
		r.update(func(s *Status) { s.Resent += n })
	}
	r.pos, r.pending = r.cursor, nil
}

// confirm moves the durable cursor over the batches the sink counts as
// delivered.
func (r *runner) confirm(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	if err := r.sink.check(); err != nil {
		return err
	}
	cutoff := r.opts.Now().Add(-r.sink.confirmAfter())
	i := 0
	for i < len(r.pending) && !r.pending[i].at.After(cutoff) {
		i++
	}
	if i == 0 {
		return nil
	}
	r.cursor = r.pending[i-1].last
	r.pending = r.pending[i:]
	return r.saveCursor(ctx)
}

func (r *runner) saveCursor(ctx context.Context) error {
	if err := r.kv.Set(ctx, cursorKey(r.cfg.Name), binary.BigEndian.AppendUint64(nil, r.cursor)); err != nil {
		return fmt.Errorf("export %s: save cursor: %w", r.cfg.Name, err)
	}
	head := r.src.LastAlertSeq()
	r.met.lagRecords.Set(float64(head - min(head, r.cursor)))
	return nil
}

func (r *runner) setLag(next []Record) {
	lag := 0.0
	if len(next) > 0 {
		lag = max(0, r.opts.Now().Sub(next[0].Stored).Seconds())
	}
	r.met.lagSeconds.Set(lag)
	head := r.src.LastAlertSeq()
	r.met.lagRecords.Set(float64(head - min(head, r.cursor)))
	r.update(func(s *Status) { s.LagSeconds = lag })
}

func (r *runner) deadLetter(ctx context.Context, m message, reason string) error {
	rec := m.body
	if len(rec) > maxDeadLetterRecord {
		rec = rec[:maxDeadLetterRecord]
	}
	d := DeadLetter{Seq: m.seq, AlertID: m.alert.GetId(), Reason: reason, At: r.opts.Now().UTC(), Record: string(rec)}
	v, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	if err := r.kv.Set(ctx, binary.BigEndian.AppendUint64(deadPrefix(r.cfg.Name), m.seq), v); err != nil {
		return fmt.Errorf("export %s: dead letter: %w", r.cfg.Name, err)
	}
	r.met.dead.Inc()
	r.update(func(s *Status) { s.DeadLettered++ })
	r.log.Warn("record dead-lettered", "alert", m.alert.GetId(), "seq", m.seq, "reason", reason)
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
