// Package leader elects one agent of a cluster to do cluster-level work,
// with a coordination.k8s.io/v1 Lease.
//
// It follows the algorithm and the Lease fields of client-go's
// tools/leaderelection (an agent and a client-go elector see each other's
// leases correctly), but does not import it: that package links client-go's
// clientset and informer factory, with every API group's scheme, which
// costs the agent ~22 MB of binary and ~17 MB of RSS. The REST client here
// knows coordination/v1 only.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/kube/kubeclient"
)

// Defaults of Config.
const (
	DefaultLeaseName     = "harrier-leader"
	DefaultNamespace     = "harrier"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	// ServiceAccountNamespaceFile names the pod's namespace in a pod.
	ServiceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)

// Config is the `kube.leaderElection` section of the agent's configuration.
type Config struct {
	// Enabled runs the election (default true when kube is on).
	Enabled *bool `json:"enabled,omitempty"`
	// Namespace holds the Lease (default: the pod's namespace, else
	// "harrier").
	Namespace string `json:"namespace,omitempty"`
	// LeaseName is the Lease's name (default "harrier-leader").
	LeaseName string `json:"leaseName,omitempty"`
	// LeaseDuration is how long the others wait, after they last saw the
	// lease change, before they take it over (default 15s).
	LeaseDuration confval.Duration `json:"leaseDuration,omitempty"`
	// RenewDeadline is how long the leader keeps trying to renew before it
	// gives up leadership (default 10s); it must be shorter than
	// LeaseDuration, so that the old leader has stopped before another
	// can take over.
	RenewDeadline confval.Duration `json:"renewDeadline,omitempty"`
	// RetryPeriod is the time between attempts to acquire or renew
	// (default 2s). Every agent reads the Lease once per period.
	RetryPeriod confval.Duration `json:"retryPeriod,omitempty"`
}

// On says whether the election runs (when Kubernetes is on at all).
func (c Config) On() bool { return c.Enabled == nil || *c.Enabled }

// WithDefaults fills in unset fields; the namespace comes from nsFile
// (ServiceAccountNamespaceFile in a pod) when it can be read.
func (c Config) WithDefaults(nsFile string) Config {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
		if b, err := os.ReadFile(nsFile); err == nil && strings.TrimSpace(string(b)) != "" {
			c.Namespace = strings.TrimSpace(string(b))
		}
	}
	if c.LeaseName == "" {
		c.LeaseName = DefaultLeaseName
	}
	return c.withDurations()
}

func (c Config) withDurations() Config {
	if c.LeaseDuration == 0 {
		c.LeaseDuration = confval.Duration(DefaultLeaseDuration)
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = confval.Duration(DefaultRenewDeadline)
	}
	if c.RetryPeriod == 0 {
		c.RetryPeriod = confval.Duration(DefaultRetryPeriod)
	}
	return c
}

// jitter stretches the wait between attempts to acquire by up to this
// factor, so that candidates do not retry in lock step (as client-go).
const jitter = 1.2

// Validate checks the durations, with the defaults of the unset ones.
func (c Config) Validate() error {
	d := c.withDurations()
	var errs []error
	if d.LeaseDuration < 0 || d.RenewDeadline < 0 || d.RetryPeriod < 0 {
		errs = append(errs, errors.New("kube.leaderElection: durations must not be negative"))
	} else {
		if d.LeaseDuration < confval.Duration(time.Second) {
			errs = append(errs, fmt.Errorf("kube.leaderElection.leaseDuration %v: must be at least 1s (the Lease counts whole seconds)", d.LeaseDuration.Std()))
		}
		if d.RenewDeadline >= d.LeaseDuration {
			errs = append(errs, fmt.Errorf("kube.leaderElection.renewDeadline %v: must be shorter than leaseDuration %v",
				d.RenewDeadline.Std(), d.LeaseDuration.Std()))
		}
		if float64(d.RenewDeadline) <= jitter*float64(d.RetryPeriod) {
			errs = append(errs, fmt.Errorf("kube.leaderElection.renewDeadline %v: must be longer than %.1f × retryPeriod %v",
				d.RenewDeadline.Std(), jitter, d.RetryPeriod.Std()))
		}
	}
	if c.LeaseName != "" && len(c.LeaseName) > 253 {
		errs = append(errs, errors.New("kube.leaderElection.leaseName: longer than 253 characters"))
	}
	return errors.Join(errs...)
}

// Leases gets, creates and updates the Leases of one namespace.
type Leases interface {
	Get(ctx context.Context, name string) (*coordinationv1.Lease, error)
	Create(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	Update(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
}

// restLeases is Leases over a REST client whose scheme knows
// coordination/v1 only.
type restLeases struct {
	c         rest.Interface
	namespace string
}

// NewLeases connects to the Leases of namespace on the API server rc names.
func NewLeases(rc *rest.Config, namespace string) (Leases, error) {
	cs, err := kubeclient.New(rc, coordinationv1.AddToScheme)
	if err != nil {
		return nil, fmt.Errorf("lease client: %w", err)
	}
	c, err := cs.For(coordinationv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("lease client: %w", err)
	}
	return restLeases{c: c, namespace: namespace}, nil
}

func (r restLeases) Get(ctx context.Context, name string) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.c.Get().Namespace(r.namespace).Resource("leases").Name(name).Do(ctx).Into(out)
	return out, err
}

func (r restLeases) Create(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.c.Post().Namespace(r.namespace).Resource("leases").Body(lease).Do(ctx).Into(out)
	return out, err
}

func (r restLeases) Update(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.c.Put().Namespace(r.namespace).Resource("leases").Name(lease.Name).Body(lease).Do(ctx).Into(out)
	return out, err
}

// Elector campaigns for one Lease on behalf of one identity.
type Elector struct {
	leases                                    Leases
	name                                      string
	identity                                  string
	leaseDuration, renewDeadline, retryPeriod time.Duration
	// ReleaseOnCancel hands the lease over when Run's context ends, so that
	// another candidate takes over at once instead of after LeaseDuration
	// (true from New; false behaves like a crashed agent).
	ReleaseOnCancel bool
	log             *slog.Logger

	leading atomic.Bool
	holder  atomic.Pointer[string]

	// Owned by Run's goroutine: the last version of the lease seen, and
	// when this process saw it change. Expiry is judged by the local clock
	// from that moment, never from the holder's timestamps, so clock skew
	// between nodes does not matter.
	observedVersion string
	observedTime    time.Time
	observedSpec    coordinationv1.LeaseSpec
	failing         bool
}

// New prepares an elector for cfg's lease (cfg.WithDefaults already
// applied) as identity.
func New(leases Leases, cfg Config, identity string, log *slog.Logger) (*Elector, error) {
	if identity == "" {
		return nil, errors.New("leader election: identity (the node name) is empty")
	}
	if cfg.LeaseName == "" {
		return nil, errors.New("leader election: lease name is empty")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := cfg.withDurations()
	return &Elector{leases: leases, name: cfg.LeaseName, identity: identity, ReleaseOnCancel: true, log: log,
		leaseDuration: d.LeaseDuration.Std(), renewDeadline: d.RenewDeadline.Std(), retryPeriod: d.RetryPeriod.Std()}, nil
}

// Identity is the name this elector campaigns as.
func (e *Elector) Identity() string { return e.identity }

// Leading says whether this elector holds the lease now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Holder is the identity last seen holding the lease ("" if none).
func (e *Elector) Holder() string {
	if h := e.holder.Load(); h != nil {
		return *h
	}
	return ""
}

// Run campaigns for the lease until ctx is done. Each time it acquires
// it, lead runs with a context that ends when renewing fails for
// RenewDeadline or ctx ends; Run waits for lead to return before it
// releases the lease or campaigns again. Errors of the API server are
// logged and retried: Run returns only when ctx is done.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) {
	for {
		if !e.acquire(ctx) {
			return
		}
		e.leading.Store(true)
		e.log.Info("leader election: acquired the lease; this agent leads", "lease", e.name, "identity", e.identity)
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lead(lctx)
		}()
		e.renew(lctx)
		e.leading.Store(false)
		cancel()
		<-done
		if ctx.Err() != nil {
			if e.ReleaseOnCancel {
				e.release()
			}
			return
		}
		e.log.Warn("leader election: lost the lease; campaigning again", "lease", e.name, "identity", e.identity)
	}
}

// acquire tries until it holds the lease (true) or ctx is done (false).
func (e *Elector) acquire(ctx context.Context) bool {
	for {
		actx, cancel := context.WithTimeout(ctx, e.renewDeadline)
		ok := e.attempt(actx)
		cancel()
		if ok {
			return true
		}
		wait := e.retryPeriod + time.Duration(rand.Float64()*jitter*float64(e.retryPeriod))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// renew keeps the lease until ctx is done or it cannot be renewed for
// RenewDeadline since the last success, or another holder has it.
func (e *Elector) renew(ctx context.Context) {
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(e.retryPeriod):
		}
		for {
			began := time.Now()
			rctx, cancel := context.WithDeadline(ctx, last.Add(e.renewDeadline))
			ok := e.attempt(rctx)
			cancel()
			if ok {
				last = began
				break
			}
			if ctx.Err() != nil {
				return
			}
			left := time.Until(last.Add(e.renewDeadline))
			if left <= 0 || e.Holder() != e.identity {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(e.retryPeriod, left)):
			}
		}
	}
}

// attempt runs one try and logs API errors when they start and stop.
func (e *Elector) attempt(ctx context.Context) bool {
	ok, err := e.tryAcquireOrRenew(ctx)
	switch {
	case errors.Is(err, context.Canceled):
		// Stopping: not worth a warning.
	case err != nil && (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)):
		// Another candidate wrote the lease first: not a failure.
		e.log.Debug("leader election: lease changed meanwhile", "lease", e.name, "error", err)
	case err != nil && !e.failing:
		e.failing = true
		e.log.Warn("leader election: API server request failed; retrying", "lease", e.name, "identity", e.identity, "error", err)
	case err != nil:
		e.log.Debug("leader election: still failing", "lease", e.name, "error", err)
	case e.failing:
		e.failing = false
		e.log.Info("leader election: API server answering again", "lease", e.name)
	}
	return ok
}

// tryAcquireOrRenew reads the lease and takes or renews it when it is
// free, expired or already ours; the update carries the resourceVersion
// read, so of two candidates only one can win.
func (e *Elector) tryAcquireOrRenew(ctx context.Context) (bool, error) {
	now := time.Now()
	secs := int32((e.leaseDuration + time.Second - 1) / time.Second)
	lease, err := e.leases.Get(ctx, e.name)
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: e.name},
			Spec: e.spec(coordinationv1.LeaseSpec{}, now, secs)}
		created, err := e.leases.Create(ctx, lease)
		if err != nil {
			return false, fmt.Errorf("create lease %s: %w", e.name, err)
		}
		e.observe(created, now)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get lease %s: %w", e.name, err)
	}
	e.observe(lease, now)
	holder := deref(lease.Spec.HolderIdentity)
	duration := e.leaseDuration
	if d := lease.Spec.LeaseDurationSeconds; d != nil && *d > 0 {
		duration = time.Duration(*d) * time.Second
	}
	if holder != "" && holder != e.identity && e.observedTime.Add(duration).After(now) {
		return false, nil
	}
	lease.Spec = e.spec(lease.Spec, now, secs)
	updated, err := e.leases.Update(ctx, lease)
	if err != nil {
		return false, fmt.Errorf("update lease %s: %w", e.name, err)
	}
	e.observe(updated, now)
	return true, nil
}

// spec is old taken or renewed by this elector at now.
func (e *Elector) spec(old coordinationv1.LeaseSpec, now time.Time, secs int32) coordinationv1.LeaseSpec {
	t := metav1.NewMicroTime(now)
	s := coordinationv1.LeaseSpec{HolderIdentity: &e.identity, LeaseDurationSeconds: &secs, RenewTime: &t,
		AcquireTime: old.AcquireTime, LeaseTransitions: old.LeaseTransitions}
	if deref(old.HolderIdentity) != e.identity {
		var n int32
		if old.LeaseTransitions != nil {
			n = *old.LeaseTransitions + 1
		}
		if old.HolderIdentity == nil && old.RenewTime == nil {
			n = 0 // a new lease
		}
		s.AcquireTime, s.LeaseTransitions = &t, &n
	}
	return s
}

// observe records the lease as seen at now and logs a change of holder.
func (e *Elector) observe(lease *coordinationv1.Lease, now time.Time) {
	if lease.ResourceVersion == e.observedVersion && e.observedVersion != "" {
		return
	}
	e.observedVersion, e.observedTime, e.observedSpec = lease.ResourceVersion, now, lease.Spec
	holder := deref(lease.Spec.HolderIdentity)
	if prev := e.Holder(); prev != holder {
		e.holder.Store(&holder)
		if holder != e.identity && holder != "" {
			e.log.Info("leader election: another agent leads", "lease", e.name, "leader", holder)
		}
	}
}

// release hands the lease over: no holder, a one-second duration.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.renewDeadline)
	defer cancel()
	lease, err := e.leases.Get(ctx, e.name)
	if err == nil && deref(lease.Spec.HolderIdentity) != e.identity {
		return // already someone else's
	}
	if err == nil {
		now := metav1.NewMicroTime(time.Now())
		one := int32(1)
		lease.Spec = coordinationv1.LeaseSpec{LeaseDurationSeconds: &one, RenewTime: &now, AcquireTime: &now,
			LeaseTransitions: lease.Spec.LeaseTransitions}
		_, err = e.leases.Update(ctx, lease)
	}
	if err != nil {
		e.log.Warn("leader election: could not release the lease; the others take over when it expires",
			"lease", e.name, "identity", e.identity, "error", err)
		return
	}
	e.log.Info("leader election: released the lease", "lease", e.name, "identity", e.identity)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
