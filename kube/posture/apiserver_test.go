package posture_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/kube/inventory"
	"github.com/harrier-sec/harrier/kube/posture"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// compliantSpec passes every pod check (restricted PSS, limits, pinned
// image, no token).
func compliantSpec() corev1.PodSpec {
	return corev1.PodSpec{
		AutomountServiceAccountToken: new(false),
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: new(true), RunAsUser: new(int64(1000)),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/app:1.0@" + digest,
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: new(false),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		}},
	}
}

type want struct {
	kind, ns, name, check, container string
	sev                              api.Severity
}

func (w want) String() string {
	return fmt.Sprintf("%s %s/%s %s [%s] %s", w.kind, w.ns, w.name, w.check, w.container, w.sev)
}

func got(fs []*api.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, want{f.Object.Kind, f.Object.Namespace, f.Object.Name, f.CheckId, f.Container, f.Severity}.String())
	}
	sort.Strings(out)
	return out
}

// TestPostureAPIServer builds a small cluster in a real API server, takes
// a snapshot and checks the exact findings and the inventory items.
func TestPostureAPIServer(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := srv.Client
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"team-a", "team-b"} {
		if err := srv.EnsureServiceAccount(ctx, ns, "default"); err != nil {
			t.Fatal(err)
		}
	}
	must(c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1",
		Labels: map[string]string{"node-role.kubernetes.io/worker": ""}}}, metav1.CreateOptions{}))
	must(c.CoreV1().ServiceAccounts("team-a").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "quiet"},
		AutomountServiceAccountToken: new(false)}, metav1.CreateOptions{}))

	pod := func(ns, name string, edit func(*corev1.PodSpec)) *corev1.Pod {
		spec := compliantSpec()
		spec.NodeName = "node-1"
		edit(&spec)
		p, err := c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}}, Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("pod %s: %v", name, err)
		}
		return p
	}
	pod("team-a", "compliant", func(s *corev1.PodSpec) {
		s.AutomountServiceAccountToken, s.ServiceAccountName = nil, "quiet" // the SA disables the token
	})
	pod("team-a", "priv", func(s *corev1.PodSpec) {
		// privileged excludes allowPrivilegeEscalation: false (API validation).
		s.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: new(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	})
	pod("team-a", "hostpath", func(s *corev1.PodSpec) {
		s.Volumes = []corev1.Volume{{Name: "sock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/containerd/containerd.sock"}}}}
	})
	pod("team-a", "secret-env", func(s *corev1.PodSpec) {
		s.Containers[0].Env = []corev1.EnvVar{{Name: "DB_PASSWORD", Value: "hunter2"}, {Name: "LOG_LEVEL", Value: "debug"},
			{Name: "API_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "api"}, Key: "token"}}}}
	})
	latest := pod("team-a", "latest", func(s *corev1.PodSpec) { s.Containers[0].Image = "nginx:latest" })
	latest.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "nginx:latest", ImageID: "docker.io/library/nginx@" + digest}}
	must(c.CoreV1().Pods("team-a").UpdateStatus(ctx, latest, metav1.UpdateOptions{}))
	pod("default", "in-default", func(*corev1.PodSpec) {})

	// A Deployment, its ReplicaSet and two pods, linked by controller refs
	// as the controller-manager would (there is none here).
	tmpl := compliantSpec()
	tmpl.Containers[0].Resources = corev1.ResourceRequirements{}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	dep, err := c.AppsV1().Deployments("team-b").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: new(int32(2)), Selector: sel,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel.MatchLabels}, Spec: tmpl}}}, metav1.CreateOptions{})
	must(dep, err)
	rsLabels := map[string]string{"app": "web", "pod-template-hash": "abc12"}
	rs, err := c.AppsV1().ReplicaSets("team-b").Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-abc12",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: dep.UID, Controller: new(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: new(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: rsLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: rsLabels}, Spec: tmpl}}}, metav1.CreateOptions{})
	must(rs, err)
	for i := range 2 {
		spec := tmpl
		spec.NodeName = "node-1"
		must(c.CoreV1().Pods("team-b").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-abc12-%d", i), Labels: rsLabels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: new(true)}}},
			Spec: spec}, metav1.CreateOptions{}))
	}
	must(c.NetworkingV1().NetworkPolicies("team-b").Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default-deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}, metav1.CreateOptions{}))

	// RBAC.
	rbac := c.RbacV1()
	must(rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ops-admin"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}}}, metav1.CreateOptions{}))
	must(rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "wild"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"*"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}))
	must(rbac.Roles("team-a").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "deployer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"*"}}}}, metav1.CreateOptions{}))
	must(rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "secret-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}}}}, metav1.CreateOptions{}))
	must(rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "secret-reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "reader", Namespace: "team-a"}}}, metav1.CreateOptions{}))
	must(rbac.RoleBindings("team-a").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "anon-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:unauthenticated"}}}, metav1.CreateOptions{}))

	// Services.
	svc := func(name string, typ corev1.ServiceType) {
		must(c.CoreV1().Services("team-a").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Type: typ, Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 443}}}}, metav1.CreateOptions{}))
	}
	svc("kubernetes-dashboard", corev1.ServiceTypeLoadBalancer)
	svc("shop", corev1.ServiceTypeNodePort)
	svc("internal", corev1.ServiceTypeClusterIP)

	col, err := inventory.NewCollector(srv.Config, inventory.Options{PageSize: 3}) // small pages: pagination is exercised
	if err != nil {
		t.Fatal(err)
	}
	snap, err := col.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Errors) != 0 {
		t.Fatalf("admin snapshot has errors: %v", snap.Errors)
	}
	findings := posture.Evaluate(snap, "test", "node-1", posture.Config{})

	H, M, L, I, C := api.Severity_SEVERITY_HIGH, api.Severity_SEVERITY_MEDIUM, api.Severity_SEVERITY_LOW, api.Severity_SEVERITY_INFO, api.Severity_SEVERITY_CRITICAL
	expected := []want{
		{"Pod", "team-a", "priv", "pss-privileged", "app", H},
		{"Pod", "team-a", "priv", "pss-privilege-escalation", "app", M},
		{"Pod", "team-a", "hostpath", "pss-host-path", "", H},
		{"Pod", "team-a", "secret-env", "env-secret-literal", "app", M},
		{"Pod", "team-a", "secret-env", "env-secret-ref", "app", I},
		{"Pod", "team-a", "latest", "image-latest", "app", M},
		{"Pod", "team-a", "latest", "image-no-digest", "app", L},
		{"Pod", "default", "in-default", "default-namespace", "", L},
		{"Deployment", "team-b", "web", "resources-limits", "app", L},
		{"Namespace", "", "team-a", "network-policy-missing", "", M},
		{"Namespace", "", "default", "network-policy-missing", "", M},
		{"ClusterRoleBinding", "", "ops-admin", "rbac-cluster-admin-binding", "", H},
		{"ClusterRole", "", "wild", "rbac-wildcard", "", M},
		{"Role", "team-a", "deployer", "rbac-wildcard", "", M},
		{"ClusterRole", "", "secret-reader", "rbac-secrets-read", "", H},
		{"RoleBinding", "team-a", "anon-view", "rbac-anonymous", "", C},
		{"Service", "team-a", "kubernetes-dashboard", "service-exposed", "", H},
		{"Service", "team-a", "shop", "service-exposed", "", M},
	}
	var exp []string
	for _, w := range expected {
		exp = append(exp, w.String())
	}
	sort.Strings(exp)
	if g := got(findings); !slices.Equal(g, exp) {
		t.Errorf("findings:\n got  %s\n want %s", strings.Join(g, "\n      "), strings.Join(exp, "\n      "))
	}
	ids := map[string]bool{}
	for _, f := range findings {
		if f.Object.Name == "compliant" || strings.HasPrefix(f.Object.Name, "web-abc12") {
			t.Errorf("finding on a compliant pod or on a pod of a Deployment: %v", f)
		}
		if ids[f.Id] || f.Cluster != "test" || f.Node != "node-1" || f.Remediation == "" || f.Title == "" || f.Detail == "" {
			t.Errorf("bad finding %v", f)
		}
		ids[f.Id] = true
		if f.CheckId == "env-secret-literal" && strings.Contains(f.Detail, "hunter2") {
			t.Errorf("finding copies the secret value: %s", f.Detail)
		}
	}
	// Stable IDs: a second snapshot yields the same.
	snap2, err := col.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range posture.Evaluate(snap2, "test", "node-1", posture.Config{}) {
		if !ids[f.Id] {
			t.Errorf("finding %s %s has a new ID on re-evaluation", f.CheckId, f.Object.Name)
		}
	}

	// Inventory items.
	items := snap.Items()
	byName := map[string]*api.InventoryItem{}
	for _, it := range items {
		byName[it.Object.Kind+"/"+it.Object.Namespace+"/"+it.Object.Name] = it
	}
	webPod := byName["Pod/team-b/web-abc12-0"]
	if webPod == nil || webPod.Owner.GetKind() != "Deployment" || webPod.Owner.GetName() != "web" || webPod.Owner.GetUid() != string(dep.UID) || webPod.Node != "node-1" {
		t.Errorf("web pod item: %v", webPod)
	}
	if rsItem := byName["ReplicaSet/team-b/web-abc12"]; rsItem == nil || rsItem.Owner.GetName() != "web" || rsItem.Attributes["replicas"] != "2" {
		t.Errorf("replicaset item: %v", rsItem)
	}
	if l := byName["Pod/team-a/latest"]; l == nil || !slices.Equal(l.Images, []string{"nginx:latest@" + digest}) {
		t.Errorf("latest pod images: %v", l)
	}
	if img := byName["ContainerImage//registry.example/app:1.0@"+digest]; img == nil || img.Attributes["pods"] != "7" || img.Attributes["digest"] != digest {
		t.Errorf("image item: %v", img)
	}
	if n := byName["Node//node-1"]; n == nil || n.Attributes["roles"] != "worker" {
		t.Errorf("node item: %v", n)
	}
	if s := byName["Service/team-a/kubernetes-dashboard"]; s == nil || s.Attributes["type"] != "LoadBalancer" {
		t.Errorf("service item: %v", s)
	}
	if b := byName["ClusterRoleBinding//ops-admin"]; b == nil || b.Attributes["roleRef"] != "ClusterRole/cluster-admin" || b.Attributes["subjects"] != "User:alice" {
		t.Errorf("binding item: %v", b)
	}
	chunks := inventory.Chunks("test", "node-1", "snap-1", snap.Time, items, findings, 25)
	var nItems, nFindings int
	for i, ch := range chunks {
		if ch.Part != uint32(i) || ch.Parts != uint32(len(chunks)) || ch.SnapshotId != "snap-1" {
			t.Errorf("chunk %d: part %d/%d id %s", i, ch.Part, ch.Parts, ch.SnapshotId)
		}
		nItems += len(ch.Items)
		nFindings += len(ch.Findings)
	}
	if nItems != len(items) || nFindings != len(findings) || len(chunks) != (len(items)+len(findings)+24)/25 {
		t.Errorf("chunks: %d items, %d findings in %d chunks; want %d, %d", nItems, nFindings, len(chunks), len(items), len(findings))
	}
	t.Logf("snapshot: %d items, %d findings, %d chunks, collected in %v", len(items), len(findings), len(chunks), snap.Duration)
}

// TestCollectLimitedRBAC collects with a service account that may list
// only pods, namespaces and nodes: the snapshot holds those, records
// Forbidden for every other kind, and evaluates without the checks that
// need the missing kinds.
func TestCollectLimitedRBAC(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := srv.Client
	for _, sa := range []string{"default", "limited"} {
		if err := srv.EnsureServiceAccount(ctx, "harrier", sa); err != nil {
			t.Fatal(err)
		}
	}
	allowed := []string{"pods", "namespaces", "nodes"}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "limited"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: allowed, Verbs: []string{"list"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "limited"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "limited"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "limited", Namespace: "harrier"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Pods("harrier").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := limitedConfig(ctx, t, srv, c)
	col, err := inventory.NewCollector(rc, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := col.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Pods) != 1 || len(snap.Namespaces) < 3 {
		t.Errorf("allowed kinds: %d pods, %d namespaces", len(snap.Pods), len(snap.Namespaces))
	}
	var failed []string
	for _, e := range snap.Errors {
		if e.Reason != inventory.ReasonForbidden {
			t.Errorf("%s: reason %s (%v), want Forbidden", e.Kind, e.Reason, e.Err)
		}
		failed = append(failed, e.Kind)
	}
	want := []string{"Service", "ServiceAccount", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
		"Ingress", "NetworkPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
	if !slices.Equal(failed, want) {
		t.Errorf("failed kinds %v, want %v", failed, want)
	}
	if m := snap.ErrorMap(); len(m) != len(want) || !strings.Contains(m["Deployment"], "Forbidden") {
		t.Errorf("error map %v", m)
	}
	findings := posture.Evaluate(snap, "test", "n", posture.Config{})
	if ch := snap.Chunks("test", "n", "s", findings, 0); len(ch[0].Errors) != len(want) || !strings.Contains(ch[0].Errors["ClusterRole"], "forbidden") {
		t.Errorf("chunk errors %v", ch[0].Errors)
	}
	for _, f := range findings {
		if f.CheckId == posture.CheckNetworkPolicy {
			t.Errorf("network-policy-missing without NetworkPolicies listed: %v", f)
		}
	}
	if !slices.ContainsFunc(findings, func(f *api.Finding) bool { return f.CheckId == posture.CheckImageLatest && f.Object.Name == "p" }) {
		t.Errorf("the listed pod was not evaluated: %v", got(findings))
	}
}

// limitedConfig is a client configuration with a token of harrier/limited.
func limitedConfig(ctx context.Context, t *testing.T, srv *kubetest.Server, c kubernetes.Interface) *rest.Config {
	t.Helper()
	tok, err := c.CoreV1().ServiceAccounts("harrier").CreateToken(ctx, "limited", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{Host: srv.URL, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: srv.CA.PEM}}
}
