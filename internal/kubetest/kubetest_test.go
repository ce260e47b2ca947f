package kubetest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestVersionsMatchBuild keeps the versions Start looks for in step with
// what tests/kubeapi/build.sh builds.
func TestVersionsMatchBuild(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"../../tests/kubeapi/k8s/go.mod", "k8s.io/kubernetes " + KubeVersion},
		{"../../tests/kubeapi/etcd/go.mod", "go.etcd.io/etcd/server/v3 " + EtcdVersion},
		{"../../go.mod", "k8s.io/client-go v0" + strings.TrimPrefix(KubeVersion, "v1")},
	} {
		b, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tt.want) {
			t.Errorf("%s does not require %q", tt.file, tt.want)
		}
	}
}

func TestStart(t *testing.T) {
	s := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sa, err := s.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sa.Name != "default" {
		t.Fatalf("service account %q", sa.Name)
	}
	out, err := s.Kubectl(ctx, "get", "namespaces", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "namespace/kube-system") {
		t.Fatalf("kubectl get namespaces: %q", out)
	}
	// The audit log records the requests.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(s.AuditLog)
		if strings.Contains(string(b), `"resource":"serviceaccounts"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log has no serviceaccounts request:\n%.2000s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
