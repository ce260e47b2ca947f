package kube

import (
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube/kubeid"
)

// PodIndex maps the container IDs of this node's pods to their pod context.
// The informer writes it; the pipeline reads it. Entries are immutable once
// stored, so readers may keep them.
type PodIndex struct {
	mu          sync.RWMutex
	byContainer map[string]*api.Container // container ID → pod and container fields
	byUID       map[string]*api.Container // pod UID → pod fields only
	containers  map[string][]string       // pod UID → its container IDs
	gen         atomic.Uint64             // bumped on every change
}

// NewPodIndex returns an empty index.
func NewPodIndex() *PodIndex {
	return &PodIndex{byContainer: map[string]*api.Container{}, byUID: map[string]*api.Container{}, containers: map[string][]string{}}
}

// Generation changes whenever the index does.
func (ix *PodIndex) Generation() uint64 { return ix.gen.Load() }

// Len is the number of pods indexed.
func (ix *PodIndex) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byUID)
}

// Lookup returns the pod context of a container: by container ID, or (for a
// container not yet in the pod's status) by the pod UID the cgroup path
// named, with pod fields only. The result must not be modified.
func (ix *PodIndex) Lookup(containerID, podUID string) (*api.Container, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if c, ok := ix.byContainer[containerID]; ok && containerID != "" {
		return c, true
	}
	if c, ok := ix.byUID[podUID]; ok && podUID != "" {
		return c, true
	}
	return nil, false
}

// Upsert indexes (or re-indexes) a pod.
func (ix *PodIndex) Upsert(pod *corev1.Pod) {
	if pod == nil || pod.UID == "" {
		return
	}
	base := podContext(pod)
	privileged := privilegedContainers(pod)
	ids := map[string]*api.Container{}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			id := kubeid.ContainerID(cs.ContainerID)
			if id == "" {
				continue
			}
			c := cloneContext(base)
			c.Name, c.Image, c.ImageDigest = cs.Name, cs.Image, kubeid.ImageDigest(cs.ImageID)
			c.Privileged = privileged[cs.Name]
			ids[id] = c
		}
	}
	uid := string(pod.UID)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, old := range ix.containers[uid] {
		delete(ix.byContainer, old)
	}
	list := make([]string, 0, len(ids))
	for id, c := range ids {
		ix.byContainer[id] = c
		list = append(list, id)
	}
	ix.containers[uid] = list
	ix.byUID[uid] = base
	ix.gen.Add(1)
}

// Delete forgets a pod.
func (ix *PodIndex) Delete(uid string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, id := range ix.containers[uid] {
		delete(ix.byContainer, id)
	}
	delete(ix.containers, uid)
	delete(ix.byUID, uid)
	ix.gen.Add(1)
}

// privilegedContainers names the pod's containers whose securityContext
// asks for privileged mode.
func privilegedContainers(pod *corev1.Pod) map[string]bool {
	var out map[string]bool
	mark := func(name string, sc *corev1.SecurityContext) {
		if sc != nil && sc.Privileged != nil && *sc.Privileged {
			if out == nil {
				out = map[string]bool{}
			}
			out[name] = true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		mark(c.Name, c.SecurityContext)
	}
	for _, c := range pod.Spec.Containers {
		mark(c.Name, c.SecurityContext)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		mark(c.Name, c.SecurityContext)
	}
	return out
}

// podContext is the pod-level part of a Container.
func podContext(pod *corev1.Pod) *api.Container {
	kind, name := Workload(pod)
	var labels map[string]string
	if len(pod.Labels) > 0 {
		labels = make(map[string]string, len(pod.Labels))
		for k, v := range pod.Labels {
			labels[k] = v
		}
	}
	return &api.Container{
		PodName:        pod.Name,
		PodNamespace:   pod.Namespace,
		PodUid:         string(pod.UID),
		WorkloadKind:   kind,
		WorkloadName:   name,
		ServiceAccount: pod.Spec.ServiceAccountName,
		Labels:         labels,
	}
}

// cloneContext copies the pod fields; the labels map is shared (read-only).
func cloneContext(c *api.Container) *api.Container {
	return &api.Container{
		PodName: c.PodName, PodNamespace: c.PodNamespace, PodUid: c.PodUid,
		WorkloadKind: c.WorkloadKind, WorkloadName: c.WorkloadName,
		ServiceAccount: c.ServiceAccount, Labels: c.Labels,
	}
}

// Workload names the pod's top-level controller: a ReplicaSet made by a
// Deployment is reported as the Deployment (its name less the
// pod-template-hash suffix), a Job made by a CronJob as the CronJob (its
// name less the scheduled-time suffix). A pod without a controller has none.
func Workload(pod *corev1.Pod) (kind, name string) {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil {
		return "", ""
	}
	switch ref.Kind {
	case "ReplicaSet":
		if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
			return "Deployment", strings.TrimSuffix(ref.Name, "-"+h)
		}
	case "Job":
		if cj := pod.Labels["batch.kubernetes.io/cronjob-name"]; cj != "" {
			return "CronJob", cj
		}
		if i := strings.LastIndexByte(ref.Name, '-'); i > 0 && allDigits(ref.Name[i+1:]) && len(ref.Name)-i > 8 {
			return "CronJob", ref.Name[:i]
		}
	}
	return ref.Kind, ref.Name
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// StripPod keeps only what the index reads, so the informer's store holds
// a small object per pod (managed fields, specs, conditions and
// annotations are dropped). It is the informer's transform.
func StripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // tombstones and anything unexpected pass through
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, Labels: pod.Labels,
			OwnerReferences: pod.OwnerReferences,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName, ServiceAccountName: pod.Spec.ServiceAccountName},
	}
	// Only the privileged flag of each container is kept.
	privileged := func(sc *corev1.SecurityContext) *corev1.SecurityContext {
		if sc == nil || sc.Privileged == nil || !*sc.Privileged {
			return nil
		}
		return &corev1.SecurityContext{Privileged: sc.Privileged}
	}
	for _, c := range pod.Spec.InitContainers {
		if sc := privileged(c.SecurityContext); sc != nil {
			out.Spec.InitContainers = append(out.Spec.InitContainers, corev1.Container{Name: c.Name, SecurityContext: sc})
		}
	}
	for _, c := range pod.Spec.Containers {
		if sc := privileged(c.SecurityContext); sc != nil {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, SecurityContext: sc})
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if sc := privileged(c.SecurityContext); sc != nil {
			out.Spec.EphemeralContainers = append(out.Spec.EphemeralContainers, corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: c.Name, SecurityContext: sc}})
		}
	}
	strip := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		if len(in) == 0 {
			return nil
		}
		s := make([]corev1.ContainerStatus, len(in))
		for i, cs := range in {
			s[i] = corev1.ContainerStatus{Name: cs.Name, ContainerID: cs.ContainerID, Image: cs.Image, ImageID: cs.ImageID}
		}
		return s
	}
	out.Status.ContainerStatuses = strip(pod.Status.ContainerStatuses)
	out.Status.InitContainerStatuses = strip(pod.Status.InitContainerStatuses)
	out.Status.EphemeralContainerStatuses = strip(pod.Status.EphemeralContainerStatuses)
	return out, nil
}
