package kube

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// makePod creates a pod bound to node whose status names containerID.
func makePod(ctx context.Context, c kubernetes.Interface, name, node, containerID string) error {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
	created, err := c.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	created.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "registry.example/app:1",
		ImageID: "registry.example/app@sha256:0123", ContainerID: "containerd://" + containerID}}
	if _, err := c.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("status %s: %w", name, err)
	}
	return nil
}

// TestPodsAPIServer runs the informer against a real API server: only this
// node's pods are indexed; while the API server is down the last known pods
// keep being served, and pods created after it is back are picked up.
func TestPodsAPIServer(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, p := range []struct{ name, node, id string }{{"a", "node-a", "aaa"}, {"b", "node-b", "bbb"}} {
		if err := makePod(ctx, srv.Client, p.name, p.node, p.id); err != nil {
			t.Fatal(err)
		}
	}
	source, err := NewPodSource(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := NewPods(source, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() { _ = pods.Run(rctx) })
	if !pods.WaitSynced(ctx, 10*time.Second) {
		t.Fatal("not synced")
	}
	if c, ok := pods.Index.Lookup("aaa", ""); !ok || c.GetPodName() != "a" || c.GetImageDigest() != "sha256:0123" {
		t.Fatalf("pod a: %v %v", c, ok)
	}
	if _, ok := pods.Index.Lookup("bbb", ""); ok {
		t.Fatal("a pod of another node was indexed")
	}

	t.Run("refused credentials", func(t *testing.T) {
		// A wrong token: the informer never syncs, and the agent's warning
		// says the credentials were refused, not that nothing answered.
		bad := rest.AnonymousClientConfig(srv.Config)
		bad.BearerToken = "not-a-token"
		source, err := NewPodSource(bad)
		if err != nil {
			t.Fatal(err)
		}
		var logs testenv.Buffer
		p, err := NewPods(source, "node-a", slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		bctx, bstop := context.WithCancel(ctx)
		var bwg sync.WaitGroup
		defer bwg.Wait()
		defer bstop()
		p.Start(bctx, 3*time.Second, func(_ string, f func() error) { bwg.Go(func() { _ = f() }) })
		if out := logs.String(); !strings.Contains(out, "refused the credentials (401)") || !strings.Contains(out, "kube.kubeconfig") {
			t.Errorf("warning does not say the credentials were refused:\n%s", out)
		}
	})

	srv.StopAPIServer()
	// Down means refusing connections. The informer's open watch notices
	// only through HTTP/2's health check (tens of seconds), so there is no
	// earlier sign from it to wait for.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := srv.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the API server still answers after StopAPIServer")
		}
	}
	if _, ok := pods.Index.Lookup("aaa", ""); !ok {
		t.Fatal("the last known pods are gone while the API server is down")
	}
	began := time.Now()
	if err := srv.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := makePod(ctx, srv.Client, "c", "node-a", "ccc"); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := pods.Index.Lookup("ccc", ""); ok {
			break
		}
		if time.Since(began) > time.Minute {
			t.Fatal("a pod created after the API server came back is not indexed after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("pod created after the restart indexed %v after the restart began", time.Since(began).Round(time.Millisecond))
}

// BenchmarkPodsMemory measures the informer's heap with many pods on this
// node: 5 000 by default, HARRIER_KUBE_PODS to change it; it takes a few
// minutes (go test -run '^$' -bench PodsMemory ./kube).
func BenchmarkPodsMemory(b *testing.B) {
	n, _ := strconv.Atoi(os.Getenv("HARRIER_KUBE_PODS"))
	if n <= 0 {
		n = 5000
	}
	t := b // the measurement runs once, whatever b.N
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if err := makePod(ctx, srv.Client, fmt.Sprintf("pod-%05d", i), "node-a", fmt.Sprintf("%064x", i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods created in %v", n, time.Since(began).Round(time.Second))

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	source, err := NewPodSource(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	before := heap()
	pods, err := NewPods(source, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = pods.Run(rctx) }()
	began = time.Now()
	if !pods.WaitSynced(ctx, 5*time.Minute) {
		t.Fatal("not synced")
	}
	for pods.Index.Len() < n {
		if ctx.Err() != nil {
			t.Fatalf("%d of %d pods indexed when the test's time ran out", pods.Index.Len(), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	synced := time.Since(began)
	after := heap()
	t.Logf("%d pods: informer + index heap %.1f MiB (%.0f B/pod), initial list %v",
		n, float64(after-before)/(1<<20), float64(after-before)/float64(n), synced.Round(time.Millisecond))
	b.ReportMetric(float64(after-before)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(after-before)/float64(n), "heap-B/pod")
	runtime.KeepAlive(pods)
}
