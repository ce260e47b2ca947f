package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestPodContext: a real runc container whose ID a pod's status names (in
// a real API server) gets the pod's fields on its events, through
// `harrier events` with a kube section in its config.
func TestPodContext(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	kubetest.Require(t)
	srv := kubetest.Start(t, kubetest.Options{})
	bin := buildHarrier(t)
	ctr := runctest.Start(t, runctest.Options{})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const node = "harrier-e2e-node"
	controller := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-6b9f7c-x2x4q", Namespace: "default",
			Labels: map[string]string{"app": "web", "pod-template-hash": "6b9f7c"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-6b9f7c",
				UID: "0b6c1f5e-0000-4000-8000-000000000001", Controller: &controller}}},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "default",
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/web:1.0"}}},
	}
	pods := srv.Client.CoreV1().Pods("default")
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const digest = "sha256:3f1c7e0d5b1a9e2f4c6d8b0a2e4f6a8c0e2d4f6b8a0c2e4d6f8b0a2c4e6d8f0a"
	created.Status.Phase = corev1.PodRunning
	created.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "app", Image: "registry.example/web:1.0", ImageID: "registry.example/web@" + digest,
		ContainerID: "runc://" + ctr.ID, Ready: true,
	}}
	if _, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod of another node must not be indexed: it claims the same
	// container under another name.
	other := pod.DeepCopy()
	other.Name, other.Spec.NodeName, other.OwnerReferences = "elsewhere", "other-node", nil
	if o, err := pods.Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	} else {
		o.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "impostor", ContainerID: "runc://" + ctr.ID}}
		if _, err := pods.UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	cfg := filepath.Join(t.TempDir(), "harrier.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "kube:\n  kubeconfig: %s\n  node: %s\n", srv.Kubeconfig, node), 0o600); err != nil {
		t.Fatal(err)
	}
	want := &api.Container{
		Runtime: "runc", Id: ctr.ID, Name: "app", Image: "registry.example/web:1.0", ImageDigest: digest,
		PodName: pod.Name, PodNamespace: "default", PodUid: string(created.UID),
		WorkloadKind: "Deployment", WorkloadName: "web", ServiceAccount: "default",
	}
	for _, c := range execContainers(t, bin, ctr, cfg) {
		if c.GetName() != want.Name || c.GetImage() != want.Image || c.GetImageDigest() != want.ImageDigest ||
			c.GetPodName() != want.PodName || c.GetPodNamespace() != want.PodNamespace || c.GetPodUid() != want.PodUid ||
			c.GetWorkloadKind() != want.WorkloadKind || c.GetWorkloadName() != want.WorkloadName ||
			c.GetServiceAccount() != want.ServiceAccount || c.GetLabels()["app"] != "web" || c.GetRuntime() != "runc" {
			t.Errorf("container of the exec:\n got  %v\n want %v (labels app=web)", c, want)
		}
	}
}

// TestPodContextFromNodeState: with the API server unreachable, a real runc
// container whose OCI bundle carries containerd's CRI annotations (laid out
// where containerd keeps its bundles) still gets its pod's fields, read
// from the node.
func TestPodContextFromNodeState(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	bin := buildHarrier(t)
	ann := map[string]string{
		"io.kubernetes.cri.container-type":    "container",
		"io.kubernetes.cri.container-name":    "api",
		"io.kubernetes.cri.image-name":        "registry.example/api:2.3",
		"io.kubernetes.cri.sandbox-name":      "api-5f7d8-q9z2k",
		"io.kubernetes.cri.sandbox-namespace": "payments",
		"io.kubernetes.cri.sandbox-uid":       "5d0c3c4e-0000-4000-8000-00000000abcd",
	}
	ctr := runctest.Start(t, runctest.Options{Annotations: ann})
	root := t.TempDir()
	bundle := filepath.Join(root, "io.containerd.runtime.v2.task", "k8s.io", ctr.ID)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile(filepath.Join(ctr.Bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o600); err != nil {
		t.Fatal(err)
	}
	// An API server that is not there: a closed loopback port.
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "harrier.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "kube:\n  kubeconfig: %s\n  node: n1\n  syncTimeout: 1s\n  nodeState:\n    containerdRoot: %s\n",
		kubeconfig, root), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range execContainers(t, bin, ctr, cfg) {
		if c.GetPodName() != ann["io.kubernetes.cri.sandbox-name"] || c.GetPodNamespace() != "payments" ||
			c.GetPodUid() != ann["io.kubernetes.cri.sandbox-uid"] || c.GetName() != "api" || c.GetImage() != "registry.example/api:2.3" ||
			c.GetId() != ctr.ID || c.GetRuntime() != "runc" {
			t.Errorf("container of the exec: %v", c)
		}
	}
}

// execContainers runs `id` in ctr under `harrier events --config cfg` and
// returns the container block of each exec event of it (at least one).
func execContainers(t *testing.T, bin string, ctr *runctest.Container, cfg string) []*api.Container {
	t.Helper()
	events := streamEvents(t, bin, func() {
		ectx, ecancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer ecancel()
		if out, err := ctr.Exec(ectx, "id"); err != nil {
			t.Fatalf("exec in container: %v %s", err, out)
		}
	}, execOf("id"), "--config", cfg, "--container", ctr.ID, "--kind", "exec")
	var out []*api.Container
	for _, ev := range events {
		if ev.GetProcess().GetComm() == "id" {
			out = append(out, ev.GetContainer())
		}
	}
	if len(out) == 0 {
		t.Fatalf("no exec of id among %d events from container %s", len(events), ctr.ID)
	}
	return out
}
