package kube

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/kube/kubeid"
)

func isController() *bool { b := true; return &b }

func testPod(name, node, uid string, owner *metav1.OwnerReference, labels map[string]string, ids ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID(uid), Labels: labels,
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}, Annotations: map[string]string{"big": "x"}},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "web",
			Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27"}}},
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	for i, id := range ids {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: []string{"app", "sidecar"}[i%2], ContainerID: id, Image: "docker.io/library/nginx:1.27",
			ImageID: "docker.io/library/nginx@sha256:abc",
		})
	}
	return p
}

func TestWorkload(t *testing.T) {
	tests := []struct {
		name     string
		owner    *metav1.OwnerReference
		labels   map[string]string
		wantKind string
		wantName string
	}{
		{"bare pod", nil, nil, "", ""},
		{"deployment", &metav1.OwnerReference{Kind: "ReplicaSet", Name: "web-5d4f8c7b9", Controller: isController()},
			map[string]string{"pod-template-hash": "5d4f8c7b9"}, "Deployment", "web"},
		{"replicaset alone", &metav1.OwnerReference{Kind: "ReplicaSet", Name: "web-rs", Controller: isController()}, nil, "ReplicaSet", "web-rs"},
		{"daemonset", &metav1.OwnerReference{Kind: "DaemonSet", Name: "agent", Controller: isController()}, nil, "DaemonSet", "agent"},
		{"cronjob by label", &metav1.OwnerReference{Kind: "Job", Name: "backup-29001234", Controller: isController()},
			map[string]string{"batch.kubernetes.io/cronjob-name": "backup"}, "CronJob", "backup"},
		{"cronjob by name", &metav1.OwnerReference{Kind: "Job", Name: "backup-29001234", Controller: isController()}, nil, "CronJob", "backup"},
		{"plain job", &metav1.OwnerReference{Kind: "Job", Name: "migrate", Controller: isController()}, nil, "Job", "migrate"},
		{"not a controller", &metav1.OwnerReference{Kind: "ReplicaSet", Name: "x"}, nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, name := Workload(testPod("p", "n", "u", tt.owner, tt.labels))
			if kind != tt.wantKind || name != tt.wantName {
				t.Fatalf("Workload = %s/%s, want %s/%s", kind, name, tt.wantKind, tt.wantName)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	for _, tt := range []struct{ in, id, digest string }{
		{"containerd://0123abcd", "0123abcd", ""},
		{"cri-o://ff", "ff", ""},
		{"docker-pullable://nginx@sha256:1", "nginx@sha256:1", "sha256:1"},
		{"sha256:2", "sha256:2", "sha256:2"},
		{"", "", ""},
	} {
		if got := kubeid.ContainerID(tt.in); got != tt.id {
			t.Errorf("ContainerID(%q) = %q, want %q", tt.in, got, tt.id)
		}
		if got := kubeid.ImageDigest(tt.in); got != tt.digest {
			t.Errorf("imageDigest(%q) = %q, want %q", tt.in, got, tt.digest)
		}
	}
}

func TestStripPod(t *testing.T) {
	p := testPod("web-1", "node-a", "uid-1", nil, map[string]string{"app": "web"}, "containerd://c1")
	out, err := StripPod(p)
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Pod)
	if len(s.ManagedFields) != 0 || len(s.Annotations) != 0 || len(s.Spec.Containers) != 0 { // none privileged
		t.Fatalf("not stripped: %+v", s)
	}
	if s.Name != "web-1" || s.Spec.ServiceAccountName != "web" || s.Status.ContainerStatuses[0].ContainerID != "containerd://c1" {
		t.Fatalf("lost fields: %+v", s)
	}
	if x, _ := StripPod("tombstone"); x != "tombstone" {
		t.Fatal("non-pods must pass through")
	}
}

func TestEnricher(t *testing.T) {
	ix := NewPodIndex()
	owner := &metav1.OwnerReference{Kind: "ReplicaSet", Name: "web-abc", Controller: isController()}
	ix.Upsert(testPod("web-1", "node-a", "uid-1", owner, map[string]string{"app": "web", "pod-template-hash": "abc"},
		"containerd://c1", "containerd://c2"))
	e := NewEnricher(ix, nil)

	src := &api.Container{Runtime: "containerd", Id: "c2", Cgroup: "/kubepods/x"}
	ev := &api.Event{Container: src}
	e.Enrich(ev)
	c := ev.GetContainer()
	if c == src || src.PodName != "" {
		t.Fatal("the sensor's container must not be modified")
	}
	want := &api.Container{Runtime: "containerd", Id: "c2", Cgroup: "/kubepods/x", Name: "sidecar",
		Image: "docker.io/library/nginx:1.27", ImageDigest: "sha256:abc", PodName: "web-1", PodNamespace: "shop",
		PodUid: "uid-1", WorkloadKind: "Deployment", WorkloadName: "web", ServiceAccount: "web",
		Labels: map[string]string{"app": "web", "pod-template-hash": "abc"}}
	if !proto.Equal(c, want) {
		t.Fatalf("enriched = %v, want %v", c, want)
	}
	// Cached: the same source gives the same copy.
	ev2 := &api.Event{Container: src}
	e.Enrich(ev2)
	if ev2.Container != c {
		t.Fatal("second event of the same container not served from the cache")
	}
	// A container not yet in the status is found by the cgroup's pod UID.
	ev3 := &api.Event{Container: &api.Container{Id: "c9", PodUid: "uid-1"}}
	e.Enrich(ev3)
	if ev3.GetContainer().GetPodName() != "web-1" || ev3.GetContainer().GetId() != "c9" {
		t.Fatalf("by pod uid: %v", ev3.GetContainer())
	}
	// Deleting the pod invalidates the cache.
	ix.Delete("uid-1")
	ev4 := &api.Event{Container: src}
	e.Enrich(ev4)
	if ev4.Container != src {
		t.Fatalf("deleted pod still enriches: %v", ev4.Container)
	}
	// Host events are untouched.
	host := &api.Event{}
	e.Enrich(host)
	if host.Container != nil {
		t.Fatal("host event got a container")
	}
}

// TestPodsInformer runs the informer against a fake clientset (which does
// not apply field selectors: TestPodContextAPIServer covers the node
// scope): adds, updates and deletes reach the index.
func TestPodsInformer(t *testing.T) {
	client := fake.NewClientset()
	p, err := NewPods(fakePods{client.CoreV1().Pods("")}, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx) }()
	if !p.WaitSynced(ctx, 10*time.Second) {
		t.Fatal("not synced")
	}
	pods := client.CoreV1().Pods("shop")
	if _, err := pods.Create(ctx, testPod("web-1", "node-a", "uid-1", nil, nil, "containerd://c1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "pod c1 indexed", func() bool { _, ok := p.Index.Lookup("c1", ""); return ok })
	upd := testPod("web-1", "node-a", "uid-1", nil, nil, "containerd://c3")
	if _, err := pods.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "pod c3 indexed", func() bool { _, ok := p.Index.Lookup("c3", ""); return ok })
	if _, ok := p.Index.Lookup("c1", ""); ok {
		t.Fatal("old container ID still indexed")
	}
	if err := pods.Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the index emptied", func() bool { return p.Index.Len() == 0 })
}

// fakePods tells the informer that the fake cannot stream the initial
// list over a watch (the fake clientset says so, its typed clients do not).
type fakePods struct{ PodSource }

func (fakePods) IsWatchListSemanticsUnSupported() bool { return true }

// TestEnricherRestartWhileAPIAway: a container restarted while the API
// server is away is not in the informer's (stale) pod status; it gets the
// pod's fields (labels, workload) from the informer by pod UID and its own
// name and image from the runtime's bundle.
func TestEnricherRestartWhileAPIAway(t *testing.T) {
	ix := NewPodIndex()
	ix.Upsert(testPod("web-1", "node-a", "uid-1", nil, map[string]string{"app": "web"}, "containerd://c1"))
	root := t.TempDir()
	writeBundle(t, filepath.Join(root, "io.containerd.runtime.v2.task", "k8s.io", "c7", "config.json"), `{"annotations":{
		"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"app",
		"io.kubernetes.cri.image-name":"docker.io/library/nginx:1.28","io.kubernetes.cri.sandbox-name":"web-1",
		"io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"uid-1"}}`)
	e := NewEnricher(ix, NewNodeState(NodeStateConfig{ContainerdRoot: root}))
	ev := &api.Event{Container: &api.Container{Runtime: "containerd", Id: "c7", PodUid: "uid-1"}}
	e.Enrich(ev)
	c := ev.GetContainer()
	if c.GetPodName() != "web-1" || c.GetPodNamespace() != "shop" || c.GetLabels()["app"] != "web" ||
		c.GetName() != "app" || c.GetImage() != "docker.io/library/nginx:1.28" || c.GetId() != "c7" {
		t.Fatalf("restarted container: %v", c)
	}
	// Without a bundle: the pod's fields only.
	ev = &api.Event{Container: &api.Container{Runtime: "containerd", Id: "c8", PodUid: "uid-1"}}
	e.Enrich(ev)
	if c := ev.GetContainer(); c.GetPodName() != "web-1" || c.GetLabels()["app"] != "web" || c.GetName() != "" {
		t.Fatalf("no bundle: %v", c)
	}
}

// A container whose securityContext asks for privileged mode is marked so
// after the informer's transform, and the sensor's own finding is kept for
// one the spec does not mark.
func TestPrivilegedFromPodSpec(t *testing.T) {
	yes := true
	p := testPod("node-agent", "node-a", "uid-p", nil, nil, "containerd://c1", "containerd://c2")
	p.Spec.Containers = []corev1.Container{
		{Name: "app", Image: "agent:1", SecurityContext: &corev1.SecurityContext{Privileged: &yes}},
		{Name: "sidecar", Image: "proxy:1", SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &yes}},
	}
	stripped, err := StripPod(p)
	if err != nil {
		t.Fatal(err)
	}
	ix := NewPodIndex()
	ix.Upsert(stripped.(*corev1.Pod))
	e := NewEnricher(ix, nil)
	for _, tt := range []struct {
		id               string
		sensorPrivileged bool
		want             bool
	}{
		{"c1", false, true},  // the spec says so
		{"c2", false, false}, // neither says so
		{"c2", true, true},   // the sensor saw every capability
	} {
		ev := &api.Event{Container: &api.Container{Runtime: "containerd", Id: tt.id, Privileged: tt.sensorPrivileged}}
		e.Enrich(ev)
		if got := ev.GetContainer().GetPrivileged(); got != tt.want || ev.GetContainer().GetPodName() != "node-agent" {
			t.Errorf("container %s (sensor %v): privileged %v, pod %q; want %v", tt.id, tt.sensorPrivileged, got,
				ev.GetContainer().GetPodName(), tt.want)
		}
	}
}
