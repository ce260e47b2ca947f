// Package inventory takes periodic snapshots of a cluster through the API
// server: nodes, namespaces, workloads, pods, services, ingresses, network
// policies, service accounts and RBAC. Each snapshot is a set of paginated
// LISTs (no informers), so nothing of it stays in memory between
// snapshots. The typed [Snapshot] feeds the posture checks; [Snapshot.Items]
// reduces it to api.InventoryItem records and [Chunks] cuts those (with
// their findings) into bounded api.InventoryChunk records.
//
// Like package kube it talks to the API server through REST clients whose
// scheme holds only the groups it lists: client-go's clientset links every
// API group's scheme (~40 MB).
package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/kube/kubeclient"
)

// DefaultPageSize is the LIST page size (Options.PageSize's default).
const DefaultPageSize = 500

// Options configures a Collector.
type Options struct {
	// PageSize is the limit of one LIST request (default DefaultPageSize).
	PageSize int64
	// Kinds restricts the snapshot to these kinds (e.g. "Pod",
	// "ClusterRole"); empty means all of AllKinds.
	Kinds []string
	// Log receives one line per kind that could not be listed; nil: discard.
	Log *slog.Logger
}

// Snapshot is one collection of the cluster. Objects keep their spec and
// status except what neither the inventory nor the posture checks read and
// can be large: managed fields, the last-applied-configuration annotation,
// and in pods and pod templates the containers' commands, arguments,
// probes, lifecycle hooks and volume mounts, affinity, tolerations,
// topology spread constraints, pod conditions and container states.
type Snapshot struct {
	// Time is when the collection started; Duration how long it took.
	Time     time.Time
	Duration time.Duration

	Nodes               []corev1.Node
	Namespaces          []corev1.Namespace
	Pods                []corev1.Pod
	Services            []corev1.Service
	ServiceAccounts     []corev1.ServiceAccount
	Deployments         []appsv1.Deployment
	StatefulSets        []appsv1.StatefulSet
	DaemonSets          []appsv1.DaemonSet
	ReplicaSets         []appsv1.ReplicaSet
	Jobs                []batchv1.Job
	CronJobs            []batchv1.CronJob
	Ingresses           []networkingv1.Ingress
	NetworkPolicies     []networkingv1.NetworkPolicy
	Roles               []rbacv1.Role
	ClusterRoles        []rbacv1.ClusterRole
	RoleBindings        []rbacv1.RoleBinding
	ClusterRoleBindings []rbacv1.ClusterRoleBinding

	// Errors lists the kinds that could not be listed; their slices are
	// empty. The rest of the snapshot is complete.
	Errors []KindError
}

// Failed reports whether kind could not be listed (so an empty slice of it
// means "unknown", not "none").
func (s *Snapshot) Failed(kind string) bool {
	return slices.ContainsFunc(s.Errors, func(e KindError) bool { return e.Kind == kind })
}

// ErrorMap is Errors as kind → reason and message, for
// api.InventoryChunk.errors.
func (s *Snapshot) ErrorMap() map[string]string {
	if len(s.Errors) == 0 {
		return nil
	}
	m := make(map[string]string, len(s.Errors))
	for _, e := range s.Errors {
		m[e.Kind] = e.Error()
	}
	return m
}

// Reasons of a KindError.
const (
	ReasonForbidden = "Forbidden" // the client's RBAC does not allow listing the kind
	ReasonNotServed = "NotServed" // the API server does not serve the group/version
	ReasonFailed    = "Failed"    // anything else (timeouts, server errors)
)

// KindError is why one kind is missing from a snapshot.
type KindError struct {
	Kind   string
	Reason string
	Err    error
}

func (e KindError) Error() string { return fmt.Sprintf("%s: %s: %v", e.Kind, e.Reason, e.Err) }
func (e KindError) Unwrap() error { return e.Err }

// kindSpec lists one kind into a snapshot.
type kindSpec struct {
	kind     string
	gv       schema.GroupVersion
	resource string
	list     func(ctx context.Context, c *Collector, r rest.Interface, s *Snapshot) error
}

// AllKinds are the kinds a snapshot holds, in collection order.
func AllKinds() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.kind
	}
	return out
}

var kinds = []kindSpec{
	spec("Node", corev1.SchemeGroupVersion, "nodes", func(l *corev1.NodeList) []corev1.Node { return l.Items },
		func(s *Snapshot, v []corev1.Node) { s.Nodes = v }),
	spec("Namespace", corev1.SchemeGroupVersion, "namespaces", func(l *corev1.NamespaceList) []corev1.Namespace { return l.Items },
		func(s *Snapshot, v []corev1.Namespace) { s.Namespaces = v }),
	spec("Pod", corev1.SchemeGroupVersion, "pods", func(l *corev1.PodList) []corev1.Pod { return l.Items },
		func(s *Snapshot, v []corev1.Pod) { s.Pods = v }),
	spec("Service", corev1.SchemeGroupVersion, "services", func(l *corev1.ServiceList) []corev1.Service { return l.Items },
		func(s *Snapshot, v []corev1.Service) { s.Services = v }),
	spec("ServiceAccount", corev1.SchemeGroupVersion, "serviceaccounts", func(l *corev1.ServiceAccountList) []corev1.ServiceAccount { return l.Items },
		func(s *Snapshot, v []corev1.ServiceAccount) { s.ServiceAccounts = v }),
	spec("Deployment", appsv1.SchemeGroupVersion, "deployments", func(l *appsv1.DeploymentList) []appsv1.Deployment { return l.Items },
		func(s *Snapshot, v []appsv1.Deployment) { s.Deployments = v }),
	spec("StatefulSet", appsv1.SchemeGroupVersion, "statefulsets", func(l *appsv1.StatefulSetList) []appsv1.StatefulSet { return l.Items },
		func(s *Snapshot, v []appsv1.StatefulSet) { s.StatefulSets = v }),
	spec("DaemonSet", appsv1.SchemeGroupVersion, "daemonsets", func(l *appsv1.DaemonSetList) []appsv1.DaemonSet { return l.Items },
		func(s *Snapshot, v []appsv1.DaemonSet) { s.DaemonSets = v }),
	spec("ReplicaSet", appsv1.SchemeGroupVersion, "replicasets", func(l *appsv1.ReplicaSetList) []appsv1.ReplicaSet { return l.Items },
		func(s *Snapshot, v []appsv1.ReplicaSet) { s.ReplicaSets = v }),
	spec("Job", batchv1.SchemeGroupVersion, "jobs", func(l *batchv1.JobList) []batchv1.Job { return l.Items },
		func(s *Snapshot, v []batchv1.Job) { s.Jobs = v }),
	spec("CronJob", batchv1.SchemeGroupVersion, "cronjobs", func(l *batchv1.CronJobList) []batchv1.CronJob { return l.Items },
		func(s *Snapshot, v []batchv1.CronJob) { s.CronJobs = v }),
	spec("Ingress", networkingv1.SchemeGroupVersion, "ingresses", func(l *networkingv1.IngressList) []networkingv1.Ingress { return l.Items },
		func(s *Snapshot, v []networkingv1.Ingress) { s.Ingresses = v }),
	spec("NetworkPolicy", networkingv1.SchemeGroupVersion, "networkpolicies", func(l *networkingv1.NetworkPolicyList) []networkingv1.NetworkPolicy { return l.Items },
		func(s *Snapshot, v []networkingv1.NetworkPolicy) { s.NetworkPolicies = v }),
	spec("Role", rbacv1.SchemeGroupVersion, "roles", func(l *rbacv1.RoleList) []rbacv1.Role { return l.Items },
		func(s *Snapshot, v []rbacv1.Role) { s.Roles = v }),
	spec("ClusterRole", rbacv1.SchemeGroupVersion, "clusterroles", func(l *rbacv1.ClusterRoleList) []rbacv1.ClusterRole { return l.Items },
		func(s *Snapshot, v []rbacv1.ClusterRole) { s.ClusterRoles = v }),
	spec("RoleBinding", rbacv1.SchemeGroupVersion, "rolebindings", func(l *rbacv1.RoleBindingList) []rbacv1.RoleBinding { return l.Items },
		func(s *Snapshot, v []rbacv1.RoleBinding) { s.RoleBindings = v }),
	spec("ClusterRoleBinding", rbacv1.SchemeGroupVersion, "clusterrolebindings", func(l *rbacv1.ClusterRoleBindingList) []rbacv1.ClusterRoleBinding { return l.Items },
		func(s *Snapshot, v []rbacv1.ClusterRoleBinding) { s.ClusterRoleBindings = v }),
}

// spec makes the kindSpec of a list type L whose items are T.
func spec[L any, PL interface {
	*L
	runtime.Object
	GetContinue() string
}, T any](kind string, gv schema.GroupVersion, resource string, items func(PL) []T, set func(*Snapshot, []T)) kindSpec {
	return kindSpec{kind: kind, gv: gv, resource: resource,
		list: func(ctx context.Context, c *Collector, r rest.Interface, s *Snapshot) error {
			v, err := listAll[L, PL](ctx, r, c.params, resource, c.pageSize, items)
			if err != nil {
				return err
			}
			set(s, v)
			return nil
		}}
}

// listAll pages through one resource. A continue token that expired
// between pages (410 Gone: the snapshot took longer than etcd's
// compaction window) restarts the list once from the beginning.
func listAll[L any, PL interface {
	*L
	runtime.Object
	GetContinue() string
}, T any](ctx context.Context, r rest.Interface, params runtime.ParameterCodec, resource string, limit int64, items func(PL) []T) ([]T, error) {
	var out []T
	opts := metav1.ListOptions{Limit: limit}
	restarted := false
	for {
		page := PL(new(L))
		err := r.Get().Resource(resource).VersionedParams(&opts, params).Do(ctx).Into(page)
		if err != nil {
			if apierrors.IsResourceExpired(err) && opts.Continue != "" && !restarted {
				restarted, out, opts.Continue = true, nil, ""
				continue
			}
			return nil, err
		}
		got := items(page)
		for i := range got {
			strip(any(&got[i]))
		}
		out = append(out, got...)
		if opts.Continue = page.GetContinue(); opts.Continue == "" {
			return out, nil
		}
	}
}

// strip drops what no check or inventory item reads and can be large.
func strip(obj any) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a != nil {
			delete(a, corev1.LastAppliedConfigAnnotation)
		}
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		stripPodSpec(&o.Spec)
		o.Status.Conditions = nil
		for _, list := range [][]corev1.ContainerStatus{o.Status.InitContainerStatuses, o.Status.ContainerStatuses, o.Status.EphemeralContainerStatuses} {
			for i := range list {
				list[i].State, list[i].LastTerminationState = corev1.ContainerState{}, corev1.ContainerState{}
			}
		}
	case *appsv1.Deployment:
		stripPodSpec(&o.Spec.Template.Spec)
	case *appsv1.StatefulSet:
		stripPodSpec(&o.Spec.Template.Spec)
	case *appsv1.DaemonSet:
		stripPodSpec(&o.Spec.Template.Spec)
	case *appsv1.ReplicaSet:
		stripPodSpec(&o.Spec.Template.Spec)
	case *batchv1.Job:
		stripPodSpec(&o.Spec.Template.Spec)
	case *batchv1.CronJob:
		stripPodSpec(&o.Spec.JobTemplate.Spec.Template.Spec)
	}
}

func stripPodSpec(s *corev1.PodSpec) {
	s.Affinity, s.Tolerations, s.TopologySpreadConstraints = nil, nil, nil
	for _, list := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range list {
			c := &list[i]
			c.Command, c.Args, c.VolumeMounts, c.VolumeDevices = nil, nil, nil, nil
			c.LivenessProbe, c.ReadinessProbe, c.StartupProbe, c.Lifecycle = nil, nil, nil, nil
		}
	}
	for i := range s.EphemeralContainers {
		c := &s.EphemeralContainers[i]
		c.Command, c.Args, c.VolumeMounts, c.VolumeDevices = nil, nil, nil, nil
	}
}

// Stats count a Collector's work since it was made.
type Stats struct {
	Snapshots  uint64 // Collect calls that returned a snapshot
	KindErrors uint64 // kinds that could not be listed, summed over snapshots
}

// Collector takes snapshots. It is safe for one Collect at a time.
type Collector struct {
	snapshots, kindErrors atomic.Uint64

	clients  map[schema.GroupVersion]rest.Interface
	params   runtime.ParameterCodec
	pageSize int64
	kinds    []kindSpec
	log      *slog.Logger
}

// NewCollector prepares REST clients for the groups of the kinds opts asks
// for. It does not contact the API server.
func NewCollector(rc *rest.Config, opts Options) (*Collector, error) {
	if rc == nil {
		return nil, errors.New("inventory: nil rest config")
	}
	if opts.PageSize < 0 {
		return nil, fmt.Errorf("inventory: page size %d must not be negative", opts.PageSize)
	}
	c := &Collector{pageSize: opts.PageSize, log: opts.Log, clients: map[schema.GroupVersion]rest.Interface{}}
	if c.pageSize == 0 {
		c.pageSize = DefaultPageSize
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if len(opts.Kinds) == 0 {
		c.kinds = kinds
	} else {
		for _, k := range opts.Kinds {
			i := slices.IndexFunc(kinds, func(s kindSpec) bool { return s.kind == k })
			if i < 0 {
				return nil, fmt.Errorf("inventory: unknown kind %q (known: %v)", k, AllKinds())
			}
			c.kinds = append(c.kinds, kinds[i])
		}
	}
	cs, err := kubeclient.New(rc, corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		networkingv1.AddToScheme, rbacv1.AddToScheme)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	c.params = cs.Params
	for _, k := range c.kinds {
		if _, ok := c.clients[k.gv]; ok {
			continue
		}
		r, err := cs.For(k.gv)
		if err != nil {
			return nil, fmt.Errorf("inventory: %w", err)
		}
		c.clients[k.gv] = r
	}
	return c, nil
}

// Collect lists every kind once. A kind that cannot be listed is recorded
// in Snapshot.Errors and the others still are; the error is non-nil only
// when ctx ends or no kind at all could be listed (the snapshot is then
// still returned, with its errors).
func (c *Collector) Collect(ctx context.Context) (*Snapshot, error) {
	s := &Snapshot{Time: time.Now()}
	for _, k := range c.kinds {
		err := k.list(ctx, c, c.clients[k.gv], s)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("inventory: %s: %w", k.kind, ctx.Err())
		}
		ke := KindError{Kind: k.kind, Reason: reason(err), Err: err}
		c.log.Warn("inventory: kind not listed", "kind", k.kind, "reason", ke.Reason, "error", err)
		s.Errors = append(s.Errors, ke)
	}
	s.Duration = time.Since(s.Time)
	c.snapshots.Add(1)
	c.kindErrors.Add(uint64(len(s.Errors)))
	if len(s.Errors) == len(c.kinds) {
		return s, fmt.Errorf("inventory: no kind could be listed: %w", s.Errors[0])
	}
	return s, nil
}

// Stats returns the counters.
func (c *Collector) Stats() Stats {
	return Stats{Snapshots: c.snapshots.Load(), KindErrors: c.kindErrors.Load()}
}

func reason(err error) string {
	switch {
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return ReasonForbidden
	case apierrors.IsNotFound(err):
		return ReasonNotServed
	}
	return ReasonFailed
}
