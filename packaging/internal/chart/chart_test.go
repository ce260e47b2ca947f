package chart_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/kube/audit"
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
		"audit":      auditValues,
		"admission":  {"admission": admissionValues},
	}
	for name, v := range good {
		if _, err := chart.Render(chartDir(t), "harrier", v); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]map[string]any{
		"unknown field":       {"agent": map[string]any{"privilegd": true}},
		"unknown top level":   {"agents": map[string]any{}},
		"wrong type":          {"agent": map[string]any{"privileged": "yes"}},
		"capability case":     {"agent": map[string]any{"capabilities": []any{"cap_bpf"}}},
		"bad quantity":        {"agent": map[string]any{"resources": map[string]any{"limits": map[string]any{"cpu": "lots", "memory": "296Mi"}, "requests": map[string]any{"cpu": "1", "memory": "1Gi"}}}},
		"relative spool":      {"agent": map[string]any{"spoolHostPath": "var/lib/harrier"}},
		"port out of range":   {"backend": map[string]any{"service": map[string]any{"ingestPort": 70000}}},
		"plain http webhook":  {"auditWebhook": map[string]any{"enabled": true, "server": "http://backend/audit"}},
		"audit log directory": {"agent": map[string]any{"auditLogPath": "/var/log/kubernetes/audit/"}},
		"cluster name":        {"clusterName": "prod east"},
		"bad pull policy":     {"image": map[string]any{"pullPolicy": "Sometimes"}},
		"admission mode":      {"admission": map[string]any{"mode": "block"}},
		"admission timeout":   {"admission": map[string]any{"timeoutSeconds": 30}},
		"admission policy":    {"admission": map[string]any{"failurePolicy": "ignore"}},
		"admission ns":        {"admission": map[string]any{"exemptNamespaces": []any{"Kube-System"}}},
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
		"audit":          auditValues,
		"placement":      {"agent": map[string]any{"priorityClassName": "system-node-critical", "nodeSelector": map[string]any{"kubernetes.io/os": "linux"}}},
		"admission":      {"admission": admissionValues},
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
		// The runtimes' bundles, for pod context while the API server is away.
		"/host/run/containerd/io.containerd.runtime.v2.task": "/run/containerd/io.containerd.runtime.v2.task",
		"/host/run/containers/storage/overlay-containers":    "/run/containers/storage/overlay-containers",
	} {
		if got := hostPaths[mounts[mountPath]]; got != hostPath {
			t.Errorf("%s is mounted from host %q, want %q", mountPath, got, hostPath)
		}
	}
	sc := c.SecurityContext
	if sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"BPF", "PERFMON", "SYS_PTRACE", "KILL", "NET_ADMIN", "DAC_OVERRIDE", "FOWNER"}) {
		t.Errorf("securityContext %+v: want unprivileged, drop ALL, add BPF PERFMON SYS_PTRACE and response's KILL NET_ADMIN DAC_OVERRIDE FOWNER", sc)
	}
	// Response's host cgroup file system, read-write.
	if got := hostPaths[mounts["/host/sys/fs/cgroup"]]; got != "/sys/fs/cgroup" {
		t.Errorf("/host/sys/fs/cgroup is mounted from host %q, want /sys/fs/cgroup", got)
	}
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/host/sys/fs/cgroup" && m.ReadOnly {
			t.Error("the host's cgroup file system is mounted read-only: response cannot freeze or kill a container")
		}
	}
	// Without response: the sensor's three capabilities and no host cgroup
	// file system.
	plain := find[*appsv1.DaemonSet](decode(t, map[string]any{"agent": map[string]any{"response": map[string]any{"enabled": false}}}))[0]
	pc := plain.Spec.Template.Spec.Containers[0]
	if add := pc.SecurityContext.Capabilities.Add; !slices.Equal(add, []corev1.Capability{"BPF", "PERFMON", "SYS_PTRACE"}) {
		t.Errorf("agent.response.enabled=false: capabilities %v, want BPF PERFMON SYS_PTRACE", add)
	}
	for _, m := range pc.VolumeMounts {
		if m.MountPath == "/host/sys/fs/cgroup" {
			t.Error("agent.response.enabled=false still mounts the host's cgroup file system")
		}
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
	for _, values := range []map[string]any{nil, auditValues, {"clusterName": "edge-7"}, {"admission": admissionValues}} {
		for _, cm := range find[*corev1.ConfigMap](decode(t, values)) {
			if cm.Name != "harrier-agent" {
				continue
			}
			text := cm.Data["agent.yaml"]
			p := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := agent.LoadConfig(p)
			if err != nil {
				t.Errorf("values %v: %v", values, err)
				continue
			}
			if cfg.Kube.Mode != "on" {
				t.Errorf("values %v: kube.mode %q, want on", values, cfg.Kube.Mode)
			}
			if ns := cfg.Kube.NodeState; ns.ContainerdRoot != "/host/run/containerd" || ns.CRIORoot != "/host/run/containers/storage" {
				t.Errorf("values %v: kube.nodeState %+v", values, ns)
			}
			if inv := cfg.Kube.Inventory; !inv.On() || inv.IntervalOrDefault() != 10*time.Minute {
				t.Errorf("values %v: kube.inventory %+v", values, inv)
			}
			if !slices.Equal(cfg.Kube.Posture.ExemptNamespaces, []string{"kube-system", "kube-public", "kube-node-lease"}) || cfg.Kube.KubeletConfig != "off" {
				t.Errorf("values %v: kube.posture %+v, kubeletConfig %q", values, cfg.Kube.Posture, cfg.Kube.KubeletConfig)
			}
			if values["clusterName"] != nil && cfg.Analytics.Cluster != values["clusterName"] {
				t.Errorf("analytics.cluster %q", cfg.Analytics.Cluster)
			}
			if values["auditWebhook"] != nil {
				a := cfg.Kube.Audit
				if a.WebhookAddr != ":9474" || a.TokenFile != "/etc/harrier/audit/token" || a.CertFile != "/etc/harrier/audit/tls.crt" ||
					a.LogPath != "/var/log/kubernetes/audit/audit.log" {
					t.Errorf("kube.audit %+v", a)
				}
			}
		}
	}
}

// agentConfigs returns the agent's config as the chart renders it with
// values, loaded as the agent loads it.
func agentConfigs(t *testing.T, values map[string]any) agent.Config {
	t.Helper()
	for _, cm := range find[*corev1.ConfigMap](decode(t, values)) {
		if cm.Name != "harrier-agent" {
			continue
		}
		p := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(p, []byte(cm.Data["agent.yaml"]), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := agent.LoadConfig(p)
		if err != nil {
			t.Fatalf("values %v: %v", values, err)
		}
		return cfg
	}
	t.Fatal("no harrier-agent ConfigMap")
	return agent.Config{}
}

// TestInventoryPostureValues: the values reach the agent's config, and the
// kubelet's config file is mounted where the config says.
func TestInventoryPostureValues(t *testing.T) {
	values := map[string]any{
		"inventory": map[string]any{"enabled": false},
		"posture": map[string]any{"disabled": []any{"image-no-digest"}, "allowedRegistries": []any{"registry.site.lan"},
			"exemptNamespaces": []any{}},
		"agent": map[string]any{"kubeletConfigPath": "/var/lib/kubelet/config.yaml"},
	}
	cfg := agentConfigs(t, values)
	if cfg.Kube.Inventory.On() || !slices.Equal(cfg.Kube.Posture.Disabled, []string{"image-no-digest"}) ||
		!slices.Equal(cfg.Kube.Posture.AllowedRegistries, []string{"registry.site.lan"}) ||
		cfg.Kube.Posture.ExemptNamespaces == nil || len(cfg.Kube.Posture.ExemptNamespaces) != 0 ||
		cfg.Kube.KubeletConfig != "/host/var/lib/kubelet/config.yaml" {
		t.Errorf("kube config %+v", cfg.Kube)
	}
	objs := decode(t, values)
	for _, cr := range find[*rbacv1.ClusterRole](objs) {
		for _, r := range cr.Rules {
			if slices.Contains(r.Resources, "deployments") {
				t.Errorf("inventory off still grants %v", r)
			}
		}
	}
	ds := find[*appsv1.DaemonSet](objs)[0]
	var mounted bool
	for _, m := range ds.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounted = mounted || (m.Name == "kubelet-config" && m.MountPath == "/host/var/lib/kubelet/config.yaml" && m.ReadOnly)
	}
	if !mounted {
		t.Error("kubelet config not mounted read-only")
	}
	bad := map[string]map[string]any{
		"interval":     {"inventory": map[string]any{"enabled": true, "interval": "often"}},
		"posture kind": {"posture": map[string]any{"disabled": []any{"Not An ID"}}},
	}
	for name, v := range bad {
		if _, err := chart.Render(chartDir(t), "harrier", v); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestOtherConfigMapsLoad: every other ConfigMap key is valid YAML.
func TestOtherConfigMapsLoad(t *testing.T) {
	for _, cm := range find[*corev1.ConfigMap](decode(t, auditValues)) {
		if cm.Name == "harrier-agent" {
			continue
		}
		for key, text := range cm.Data {
			var v map[string]any
			if err := yaml.Unmarshal([]byte(text), &v); err != nil || len(v) == 0 {
				t.Errorf("ConfigMap %s key %s: %v", cm.Name, key, err)
			}
		}
	}
}

// TestRBACLeastPrivilege: the agent reads pods, nodes and namespaces,
// manages its leader Lease in its namespace, and may read and delete its own
// admission webhook object (by name, so that turning the guard off removes
// it); the backend manages leases in its namespace and creates
// TokenReviews (enrollment). Nothing else.
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
		{"ClusterRole/harrier-agent", "", "services", "list"},
		{"ClusterRole/harrier-agent", "", "serviceaccounts", "list"},
		{"ClusterRole/harrier-agent", "apps", "deployments", "list"},
		{"ClusterRole/harrier-agent", "apps", "statefulsets", "list"},
		{"ClusterRole/harrier-agent", "apps", "daemonsets", "list"},
		{"ClusterRole/harrier-agent", "apps", "replicasets", "list"},
		{"ClusterRole/harrier-agent", "batch", "jobs", "list"},
		{"ClusterRole/harrier-agent", "batch", "cronjobs", "list"},
		{"ClusterRole/harrier-agent", "networking.k8s.io", "ingresses", "list"},
		{"ClusterRole/harrier-agent", "networking.k8s.io", "networkpolicies", "list"},
		{"ClusterRole/harrier-agent", "rbac.authorization.k8s.io", "roles", "list"},
		{"ClusterRole/harrier-agent", "rbac.authorization.k8s.io", "clusterroles", "list"},
		{"ClusterRole/harrier-agent", "rbac.authorization.k8s.io", "rolebindings", "list"},
		{"ClusterRole/harrier-agent", "rbac.authorization.k8s.io", "clusterrolebindings", "list"},
		{"ClusterRole/harrier-agent", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "get,delete"},
		// Enrollment: the backend reviews agents' service-account tokens.
		{"ClusterRole/harrier-backend-tokenreview", "authentication.k8s.io", "tokenreviews", "create"},
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

// auditValues turn on the audit webhook and the audit log follower.
var auditValues = map[string]any{
	"auditWebhook": map[string]any{"enabled": true, "clusterIP": "10.96.0.250"},
	"agent":        map[string]any{"auditLogPath": "/var/log/kubernetes/audit/audit.log"},
}

// TestAuditWebhookConfig: the API server's audit webhook kubeconfig points
// at the harrier-audit Service with a token; the Service reaches the agent
// on the same node; the audit policy is the one the detections are tested
// with; the agent mounts the receiver's Secret and the log's directory.
func TestAuditWebhookConfig(t *testing.T) {
	if got := find[*corev1.Service](decode(t, nil)); len(got) != 1 {
		t.Errorf("audit off: %d Services, want only the backend's", len(got))
	}
	for _, tt := range []struct {
		name   string
		values map[string]any
		server string
	}{
		{"cluster IP", auditValues, "https://10.96.0.250:9474/"},
		{"DNS name", map[string]any{"auditWebhook": map[string]any{"enabled": true}}, "https://harrier-audit.harrier.svc:9474/"},
		{"explicit", map[string]any{"auditWebhook": map[string]any{"enabled": true, "server": "https://audit.site.lan:443/"}}, "https://audit.site.lan:443/"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs := decode(t, tt.values)
			var cm *corev1.ConfigMap
			for _, c := range find[*corev1.ConfigMap](objs) {
				if c.Name == "harrier-audit-webhook" {
					cm = c
				}
			}
			if cm == nil {
				t.Fatal("auditWebhook.enabled rendered no harrier-audit-webhook ConfigMap")
			}
			var kubeconfig struct {
				Clusters []struct {
					Cluster struct {
						Server string `json:"server"`
						CA     string `json:"certificate-authority"`
					} `json:"cluster"`
				} `json:"clusters"`
				Users []struct {
					User map[string]string `json:"user"`
				} `json:"users"`
			}
			if err := yaml.Unmarshal([]byte(cm.Data["audit-webhook.yaml"]), &kubeconfig); err != nil || len(kubeconfig.Clusters) != 1 || len(kubeconfig.Users) != 1 {
				t.Fatalf("audit webhook kubeconfig: %v %+v", err, kubeconfig)
			}
			if got := kubeconfig.Clusters[0].Cluster.Server; got != tt.server {
				t.Errorf("server %q, want %q", got, tt.server)
			}
			if u := kubeconfig.Users[0].User; u["tokenFile"] == "" {
				t.Errorf("webhook user %v: no tokenFile", u)
			}
			if strings.TrimSpace(cm.Data["audit-policy.yaml"]) != strings.TrimSpace(audit.RecommendedPolicy()) {
				t.Errorf("the chart's audit policy differs from kube/audit/policy.yaml:\n%s", cm.Data["audit-policy.yaml"])
			}
			var svc *corev1.Service
			for _, s := range find[*corev1.Service](objs) {
				if s.Name == "harrier-audit" {
					svc = s
				}
			}
			if svc == nil {
				t.Fatal("no harrier-audit Service")
			}
			if p := svc.Spec.InternalTrafficPolicy; p == nil || *p != corev1.ServiceInternalTrafficPolicyLocal {
				t.Errorf("internalTrafficPolicy %v, want Local", p)
			}
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 9474 || svc.Spec.Ports[0].TargetPort.String() != "audit-webhook" ||
				svc.Spec.Selector["app.kubernetes.io/component"] != "agent" {
				t.Errorf("harrier-audit Service %+v", svc.Spec)
			}
			ds := find[*appsv1.DaemonSet](objs)[0]
			c := ds.Spec.Template.Spec.Containers[0]
			if len(c.Ports) != 1 || c.Ports[0].Name != "audit-webhook" || c.Ports[0].ContainerPort != 9474 {
				t.Errorf("agent ports %+v", c.Ports)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m.MountPath
			}
			if mounts["audit-webhook"] != "/etc/harrier/audit" {
				t.Errorf("mounts %v", mounts)
			}
		})
	}
	ds := find[*appsv1.DaemonSet](decode(t, auditValues))[0]
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == "audit-log" && (v.HostPath == nil || v.HostPath.Path != "/var/log/kubernetes/audit") {
			t.Errorf("audit-log volume %+v", v)
		}
	}
}

var admissionValues = map[string]any{"enabled": true, "mode": "deny", "checks": []any{"pss-privileged"},
	"exemptLabels": "harrier.io/admission=exempt", "failurePolicy": "Fail", "timeoutSeconds": 5}

// TestAdmissionGuard: admission.enabled gives the agents the guard's
// config (loaded strictly by the agent), its certificate Secret mounted
// whole, a port behind Service harrier-admission, and RBAC for its own
// webhook object only.
func TestAdmissionGuard(t *testing.T) {
	cfg := agentConfigs(t, map[string]any{"admission": admissionValues}).Kube.Admission
	if !cfg.Enabled || cfg.Mode != "deny" || cfg.FailurePolicy != "Fail" || cfg.TimeoutSeconds != 5 || cfg.Addr != ":9475" ||
		!slices.Equal(cfg.Checks, []string{"pss-privileged"}) || cfg.ExemptLabels != "harrier.io/admission=exempt" ||
		!slices.Equal(cfg.ExemptNamespaces, []string{"kube-system", "harrier"}) ||
		cfg.Service == nil || cfg.Service.Name != "harrier-admission" || cfg.Service.Namespace != "harrier" || cfg.Service.Port != 443 {
		t.Errorf("kube.admission %+v", cfg)
	}
	if def := agentConfigs(t, nil).Kube.Admission; def.Enabled {
		t.Error("admission on by default")
	}
	objs := decode(t, map[string]any{"admission": admissionValues})
	var svc *corev1.Service
	for _, s := range find[*corev1.Service](objs) {
		if s.Name == "harrier-admission" {
			svc = s
		}
	}
	if svc == nil || svc.Spec.Selector["app.kubernetes.io/component"] != "agent" || svc.Spec.Ports[0].Port != 443 ||
		svc.Spec.Ports[0].TargetPort.String() != "admission" {
		t.Fatalf("admission Service %+v", svc)
	}
	ds := find[*appsv1.DaemonSet](objs)[0]
	c := ds.Spec.Template.Spec.Containers[0]
	if len(c.Ports) != 1 || c.Ports[0].Name != "admission" || c.Ports[0].ContainerPort != 9475 {
		t.Errorf("agent ports %+v", c.Ports)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == "admission-certs" && m.MountPath == "/etc/harrier/admission" && m.SubPath == "" {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("admission Secret not mounted as a directory: %+v", c.VolumeMounts)
	}
	var rules []string
	for _, cr := range find[*rbacv1.ClusterRole](objs) {
		for _, r := range cr.Rules {
			if slices.Contains(r.APIGroups, "admissionregistration.k8s.io") {
				rules = append(rules, strings.Join(r.Verbs, ",")+" "+strings.Join(r.ResourceNames, ","))
			}
		}
	}
	if !slices.Equal(rules, []string{"get,update,patch,delete harrier-admission", "create "}) {
		t.Errorf("admission RBAC %q", rules)
	}
	for _, s := range find[*corev1.Service](decode(t, nil)) {
		if s.Name == "harrier-admission" {
			t.Error("admission Service rendered while off")
		}
	}
}
