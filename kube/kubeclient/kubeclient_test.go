package kubeclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
)

// TestFor checks what every client shares: the group's path, the user
// agent, and decoding with the caller's scheme.
func TestFor(t *testing.T) {
	type seen struct{ path, agent string }
	got := make(chan seen, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.URL.Path, r.UserAgent()}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"p"}}]}`))
	}))
	defer srv.Close()
	cs, err := New(&rest.Config{Host: srv.URL, UserAgent: "harrier-test"}, corev1.AddToScheme, appsv1.AddToScheme)
	if err != nil {
		t.Fatal(err)
	}
	core, err := cs.For(corev1.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	var pods corev1.PodList
	if err := core.Get().Resource("pods").Do(context.Background()).Into(&pods); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Name != "p" {
		t.Errorf("pods = %+v", pods.Items)
	}
	if s := <-got; s != (seen{"/api/v1/pods", "harrier-test"}) {
		t.Errorf("core request = %+v", s)
	}
	apps, err := cs.For(appsv1.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	_ = apps.Get().Resource("deployments").Do(context.Background()).Error()
	if s := <-got; s.path != "/apis/apps/v1/deployments" {
		t.Errorf("apps request path = %s", s.path)
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := Load(kc, "harrier-test")
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://127.0.0.1:6443" || rc.UserAgent != "harrier-test" || rc.BearerToken != "t" {
		t.Errorf("config = host %q agent %q token %q", rc.Host, rc.UserAgent, rc.BearerToken)
	}
	if _, err := Load(filepath.Join(dir, "missing"), "x"); err == nil {
		t.Error("a missing kubeconfig loaded")
	}
}
