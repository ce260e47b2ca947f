package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube/admission"
	"github.com/harrier-sec/harrier/kube/inventory"
	"github.com/harrier-sec/harrier/kube/posture"
	"github.com/harrier-sec/harrier/store"
)

// inventoryTask is the leader's cluster task: a snapshot of the cluster
// every kube.inventory.interval, evaluated by the posture checks and
// spooled (class FINDING) as the chunks the backend assembles. A failed
// snapshot is returned as an error, so the runner retries it with backoff.
func inventoryTask(env clusterEnv) (clusterTask, error) {
	ic := env.cfg.Kube.Inventory
	col, err := inventory.NewCollector(env.rest, inventory.Options{PageSize: ic.PageSize, Log: env.log})
	if err != nil {
		return clusterTask{}, fmt.Errorf("kube.inventory: %w", err)
	}
	interval := ic.IntervalOrDefault()
	return clusterTask{Name: "inventory", Run: func(ctx context.Context) error {
		for {
			if err := snapshotOnce(ctx, col, env); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(interval):
			}
		}
	}}, nil
}

// snapshotOnce takes, evaluates and spools one snapshot.
func snapshotOnce(ctx context.Context, col *inventory.Collector, env clusterEnv) error {
	start := time.Now()
	snap, err := col.Collect(ctx)
	if err != nil {
		return fmt.Errorf("inventory snapshot: %w", err)
	}
	cluster, node := env.cfg.Analytics.Cluster, env.cfg.Kube.Node
	findings := posture.Evaluate(snap, cluster, node, env.cfg.Kube.Posture)
	// Unique per leader and time; the backend orders snapshots by time.
	id := node + "-" + strconv.FormatInt(start.UnixNano(), 36)
	chunks := snap.Chunks(cluster, node, id, findings, 0)
	payloads := make([][]byte, 0, len(chunks))
	for _, c := range chunks {
		b, err := proto.Marshal(&api.Record{Class: api.RecordClass_RECORD_CLASS_FINDING, Payload: &api.Record_Inventory{Inventory: c}})
		if err != nil {
			return fmt.Errorf("encode inventory chunk: %w", err)
		}
		payloads = append(payloads, b)
	}
	if _, err := env.spool.AppendBatch(store.ClassFinding, payloads); err != nil {
		return fmt.Errorf("spool inventory snapshot: %w", err)
	}
	env.notify()
	items := 0
	for _, c := range chunks {
		items += len(c.GetItems())
	}
	env.log.Info("kube: inventory snapshot spooled", "snapshot", id, "items", items, "findings", len(findings),
		"chunks", len(chunks), "kindErrors", len(snap.Errors), "took", time.Since(start).Round(time.Millisecond))
	for _, ke := range snap.Errors {
		env.log.Warn("kube: inventory kind not listed; its checks are skipped", "kind", ke.Kind, "reason", ke.Reason, "error", ke.Err)
	}
	return nil
}

// nodePosture evaluates this node's own settings (the kubelet's
// configuration file) for the heartbeat: re-read at most every
// nodePostureEvery, each finding keeping the time this agent first saw it.
type nodePosture struct {
	path, cluster, node string
	cfg                 posture.Config
	log                 *slog.Logger
	mu                  sync.Mutex
	checked             time.Time
	current             []*api.Finding
	firstSeen           map[string]*timestamppb.Timestamp
	lastErr             string
}

const nodePostureEvery = 5 * time.Minute

func newNodePosture(cfg Config, log *slog.Logger) *nodePosture {
	if cfg.Kube.KubeletConfig == "off" {
		return nil
	}
	return &nodePosture{path: cfg.Kube.KubeletConfig, cluster: cfg.Analytics.Cluster, node: cfg.Kube.Node,
		cfg: cfg.Kube.Posture, log: log, firstSeen: map[string]*timestamppb.Timestamp{}}
}

// Findings returns the node's current findings (nil for a nil receiver).
func (n *nodePosture) Findings(now time.Time) []*api.Finding {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.checked.IsZero() && now.Sub(n.checked) < nodePostureEvery {
		return n.current
	}
	n.checked = now
	fs, err := posture.CheckKubeletConfig(n.path, n.cluster, n.node, n.cfg)
	if err != nil {
		// Logged once per distinct error; the last good findings stay.
		if msg := err.Error(); msg != n.lastErr {
			n.log.Warn("kube: kubelet configuration not checked", "error", err)
			n.lastErr = msg
		}
		return n.current
	}
	n.lastErr = ""
	seen := make(map[string]*timestamppb.Timestamp, len(fs))
	for _, f := range fs {
		first := n.firstSeen[f.GetId()]
		if first == nil {
			first = timestamppb.New(now)
		}
		seen[f.GetId()] = first
		f.FirstSeen, f.LastSeen = first, timestamppb.New(now)
	}
	n.firstSeen, n.current = seen, fs
	return fs
}

// postureChecker gives the admission guard the posture package's pod-spec
// checks.
type postureChecker struct {
	cluster string
	cfg     posture.Config
}

func (p postureChecker) CheckPodSpec(meta metav1.ObjectMeta, spec *corev1.PodSpec, ref *api.ObjectRef) []*api.Finding {
	fs := posture.CheckPodSpec(meta, spec, ref, p.cfg)
	for _, f := range fs {
		f.Cluster = p.cluster
		f.Id = posture.FindingID(f.GetCheckId(), p.cluster, f.GetObject(), f.GetContainer())
	}
	return fs
}

// admissionQueue bounds the violations waiting for the pipeline: the guard
// answers on the API server's request path and never waits for analytics.
const admissionQueue = 1024

// admissionSink carries the guard's violations to the pipeline as events of
// kind admission; what does not fit is counted, never waited for.
type admissionSink struct {
	events  chan *api.Event
	dropped atomic.Uint64
}

func newAdmissionSink() *admissionSink {
	return &admissionSink{events: make(chan *api.Event, admissionQueue)}
}

// offer hands ev to the pipeline without blocking.
func (s *admissionSink) offer(ev *api.Event) {
	select {
	case s.events <- ev:
	default:
		s.dropped.Add(1)
	}
}

// admissionEvent is one failed control of one admission request, as the
// engine reads it (admission-violation). The guard calls OnViolation only
// for objects with failed controls, and then refuses them in deny mode and
// admits them in audit mode.
func admissionEvent(f *api.Finding, req *admissionv1.AdmissionRequest, mode, node string, now time.Time) *api.Event {
	obj := f.GetObject()
	kind, ns, name := obj.GetKind(), obj.GetNamespace(), obj.GetName()
	if kind == "" {
		kind = req.Kind.Kind
	}
	if ns == "" {
		ns = req.Namespace
	}
	if name == "" {
		name = req.Name
	}
	return &api.Event{Time: timestamppb.New(now), Node: node, Kind: api.EventKind_EVENT_KIND_ADMISSION,
		Detail: &api.Event_Admission{Admission: &api.Admission{
			RequestUid: string(req.UID), Operation: string(req.Operation),
			User: req.UserInfo.Username, Groups: req.UserInfo.Groups,
			ApiGroup: req.Resource.Group, Resource: req.Resource.Resource, Subresource: req.SubResource,
			Kind: kind, Namespace: ns, Name: name,
			Mode: mode, Allowed: mode != admission.ModeDeny, DryRun: req.DryRun != nil && *req.DryRun,
			CheckId: f.GetCheckId(), Title: f.GetTitle(), Severity: f.GetSeverity().Name(), Container: f.GetContainer(),
			Detail: f.GetDetail(), Remediation: f.GetRemediation(), FindingId: f.GetId(),
		}}}
}

// startAdmission runs the admission guard when kube.admission asks for it
// and registers its webhook; with the guard off it removes a registration
// left behind (best effort: the API server may be away). Every failed
// control, in both modes, goes to sink as an event for the engine (nil
// sink: none).
func startAdmission(ctx context.Context, cfg Config, run func(string, func() error), sink *admissionSink, log *slog.Logger) (*admission.Server, error) {
	ac := cfg.Kube.Admission
	if !cfg.Kube.Enabled() {
		return nil, nil
	}
	rc, err := cfg.Kube.RESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	if !ac.Enabled {
		run("admission clean-up", func() error {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := admission.Unregister(cctx, rc, ac); err != nil && ctx.Err() == nil {
				log.Debug("kube: admission webhook registration not removed", "error", err)
			}
			return nil
		})
		return nil, nil
	}
	ac = ac.WithDefaults()
	// A certificate the API server would refuse leaves every object
	// admitted unchecked; say so here, where the operator looks, and keep
	// the rest of the agent running.
	if err := ac.VerifyServingCert(); err != nil {
		log.Error("kube: admission guard not started; the API server admits without it (failurePolicy Ignore)", "error", err)
		return nil, nil
	}
	srv, err := admission.NewServer(ac, admission.Options{
		Checker: postureChecker{cluster: cfg.Analytics.Cluster, cfg: cfg.Kube.Posture},
		OnViolation: func(f *api.Finding, req *admissionv1.AdmissionRequest) {
			// On the API server's request path: no waiting here. The alert
			// (admission-violation) is the record; the log line is for
			// debugging only.
			log.Debug("kube: admission guard violation", "mode", ac.Mode, "check", f.GetCheckId(),
				"kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name, "user", req.UserInfo.Username, "detail", f.GetDetail())
			if sink != nil {
				sink.offer(admissionEvent(f, req, ac.Mode, cfg.Sensor.Node, time.Now()))
			}
		},
		Log: log,
	})
	if err != nil {
		return nil, fmt.Errorf("kube.admission: %w", err)
	}
	caBundle, err := ac.CABundle()
	if err != nil {
		return nil, fmt.Errorf("kube.admission: %w", err)
	}
	run("admission guard", func() error {
		// The guard is optional and fails open: the agent's own work goes on
		// without it.
		if err := srv.ListenAndServe(ctx, ac.Addr); err != nil && ctx.Err() == nil {
			log.Error("kube: admission guard stopped; the API server admits without it (failurePolicy Ignore)", "error", err)
		}
		return nil
	})
	run("admission registration", func() error {
		// The API server may be away at start: keep trying, it only
		// delays the guard (which fails open meanwhile by design).
		for backoff := time.Second; ; backoff = min(2*backoff, time.Minute) {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := admission.Register(rctx, rc, ac, caBundle)
			cancel()
			if err == nil {
				log.Info("kube: admission guard registered", "mode", ac.Mode, "addr", ac.Addr, "failurePolicy", ac.FailurePolicy)
				return nil
			}
			log.Warn("kube: admission webhook not registered yet; retrying", "retryIn", backoff, "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
	})
	return srv, nil
}
