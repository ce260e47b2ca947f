package response

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// TestCircuitBreaker: a flood of matching alerts trips the policy's
// breaker, later alerts are audited, not enforced, and after the cool-down
// it enforces again; a rate under the limit never trips it. The clock is
// the test's.
func TestCircuitBreaker(t *testing.T) {
	f, err := Load(writeFile(t, `apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - name: kill-miners
    mode: enforce
    match: {detections: [crypto-miner], where: container}
    actions: [kill-process-tree]
    rateLimit: {maxActionsPerMinute: 3, coolDown: 5m}
  - name: slow
    mode: enforce
    match: {detections: [slow], where: container}
    actions: [kill-process-tree]
    rateLimit: {maxActionsPerMinute: 3}
`))
	if err != nil {
		t.Fatal(err)
	}
	var kills int
	r := NewResponder(f, "node-a", func(*api.Event) {}, slog.New(slog.DiscardHandler))
	r.kill = func(tg Target) (Killed, error) {
		kills++
		return Killed{PIDs: []int{tg.PID}}, nil
	}
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	now := t0
	r.now = func() time.Time { return now }
	alert := func(detection string) *api.Alert {
		return &api.Alert{Id: "a", DetectionId: detection, Container: &api.Container{Id: "c"},
			Process: &api.Process{Tgid: 5000, StartTime: timestamppb.New(t0.Add(-time.Hour))}}
	}
	// step handles one alert at t0+at and returns its records as
	// "action/mode/outcome".
	step := func(at time.Duration, detection string) []string {
		now = t0.Add(at)
		var out []string
		for _, ev := range r.Handle(alert(detection)) {
			resp := ev.GetResponse()
			out = append(out, resp.GetAction()+"/"+resp.GetMode()+"/"+resp.GetOutcome())
			if resp.GetOutcome() == OutcomeTripped && !strings.Contains(resp.GetError(), "4 actions within a minute, over the limit of 3") {
				t.Errorf("trip record: %q", resp.GetError())
			}
			if resp.GetOutcome() == OutcomeAudited && !strings.Contains(resp.GetError(), "circuit breaker open until 2026-12-06T12:05:03Z") {
				t.Errorf("audited record: %q", resp.GetError())
			}
		}
		return out
	}
	const (
		done    = "kill-process-tree/enforce/done"
		audited = "kill-process-tree/audit/audited"
		tripped = "circuit-breaker/enforce/tripped"
		closed  = "circuit-breaker/enforce/closed"
	)
	tests := []struct {
		at        time.Duration
		detection string
		want      []string
		open      float64
	}{
		{0, "crypto-miner", []string{done}, 0},
		{time.Second, "crypto-miner", []string{done}, 0},
		{2 * time.Second, "crypto-miner", []string{done}, 0},
		{3 * time.Second, "crypto-miner", []string{tripped, audited}, 1},
		{4 * time.Second, "crypto-miner", []string{audited}, 1},
		{4 * time.Minute, "crypto-miner", []string{audited}, 1},
		{5*time.Minute + 3*time.Second, "crypto-miner", []string{closed, done}, 0},
		{5*time.Minute + 4*time.Second, "crypto-miner", []string{done}, 0},
	}
	for i, tc := range tests {
		got := step(tc.at, tc.detection)
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("alert %d at +%s: %v, want %v", i, tc.at, got, tc.want)
		}
		if open := breakerMetric(t, r, "harrier_response_breaker_open", "kill-miners"); open != tc.open {
			t.Errorf("alert %d at +%s: breaker_open %v, want %v", i, tc.at, open, tc.open)
		}
	}
	if kills != 5 {
		t.Errorf("%d kills, want 5 (3 before the trip, 2 after the cool-down)", kills)
	}
	if n := breakerMetric(t, r, "harrier_response_breaker_trips_total", "kill-miners"); n != 1 {
		t.Errorf("trips %v, want 1", n)
	}
	// Three a minute, evenly spaced, stays within the limit of 3.
	for i := range 12 {
		if got := step(time.Hour+time.Duration(i)*20*time.Second, "slow"); len(got) != 1 || got[0] != done {
			t.Fatalf("slow policy, alert %d: %v, want done", i, got)
		}
	}
	if n := breakerMetric(t, r, "harrier_response_breaker_trips_total", "slow"); n != 0 {
		t.Errorf("slow policy tripped %v times", n)
	}
}

func breakerMetric(t *testing.T, r *Responder, name, policy string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == policy {
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{policy=%q}", name, policy)
	return 0
}

func TestRateLimitValidate(t *testing.T) {
	base := "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n  - {name: p, mode: enforce, match: {detections: [x]}, actions: [kill-process-tree], rateLimit: %s}\n"
	for _, tc := range []struct{ limit, want string }{
		{"{maxActionsPerMinute: 5, coolDown: 1h}", ""},
		{"{}", ""},
		{"{maxActionsPerMinute: -1}", "rateLimit.maxActionsPerMinute -1: want 1 to 10000"},
		{"{coolDown: -1m}", "rateLimit.coolDown -1m0s: want a positive duration"},
		{"{coolDown: soon}", `duration "soon"`},
		{"{perMinute: 5}", "perMinute"},
	} {
		_, err := Load(writeFile(t, strings.Replace(base, "%s", tc.limit, 1)))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("rateLimit %s: err %v, want %q", tc.limit, err, tc.want)
		}
	}
}
