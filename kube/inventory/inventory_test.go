package inventory

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/api"
)

// coreOnly serves the core/v1 lists (one namespace, empty otherwise) and
// answers 404 for every other group, as an API server without them would.
func coreOnly(t *testing.T) *httptest.Server {
	lists := map[string]string{"nodes": "NodeList", "namespaces": "NamespaceList", "pods": "PodList",
		"services": "ServiceList", "serviceaccounts": "ServiceAccountList"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		res, ok := strings.CutPrefix(r.URL.Path, "/api/v1/")
		if kind := lists[res]; ok && kind != "" {
			items := "[]"
			if res == "pods" {
				items = `[{"metadata":{"name":"p","namespace":"default"},"spec":{"tolerations":[{"operator":"Exists"}],
				"containers":[{"name":"c","image":"i:1","command":["sh"],"livenessProbe":{"exec":{"command":["true"]}},
				"securityContext":{"privileged":true},"volumeMounts":[{"name":"v","mountPath":"/v"}]}]},
				"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}],
				"containerStatuses":[{"name":"c","imageID":"i@sha256:aa","state":{"running":{}}}]}}]`
			}
			if res == "namespaces" {
				items = `[{"metadata":{"name":"default","uid":"u1","managedFields":[{"manager":"x"}],
				"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}","keep":"1"}},"status":{"phase":"Active"}}]`
			}
			fmt.Fprintf(w, `{"kind":%q,"apiVersion":"v1","metadata":{},"items":%s}`, kind, items)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"the server could not find the requested resource"}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestCollectGroupsNotServed: groups the server does not serve are
// per-kind NotServed errors; the core kinds are still collected.
func TestCollectGroupsNotServed(t *testing.T) {
	srv := coreOnly(t)
	col, err := NewCollector(&rest.Config{Host: srv.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := col.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Namespaces) != 1 || snap.Namespaces[0].Name != "default" {
		t.Fatalf("namespaces %v", snap.Namespaces)
	}
	ns := snap.Namespaces[0]
	if ns.ManagedFields != nil || ns.Annotations[corev1.LastAppliedConfigAnnotation] != "" || ns.Annotations["keep"] != "1" {
		t.Errorf("metadata not stripped as intended: %+v", ns.ObjectMeta)
	}
	p := snap.Pods[0]
	c := p.Spec.Containers[0]
	if c.Command != nil || c.LivenessProbe != nil || c.VolumeMounts != nil || p.Spec.Tolerations != nil || p.Status.Conditions != nil ||
		p.Status.ContainerStatuses[0].State.Running != nil {
		t.Errorf("pod not stripped: %+v", p)
	}
	if c.Image != "i:1" || c.SecurityContext == nil || !*c.SecurityContext.Privileged || p.Status.Phase != corev1.PodRunning ||
		p.Status.ContainerStatuses[0].ImageID != "i@sha256:aa" {
		t.Errorf("pod stripped of what the checks read: %+v", p)
	}
	var failed []string
	for _, e := range snap.Errors {
		if e.Reason != ReasonNotServed {
			t.Errorf("%s: %s (%v)", e.Kind, e.Reason, e.Err)
		}
		failed = append(failed, e.Kind)
	}
	want := []string{"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Ingress", "NetworkPolicy",
		"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
	if !slices.Equal(failed, want) {
		t.Errorf("failed %v, want %v", failed, want)
	}
	if !snap.Failed("Job") || snap.Failed("Pod") {
		t.Error("Failed()")
	}
	if _, err := col.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := col.Stats(); st.Snapshots != 2 || st.KindErrors != 2*uint64(len(want)) {
		t.Errorf("stats %+v", st)
	}
}

// TestCollectUnreachable: nothing listed is an error, with the snapshot
// still describing why; a cancelled context is an error of its own.
func TestCollectUnreachable(t *testing.T) {
	srv := coreOnly(t)
	url := srv.URL
	srv.Close()
	col, err := NewCollector(&rest.Config{Host: url, Timeout: 2 * time.Second}, Options{Kinds: []string{"Pod", "Node"}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := col.Collect(context.Background())
	if err == nil || snap == nil || len(snap.Errors) != 2 || snap.Errors[0].Reason != ReasonFailed {
		t.Fatalf("snapshot %+v, err %v", snap, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := col.Collect(ctx); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("cancelled: %v", err)
	}
}

func TestNewCollectorOptions(t *testing.T) {
	if _, err := NewCollector(nil, Options{}); err == nil {
		t.Error("nil config")
	}
	if _, err := NewCollector(&rest.Config{Host: "https://127.0.0.1:1"}, Options{Kinds: []string{"Widget"}}); err == nil {
		t.Error("unknown kind")
	}
	if _, err := NewCollector(&rest.Config{Host: "https://127.0.0.1:1"}, Options{PageSize: -1}); err == nil {
		t.Error("negative page size")
	}
}

func TestItemsOwnersAndImages(t *testing.T) {
	ctrl := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: new(true)}}
	}
	snap := &Snapshot{
		Deployments: []appsv1.Deployment{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", UID: "uid-web"}}},
		ReplicaSets: []appsv1.ReplicaSet{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-1", OwnerReferences: ctrl("Deployment", "web")}}},
		Pods: []corev1.Pod{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-1-x", OwnerReferences: ctrl("ReplicaSet", "web-1")},
				Spec: corev1.PodSpec{NodeName: "n1", InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
					Containers: []corev1.Container{{Name: "app", Image: "web:1"}, {Name: "side", Image: "side@sha256:aa"}}},
				Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
					{Name: "app", ImageID: "docker-pullable://web@sha256:bb"}, {Name: "side", ImageID: "side@sha256:aa"}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "rs-gone", OwnerReferences: ctrl("ReplicaSet", "gone")}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "bare"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web:1"}}}},
			{}, // empty object
		},
	}
	items := snap.Items()
	by := map[string]*api.InventoryItem{}
	for _, it := range items {
		by[it.Object.Kind+"/"+it.Object.Namespace+"/"+it.Object.Name] = it
	}
	p := by["Pod/a/web-1-x"]
	if p.Owner.GetKind() != "Deployment" || p.Owner.GetName() != "web" || p.Owner.GetUid() != "uid-web" || p.Node != "n1" {
		t.Errorf("owner %v node %s", p.Owner, p.Node)
	}
	if want := []string{"busybox", "web:1@sha256:bb", "side@sha256:aa"}; !slices.Equal(p.Images, want) {
		t.Errorf("images %v, want %v", p.Images, want)
	}
	if o := by["Pod/b/rs-gone"].Owner; o.GetKind() != "ReplicaSet" || o.GetName() != "gone" {
		t.Errorf("unresolved owner %v", o)
	}
	if by["Pod/b/bare"].Owner != nil {
		t.Error("bare pod has an owner")
	}
	if rs := by["ReplicaSet/a/web-1"]; rs.Owner.GetName() != "web" {
		t.Errorf("rs owner %v", rs.Owner)
	}
	img := by["ContainerImage//web:1"]
	if img == nil || img.Attributes["pods"] != "1" || img.Attributes["namespaces"] != "b" {
		t.Errorf("image item %v", img)
	}
	if img := by["ContainerImage//web:1@sha256:bb"]; img == nil || img.Attributes["digest"] != "sha256:bb" {
		t.Errorf("image item %v", img)
	}
}

func TestAttrBounded(t *testing.T) {
	a := attrs{}
	a.set("k", strings.Repeat("x", 5000))
	a.set("empty", "")
	if len(a["k"]) != maxAttr || len(a) != 1 {
		t.Errorf("attrs %d %v", len(a["k"]), len(a))
	}
}

func TestChunks(t *testing.T) {
	var items []*api.InventoryItem
	for i := range 1001 {
		items = append(items, &api.InventoryItem{Object: &api.ObjectRef{Kind: "Pod", Name: fmt.Sprint(i)}})
	}
	var findings []*api.Finding
	for i := range 10 {
		findings = append(findings, &api.Finding{Id: fmt.Sprint(i)})
	}
	now := time.Unix(1700000000, 0)
	chunks := Chunks("c", "n", "s1", now, append(items, nil), findings, 100)
	if len(chunks) != 11 {
		t.Fatalf("%d chunks", len(chunks))
	}
	var nI, nF int
	for i, ch := range chunks {
		if ch.Part != uint32(i) || ch.Parts != 11 || ch.SnapshotId != "s1" || ch.Cluster != "c" || ch.Node != "n" || !ch.Time.AsTime().Equal(now) {
			t.Errorf("chunk %d header %v", i, ch)
		}
		if n := len(ch.Items) + len(ch.Findings); n > 100 || (i < 10 && n != 100) {
			t.Errorf("chunk %d holds %d", i, n)
		}
		nI += len(ch.Items)
		nF += len(ch.Findings)
		for _, f := range ch.Findings {
			if f.SnapshotId != "s1" {
				t.Errorf("finding snapshot id %q", f.SnapshotId)
			}
		}
	}
	if nI != 1001 || nF != 10 || chunks[10].Items[0].Object.Name != "1000" {
		t.Errorf("%d items, %d findings", nI, nF)
	}
	// Byte bound: 64 KiB items leave at most 7 per chunk whatever the count.
	big := strings.Repeat("x", 64<<10)
	var bigItems []*api.InventoryItem
	for range 20 {
		bigItems = append(bigItems, &api.InventoryItem{Attributes: map[string]string{"k": big}})
	}
	for _, ch := range Chunks("c", "n", "s2", now, bigItems, nil, 0) {
		if len(ch.Items) > 7 || len(ch.Items) == 0 {
			t.Errorf("big chunk of %d items", len(ch.Items))
		}
	}
	// An empty snapshot is one empty chunk.
	if ch := Chunks("c", "n", "s3", now, nil, nil, 0); len(ch) != 1 || ch[0].Parts != 1 || len(ch[0].Items) != 0 {
		t.Errorf("empty: %v", ch)
	}
}
