// Package kube gives Harrier its Kubernetes context: a node-scoped pod
// informer that maps container IDs to pods (namespace, workload, labels,
// image, service account) for the events of this node's containers.
//
// kube imports api and client-go only; the agent wires it into the
// pipeline, between the sensor and analytics.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/kube/admission"
	"github.com/harrier-sec/harrier/kube/kubeclient"
	"github.com/harrier-sec/harrier/kube/leader"
	"github.com/harrier-sec/harrier/kube/posture"
)

// Config is the `kube:` section of the agent's configuration.
type Config struct {
	// Mode is "auto" (default: on when Kubeconfig is set or the agent runs
	// in a pod), "on" (fail to start without a cluster) or "off".
	Mode string `json:"mode,omitempty"`
	// Kubeconfig is a kubeconfig file; empty means the in-cluster
	// configuration (service account token and KUBERNETES_SERVICE_HOST).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Node is this node's name as the API server knows it (default: the
	// sensor's node name).
	Node string `json:"node,omitempty"`
	// SyncTimeout bounds how long startup waits for the first pod list
	// (default 10s); past it the agent runs and the informer keeps trying.
	SyncTimeout confval.Duration `json:"syncTimeout,omitempty"`
	// Audit receives the API server's audit events (control-plane nodes).
	Audit AuditConfig `json:"audit"`
	// NodeState reads pod context from the container runtime's state on
	// the node when the API server cannot give it.
	NodeState NodeStateConfig `json:"nodeState"`
	// Admission is the optional admission guard (off by default).
	Admission admission.Config `json:"admission"`
	// LeaderElection elects the one agent of the cluster that runs the
	// cluster-level tasks.
	LeaderElection leader.Config `json:"leaderElection"`
	// Inventory is the leader's periodic snapshot of the cluster, shipped
	// with the posture findings evaluated on it.
	Inventory InventoryConfig `json:"inventory"`
	// Posture selects and tunes the posture checks (inventory snapshots,
	// this node's kubelet settings and the admission guard).
	Posture posture.Config `json:"posture"`
	// KubeletConfig is this node's KubeletConfiguration file, checked for
	// anonymous auth, the read-only port and AlwaysAllow authorization
	// (default /var/lib/kubelet/config.yaml; "off" disables; a missing
	// file means no kubelet here).
	KubeletConfig string `json:"kubeletConfig,omitempty"`
}

// InventoryConfig is `kube.inventory`.
type InventoryConfig struct {
	// Mode is "auto" (default: on where leader election runs) or "off".
	Mode string `json:"mode,omitempty"`
	// Interval between snapshots (default 10m, at least 1m).
	Interval confval.Duration `json:"interval,omitempty"`
	// PageSize is the LIST page size (default 500).
	PageSize int64 `json:"pageSize,omitempty"`
}

// DefaultInventoryInterval is InventoryConfig.Interval's default.
const DefaultInventoryInterval = 10 * time.Minute

// On says whether the leader takes snapshots.
func (c InventoryConfig) On() bool { return c.Mode != "off" }

// IntervalOrDefault is the interval with the default filled in.
func (c InventoryConfig) IntervalOrDefault() time.Duration {
	if c.Interval <= 0 {
		return DefaultInventoryInterval
	}
	return c.Interval.Std()
}

func (c InventoryConfig) validate() error {
	var errs []error
	switch c.Mode {
	case "", "auto", "off":
	default:
		errs = append(errs, fmt.Errorf("kube.inventory.mode %q: must be auto or off", c.Mode))
	}
	if c.Interval != 0 && c.Interval.Std() < time.Minute {
		errs = append(errs, fmt.Errorf("kube.inventory.interval %s: must be at least 1m", c.Interval.Std()))
	}
	if c.PageSize < 0 {
		errs = append(errs, errors.New("kube.inventory.pageSize: must not be negative"))
	}
	return errors.Join(errs...)
}

// AuditConfig turns on the audit webhook receiver and/or the audit log
// tailer. Both are independent of the pod informer.
type AuditConfig struct {
	// WebhookAddr is where the HTTPS audit webhook listens (e.g.
	// "127.0.0.1:9473"); empty: off. The API server's
	// --audit-webhook-config-file points at https://ADDR/.
	WebhookAddr string `json:"webhookAddr,omitempty"`
	// CertFile and KeyFile are the webhook's serving certificate.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// ClientCAFile is the CA that signed the API server's client
	// certificate, and TokenFile holds the bearer token it sends (the
	// webhook kubeconfig user's token/tokenFile; re-read when it changes).
	// At least one is required: the receiver accepts no unauthenticated
	// posts. With both, either authenticates.
	ClientCAFile string `json:"clientCAFile,omitempty"`
	TokenFile    string `json:"tokenFile,omitempty"`
	// MaxBodyBytes bounds one webhook request (default 16 MiB).
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`
	// LogPath is the API server's JSON audit log to follow (its
	// --audit-log-path with --audit-log-format=json); empty: off.
	LogPath string `json:"logPath,omitempty"`
	// MaxObjectBytes bounds the request object kept per event (default 64 KiB).
	MaxObjectBytes int `json:"maxObjectBytes,omitempty"`
}

// Enabled says whether the config asks for Kubernetes context here.
func (c Config) Enabled() bool {
	switch c.Mode {
	case "off":
		return false
	case "on":
		return true
	}
	return c.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != ""
}

// Validate reports a bad mode.
func (c Config) Validate() error {
	switch c.Mode {
	case "", "auto", "on", "off":
	default:
		return fmt.Errorf("kube.mode %q: must be auto, on or off", c.Mode)
	}
	if a := c.Audit; a.WebhookAddr != "" && (a.CertFile == "" || a.KeyFile == "" || (a.ClientCAFile == "" && a.TokenFile == "")) {
		return errors.New("kube.audit: webhookAddr needs certFile, keyFile, and clientCAFile and/or tokenFile")
	}
	if c.Audit.MaxBodyBytes < 0 || c.Audit.MaxObjectBytes < 0 {
		return errors.New("kube.audit: maxBodyBytes and maxObjectBytes must not be negative")
	}
	if c.SyncTimeout < 0 {
		return errors.New("kube.syncTimeout: must not be negative")
	}
	return errors.Join(c.NodeState.Validate(), c.Admission.Validate(), c.LeaderElection.Validate(),
		c.Inventory.validate(), c.Posture.Validate())
}

// UserAgent names the agent's requests to the API server.
const UserAgent = "harrier-agent"

// RESTConfig loads the client configuration the config names.
func (c Config) RESTConfig() (*rest.Config, error) {
	return kubeclient.Load(c.Kubeconfig, UserAgent)
}

// Pods runs the pod informer of one node and serves lookups from its
// index. When the API server is unreachable the index keeps the last known
// pods and the informer keeps retrying (client-go backs off by itself).
type Pods struct {
	Index *PodIndex
	node  string
	inf   cache.SharedIndexInformer
	log   *slog.Logger
	// lastErr is the informer's last list or watch error.
	lastErr atomic.Pointer[error]
}

// PodSource lists and watches pods across namespaces; client-go's typed
// PodInterface is one (tests use the fake clientset's), NewPodSource another.
type PodSource interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// restPods is a PodSource over a REST client whose scheme knows core/v1
// only (see package kubeclient).
type restPods struct {
	c      rest.Interface
	params runtime.ParameterCodec
}

// NewPodSource connects to the API server rc names.
func NewPodSource(rc *rest.Config) (PodSource, error) {
	cs, err := kubeclient.New(rc, corev1.AddToScheme)
	if err != nil {
		return nil, err
	}
	c, err := cs.For(corev1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	return restPods{c: c, params: cs.Params}, nil
}

func (r restPods) List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	out := &corev1.PodList{}
	err := r.c.Get().Resource("pods").VersionedParams(&opts, r.params).Do(ctx).Into(out)
	return out, err
}

func (r restPods) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return r.c.Get().Resource("pods").VersionedParams(&opts, r.params).Watch(ctx)
}

// NewPods prepares the informer for pods bound to node; Run starts it.
func NewPods(pods PodSource, node string, log *slog.Logger) (*Pods, error) {
	if node == "" {
		return nil, errors.New("kube: node name is empty")
	}
	selector := fields.OneTermEqualSelector("spec.nodeName", node).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return pods.Watch(ctx, o)
		},
	}
	// A source that cannot stream the initial list over a watch (the fake
	// clientset) says so; the API server can.
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, pods),
		&corev1.Pod{}, cache.SharedIndexInformerOptions{})
	if err := inf.SetTransform(StripPod); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	p := &Pods{Index: NewPodIndex(), node: node, inf: inf, log: log}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.upsert(obj) },
		UpdateFunc: func(_, obj any) { p.upsert(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				p.Index.Delete(string(pod.UID))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	// The last error is kept to say why pod context is missing (refused
	// credentials read differently from a server that is away).
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		p.lastErr.Store(&err)
		log.Warn("kube: pod watch failed; keeping the last known pods and retrying", "node", node, "error", err)
	}); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	return p, nil
}

func (p *Pods) upsert(obj any) {
	if pod, ok := obj.(*corev1.Pod); ok {
		p.Index.Upsert(pod)
	}
}

// Run runs the informer until ctx is done.
func (p *Pods) Run(ctx context.Context) error {
	p.inf.RunWithContext(ctx)
	return nil
}

// WaitSynced waits for the first list, at most timeout; false means the
// API server did not answer in time (the informer keeps trying).
func (p *Pods) WaitSynced(ctx context.Context, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cache.WaitForCacheSync(ctx.Done(), p.inf.HasSynced)
}

// Enricher fills the pod fields of events' containers. It is owned by one
// goroutine (the pipeline's); the index it reads is shared.
type Enricher struct {
	index *PodIndex  // nil without an API server
	state *NodeState // nil when kube.nodeState is off
	// The sensor shares one *api.Container among a process's events, so
	// the enriched copy is cached per source container and index version.
	cache map[*api.Container]enriched
}

type enriched struct {
	gen uint64
	out *api.Container
}

const maxEnrichCache = 4096

// NewEnricher reads index first and, for containers it does not know
// (the API server is away, or has not told the informer yet), state.
// Either may be nil.
func NewEnricher(index *PodIndex, state *NodeState) *Enricher {
	return &Enricher{index: index, state: state, cache: map[*api.Container]enriched{}}
}

// Enrich replaces ev's container with one carrying its pod's fields, when
// the pod is known. The sensor's container is not modified.
func (e *Enricher) Enrich(ev *api.Event) {
	src := ev.GetContainer()
	if src == nil || (src.Id == "" && src.PodUid == "") {
		return
	}
	var gen uint64
	if e.index != nil {
		gen = e.index.Generation()
	}
	if c, ok := e.cache[src]; ok && c.gen == gen {
		if c.out != nil {
			ev.Container = c.out
		}
		return
	}
	var pod *api.Container
	ok := false
	if e.index != nil {
		pod, ok = e.index.Lookup(src.Id, src.PodUid)
	}
	// A container the informer does not know yet (a restart while the API
	// server is away, so the pod's status is stale) matches its pod by UID,
	// with pod fields only: its name and image come from the runtime's
	// bundle instead.
	var named *api.Container
	if ok && pod.Name == "" && e.state != nil {
		named, _ = e.state.Lookup(src.Id)
	}
	if !ok && e.state != nil {
		pod, ok = e.state.Lookup(src.Id)
	}
	var out *api.Container
	if ok {
		out = &api.Container{
			Runtime: src.Runtime, Id: src.Id, Cgroup: src.Cgroup,
			Name: pod.Name, Image: pod.Image, ImageDigest: pod.ImageDigest,
			PodName: pod.PodName, PodNamespace: pod.PodNamespace, PodUid: pod.PodUid,
			WorkloadKind: pod.WorkloadKind, WorkloadName: pod.WorkloadName,
			ServiceAccount: pod.ServiceAccount, Labels: pod.Labels,
			// Either source suffices: the sensor's view works without
			// the API server, the pod spec before anything has run.
			Privileged: src.Privileged || pod.Privileged,
		}
		if named != nil {
			out.Name, out.Image = named.Name, named.Image
		}
		ev.Container = out
	}
	if len(e.cache) >= maxEnrichCache {
		clear(e.cache)
	}
	e.cache[src] = enriched{gen: gen, out: out}
}

// StartEnrichment starts what cfg asks for to give events their pod
// context — the pod informer (under run) and the runtime's node state —
// and returns the enrichment function (a no-op when both are off) and the
// informer (nil when off). It waits up to cfg.SyncTimeout for the first
// pod list.
func StartEnrichment(ctx context.Context, cfg Config, log *slog.Logger, run func(name string, f func() error)) (func(*api.Event), *Pods, error) {
	pods, err := New(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	var state *NodeState
	switch cfg.NodeState.Mode {
	case "on":
		state = NewNodeState(cfg.NodeState)
	case "", "auto":
		if pods != nil {
			state = NewNodeState(cfg.NodeState)
		}
	}
	if pods == nil && state == nil {
		return func(*api.Event) {}, nil, nil
	}
	if state != nil {
		if err := state.Check(); err != nil {
			log.Warn("kube: pod context while the API server is away is unavailable", "error", err)
		}
	}
	var index *PodIndex
	if pods != nil {
		pods.Start(ctx, cfg.SyncTimeout.Std(), run)
		index = pods.Index
	}
	return NewEnricher(index, state).Enrich, pods, nil
}

// DefaultSyncTimeout is Config.SyncTimeout's default.
const DefaultSyncTimeout = 10 * time.Second

// New connects to the API server the config names and prepares the pod
// informer; it returns nil (and no error) when the config leaves Kubernetes
// off. The caller runs it (Pods.Run) and may wait for it (Pods.WaitSynced).
func New(cfg Config, log *slog.Logger) (*Pods, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, err := cfg.RESTConfig()
	if err != nil {
		return nil, err
	}
	client, err := NewPodSource(rc)
	if err != nil {
		return nil, err
	}
	node := cfg.Node
	if node == "" {
		if node, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("kube: node name: %w", err)
		}
	}
	return NewPods(client, node, log)
}

// Start runs p until ctx is done and waits up to timeout (0: the default)
// for the first pod list, logging whether it came. It returns at once for
// a nil p.
func (p *Pods) Start(ctx context.Context, timeout time.Duration, run func(name string, f func() error)) {
	if p == nil {
		return
	}
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	run("kube pods", func() error { return p.Run(ctx) })
	if p.WaitSynced(ctx, timeout) {
		p.log.Info("kube: pod context ready", "node", p.node, "pods", p.Index.Len())
	} else {
		p.log.Warn("kube: no pod list yet; events carry no pod context until it comes", "node", p.node, "waited", timeout,
			"reason", p.notSyncedReason())
	}
}

// notSyncedReason says, in words, why the first pod list has not come.
func (p *Pods) notSyncedReason() string {
	e := p.lastErr.Load()
	switch {
	case e == nil:
		return "the API server has not answered"
	case apierrors.IsUnauthorized(*e):
		return "the API server refused the credentials (401): check kube.kubeconfig, or the service account token in a pod: " + (*e).Error()
	case apierrors.IsForbidden(*e):
		return "RBAC does not let this identity list pods (403): " + (*e).Error()
	default:
		return (*e).Error()
	}
}
