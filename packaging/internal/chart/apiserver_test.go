package chart_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/internal/kubetest"
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
