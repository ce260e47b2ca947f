package inventory

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube/kubeid"
)

// ImageKind is the kind of the synthetic items that list the running
// images (one per image reference, with the pods and namespaces using it).
const ImageKind = "ContainerImage"

// maxAttr bounds one attribute value, so a role with hundreds of rules
// cannot make an item (and its chunk) large.
const maxAttr = 512

// Ref names an object.
func Ref(apiVersion, kind string, m metav1.Object) *api.ObjectRef {
	return &api.ObjectRef{ApiVersion: apiVersion, Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName(), Uid: string(m.GetUID())}
}

// Owners resolves controllers within a snapshot: a pod's ReplicaSet that a
// Deployment controls resolves to the Deployment, a Job that a CronJob
// controls to the CronJob.
type Owners struct {
	parent  map[string]*metav1.OwnerReference // "Kind/ns/name" of a ReplicaSet or Job → its controller
	present map[string]bool                   // "Kind/ns/name" of every workload in the snapshot
}

func key(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

// Owners indexes the snapshot's workloads.
func (s *Snapshot) Owners() *Owners {
	o := &Owners{parent: map[string]*metav1.OwnerReference{}, present: map[string]bool{}}
	add := func(kind string, m metav1.Object) {
		k := key(kind, m.GetNamespace(), m.GetName())
		o.present[k] = true
		if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
			o.parent[k] = ref
		}
	}
	for i := range s.Deployments {
		add("Deployment", &s.Deployments[i])
	}
	for i := range s.StatefulSets {
		add("StatefulSet", &s.StatefulSets[i])
	}
	for i := range s.DaemonSets {
		add("DaemonSet", &s.DaemonSets[i])
	}
	for i := range s.ReplicaSets {
		add("ReplicaSet", &s.ReplicaSets[i])
	}
	for i := range s.Jobs {
		add("Job", &s.Jobs[i])
	}
	for i := range s.CronJobs {
		add("CronJob", &s.CronJobs[i])
	}
	return o
}

// Controller is the top-level controller of m (nil without one): its
// controlling owner, followed up through ReplicaSets and Jobs the snapshot
// holds.
func (o *Owners) Controller(m metav1.Object) *api.ObjectRef {
	ref := metav1.GetControllerOfNoCopy(m)
	ns := m.GetNamespace()
	for depth := 0; ref != nil && depth < 4; depth++ {
		up, ok := o.parent[key(ref.Kind, ns, ref.Name)]
		if !ok || (ref.Kind != "ReplicaSet" && ref.Kind != "Job") {
			break
		}
		ref = up
	}
	if ref == nil {
		return nil
	}
	return &api.ObjectRef{ApiVersion: ref.APIVersion, Kind: ref.Kind, Namespace: ns, Name: ref.Name, Uid: string(ref.UID)}
}

// ControlledInSnapshot reports whether any controller in m's chain
// (ReplicaSet, Deployment, Job, CronJob, ...) is in the snapshot: its pod
// template then stands for m, even when the top of the chain could not be
// listed.
func (o *Owners) ControlledInSnapshot(m metav1.Object) bool {
	ref := metav1.GetControllerOfNoCopy(m)
	ns := m.GetNamespace()
	for depth := 0; ref != nil && depth < 4; depth++ {
		k := key(ref.Kind, ns, ref.Name)
		if o.present[k] {
			return true
		}
		ref = o.parent[k]
	}
	return false
}

// InSnapshot reports whether the workload ref names is in the snapshot.
func (o *Owners) InSnapshot(ref *api.ObjectRef) bool {
	return ref != nil && o.present[key(ref.GetKind(), ref.GetNamespace(), ref.GetName())]
}

// PodImages are the images of a pod's containers, each with the digest its
// status reports when the spec does not pin one.
func PodImages(pod *corev1.Pod) []string {
	digests := map[string]string{}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if d := kubeid.ImageDigest(cs.ImageID); d != "" {
				digests[cs.Name] = d
			}
		}
	}
	var out []string
	add := func(name, image string) {
		if image == "" {
			return
		}
		if d := digests[name]; d != "" && !strings.Contains(image, "@") {
			image += "@" + d
		}
		out = append(out, image)
	}
	for _, c := range pod.Spec.InitContainers {
		add(c.Name, c.Image)
	}
	for _, c := range pod.Spec.Containers {
		add(c.Name, c.Image)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		add(c.Name, c.Image)
	}
	return out
}

func specImages(spec *corev1.PodSpec) []string {
	var out []string
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			if c.Image != "" {
				out = append(out, c.Image)
			}
		}
	}
	return out
}

// attrs collects an item's attributes, skipping empty values and bounding
// long ones.
type attrs map[string]string

func (a attrs) set(k, v string) {
	if v == "" {
		return
	}
	if len(v) > maxAttr {
		v = v[:maxAttr-3] + "..."
	}
	a[k] = v
}

func (a attrs) num(k string, v int64) { a[k] = strconv.FormatInt(v, 10) }

func (a attrs) replicas(k string, v *int32) {
	if v != nil {
		a.num(k, int64(*v))
	}
}

func (a attrs) bool(k string, v *bool) {
	if v != nil {
		a[k] = strconv.FormatBool(*v)
	}
}

func item(ref *api.ObjectRef, m metav1.Object) (*api.InventoryItem, attrs) {
	a := attrs{}
	it := &api.InventoryItem{Object: ref, Attributes: a}
	if l := m.GetLabels(); len(l) > 0 {
		it.Labels = l
	}
	if t := m.GetCreationTimestamp(); !t.IsZero() {
		it.Created = timestamppb.New(t.Time)
	}
	return it, a
}

// Items reduces the snapshot to inventory items: one per object, plus one
// ImageKind item per running image.
func (s *Snapshot) Items() []*api.InventoryItem {
	owners := s.Owners()
	var out []*api.InventoryItem
	add := func(it *api.InventoryItem, a attrs) {
		if len(a) == 0 {
			it.Attributes = nil
		}
		out = append(out, it)
	}
	workload := func(apiVersion, kind string, m metav1.Object, spec *corev1.PodSpec) (*api.InventoryItem, attrs) {
		it, a := item(Ref(apiVersion, kind, m), m)
		it.Owner = owners.Controller(m)
		it.Images = specImages(spec)
		a.set("serviceAccount", spec.ServiceAccountName)
		return it, a
	}
	for i := range s.Nodes {
		n := &s.Nodes[i]
		it, a := item(Ref("v1", "Node", n), n)
		ni := n.Status.NodeInfo
		a.set("kubeletVersion", ni.KubeletVersion)
		a.set("osImage", ni.OSImage)
		a.set("kernelVersion", ni.KernelVersion)
		a.set("containerRuntime", ni.ContainerRuntimeVersion)
		a.set("architecture", ni.Architecture)
		for _, ad := range n.Status.Addresses {
			if ad.Type == corev1.NodeInternalIP {
				a.set("internalIP", ad.Address)
				break
			}
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				a.set("ready", string(c.Status))
			}
		}
		if n.Spec.Unschedulable {
			a.set("unschedulable", "true")
		}
		var roles []string
		for l := range n.Labels {
			if r, ok := strings.CutPrefix(l, "node-role.kubernetes.io/"); ok && r != "" {
				roles = append(roles, r)
			}
		}
		sort.Strings(roles)
		a.set("roles", strings.Join(roles, ","))
		add(it, a)
	}
	for i := range s.Namespaces {
		n := &s.Namespaces[i]
		it, a := item(Ref("v1", "Namespace", n), n)
		a.set("phase", string(n.Status.Phase))
		add(it, a)
	}
	for i := range s.Deployments {
		d := &s.Deployments[i]
		it, a := workload("apps/v1", "Deployment", d, &d.Spec.Template.Spec)
		a.replicas("replicas", d.Spec.Replicas)
		a.num("readyReplicas", int64(d.Status.ReadyReplicas))
		a.set("strategy", string(d.Spec.Strategy.Type))
		add(it, a)
	}
	for i := range s.StatefulSets {
		d := &s.StatefulSets[i]
		it, a := workload("apps/v1", "StatefulSet", d, &d.Spec.Template.Spec)
		a.replicas("replicas", d.Spec.Replicas)
		a.num("readyReplicas", int64(d.Status.ReadyReplicas))
		a.set("serviceName", d.Spec.ServiceName)
		add(it, a)
	}
	for i := range s.DaemonSets {
		d := &s.DaemonSets[i]
		it, a := workload("apps/v1", "DaemonSet", d, &d.Spec.Template.Spec)
		a.num("desiredScheduled", int64(d.Status.DesiredNumberScheduled))
		a.num("ready", int64(d.Status.NumberReady))
		add(it, a)
	}
	for i := range s.ReplicaSets {
		d := &s.ReplicaSets[i]
		it, a := workload("apps/v1", "ReplicaSet", d, &d.Spec.Template.Spec)
		a.replicas("replicas", d.Spec.Replicas)
		a.num("readyReplicas", int64(d.Status.ReadyReplicas))
		add(it, a)
	}
	for i := range s.Jobs {
		d := &s.Jobs[i]
		it, a := workload("batch/v1", "Job", d, &d.Spec.Template.Spec)
		a.replicas("completions", d.Spec.Completions)
		a.num("succeeded", int64(d.Status.Succeeded))
		a.num("failed", int64(d.Status.Failed))
		add(it, a)
	}
	for i := range s.CronJobs {
		d := &s.CronJobs[i]
		it, a := workload("batch/v1", "CronJob", d, &d.Spec.JobTemplate.Spec.Template.Spec)
		a.set("schedule", d.Spec.Schedule)
		a.bool("suspend", d.Spec.Suspend)
		if t := d.Status.LastScheduleTime; t != nil {
			a.set("lastSchedule", t.UTC().Format("2006-01-02T15:04:05Z"))
		}
		add(it, a)
	}
	type imageUse struct {
		pods       int
		namespaces map[string]bool
	}
	images := map[string]*imageUse{}
	for i := range s.Pods {
		p := &s.Pods[i]
		it, a := item(Ref("v1", "Pod", p), p)
		it.Owner = owners.Controller(p)
		it.Node = p.Spec.NodeName
		it.Images = PodImages(p)
		a.set("phase", string(p.Status.Phase))
		a.set("serviceAccount", p.Spec.ServiceAccountName)
		a.set("podIP", p.Status.PodIP)
		a.set("qosClass", string(p.Status.QOSClass))
		if p.Spec.HostNetwork {
			a.set("hostNetwork", "true")
		}
		var restarts int64
		for _, cs := range p.Status.ContainerStatuses {
			restarts += int64(cs.RestartCount)
		}
		a.num("restarts", restarts)
		add(it, a)
		for _, img := range it.Images {
			u := images[img]
			if u == nil {
				u = &imageUse{namespaces: map[string]bool{}}
				images[img] = u
			}
			u.pods++
			u.namespaces[p.Namespace] = true
		}
	}
	names := make([]string, 0, len(images))
	for img := range images {
		names = append(names, img)
	}
	sort.Strings(names)
	for _, img := range names {
		u := images[img]
		a := attrs{}
		a.num("pods", int64(u.pods))
		a.set("namespaces", strings.Join(sortedKeys(u.namespaces), ","))
		if i := strings.LastIndexByte(img, '@'); i >= 0 {
			a.set("digest", img[i+1:])
		}
		out = append(out, &api.InventoryItem{Object: &api.ObjectRef{Kind: ImageKind, Name: img}, Attributes: a})
	}
	for i := range s.Services {
		v := &s.Services[i]
		it, a := item(Ref("v1", "Service", v), v)
		a.set("type", string(v.Spec.Type))
		a.set("clusterIP", v.Spec.ClusterIP)
		a.set("ports", servicePorts(v.Spec.Ports))
		a.set("selector", joinMap(v.Spec.Selector))
		a.set("externalIPs", strings.Join(v.Spec.ExternalIPs, ","))
		var lb []string
		for _, in := range v.Status.LoadBalancer.Ingress {
			lb = append(lb, in.IP+in.Hostname)
		}
		a.set("loadBalancer", strings.Join(lb, ","))
		add(it, a)
	}
	for i := range s.Ingresses {
		v := &s.Ingresses[i]
		it, a := item(Ref("networking.k8s.io/v1", "Ingress", v), v)
		if v.Spec.IngressClassName != nil {
			a.set("ingressClass", *v.Spec.IngressClassName)
		}
		var hosts []string
		for _, r := range v.Spec.Rules {
			if r.Host != "" {
				hosts = append(hosts, r.Host)
			}
		}
		a.set("hosts", strings.Join(hosts, ","))
		if len(v.Spec.TLS) > 0 {
			a.set("tls", "true")
		}
		add(it, a)
	}
	for i := range s.NetworkPolicies {
		v := &s.NetworkPolicies[i]
		it, a := item(Ref("networking.k8s.io/v1", "NetworkPolicy", v), v)
		sel := metav1.FormatLabelSelector(&v.Spec.PodSelector)
		if sel == "<none>" {
			sel = "" // every pod of the namespace
		}
		a.set("podSelector", sel)
		var types []string
		for _, t := range v.Spec.PolicyTypes {
			types = append(types, string(t))
		}
		a.set("policyTypes", strings.Join(types, ","))
		add(it, a)
	}
	for i := range s.ServiceAccounts {
		v := &s.ServiceAccounts[i]
		it, a := item(Ref("v1", "ServiceAccount", v), v)
		a.bool("automountServiceAccountToken", v.AutomountServiceAccountToken)
		add(it, a)
	}
	for i := range s.Roles {
		v := &s.Roles[i]
		it, a := item(Ref("rbac.authorization.k8s.io/v1", "Role", v), v)
		a.num("rules", int64(len(v.Rules)))
		a.set("summary", rulesSummary(v.Rules))
		add(it, a)
	}
	for i := range s.ClusterRoles {
		v := &s.ClusterRoles[i]
		it, a := item(Ref("rbac.authorization.k8s.io/v1", "ClusterRole", v), v)
		a.num("rules", int64(len(v.Rules)))
		a.set("summary", rulesSummary(v.Rules))
		if v.AggregationRule != nil {
			a.set("aggregated", "true")
		}
		add(it, a)
	}
	for i := range s.RoleBindings {
		v := &s.RoleBindings[i]
		it, a := item(Ref("rbac.authorization.k8s.io/v1", "RoleBinding", v), v)
		a.set("roleRef", v.RoleRef.Kind+"/"+v.RoleRef.Name)
		a.set("subjects", Subjects(v.Subjects))
		add(it, a)
	}
	for i := range s.ClusterRoleBindings {
		v := &s.ClusterRoleBindings[i]
		it, a := item(Ref("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", v), v)
		a.set("roleRef", v.RoleRef.Kind+"/"+v.RoleRef.Name)
		a.set("subjects", Subjects(v.Subjects))
		add(it, a)
	}
	return out
}

// Subjects formats RBAC subjects as "Kind:ns/name,...".
func Subjects(subjects []rbacv1.Subject) string {
	parts := make([]string, 0, len(subjects))
	for _, s := range subjects {
		name := s.Name
		if s.Namespace != "" {
			name = s.Namespace + "/" + name
		}
		parts = append(parts, s.Kind+":"+name)
	}
	return strings.Join(parts, ",")
}

func rulesSummary(rules []rbacv1.PolicyRule) string {
	parts := make([]string, 0, len(rules))
	for _, r := range rules {
		what := strings.Join(r.Resources, "|")
		if what == "" {
			what = strings.Join(r.NonResourceURLs, "|")
		}
		parts = append(parts, strings.Join(r.Verbs, "|")+" "+what)
	}
	return strings.Join(parts, "; ")
}

func servicePorts(ports []corev1.ServicePort) string {
	parts := make([]string, 0, len(ports))
	for _, p := range ports {
		s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort != 0 {
			s += fmt.Sprintf(":%d", p.NodePort)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

func joinMap(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
