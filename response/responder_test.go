package response

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

func TestResponderHandle(t *testing.T) {
	f, err := Load(writeFile(t, examplePolicies))
	if err != nil {
		t.Fatal(err)
	}
	var killed []Target
	r := NewResponder(f, "node-a", func(*api.Event) {}, slog.New(slog.DiscardHandler))
	r.kill = func(tg Target) (Killed, error) {
		killed = append(killed, tg)
		if tg.PID == 4242 {
			return Killed{}, ErrNotTarget
		}
		return Killed{PIDs: []int{tg.PID, tg.PID + 1}}, nil
	}
	started := timestamppb.New(time.Now().Add(-time.Minute))
	miner := func(pid uint32) *api.Alert {
		return &api.Alert{Id: "a", DetectionId: "crypto-miner", Severity: api.Severity_SEVERITY_HIGH, FirstSeen: timestamppb.Now(),
			Container: &api.Container{Id: "c"}, Process: &api.Process{Tgid: pid, StartTime: started}}
	}
	tests := []struct {
		name        string
		alert       *api.Alert
		outcome     string
		pids        []uint32
		wantKillPID int
	}{
		{"enforce", miner(1234), OutcomeDone, []uint32{1234, 1235}, 1234},
		{"target gone", miner(4242), OutcomeTargetGone, nil, 4242},
		{"pid 1", miner(1), OutcomeRefused, nil, 0},
		{"the agent itself", miner(uint32(os.Getpid())), OutcomeRefused, nil, 0},
		{"no process", &api.Alert{DetectionId: "crypto-miner", Container: &api.Container{Id: "c"}}, OutcomeRefused, nil, 0},
		{"audit", &api.Alert{DetectionId: "web-shell", Severity: api.Severity_SEVERITY_HIGH,
			Container: &api.Container{Id: "c", Image: "registry.example/shop/web:2", PodNamespace: "shop", Labels: map[string]string{"tier": "web"}},
			Process:   &api.Process{Tgid: 77, StartTime: started}}, OutcomeAudited, []uint32{77}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			killed = nil
			evs := r.Handle(tc.alert)
			if len(evs) != 1 {
				t.Fatalf("%d records, want 1", len(evs))
			}
			ev := evs[0]
			resp := ev.GetResponse()
			if ev.GetKind() != api.EventKind_EVENT_KIND_RESPONSE || resp.GetOutcome() != tc.outcome || len(resp.GetPids()) != len(tc.pids) {
				t.Fatalf("record %v, want outcome %s and pids %v", ev, tc.outcome, tc.pids)
			}
			for i := range tc.pids {
				if resp.GetPids()[i] != tc.pids[i] {
					t.Errorf("pids %v, want %v", resp.GetPids(), tc.pids)
				}
			}
			if (tc.wantKillPID == 0) != (len(killed) == 0) || tc.wantKillPID != 0 && killed[0].PID != tc.wantKillPID {
				t.Errorf("kill calls %v, want pid %d", killed, tc.wantKillPID)
			}
		})
	}
	if n := testCounter(r); n != len(tests) {
		t.Errorf("harrier_response_actions_total sums to %d, want %d", n, len(tests))
	}
}

func testCounter(r *Responder) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.counts {
		n += int(c)
	}
	return n
}
