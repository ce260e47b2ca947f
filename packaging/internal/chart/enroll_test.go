package chart_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/packaging/internal/chart"
)

// TestEnrollmentDefault: by default agents enroll with a projected
// service-account token (audience harrier, one hour) at the chart's backend
// over HTTPS, mount only the CA certificate, and the backend signs with
// ca.key from its Secret.
func TestEnrollmentDefault(t *testing.T) {
	objs := decode(t, nil)
	cfg := agentConfigs(t, nil)
	e := cfg.Uplink.Enroll
	if e.Server != "https://harrier-backend.harrier.svc:9470" || e.Kind != agent.EnrollServiceAccount || e.TokenFile != "/var/run/secrets/harrier/token" {
		t.Errorf("uplink.enroll %+v", e)
	}
	if cfg.Uplink.CertFile != "" || cfg.Uplink.KeyFile != "" || cfg.Uplink.AgentID != "" {
		t.Errorf("uplink %+v: want the enrolled pair under the data dir, and no pinned ID", cfg.Uplink)
	}
	pod := find[*appsv1.DaemonSet](objs)[0].Spec.Template.Spec
	var token *corev1.ServiceAccountTokenProjection
	var ca *corev1.ConfigMapVolumeSource
	for _, v := range pod.Volumes {
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil {
					token = src.ServiceAccountToken
				}
			}
		}
		if v.Name == "certs" {
			if v.Secret != nil {
				t.Errorf("agent mounts Secret %s: enrolling agents need only ca.crt", v.Secret.SecretName)
			}
			ca = v.ConfigMap
		}
	}
	if token == nil || token.Audience != backend.Audience || token.ExpirationSeconds == nil || *token.ExpirationSeconds != 3600 || token.Path != "token" {
		t.Errorf("projected token %+v: want audience harrier, 3600 s", token)
	}
	if ca == nil || ca.Name != "harrier-ca" || len(ca.Items) != 1 || ca.Items[0].Key != "ca.crt" {
		t.Errorf("CA volume %+v: want ConfigMap harrier-ca, ca.crt only", ca)
	}
	for _, m := range pod.Containers[0].VolumeMounts {
		if strings.HasSuffix(m.MountPath, "agent.key") {
			t.Errorf("agent.key mounted from %s: the enrolled key lives in the data dir", m.Name)
		}
	}

	bcfg := backendConfig(t, nil)
	if bcfg.CAKeyFile != "/etc/harrier/pki/ca.key" || !bcfg.APITLS || bcfg.Enroll.ServiceAccount != "harrier/harrier-agent" ||
		bcfg.Enroll.CertValidity.Std() != 24*time.Hour {
		t.Errorf("backend enrollment config %+v", bcfg)
	}
	for _, d := range find[*appsv1.Deployment](objs) {
		if p := d.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet; p.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("readiness probe scheme %q: the API serves HTTPS", p.Scheme)
		}
	}
}

// TestPerNodeCertsSecret: agent.certsSecret keeps the old per-node
// certificates, without enrollment on the agent's side.
func TestPerNodeCertsSecret(t *testing.T) {
	values := map[string]any{"agent": map[string]any{"certsSecret": "harrier-agent-certs"}}
	cfg := agentConfigs(t, values)
	if cfg.Uplink.Enroll.Enabled() || cfg.Uplink.CertFile != "/etc/harrier/pki/agent.crt" {
		t.Errorf("uplink %+v: want the per-node pair, no enrollment", cfg.Uplink)
	}
	pod := find[*appsv1.DaemonSet](decode(t, values))[0].Spec.Template.Spec
	mounts := map[string]string{}
	for _, m := range pod.Containers[0].VolumeMounts {
		mounts[m.MountPath] = m.SubPathExpr
	}
	if mounts["/etc/harrier/pki/agent.key"] != "$(NODE_NAME).key" {
		t.Errorf("mounts %v: want this node's key from the Secret", mounts)
	}
	// Neither per-node certificates nor enrollment: refused at render.
	_, err := chart.Render(chartDir(t), "harrier", map[string]any{"enrollment": map[string]any{"enabled": false}})
	if err == nil || !strings.Contains(err.Error(), "agent.certsSecret") {
		t.Errorf("no certificates at all: %v", err)
	}
	// Enrollment off with a per-node Secret: the backend has no ca.key, and
	// its API still speaks TLS (a non-loopback API address requires it).
	off := map[string]any{"agent": map[string]any{"certsSecret": "harrier-agent-certs"}, "enrollment": map[string]any{"enabled": false}}
	if b := backendConfig(t, off); b.CAKeyFile != "" || !b.APITLS {
		t.Errorf("enrollment off: backend %+v", b)
	}
	for name, v := range map[string]map[string]any{
		"validity":    {"enrollment": map[string]any{"certValidity": "a day"}},
		"http server": {"enrollment": map[string]any{"server": "http://backend:9470"}},
		"configmap":   {"agent": map[string]any{"caConfigMap": "Harrier CA"}},
	} {
		if _, err := chart.Render(chartDir(t), "harrier", v); err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: want a schema error, got %v", name, err)
		}
	}
}

// backendConfig loads the backend's config as the chart renders it.
func backendConfig(t *testing.T, values map[string]any) backend.Config {
	t.Helper()
	for _, cm := range find[*corev1.ConfigMap](decode(t, values)) {
		if cm.Name != "harrier-backend" {
			continue
		}
		p := filepath.Join(t.TempDir(), "backend.yaml")
		if err := os.WriteFile(p, []byte(cm.Data["backend.yaml"]), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := backend.LoadConfig(p)
		if err != nil {
			t.Fatalf("values %v: %v", values, err)
		}
		return f.Backend
	}
	t.Fatal("no harrier-backend ConfigMap")
	return backend.Config{}
}
