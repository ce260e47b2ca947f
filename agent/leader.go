package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/harrier-sec/harrier/kube/leader"
	"github.com/harrier-sec/harrier/store"
)

// clusterTask is cluster-level work (inventory, posture) that one agent of
// the cluster does: the one holding the leader lease.
type clusterTask struct {
	Name string
	// Run works until its context ends, which happens when leadership is
	// lost or the agent stops. Returning nil means done for this term of
	// leadership; an error is logged and Run is called again after a
	// backoff while leadership lasts. Run starts again on every new term.
	// It must return promptly once ctx ends: within leaseDuration −
	// renewDeadline (5s by default) another agent may take over.
	Run func(ctx context.Context) error
}

// clusterEnv is what the cluster tasks are built from.
type clusterEnv struct {
	cfg Config
	// rest reaches the API server as the agent.
	rest *rest.Config
	// spool takes the tasks' records (store.ClassFinding); notify wakes
	// the uplink after an append.
	spool  *store.Spool
	notify func()
	log    *slog.Logger
}

// clusterTasks are the tasks the leader runs.
func clusterTasks(env clusterEnv) ([]clusterTask, error) {
	var tasks []clusterTask
	if env.cfg.Kube.Inventory.On() {
		t, err := inventoryTask(env)
		if err != nil {
			return nil, err
		}
		tasks = append(tasks, t)
	}
	return tasks, nil
}

// Backoff of a failing cluster task: first retry after taskRetry, doubling
// up to taskRetryMax.
const (
	taskRetry    = time.Second
	taskRetryMax = time.Minute
)

// leaderRunner runs the cluster tasks while this agent leads.
type leaderRunner struct {
	tasks           []clusterTask
	retry, maxRetry time.Duration
	log             *slog.Logger
	// elected is set when the election runs at all (before any goroutine
	// starts): the metrics say nothing about leadership otherwise.
	elected     bool
	leading     atomic.Bool
	transitions atomic.Uint64 // became or stopped being the leader

	leaderDesc, transitionsDesc *prometheus.Desc
}

func newLeaderRunner(log *slog.Logger) *leaderRunner {
	return &leaderRunner{retry: taskRetry, maxRetry: taskRetryMax, log: log,
		leaderDesc: prometheus.NewDesc("harrier_kube_leader",
			"1 while this agent holds the cluster's leader lease and runs the cluster tasks (reported with kube.leaderElection on).", nil, nil),
		transitionsDesc: prometheus.NewDesc("harrier_kube_leader_transitions_total",
			"Times this agent became or stopped being the cluster leader.", nil, nil),
	}
}

// Leading says whether the cluster tasks are running here now.
func (r *leaderRunner) Leading() bool { return r.leading.Load() }

// lead is the elector's callback for one term of leadership: it runs
// every task until ctx ends and returns once they all have.
func (r *leaderRunner) lead(ctx context.Context) {
	r.leading.Store(true)
	r.transitions.Add(1)
	names := make([]string, len(r.tasks))
	for i, t := range r.tasks {
		names[i] = t.Name
	}
	r.log.Info("kube: this agent leads the cluster; cluster tasks started", "tasks", names)
	var wg sync.WaitGroup
	for _, t := range r.tasks {
		wg.Go(func() { r.runTask(ctx, t) })
	}
	<-ctx.Done()
	wg.Wait()
	r.leading.Store(false)
	r.transitions.Add(1)
	r.log.Info("kube: this agent no longer leads the cluster; cluster tasks stopped", "tasks", names)
}

func (r *leaderRunner) runTask(ctx context.Context, t clusterTask) {
	backoff := r.retry
	for {
		err := t.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			r.log.Debug("kube: cluster task done for this term", "task", t.Name)
			return
		}
		r.log.Warn("kube: cluster task failed; retrying", "task", t.Name, "retryIn", backoff, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.maxRetry)
	}
}

// startLeader runs the election under run when cfg asks for it, and the
// cluster tasks while this agent leads. An unreachable API server only
// delays the election: it retries and never stops the node's pipeline.
func startLeader(ctx context.Context, cfg Config, r *leaderRunner, env clusterEnv, run func(string, func() error)) error {
	if !cfg.Kube.Enabled() || !cfg.Kube.LeaderElection.On() {
		return nil
	}
	le := cfg.Kube.LeaderElection.WithDefaults(leader.ServiceAccountNamespaceFile)
	rc, err := cfg.Kube.RESTConfig()
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	leases, err := leader.NewLeases(rc, le.Namespace)
	if err != nil {
		return fmt.Errorf("kube.leaderElection: %w", err)
	}
	el, err := leader.New(leases, le, cfg.Kube.Node, r.log)
	if err != nil {
		return fmt.Errorf("kube.leaderElection: %w", err)
	}
	env.rest = rc
	tasks, err := clusterTasks(env)
	if err != nil {
		return err
	}
	r.tasks = append(r.tasks, tasks...)
	r.elected = true
	run("kube leader election", func() error { el.Run(ctx, r.lead); return nil })
	r.log.Info("kube: leader election", "namespace", le.Namespace, "lease", le.LeaseName, "identity", el.Identity())
	return nil
}

// Describe implements prometheus.Collector.
func (r *leaderRunner) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.leaderDesc
	ch <- r.transitionsDesc
}

// Collect implements prometheus.Collector; without an election there is
// nothing to report.
func (r *leaderRunner) Collect(ch chan<- prometheus.Metric) {
	if !r.elected {
		return
	}
	leading := 0.0
	if r.Leading() {
		leading = 1
	}
	ch <- prometheus.MustNewConstMetric(r.leaderDesc, prometheus.GaugeValue, leading)
	ch <- prometheus.MustNewConstMetric(r.transitionsDesc, prometheus.CounterValue, float64(r.transitions.Load()))
}

// routeKlog sends client-go's logs (klog) to log, so that the agent writes
// one format; the returned function puts klog back to its default. klog's
// logger is global: this belongs to the agent's lifetime, not a library's.
func routeKlog(log *slog.Logger) (restore func()) {
	klog.SetSlogLogger(log.With("component", "client-go"))
	return klog.ClearLogger
}
