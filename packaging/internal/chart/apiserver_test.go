package chart_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/kube/admission"
	"github.com/harrier-sec/harrier/kube/inventory"
	"github.com/harrier-sec/harrier/packaging/internal/chart"
)

// TestServerSideDryRun applies the rendered chart to a real kube-apiserver
// with a server-side dry-run: the API server's own validation and admission
// (RBAC objects, the DaemonSet's security context, the Service's ports) accept
// every object. The namespace is created for real first, since a dry-run
// namespace does not exist for the objects in it.
func TestServerSideDryRun(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	kubectl := filepath.Join(kubetest.BinDir(), "kubectl")
	for _, values := range []map[string]any{
		nil,
		{"agent": map[string]any{"privileged": true}},
		auditValues,
		{"admission": map[string]any{"enabled": true, "mode": "deny", "exemptLabels": "harrier.io/admission=exempt"}},
		replicaValues,
		{"backend": map[string]any{"replicas": 2, "cluster": map[string]any{"enabled": true, "nats": map[string]any{"tlsSecret": "harrier-nats-tls"}}}},
	} {
		ms, err := chart.Render(chartDir(t), "harrier", values)
		if err != nil {
			t.Fatal(err)
		}
		var docs []string
		for _, m := range ms {
			if m.Kind == "Namespace" {
				continue
			}
			docs = append(docs, m.Content)
		}
		file := filepath.Join(t.TempDir(), "rendered.yaml")
		if err := os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		run := func(args ...string) string {
			out, err := exec.Command(kubectl, append([]string{"--kubeconfig", srv.Kubeconfig}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		if out, err := exec.Command(kubectl, "--kubeconfig", srv.Kubeconfig, "get", "namespace", "harrier").CombinedOutput(); err != nil {
			if !strings.Contains(string(out), "NotFound") {
				t.Fatalf("kubectl get namespace: %v\n%s", err, out)
			}
			run("create", "namespace", "harrier")
		}
		out := run("apply", "--server-side", "--dry-run=server", "--field-manager=harrier-test", "-f", file)
		if n := strings.Count(out, "(server dry run)"); n != len(docs) {
			t.Fatalf("values %v: %d of %d objects accepted:\n%s", values, n, len(docs), out)
		}
	}
}

// TestAdmissionRBAC: with the chart's ClusterRole applied to a real API
// server, the agent's identity can register its admission webhook object
// (admission on) and delete it (admission on or off), and nothing more:
// with admission off it cannot create one, and it cannot touch another
// webhook object.
func TestAdmissionRBAC(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	apply := func(values map[string]any) { applyClusterRBAC(t, srv, values) }
	asAgent := asAgentServiceAccount(srv)
	cfg := admission.Config{URL: "https://127.0.0.1:1/validate"}
	ca := srv.CA.PEM
	// RBAC changes reach the authorizer through its informer: retry briefly.
	eventually := func(what string, f func() error, wantOK bool) {
		t.Helper()
		var err error
		for range 50 {
			if err = f(); (err == nil) == wantOK {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %v (want success %v)", what, err, wantOK)
	}

	apply(map[string]any{"admission": map[string]any{"enabled": true}})
	eventually("register with admission on", func() error { return admission.Register(ctx, asAgent, cfg, ca) }, true)
	cfg.TimeoutSeconds = 5 // an update
	eventually("update with admission on", func() error { return admission.Register(ctx, asAgent, cfg, ca) }, true)
	other := cfg
	other.WebhookName = "someone-elses"
	if err := admission.Register(ctx, srv.Config, other, ca); err != nil {
		t.Fatal(err)
	}
	if err := admission.Unregister(ctx, asAgent, other); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("deleting another webhook object: %v, want forbidden", err)
	}

	apply(nil) // admission off: get and delete only
	if err := admission.Unregister(ctx, asAgent, cfg); err != nil {
		t.Errorf("unregister with admission off: %v", err)
	}
	eventually("register with admission off", func() error { return admission.Register(ctx, asAgent, cfg, ca) }, false)
}

// TestInventoryRBAC: with the chart's RBAC, the agent's service account
// takes a complete inventory snapshot (no kind forbidden); with inventory
// off, the workloads are out of its reach.
func TestInventoryRBAC(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	apply := func(values map[string]any) { applyClusterRBAC(t, srv, values) }
	asAgent := asAgentServiceAccount(srv)
	col, err := inventory.NewCollector(asAgent, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	errorsOf := func() []string {
		snap, err := col.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range snap.Errors {
			kinds = append(kinds, e.Kind+":"+e.Reason)
		}
		return kinds
	}
	apply(nil)
	var got []string
	for range 50 { // RBAC reaches the authorizer through its informer
		if got = errorsOf(); len(got) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(got) != 0 {
		t.Fatalf("with the chart's RBAC the snapshot misses %v", got)
	}
	apply(map[string]any{"inventory": map[string]any{"enabled": false, "interval": "10m"}})
	for range 50 {
		if got = errorsOf(); len(got) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Contains(got, "Deployment:Forbidden") {
		t.Fatalf("inventory off: errors %v, want Deployment forbidden", got)
	}
}

// applyClusterRBAC applies the chart's ClusterRoles and ClusterRoleBindings,
// rendered with values, to the test API server.
func applyClusterRBAC(t *testing.T, srv *kubetest.Server, values map[string]any) {
	t.Helper()
	ms, err := chart.Render(chartDir(t), "harrier", values)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, m := range ms {
		if m.Kind == "ClusterRole" || m.Kind == "ClusterRoleBinding" {
			docs = append(docs, m.Content)
		}
	}
	file := filepath.Join(t.TempDir(), "rbac.yaml")
	if err := os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(kubetest.BinDir(), "kubectl")
	if out, err := exec.Command(kubectl, "--kubeconfig", srv.Kubeconfig, "apply", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// asAgentServiceAccount is an admin client configuration impersonating the
// chart's agent service account in namespace harrier.
func asAgentServiceAccount(srv *kubetest.Server) *rest.Config {
	c := rest.CopyConfig(srv.Config)
	c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:harrier:harrier-agent",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:harrier", "system:authenticated"}}
	return c
}
