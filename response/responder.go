package response

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// Outcomes of one action.
const (
	OutcomeDone       = "done"
	OutcomeAudited    = "audited"
	OutcomeTargetGone = "target-gone"
	OutcomeRefused    = "refused"
	OutcomeFailed     = "failed"
)

// queueSize bounds the alerts waiting for a decision; past it an alert is
// dropped from response (it is still an alert) and counted.
const queueSize = 256

// Responder takes the policies' actions on new alerts, off the pipeline's
// path, and records each as an event of kind response.
type Responder struct {
	// policies are swapped whole when the backend sends a new version.
	policies atomic.Pointer[File]
	node     string
	record   func(*api.Event)
	log      *slog.Logger
	queue    chan *api.Alert
	// guard refuses protected targets and opens a policy's circuit
	// breaker; now is its clock.
	guard *guard
	now   func() time.Time
	kill  func(Target) (Killed, error)
	// net blocks cgroups' network, made by newNet at its first use; nil
	// when this host cannot (netErr says why).
	newNet  func() (*NetBlocker, error)
	netOnce sync.Once
	net     *NetBlocker
	netErr  error
	// v2 is the unified hierarchy's mount point, for container actions;
	// v2Err says why there is none.
	v2    string
	v2Err error
	// quarantineDir keeps forensic copies; "" disables quarantine.
	quarantineDir string
	dropped       atomic.Uint64
	// hashStats counts the kill-at-exec guard's hash checks, across the
	// guards the policies' versions start (ExecGuard.UseHashStats).
	hashStats HashStats

	mu     sync.Mutex
	counts map[[3]string]uint64 // action, mode, outcome

	actionsDesc, droppedDesc, breakerOpenDesc, breakerTripsDesc, hashDesc *prometheus.Desc
}

// NewResponder acts per policies on node; record receives every response
// event (the agent spools it with the alerts).
func NewResponder(policies *File, node string, record func(*api.Event), log *slog.Logger) *Responder {
	v2, v2Err := UnifiedMount()
	protect := NewProtection("")
	r := &Responder{
		v2: v2, v2Err: v2Err,
		node: node, record: record, log: log,
		queue:  make(chan *api.Alert, queueSize),
		guard:  newGuard(protect),
		now:    time.Now,
		kill:   func(t Target) (Killed, error) { return killProcessTree("", t, protect.spareLive) },
		counts: map[[3]string]uint64{},
		actionsDesc: prometheus.NewDesc("harrier_response_actions_total",
			"Response actions by action, mode (audit or enforce) and outcome.", []string{"action", "mode", "outcome"}, nil),
		droppedDesc: prometheus.NewDesc("harrier_response_dropped_total",
			"New alerts not given to the response policies because their queue was full.", nil, nil),
		breakerOpenDesc: prometheus.NewDesc("harrier_response_breaker_open",
			"1 while the policy's circuit breaker is open (its enforce actions only audited), else 0.", []string{"policy"}, nil),
		breakerTripsDesc: prometheus.NewDesc("harrier_response_breaker_trips_total",
			"Times the policy's circuit breaker opened.", []string{"policy"}, nil),
		hashDesc: prometheus.NewDesc("harrier_response_exec_hash_checks_total",
			"Executables checked against execDeny sha256 lists at their first exec, by result: hashed, matched (listed), "+
				"skipped (gone, changed or too large) and dropped (the check queue was full; checked at the next exec).", []string{"result"}, nil),
	}
	r.SetPolicies(policies)
	return r
}

// SetPolicies replaces the policies (a new version from the backend); the
// alerts decided from then on use them. nil means none.
func (r *Responder) SetPolicies(f *File) {
	if f == nil {
		f = &File{APIVersion: APIVersion, Kind: Kind}
	}
	r.policies.Store(f)
}

// Policies are the policies in force.
func (r *Responder) Policies() *File { return r.policies.Load() }

// UseNetBlocker gives the responder its network blocker, or the reason
// there is none (block-network then fails with it).
func (r *Responder) UseNetBlocker(n *NetBlocker, err error) {
	r.netOnce.Do(func() {})
	r.net, r.netErr = n, err
}

// UseNetBlockerFactory makes the network blocker at its first use (a
// policy from the backend or an analyst's command may need it long after
// start); newNet's error is then every block's failure.
func (r *Responder) UseNetBlockerFactory(newNet func() (*NetBlocker, error)) { r.newNet = newNet }

// netBlocker returns the network blocker, making it on first use.
func (r *Responder) netBlocker() (*NetBlocker, error) {
	r.netOnce.Do(func() {
		if r.newNet == nil {
			r.netErr = errors.New("no network blocker on this agent")
			return
		}
		r.net, r.netErr = r.newNet()
	})
	if r.net == nil && r.netErr == nil {
		return nil, errors.New("no network blocker on this agent")
	}
	return r.net, r.netErr
}

// UseQuarantineDir is where quarantine-executable keeps its forensic
// copies (the agent's data directory's quarantine/).
func (r *Responder) UseQuarantineDir(dir string) { r.quarantineDir = dir }

// NeedsNetBlocker says whether a policy names block-network or
// isolate-network.
func (f *File) NeedsNetBlocker() bool {
	for _, p := range f.Policies {
		if slices.Contains(p.Actions, ActionBlockNetwork) || slices.Contains(p.Actions, ActionIsolateNetwork) {
			return true
		}
	}
	return false
}

// Offer hands a new alert to the policies without waiting.
func (r *Responder) Offer(a *api.Alert) {
	select {
	case r.queue <- a:
	default:
		r.dropped.Add(1)
	}
}

// Run decides and acts until ctx is done.
func (r *Responder) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-r.queue:
			for _, ev := range r.Handle(a) {
				r.record(ev)
			}
		}
	}
}

// Handle takes the policies' actions on a and returns their records.
func (r *Responder) Handle(a *api.Alert) []*api.Event {
	var out []*api.Event
	now := r.now()
	f := r.policies.Load()
	for _, d := range f.Decide(a) {
		ad := r.guard.admit(f, a, d, now)
		out = append(out, r.breakerRecords(a, d, ad)...)
		d.Mode = ad.mode
		resp := &api.Response{AlertId: a.GetId(), DetectionId: a.GetDetectionId(), Policy: d.Policy, Mode: d.Mode, Action: d.Action}
		if ad.refused != "" {
			resp.Target = "process " + strconv.Itoa(int(a.GetProcess().GetTgid()))
			resp.Outcome, resp.Error = OutcomeRefused, ad.refused
		} else {
			r.act(a, d, resp)
			if note := ad.note(); note != "" {
				resp.Error = strings.TrimPrefix(resp.Error+"; "+note, "; ")
			}
		}
		if at := a.GetFirstSeen(); at != nil {
			resp.LatencyUs = time.Since(at.AsTime()).Microseconds()
		}
		r.count(resp)
		level := slog.LevelInfo
		if resp.Outcome == OutcomeFailed {
			level = slog.LevelWarn
		}
		r.log.Log(context.Background(), level, "response", "policy", d.Policy, "mode", d.Mode, "action", d.Action,
			"outcome", resp.Outcome, "alert", a.GetId(), "detection", a.GetDetectionId(), "pids", resp.Pids, "error", resp.Error)
		out = append(out, &api.Event{Time: timestamppb.Now(), Node: a.GetNode(), Kind: api.EventKind_EVENT_KIND_RESPONSE,
			Process: a.GetProcess(), Container: a.GetContainer(), Detail: &api.Event_Response{Response: resp}})
	}
	return out
}

func (r *Responder) act(a *api.Alert, d Decision, resp *api.Response) {
	p := a.GetProcess()
	target := Target{PID: int(p.GetTgid()), StartTime: p.GetStartTime().AsTime()}
	resp.Target = "process " + strconv.Itoa(target.PID)
	switch {
	case !slices.Contains(Actions(), d.Action):
		resp.Outcome, resp.Error = OutcomeFailed, "unknown action"
	case d.Action == ActionPauseContainer || d.Action == ActionStopContainer:
		r.containerAction(a.GetContainer(), d, resp)
	case (d.Action == ActionBlockNetwork || d.Action == ActionIsolateNetwork) && a.GetContainer().GetCgroup() != "":
		// The container's cgroup is known: no process is needed.
		r.blockNetwork(a.GetContainer(), target, d, resp)
	case p.GetTgid() == 0 || p.GetStartTime() == nil:
		resp.Outcome, resp.Error = OutcomeRefused, "the alert names no process"
	case d.Action == ActionBlockNetwork || d.Action == ActionIsolateNetwork:
		r.blockNetwork(a.GetContainer(), target, d, resp)
	case d.Action == ActionQuarantine:
		r.quarantine(target, p.GetExe(), d.Mode, resp)
	case d.Mode == ModeAudit:
		resp.Outcome, resp.Pids = OutcomeAudited, []uint32{p.GetTgid()}
	default:
		killed, err := r.kill(target)
		for _, pid := range killed.PIDs {
			resp.Pids = append(resp.Pids, uint32(pid))
		}
		if len(killed.Spared) > 0 {
			resp.Target += fmt.Sprintf(" (spared protected descendants %v)", killed.Spared)
		}
		setOutcome(resp, err)
	}
}

// setOutcome records how an action on a process ended: done, target-gone
// (ErrNotTarget: nothing was done to another process) or failed.
func setOutcome(resp *api.Response, err error) {
	switch {
	case errors.Is(err, ErrNotTarget):
		resp.Outcome, resp.Error = OutcomeTargetGone, err.Error()
	case err != nil:
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
	default:
		resp.Outcome = OutcomeDone
	}
}

// blockNetwork blocks (block-network) or isolates (isolate-network) the
// network of the alert's container: its cgroup in the unified hierarchy,
// from the container's cgroup path (the process may be gone by now), else
// from the live process, pinned and checked by its start time.
func (r *Responder) blockNetwork(c *api.Container, target Target, d Decision, resp *api.Response) {
	mode := d.Mode
	n, err := r.netBlocker()
	if err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, fmt.Sprintf("%s unavailable: %v", d.Action, err)
		return
	}
	if c.GetId() == "" {
		// A host process's cgroup is a whole service (sshd.service, a
		// user's session): never cut.
		resp.Outcome, resp.Error = OutcomeRefused, d.Action+" acts on containers only"
		return
	}
	var cg string
	if c.GetCgroup() != "" {
		if cg, err = containerCgroup(n.v2, c.GetCgroup()); err != nil {
			resp.Outcome, resp.Error = OutcomeFailed, err.Error()
			return
		}
	} else {
		p, err := pinTarget("", target)
		if err != nil {
			resp.Outcome, resp.Error = OutcomeTargetGone, err.Error()
			return
		}
		cg, err = n.CgroupOf(target.PID)
		unix.Close(p.fd)
		if err != nil {
			resp.Outcome, resp.Error = OutcomeFailed, err.Error()
			return
		}
	}
	resp.Target = "cgroup " + cg
	if mode == ModeAudit {
		resp.Outcome = OutcomeAudited
		return
	}
	act := n.Block
	if d.Action == ActionIsolateNetwork {
		act = n.Isolate
	}
	if err := act(cg); err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
		return
	}
	resp.Outcome = OutcomeDone
}

func (r *Responder) quarantine(target Target, exe, mode string, resp *api.Response) {
	resp.Target = "executable " + exe
	switch {
	case exe == "" || exe[0] != '/':
		resp.Outcome, resp.Error = OutcomeRefused, "the alert names no executable file"
		return
	case r.quarantineDir == "":
		resp.Outcome, resp.Error = OutcomeFailed, "no quarantine directory"
		return
	case mode == ModeAudit:
		resp.Outcome, resp.Pids = OutcomeAudited, []uint32{uint32(target.PID)}
		return
	}
	q, err := quarantineExecutable(target, exe, r.quarantineDir, DefaultQuarantineCopyBytes)
	resp.Pids = []uint32{uint32(target.PID)}
	if q.SHA256 != "" {
		resp.Target += " sha256:" + q.SHA256
	}
	if q.Moved != "" {
		resp.Target += fmt.Sprintf(" moved to %s (was mode %04o)", q.Moved, q.Mode)
	}
	if q.Copy != "" {
		resp.Target += " copy " + q.Copy
	}
	setOutcome(resp, err)
}

// containerAction pauses (freezes), resumes (thaws) or stops (kills) every
// process of the alert's container through its cgroup v2 core files.
func (r *Responder) containerAction(c *api.Container, d Decision, resp *api.Response) {
	if c.GetId() == "" {
		resp.Outcome, resp.Error = OutcomeRefused, d.Action+" acts on containers only"
		return
	}
	if r.v2Err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, r.v2Err.Error()
		return
	}
	cg, err := containerCgroup(r.v2, c.GetCgroup())
	if err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
		return
	}
	resp.Target = "cgroup " + cg
	if d.Mode == ModeAudit {
		resp.Outcome = OutcomeAudited
		return
	}
	switch d.Action {
	case ActionPauseContainer, ActionResumeContainer:
		freeze := d.Action == ActionPauseContainer
		value := map[bool]string{true: "1", false: "0"}[freeze]
		err = writeCgroupFile(cg, "cgroup.freeze", value)
		// Freezing and thawing complete asynchronously; say so if not yet.
		for i := 0; err == nil && i < 100 && frozen(cg) != freeze; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if err == nil && frozen(cg) != freeze {
			err = fmt.Errorf("%s: cgroup.freeze %s not in effect after 1 s", cg, value)
		}
	case ActionStopContainer:
		err = writeCgroupFile(cg, "cgroup.kill", "1")
	}
	if err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
		return
	}
	resp.Outcome = OutcomeDone
}

func (r *Responder) count(resp *api.Response) {
	r.mu.Lock()
	r.counts[[3]string{resp.Action, resp.Mode, resp.Outcome}]++
	r.mu.Unlock()
}

// ActionKillAtExec names the kernel's kill of a denied executable in
// records.
const ActionKillAtExec = "kill-at-exec"

// ExecHit records what the kernel did when a denied executable was exec'd:
// a listed path's target is its path; a drift binary's is "drift " and the
// path the process gave execve, with its container; a listed name's or
// hash's names it before that path. A hash's first run was killed as a
// process tree, after it started.
func (r *Responder) ExecHit(h ExecHit) {
	target, reason := h.Path, "listed"
	switch {
	case h.Drift:
		target, reason = "drift "+h.Path, "drift"
	case h.Name != "":
		target, reason = "name "+h.Name+": "+h.Path, "name"
	case h.SHA256 != "":
		target, reason = "sha256 "+h.SHA256+": "+h.Path, "sha256"
	}
	action := ActionKillAtExec
	if h.FirstRun {
		// Hashed after its first exec: it ran until the kill, which is
		// then the tree's; its later execs are killed at exec.
		action = ActionKillProcessTree
	}
	resp := &api.Response{Policy: h.List, Mode: h.Mode, Action: action, Pids: []uint32{h.TGID}, Target: target}
	switch {
	case errors.Is(h.Err, ErrNotTarget):
		resp.Outcome, resp.Error = OutcomeTargetGone, h.Err.Error()
	case h.Err != nil:
		resp.Outcome, resp.Error = OutcomeFailed, h.Err.Error()
	case h.Killed:
		resp.Outcome = OutcomeDone
	default:
		resp.Outcome = OutcomeAudited
	}
	r.count(resp)
	r.log.Info("response", "policy", h.List, "mode", h.Mode, "action", action, "reason", reason, "outcome", resp.Outcome,
		"exe", h.Path, "pid", h.TGID, "container", h.Container.GetId(), "error", resp.Error)
	r.record(&api.Event{Time: timestamppb.Now(), Node: r.node, Kind: api.EventKind_EVENT_KIND_RESPONSE,
		Process:   &api.Process{Pid: h.TGID, Tgid: h.TGID, Exe: h.Path, StartTime: timestamppb.New(h.StartTime)},
		Container: h.Container, Detail: &api.Event_Response{Response: resp}})
}

// Describe implements prometheus.Collector.
func (r *Responder) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.actionsDesc
	ch <- r.droppedDesc
	ch <- r.breakerOpenDesc
	ch <- r.breakerTripsDesc
	ch <- r.hashDesc
}

// ExecHashStats are the counters the kill-at-exec guard's hash checks add
// to (ExecGuard.UseHashStats).
func (r *Responder) ExecHashStats() *HashStats { return &r.hashStats }

// Collect implements prometheus.Collector.
func (r *Responder) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	for k, n := range r.counts {
		ch <- prometheus.MustNewConstMetric(r.actionsDesc, prometheus.CounterValue, float64(n), k[0], k[1], k[2])
	}
	r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(r.droppedDesc, prometheus.CounterValue, float64(r.dropped.Load()))
	for result, n := range map[string]uint64{"hashed": r.hashStats.Hashed.Load(), "matched": r.hashStats.Matched.Load(),
		"skipped": r.hashStats.Skipped.Load(), "dropped": r.hashStats.Dropped.Load()} {
		ch <- prometheus.MustNewConstMetric(r.hashDesc, prometheus.CounterValue, float64(n), result)
	}
	r.collectBreakers(ch)
}

// NetBlocker returns the network blocker, making it now if it was not yet.
func (r *Responder) NetBlocker() (*NetBlocker, error) { return r.netBlocker() }
