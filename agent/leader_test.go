package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/kube/leader"
)

// probeTask is a cluster task that records its runs.
type probeTask struct {
	calls   atomic.Int32
	running atomic.Int32
	// failFirst calls return an error at once.
	failFirst int32
	// oneShot returns nil at once (done for the term).
	oneShot bool
}

func (p *probeTask) task(name string) clusterTask {
	return clusterTask{Name: name, Run: func(ctx context.Context) error {
		n := p.calls.Add(1)
		if n <= p.failFirst {
			return errors.New("not yet")
		}
		if p.oneShot {
			return nil
		}
		p.running.Add(1)
		defer p.running.Add(-1)
		<-ctx.Done()
		return ctx.Err()
	}}
}

// gather returns the runner's metrics by name.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				out[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[mf.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestLeaderRunner: each term of leadership starts every task; a failing
// task is retried, a finished one is not; losing leadership stops them all
// before lead returns; the metrics follow.
func TestLeaderRunner(t *testing.T) {
	r := newLeaderRunner(slog.New(slog.DiscardHandler))
	r.retry, r.maxRetry = 5*time.Millisecond, 20*time.Millisecond
	steady, flaky, once := &probeTask{}, &probeTask{failFirst: 2}, &probeTask{oneShot: true}
	r.tasks = []clusterTask{steady.task("steady"), flaky.task("flaky"), once.task("once")}
	if got := gather(t, r); len(got) != 0 {
		t.Errorf("metrics without an election: %v", got)
	}
	r.elected = true
	for term := 1; term <= 2; term++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.lead(ctx) }()
		testenv.WaitFor(t, 2*time.Second, "tasks running", func() bool {
			return steady.running.Load() == 1 && flaky.running.Load() == 1
		})
		if !r.Leading() {
			t.Error("not leading during a term")
		}
		if m := gather(t, r); m["harrier_kube_leader"] != 1 || m["harrier_kube_leader_transitions_total"] != float64(2*term-1) {
			t.Errorf("term %d metrics while leading: %v", term, m)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("lead did not return after its context ended")
		}
		if steady.running.Load() != 0 || flaky.running.Load() != 0 {
			t.Error("a task still runs after lead returned")
		}
		if r.Leading() {
			t.Error("leading after the term")
		}
		if m := gather(t, r); m["harrier_kube_leader"] != 0 || m["harrier_kube_leader_transitions_total"] != float64(2*term) {
			t.Errorf("term %d metrics after: %v", term, m)
		}
		if got := once.calls.Load(); got != int32(term) {
			t.Errorf("one-shot task ran %d times in %d terms", got, term)
		}
	}
	if got := steady.calls.Load(); got != 2 {
		t.Errorf("steady task started %d times in 2 terms", got)
	}
	if got := flaky.calls.Load(); got != 4 { // 2 failures, then it ran; once more next term
		t.Errorf("flaky task called %d times, want 4", got)
	}
}

// TestRouteKlog: client-go's klog output goes to the agent's slog handler
// while routed, and not afterwards.
func TestRouteKlog(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(lockedWriter{&buf, &mu}, nil))
	restore := routeKlog(log)
	klog.InfoS("reflector started", "resource", "pods")
	klog.Warningf("watch of %s ended", "pods")
	klog.ErrorS(errors.New("connection refused"), "failed to list", "resource", "pods")
	restore()
	klog.InfoS("after restore: to klog's stderr")
	mu.Lock()
	defer mu.Unlock()
	var got []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not one JSON record per line: %q: %v", line, err)
		}
		got = append(got, m)
	}
	if len(got) != 3 {
		t.Fatalf("%d records, want 3: %s", len(got), buf.String())
	}
	for i, want := range []struct{ msg, level string }{
		{"reflector started", "INFO"}, {"watch of pods ended", "INFO"}, {"failed to list", "ERROR"},
	} {
		if got[i]["msg"] != want.msg || got[i]["level"] != want.level || got[i]["component"] != "client-go" {
			t.Errorf("record %d = %v, want msg %q level %s component client-go", i, got[i], want.msg, want.level)
		}
	}
	if got[0]["resource"] != "pods" || got[2]["err"] != "connection refused" {
		t.Errorf("key/value pairs lost: %v %v", got[0], got[2])
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// testAgent is the election part of one agent, started as Run starts it.
type testAgent struct {
	name   string
	runner *leaderRunner
	task   *probeTask
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

func startTestAgent(t *testing.T, kubeconfig, node string) *testAgent {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("agent", node)
	a := &testAgent{name: node, runner: newLeaderRunner(log), task: &probeTask{}, errs: make(chan error, 4)}
	a.runner.tasks = []clusterTask{a.task.task("probe")}
	cfg := WithDefaults(Config{DataDir: t.TempDir(), Kube: kube.Config{Kubeconfig: kubeconfig, Node: node,
		LeaderElection: leader.Config{Namespace: "harrier", LeaseName: "agents",
			LeaseDuration: confval.Duration(2 * time.Second), RenewDeadline: confval.Duration(1500 * time.Millisecond),
			RetryPeriod: confval.Duration(300 * time.Millisecond)},
		Inventory: kube.InventoryConfig{Mode: "off"}}})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	run := func(name string, f func() error) {
		a.wg.Go(func() {
			if err := f(); err != nil {
				a.errs <- err
			}
		})
	}
	if err := startLeader(ctx, cfg, a.runner, clusterEnv{cfg: cfg, log: log}, run); err != nil {
		t.Fatal(err)
	}
	if !a.runner.elected {
		t.Fatal("election not started")
	}
	t.Cleanup(a.stop)
	return a
}

func (a *testAgent) stop() {
	a.cancel()
	a.wg.Wait()
}

func (a *testAgent) leading() bool { return a.runner.Leading() && a.task.running.Load() == 1 }

func oneLeader(t *testing.T, within time.Duration, agents ...*testAgent) *testAgent {
	t.Helper()
	var got *testAgent
	testenv.WaitFor(t, within, "exactly one leader", func() bool {
		n := 0
		for _, a := range agents {
			if a.leading() {
				n, got = n+1, a
			}
		}
		if n > 1 {
			t.Fatal("two agents lead at once")
		}
		return n == 1
	})
	return got
}

// TestLeaderElectionAgentsAPIServer wires two agents' elections as Run
// does, against a real API server: one runs the cluster task; while the
// API server is down leadership ends and nothing fails; once it is back
// one leads again; stopping the leader hands over at once.
func TestLeaderElectionAgentsAPIServer(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.EnsureServiceAccount(ctx, "harrier", "default"); err != nil {
		t.Fatal(err)
	}
	a := startTestAgent(t, srv.Kubeconfig, "node-a")
	b := startTestAgent(t, srv.Kubeconfig, "node-b")
	first := oneLeader(t, 5*time.Second, a, b)
	if m := gather(t, first.runner); m["harrier_kube_leader"] != 1 || m["harrier_kube_leader_transitions_total"] != 1 {
		t.Errorf("leader's metrics %v", m)
	}

	srv.StopAPIServer()
	testenv.WaitFor(t, 5*time.Second, "leadership ends without the API server", func() bool {
		return !a.runner.Leading() && !b.runner.Leading()
	})
	if first.task.running.Load() != 0 {
		t.Error("cluster task still running after leadership ended")
	}
	time.Sleep(time.Second) // the elections keep retrying, quietly
	for _, ag := range []*testAgent{a, b} {
		select {
		case err := <-ag.errs:
			t.Fatalf("%s: election failed the agent: %v", ag.name, err)
		default:
		}
	}
	if err := srv.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	second := oneLeader(t, 10*time.Second, a, b)
	other := map[*testAgent]*testAgent{a: b, b: a}[second]

	stopped := time.Now()
	second.stop()
	if oneLeader(t, 3*time.Second, a, b) != other {
		t.Fatal("the stopped agent leads")
	}
	t.Logf("handover after a clean stop: %v", time.Since(stopped))
	if second.task.running.Load() != 0 || second.runner.Leading() {
		t.Error("stopped agent's task still running")
	}
}
