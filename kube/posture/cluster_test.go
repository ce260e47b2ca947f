package posture

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube/inventory"
)

func objKeys(fs []*api.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Object.GetKind()+"/"+f.Object.GetNamespace()+"/"+f.Object.GetName()+" "+f.CheckId+"["+f.Container+"]")
	}
	sort.Strings(out)
	return out
}

func controller(kind, name, uid string) []metav1.OwnerReference {
	return []metav1.OwnerReference{{Kind: kind, Name: name, UID: types.UID(uid), Controller: new(true)}}
}

// privSpec fails exactly pss-privileged on container "app".
func privSpec() corev1.PodSpec {
	s := goodSpec()
	s.Containers[0].SecurityContext.Privileged = new(true)
	return *s
}

func TestEvaluateWorkloadsOnce(t *testing.T) {
	tmpl := corev1.PodTemplateSpec{Spec: privSpec()}
	meta := func(name string, owners []metav1.OwnerReference) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: "apps", Name: name, UID: types.UID("uid-" + name), OwnerReferences: owners}
	}
	snap := &inventory.Snapshot{
		Deployments: []appsv1.Deployment{{ObjectMeta: meta("web", nil), Spec: appsv1.DeploymentSpec{Template: tmpl}}},
		ReplicaSets: []appsv1.ReplicaSet{
			{ObjectMeta: meta("web-1", controller("Deployment", "web", "uid-web")), Spec: appsv1.ReplicaSetSpec{Template: tmpl}},
			{ObjectMeta: meta("lonely", nil), Spec: appsv1.ReplicaSetSpec{Template: tmpl}},
			// Its Deployment is not in the snapshot (e.g. not listable).
			{ObjectMeta: meta("half-1", controller("Deployment", "half", "uid-half")), Spec: appsv1.ReplicaSetSpec{Template: tmpl}},
		},
		CronJobs: []batchv1.CronJob{{ObjectMeta: meta("nightly", nil), Spec: batchv1.CronJobSpec{JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl}}}}},
		Jobs:     []batchv1.Job{{ObjectMeta: meta("nightly-123", controller("CronJob", "nightly", "uid-nightly")), Spec: batchv1.JobSpec{Template: tmpl}}},
		Pods: []corev1.Pod{
			{ObjectMeta: meta("web-1-a", controller("ReplicaSet", "web-1", "uid-web-1")), Spec: privSpec()},
			{ObjectMeta: meta("web-1-b", controller("ReplicaSet", "web-1", "uid-web-1")), Spec: privSpec()},
			{ObjectMeta: meta("lonely-a", controller("ReplicaSet", "lonely", "uid-lonely")), Spec: privSpec()},
			{ObjectMeta: meta("nightly-123-x", controller("Job", "nightly-123", "uid-nightly-123")), Spec: privSpec()},
			{ObjectMeta: meta("bare", nil), Spec: privSpec()},
			{ObjectMeta: meta("half-1-a", controller("ReplicaSet", "half-1", "uid-half-1")), Spec: privSpec()},
			{ObjectMeta: meta("static-node-1", controller("Node", "node-1", "uid-node")), Spec: privSpec()},
			{ObjectMeta: meta("orphan", controller("ReplicaSet", "gone", "uid-gone")), Spec: privSpec()},
			{ObjectMeta: meta("empty", nil)}, // partial object: no containers
		},
		NetworkPolicies: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "deny"}}},
	}
	fs := Evaluate(snap, "c", "n", Config{Checks: []string{CheckPrivileged, CheckNetworkPolicy}})
	want := []string{
		"CronJob/apps/nightly pss-privileged[app]",
		"Deployment/apps/web pss-privileged[app]",
		"Pod/apps/bare pss-privileged[app]",
		"Pod/apps/orphan pss-privileged[app]",
		"Pod/apps/static-node-1 pss-privileged[app]",
		"ReplicaSet/apps/half-1 pss-privileged[app]",
		"ReplicaSet/apps/lonely pss-privileged[app]",
	}
	if got := objKeys(fs); !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestEvaluateRBAC(t *testing.T) {
	defaults := map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}
	ca := rbacv1.RoleRef{Kind: "ClusterRole", Name: "cluster-admin"}
	snap := &inventory.Snapshot{
		ClusterRoles: []rbacv1.ClusterRole{
			{ObjectMeta: metav1.ObjectMeta{Name: "cluster-admin", Labels: defaults}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "system:controller:x"}, Rules: []rbacv1.PolicyRule{{Resources: []string{"*"}, Verbs: []string{"*"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "all-secrets"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"secrets"}, Verbs: []string{"watch"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "one-secret"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"x"}, Verbs: []string{"get"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "unbound-secrets"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "ns-secrets"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "empty"}}, // no rules at all
		},
		Roles: []rbacv1.Role{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "all-verbs"}, Rules: []rbacv1.PolicyRule{{Resources: []string{"pods"}, Verbs: []string{"*"}}}}},
		ClusterRoleBindings: []rbacv1.ClusterRoleBinding{
			{ObjectMeta: metav1.ObjectMeta{Name: "cluster-admin", Labels: defaults}, RoleRef: ca, Subjects: []rbacv1.Subject{{Kind: "Group", Name: "system:masters"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "system:public-info-viewer", Labels: defaults}, RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "system:public-info-viewer"},
				Subjects: []rbacv1.Subject{{Kind: "Group", Name: "system:unauthenticated"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "bob-admin"}, RoleRef: ca, Subjects: []rbacv1.Subject{{Kind: "User", Name: "bob"}, {Kind: "User", Name: "system:anonymous"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "watchers"}, RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "all-secrets"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "scoped"}, RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "one-secret"}},
		},
		RoleBindings: []rbacv1.RoleBinding{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "ns-admin"}, RoleRef: ca},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "ns-secrets"}, RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "ns-secrets"}},
		},
	}
	fs := Evaluate(snap, "c", "n", Config{})
	want := []string{
		"ClusterRole//all-secrets rbac-secrets-read[]",
		"ClusterRoleBinding//bob-admin rbac-anonymous[]",
		"ClusterRoleBinding//bob-admin rbac-cluster-admin-binding[]",
		"Role/a/all-verbs rbac-wildcard[]",
		"RoleBinding/a/ns-admin rbac-cluster-admin-binding[]",
	}
	if got := objKeys(fs); !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestEvaluateServicesAndNetworkPolicies(t *testing.T) {
	svc := func(ns, name string, typ corev1.ServiceType, labels map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}, Spec: corev1.ServiceSpec{Type: typ,
			Ports: []corev1.ServicePort{{Port: 80, NodePort: 30080}}}}
	}
	pod := func(ns, name string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: *goodSpec()}
	}
	snap := &inventory.Snapshot{
		Services: []corev1.Service{
			svc("a", "web", corev1.ServiceTypeLoadBalancer, nil),
			svc("a", "ui", corev1.ServiceTypeNodePort, map[string]string{"app.kubernetes.io/name": "Grafana"}),
			svc("a", "db", corev1.ServiceTypeClusterIP, nil),
			svc("kube-system", "kubernetes-dashboard", corev1.ServiceTypeNodePort, nil), // never exempt
			{}, // malformed: no type
		},
		Pods:            []corev1.Pod{pod("a", "p1"), pod("a", "p2"), pod("b", "p3"), pod("kube-system", "k")},
		NetworkPolicies: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "deny"}}},
		Namespaces:      []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "uid-a"}}},
	}
	fs := Evaluate(snap, "c", "n", Config{})
	want := []string{
		"Namespace//a network-policy-missing[]",
		"Service/a/ui service-exposed[]",
		"Service/a/web service-exposed[]",
		"Service/kube-system/kubernetes-dashboard service-exposed[]",
	}
	if got := objKeys(fs); !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	sev := map[string]api.Severity{}
	for _, f := range fs {
		sev[f.Object.Name] = f.Severity
		if f.Object.Kind == "Namespace" && f.Object.Uid != "uid-a" {
			t.Errorf("namespace ref %v", f.Object)
		}
	}
	if sev["web"] != api.Severity_SEVERITY_MEDIUM || sev["ui"] != api.Severity_SEVERITY_HIGH || sev["kubernetes-dashboard"] != api.Severity_SEVERITY_HIGH {
		t.Errorf("severities %v", sev)
	}
	// Kinds that could not be listed switch off the checks that need them.
	snap.Errors = []inventory.KindError{{Kind: "NetworkPolicy", Reason: inventory.ReasonForbidden}}
	for _, f := range Evaluate(snap, "c", "n", Config{}) {
		if f.CheckId == CheckNetworkPolicy {
			t.Errorf("network policy finding with NetworkPolicies unknown: %v", f)
		}
	}
	if Evaluate(nil, "c", "n", Config{}) != nil {
		t.Error("nil snapshot")
	}
	if fs := Evaluate(&inventory.Snapshot{}, "c", "n", Config{}); len(fs) != 0 {
		t.Errorf("empty snapshot: %v", fs)
	}
}

func TestEvaluateServiceAccountAutomount(t *testing.T) {
	spec := goodSpec()
	spec.AutomountServiceAccountToken = nil
	spec.ServiceAccountName = "quiet"
	snap := &inventory.Snapshot{
		ServiceAccounts: []corev1.ServiceAccount{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "quiet"}, AutomountServiceAccountToken: new(false)}},
		Pods: []corev1.Pod{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p"}, Spec: *spec},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "p"}, Spec: *spec}, // another namespace's "quiet" is unknown
		},
	}
	fs := Evaluate(snap, "c", "n", Config{Checks: []string{CheckTokenAutomount}})
	if got := objKeys(fs); !slices.Equal(got, []string{"Pod/b/p sa-token-automount[]"}) {
		t.Errorf("got %v", got)
	}
}

func TestCheckKubeletConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, content string
		want          []string
		wantErr       bool
	}{
		{name: "insecure", content: `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
readOnlyPort: 10255
cgroupDriver: systemd
`, want: []string{"kubelet-anonymous-auth[]", "kubelet-authz-always-allow[]", "kubelet-kernel-defaults-unprotected[]", "kubelet-read-only-port[]"}},
		{name: "secure", content: `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}}
authorization: {mode: Webhook}
readOnlyPort: 0
protectKernelDefaults: true
`},
		{name: "defaults", content: "kind: KubeletConfiguration\nclusterDNS: [10.96.0.10]\n", want: []string{"kubelet-kernel-defaults-unprotected[]"}},
		{name: "json", content: `{"kind":"KubeletConfiguration","readOnlyPort":10255,"protectKernelDefaults":true}`, want: []string{"kubelet-read-only-port[]"}},
		{name: "other kind", content: "kind: Pod\n", wantErr: true},
		{name: "empty", content: "\n", wantErr: true},
		{name: "not yaml", content: "readOnlyPort: [\n", wantErr: true},
		{name: "wrong type", content: "readOnlyPort: abc\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := CheckKubeletConfig(write(tc.name+".yaml", tc.content), "c", "node-1", Config{})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if got := keys(fs, false); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			for _, f := range fs {
				if f.Object.Kind != "Node" || f.Object.Name != "node-1" || f.Cluster != "c" {
					t.Errorf("finding %v", f)
				}
			}
		})
	}
	fs, err := CheckKubeletConfig(filepath.Join(dir, "missing.yaml"), "c", "n", Config{})
	if err != nil || fs != nil {
		t.Errorf("missing file: %v, %v", fs, err)
	}
	if _, err := CheckKubeletConfig(dir, "c", "n", Config{}); err == nil {
		t.Error("a directory is not a config file")
	}
	fs, err = CheckKubeletConfig(write("off.yaml", "kind: KubeletConfiguration\nreadOnlyPort: 10255\n"), "c", "n", Config{Disabled: []string{CheckKubeletReadOnly, CheckKubeletKernelDefaults}})
	if err != nil || len(fs) != 0 {
		t.Errorf("disabled check: %v, %v", fs, err)
	}
}

func FuzzParseKubeletConfig(f *testing.F) {
	f.Add([]byte("kind: KubeletConfiguration\nauthentication: {anonymous: {enabled: true}}\nreadOnlyPort: 10255\nauthorization: {mode: AlwaysAllow}\n"))
	f.Add([]byte(`{"kind":"KubeletConfiguration","readOnlyPort":-1}`))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("readOnlyPort: 99999999999\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseKubeletConfig(data)
		if err != nil {
			if s != nil {
				t.Fatal("settings with an error")
			}
			return
		}
		fs := KubeletFindings(s, "f", "c", "n", Config{})
		if len(fs) > 4 {
			t.Fatalf("%d findings", len(fs))
		}
	})
}
