package chart_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/packaging/internal/chart"
	"github.com/harrier-sec/harrier/packaging/internal/pkgtest"
)

func chartDir(t *testing.T) string {
	return filepath.Join(pkgtest.RepoRoot(t), "packaging", "helm", "harrier")
}

// TestPlainManifestsCurrent: packaging/kubernetes/harrier.yaml is the chart
// rendered with its defaults (`make manifests` regenerates it).
func TestPlainManifestsCurrent(t *testing.T) {
	want, err := chart.PlainManifests(chartDir(t), "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(pkgtest.RepoRoot(t), "packaging", "kubernetes", "harrier.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Error("packaging/kubernetes/harrier.yaml is stale: run `make manifests` and commit")
	}
}

// TestValuesSchema: the defaults and sensible overrides pass
// values.schema.json; mistakes an operator could make are refused before
// anything renders.
func TestValuesSchema(t *testing.T) {
	good := map[string]map[string]any{
		"defaults":   nil,
		"privileged": {"agent": map[string]any{"privileged": true}},
		"old kernel": {"agent": map[string]any{"extraCapabilities": []any{"SYS_RESOURCE"}}},
		"no backend": {"backend": map[string]any{"enabled": false}},
		"registry":   {"image": map[string]any{"repository": "registry.site.lan/harrier", "tag": "0.1.0"}},
		"nodeport":   {"backend": map[string]any{"service": map[string]any{"type": "NodePort"}}},
		"audit":      {"auditWebhook": map[string]any{"enabled": true}, "agent": map[string]any{"auditLogHostPath": "/var/log/kubernetes/audit"}},
	}
	for name, v := range good {
		if _, err := chart.Render(chartDir(t), "harrier", v); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]map[string]any{
		"unknown field":      {"agent": map[string]any{"privilegd": true}},
		"unknown top level":  {"agents": map[string]any{}},
		"wrong type":         {"agent": map[string]any{"privileged": "yes"}},
		"capability case":    {"agent": map[string]any{"capabilities": []any{"cap_bpf"}}},
		"two backends":       {"backend": map[string]any{"replicas": 2}},
		"bad quantity":       {"agent": map[string]any{"resources": map[string]any{"limits": map[string]any{"cpu": "lots", "memory": "296Mi"}, "requests": map[string]any{"cpu": "1", "memory": "1Gi"}}}},
		"relative spool":     {"agent": map[string]any{"spoolHostPath": "var/lib/harrier"}},
		"port out of range":  {"backend": map[string]any{"service": map[string]any{"ingestPort": 70000}}},
		"plain http webhook": {"auditWebhook": map[string]any{"enabled": true, "server": "http://backend/audit"}},
		"bad pull policy":    {"image": map[string]any{"pullPolicy": "Sometimes"}},
	}
	for name, v := range bad {
		_, err := chart.Render(chartDir(t), "harrier", v)
		if err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: want a schema error, got %v", name, err)
		}
	}
}

// decode parses every rendered object strictly with client-go's scheme:
// an unknown kind, an unknown or duplicate field or a wrong type fails.
func decode(t *testing.T, values map[string]any) []runtime.Object {
	t.Helper()
	ms, err := chart.Render(chartDir(t), "harrier", values)
	if err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, m := range ms {
		obj, _, err := dec.Decode([]byte(m.Content), nil, nil)
		if err != nil {
			t.Errorf("%s %s (%s): %v", m.Kind, m.Name, m.Source, err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

func find[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestRenderedObjectsDecode(t *testing.T) {
	for name, v := range map[string]map[string]any{
		"defaults":       nil,
		"namespace":      {"namespace": map[string]any{"create": true}},
		"privileged":     {"agent": map[string]any{"privileged": true}},
		"no persistence": {"backend": map[string]any{"persistence": map[string]any{"enabled": false, "size": "1Gi"}}},
		"no backend":     {"backend": map[string]any{"enabled": false}},
		"audit":          {"auditWebhook": map[string]any{"enabled": true}, "agent": map[string]any{"auditLogHostPath": "/var/log/kubernetes/audit", "priorityClassName": "system-node-critical", "nodeSelector": map[string]any{"kubernetes.io/os": "linux"}}},
	} {
		t.Run(name, func(t *testing.T) { decode(t, v) })
	}
}

// TestAgentDaemonSet checks what the issue asks of the agent's pod.
func TestAgentDaemonSet(t *testing.T) {
	objs := decode(t, nil)
	dss := find[*appsv1.DaemonSet](objs)
	if len(dss) != 1 {
		t.Fatalf("%d DaemonSets", len(dss))
	}
	pod := dss[0].Spec.Template.Spec
	if !pod.HostPID {
		t.Error("hostPID is off")
	}
	c := pod.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for mountPath, hostPath := range map[string]string{
		"/sys/kernel/btf": "/sys/kernel/btf", "/sys/fs/bpf": "/sys/fs/bpf", "/host/proc": "/proc", "/var/lib/harrier": "/var/lib/harrier",
	} {
		if got := hostPaths[mounts[mountPath]]; got != hostPath {
			t.Errorf("%s is mounted from host %q, want %q", mountPath, got, hostPath)
		}
	}
	sc := c.SecurityContext
	if sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"BPF", "PERFMON", "SYS_PTRACE"}) {
		t.Errorf("securityContext %+v: want unprivileged, drop ALL, add BPF PERFMON SYS_PTRACE", sc)
	}
	for res, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "360m", corev1.ResourceMemory: "296Mi"} {
		if q := c.Resources.Limits[res]; q.String() != want {
			t.Errorf("limit %s = %s, want %s", res, q.String(), want)
		}
		if q := c.Resources.Requests[res]; q.String() != want {
			t.Errorf("request %s = %s, want %s", res, q.String(), want)
		}
	}
	var gomem *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "GOMEMLIMIT" {
			gomem = &c.Env[i]
		}
	}
	if gomem == nil || gomem.ValueFrom == nil || gomem.ValueFrom.ResourceFieldRef == nil ||
		gomem.ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
		t.Errorf("GOMEMLIMIT %+v: want it from limits.memory", gomem)
	}
	var cp bool
	for _, tol := range pod.Tolerations {
		cp = cp || (tol.Key == "node-role.kubernetes.io/control-plane" && tol.Effect == corev1.TaintEffectNoSchedule)
	}
	if !cp {
		t.Errorf("no toleration for control-plane nodes: %+v", pod.Tolerations)
	}

	// The documented fallback.
	priv := find[*appsv1.DaemonSet](decode(t, map[string]any{"agent": map[string]any{"privileged": true}}))[0]
	if p := priv.Spec.Template.Spec.Containers[0].SecurityContext.Privileged; p == nil || !*p {
		t.Error("agent.privileged=true did not make the container privileged")
	}
}

// TestAgentConfigLoads: the agent config the chart ships is one the agent
// accepts (strict loading, like at start-up).
func TestAgentConfigLoads(t *testing.T) {
	for _, cm := range find[*corev1.ConfigMap](decode(t, nil)) {
		for key, text := range cm.Data {
			p := filepath.Join(t.TempDir(), key)
			if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := agent.LoadConfig(p); err != nil {
				t.Errorf("ConfigMap %s key %s: %v", cm.Name, key, err)
			}
		}
	}
}

// TestRBACLeastPrivilege: the agent reads pods, nodes and namespaces and
// manages its leader Lease in its namespace; the backend manages leases in
// its namespace. Nothing else.
func TestRBACLeastPrivilege(t *testing.T) {
	objs := decode(t, nil)
	type rule struct{ role, group, resource, verbs string }
	var got []rule
	collect := func(role string, rules []rbacv1.PolicyRule) {
		for _, r := range rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					got = append(got, rule{role, g, res, strings.Join(r.Verbs, ",")})
				}
			}
		}
	}
	for _, cr := range find[*rbacv1.ClusterRole](objs) {
		collect("ClusterRole/"+cr.Name, cr.Rules)
	}
	for _, r := range find[*rbacv1.Role](objs) {
		if r.Namespace != "harrier" {
			t.Errorf("Role %s in namespace %q, not the release's", r.Name, r.Namespace)
		}
		collect("Role/"+r.Name, r.Rules)
	}
	want := []rule{
		{"ClusterRole/harrier-agent", "", "pods", "get,list,watch"},
		{"ClusterRole/harrier-agent", "", "nodes", "get,list,watch"},
		{"ClusterRole/harrier-agent", "", "namespaces", "get,list,watch"},
		{"Role/harrier-agent", "coordination.k8s.io", "leases", "get,create,update"},
		{"Role/harrier-backend", "coordination.k8s.io", "leases", "get,create,update"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("RBAC rules\n got %v\nwant %v", got, want)
	}
}

// TestBackendService: QUIC ingest over UDP 9471, API over TCP 9470.
func TestBackendService(t *testing.T) {
	svcs := find[*corev1.Service](decode(t, nil))
	if len(svcs) != 1 {
		t.Fatalf("%d Services", len(svcs))
	}
	got := map[string]corev1.Protocol{}
	for _, p := range svcs[0].Spec.Ports {
		got[p.Name] = p.Protocol
		if (p.Name == "ingest" && p.Port != 9471) || (p.Name == "api" && p.Port != 9470) {
			t.Errorf("port %s = %d", p.Name, p.Port)
		}
	}
	if got["ingest"] != corev1.ProtocolUDP || got["api"] != corev1.ProtocolTCP {
		t.Errorf("service ports %v", svcs[0].Spec.Ports)
	}
}

// TestAuditWebhookConfig: the optional kubeconfig for the API server's
// audit webhook is valid YAML pointing at https.
func TestAuditWebhookConfig(t *testing.T) {
	for _, cm := range find[*corev1.ConfigMap](decode(t, map[string]any{"auditWebhook": map[string]any{"enabled": true}})) {
		if cm.Name != "harrier-audit-webhook" {
			continue
		}
		var kubeconfig struct {
			Clusters []struct {
				Cluster struct {
					Server string `json:"server"`
				} `json:"cluster"`
			} `json:"clusters"`
		}
		if err := yaml.Unmarshal([]byte(cm.Data["audit-webhook.yaml"]), &kubeconfig); err != nil || len(kubeconfig.Clusters) != 1 ||
			!strings.HasPrefix(kubeconfig.Clusters[0].Cluster.Server, "https://") {
			t.Errorf("audit webhook kubeconfig: %v %+v", err, kubeconfig)
		}
		return
	}
	t.Error("auditWebhook.enabled rendered no harrier-audit-webhook ConfigMap")
}
