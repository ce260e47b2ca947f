//go:build cluster

package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testReplicas: helm upgrade to two backend replicas over the chart's
// NATS cluster (three nats-servers from the image `make nats-image`
// builds, imported like Harrier's, taking only TLS with client
// certificates): a marker alert reaches both replicas'
// APIs, each asked at its own pod; with replica 0 deleted the agent goes on
// through replica 1 (its fallbackAddrs) and the next marker reaches it,
// and replica 0 once it is back. Then back to the single backend, the
// replicas' and NATS's claims deleted, as the step found it.
func testReplicas(ctx context.Context, t *testing.T, h *harrier) {
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "make", "-C", "../..", "--no-print-directory", "nats-image").CombinedOutput(); err != nil {
		t.Fatalf("make nats-image: %v\n%s", err, out)
	}
	images, err := filepath.Glob("../../dist/image/nats-server-image-*.oci.tar")
	if err != nil || len(images) != 1 {
		t.Fatalf("nats-server image archives %v (%v): want one", images, err)
	}
	if out, err := exec.CommandContext(ctx, "ctr", "--address", filepath.Join(clusterDir, "run", "containerd.sock"), "-n", "k8s.io",
		"images", "import", images[0]).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", images[0], err, out)
	}
	t.Cleanup(func() {
		// Back to one backend whatever happened; the StatefulSets' claims
		// are not the chart's objects, so they go by hand. (t.Context is
		// canceled by now.)
		cleanupCtx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		h.shContext(cleanupCtx, t, "helm upgrade harrier helm/harrier-*.tgz -n harrier --reuse-values --wait --timeout 5m "+
			"--set backend.cluster.enabled=false --set backend.replicas=1 && "+
			"kubectl -n harrier rollout status daemonset/harrier-agent --timeout=3m")
		// The claims and the Secret go even when the revert failed: the
		// uninstall step checks nothing of the chart's is left.
		h.shContext(cleanupCtx, t, "kubectl -n harrier delete pvc -l app.kubernetes.io/name=harrier,app.kubernetes.io/component=nats --wait=false; "+
			"kubectl -n harrier delete pvc data-harrier-backend-0 data-harrier-backend-1 --ignore-not-found --wait=false; "+
			"kubectl -n harrier delete secret harrier-nats-tls --ignore-not-found")
		for _, name := range []string{"replicas-marker-1", "replicas-marker-2"} {
			_ = h.cs.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))})
		}
	})
	// NATS over TLS with client certificates, the Secret made as the
	// values' comment says.
	h.sh(t, "bin/linux-amd64/harrier certs webhook nats --out pki --host '*.harrier-nats.harrier.svc' && "+
		"bin/linux-amd64/harrier certs agent harrier-backend-nats --out pki && "+
		"kubectl -n harrier create secret generic harrier-nats-tls --from-file=ca.crt=pki/ca.crt "+
		"--from-file=nats.crt=pki/nats.crt --from-file=nats.key=pki/nats.key "+
		"--from-file=client.crt=pki/harrier-backend-nats.crt --from-file=client.key=pki/harrier-backend-nats.key")
	h.sh(t, "helm upgrade harrier helm/harrier-*.tgz -n harrier --reuse-values --wait --timeout 10m "+
		"--set backend.cluster.enabled=true --set backend.replicas=2 --set backend.cluster.nats.tlsSecret=harrier-nats-tls "+
		`--set-json 'backend.cluster.nats.resources={"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"cpu":"500m","memory":"512Mi"}}' && `+
		"kubectl -n harrier rollout status statefulset/harrier-nats --timeout=5m && "+
		"kubectl -n harrier rollout status statefulset/harrier-backend --timeout=5m && "+
		"kubectl -n harrier rollout status daemonset/harrier-agent --timeout=3m")
	t.Logf("nats-server image, upgrade to 2 replicas over 3 nats-servers: %s", time.Since(start).Round(time.Second))

	// Each replica at its own pod address, under the name its certificate
	// carries.
	pool := h.client.Transport.(*http.Transport).TLSClientConfig.RootCAs
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "harrier-backend.harrier.svc"}}}
	podAddr := func(name string) (string, error) {
		p, err := h.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if p.Status.PodIP == "" || !podReady(p) {
			return "", fmt.Errorf("pod %s not ready", name)
		}
		return "https://" + net.JoinHostPort(p.Status.PodIP, "9470"), nil
	}
	hasMarker := func(replica, containerID string) (bool, error) {
		base, err := podAddr(replica)
		if err != nil {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/alerts?"+url.Values{"detection": {"test-alert"}, "limit": {"1000"}}.Encode(), nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+h.token)
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s: %s", replica, resp.Status)
		}
		var list struct {
			Alerts []alert `json:"alerts"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return false, err
		}
		for _, a := range list.Alerts {
			if a.Container.ID == containerID {
				return true, nil
			}
		}
		return false, nil
	}
	replicas := []string{"harrier-backend-0", "harrier-backend-1"}
	first := h.markerPod(ctx, t, "replicas-marker-1")
	for _, r := range replicas {
		poll(ctx, t, "the first marker's alert at "+r, func() (bool, error) { return hasMarker(r, first) })
	}

	// One replica gone: the agent goes on through the other.
	gone := time.Now()
	if err := h.cs.CoreV1().Pods(ns).Delete(ctx, replicas[0], metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	second := h.markerPod(ctx, t, "replicas-marker-2")
	poll(ctx, t, "the second marker's alert at "+replicas[1]+" while "+replicas[0]+" is away", func() (bool, error) {
		return hasMarker(replicas[1], second)
	})
	t.Logf("%s deleted: the next alert at %s after %s", replicas[0], replicas[1], time.Since(gone).Round(100*time.Millisecond))
	poll(ctx, t, replicas[0]+" back with both markers", func() (bool, error) {
		ok1, err := hasMarker(replicas[0], first)
		if err != nil || !ok1 {
			return false, err
		}
		return hasMarker(replicas[0], second)
	})
	t.Logf("pods with the replicas:\n%s", h.sh(t, "kubectl -n harrier get pods -o wide"))
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
