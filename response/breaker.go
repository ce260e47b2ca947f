package response

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// Rate limit defaults: a real attack on one node needs a handful of
// actions a minute; a rule that matches something ordinary fires far more.
const (
	DefaultMaxActionsPerMinute = 20
	DefaultCoolDown            = 10 * time.Minute
	maxActionsPerMinuteLimit   = 10000
)

// breakerWindow is the window MaxActionsPerMinute counts over.
const breakerWindow = time.Minute

// RateLimit is a policy's circuit breaker: when it would enforce more than
// MaxActionsPerMinute actions within a minute, it turns to audit for
// CoolDown, then enforces again.
type RateLimit struct {
	// MaxActionsPerMinute; 0 is DefaultMaxActionsPerMinute.
	MaxActionsPerMinute int `json:"maxActionsPerMinute,omitempty"`
	// CoolDown; 0 is DefaultCoolDown.
	CoolDown confval.Duration `json:"coolDown,omitempty"`
}

func (l RateLimit) validate() []string {
	var bad []string
	if l.MaxActionsPerMinute < 0 || l.MaxActionsPerMinute > maxActionsPerMinuteLimit {
		bad = append(bad, fmt.Sprintf("rateLimit.maxActionsPerMinute %d: want 1 to %d (0 or unset: %d)",
			l.MaxActionsPerMinute, maxActionsPerMinuteLimit, DefaultMaxActionsPerMinute))
	}
	if l.CoolDown < 0 {
		bad = append(bad, fmt.Sprintf("rateLimit.coolDown %s: want a positive duration (unset: %s)", l.CoolDown.Std(), DefaultCoolDown))
	}
	return bad
}

func (l RateLimit) max() int {
	if l.MaxActionsPerMinute == 0 {
		return DefaultMaxActionsPerMinute
	}
	return l.MaxActionsPerMinute
}

func (l RateLimit) coolDown() time.Duration {
	if l.CoolDown == 0 {
		return DefaultCoolDown
	}
	return l.CoolDown.Std()
}

// breakers are the policies' circuit breakers, by policy name.
type breakers struct {
	mu     sync.Mutex
	policy map[string]*breaker
}

type breaker struct {
	// recent are the enforced actions of the last minute, oldest first.
	recent []time.Time
	// openUntil is when an open breaker closes; zero when closed.
	openUntil time.Time
	trips     uint64
}

// breakerVerdict is what the breaker says about one enforce action.
type breakerVerdict struct {
	// enforce: act; else only audit (the breaker is open).
	enforce bool
	// tripped: this action opened the breaker; closed: the breaker closed
	// (its cool-down ended) before this action.
	tripped, closed bool
	// until is when the open breaker closes.
	until time.Time
	// count is the actions counted in the last minute, with this one.
	count int
}

func newBreakers() *breakers { return &breakers{policy: map[string]*breaker{}} }

// admit counts one enforce action of p at now and says whether it may be
// enforced.
func (bs *breakers) admit(p *Policy, now time.Time) breakerVerdict {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b := bs.policy[p.Name]
	if b == nil {
		b = &breaker{}
		bs.policy[p.Name] = b
	}
	var v breakerVerdict
	if !b.openUntil.IsZero() {
		if now.Before(b.openUntil) {
			return breakerVerdict{until: b.openUntil}
		}
		// Closed again: count afresh, so that the actions audited while it
		// was open do not trip it at once.
		b.openUntil, b.recent, v.closed = time.Time{}, b.recent[:0], true
	}
	cut := 0
	for cut < len(b.recent) && now.Sub(b.recent[cut]) >= breakerWindow {
		cut++
	}
	b.recent = append(b.recent[:0], b.recent[cut:]...)
	b.recent = append(b.recent, now)
	v.count = len(b.recent)
	if v.count > p.RateLimit.max() {
		b.openUntil = now.Add(p.RateLimit.coolDown())
		b.trips++
		v.tripped, v.until = true, b.openUntil
		return v
	}
	v.enforce = true
	return v
}

// state reports each policy's breaker at now: open or not, and its trips.
func (bs *breakers) state(now time.Time, each func(policy string, open bool, trips uint64)) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for name, b := range bs.policy {
		each(name, now.Before(b.openUntil), b.trips)
	}
}

// Circuit breaker records: action circuit-breaker, outcome tripped or
// closed.
const (
	ActionCircuitBreaker = "circuit-breaker"
	OutcomeTripped       = "tripped"
	OutcomeClosed        = "closed"
)

// breakerRecords logs and records the breaker's state changes in ad: it
// closed (its cool-down ended) or it tripped on this decision.
func (r *Responder) breakerRecords(a *api.Alert, d Decision, ad admission) []*api.Event {
	v := ad.breaker
	if v == nil || !v.closed && !v.tripped {
		return nil
	}
	p := r.policies.Load().policy(d.Policy)
	if p == nil {
		p = &Policy{Name: d.Policy} // replaced meanwhile by a new version: the default limit
	}
	var out []*api.Event
	record := func(outcome, detail string) {
		out = append(out, &api.Event{Time: timestamppb.Now(), Node: r.node, Kind: api.EventKind_EVENT_KIND_RESPONSE,
			Detail: &api.Event_Response{Response: &api.Response{AlertId: a.GetId(), DetectionId: a.GetDetectionId(),
				Policy: d.Policy, Mode: ModeEnforce, Action: ActionCircuitBreaker, Outcome: outcome, Error: detail}}})
	}
	if v.closed {
		r.log.Info("response circuit breaker closed: the policy enforces again", "policy", d.Policy)
		record(OutcomeClosed, "cool-down over: the policy enforces again")
	}
	if v.tripped {
		detail := fmt.Sprintf("%d actions within a minute, over the limit of %d: enforce turned to audit until %s",
			v.count, p.RateLimit.max(), v.until.UTC().Format(time.RFC3339))
		r.log.Warn("response circuit breaker tripped", "policy", d.Policy, "actions", v.count,
			"limit", p.RateLimit.max(), "until", v.until)
		record(OutcomeTripped, detail)
	}
	return out
}

// collectBreakers reports every enforcing policy's breaker, open or not.
func (r *Responder) collectBreakers(ch chan<- prometheus.Metric) {
	type state struct {
		open  bool
		trips uint64
	}
	states := map[string]state{}
	r.guard.breakers.state(r.now(), func(policy string, open bool, trips uint64) { states[policy] = state{open, trips} })
	for _, p := range r.policies.Load().Policies {
		if p.Mode != ModeEnforce {
			continue
		}
		st := states[p.Name]
		open := 0.0
		if st.open {
			open = 1
		}
		ch <- prometheus.MustNewConstMetric(r.breakerOpenDesc, prometheus.GaugeValue, open, p.Name)
		ch <- prometheus.MustNewConstMetric(r.breakerTripsDesc, prometheus.CounterValue, float64(st.trips), p.Name)
	}
}
