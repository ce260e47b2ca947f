package inventory

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/harrier-sec/harrier/internal/kubetest"
)

// BenchmarkCollect2000Pods measures one snapshot of a real API server
// holding 2,000 pods (two containers each with command, env, limits,
// probes and a volume mount; labels, tolerations): the time
// of Collect, and the heap the snapshot holds (heap in use after Collect,
// less before, with the snapshot alive). Run with
// `go test -run '^$' -bench Collect2000 -benchtime 5x ./kube/inventory`.
func BenchmarkCollect2000Pods(b *testing.B) {
	const pods = 2000
	srv := kubetest.Start(b, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := srv.EnsureServiceAccount(ctx, "load", "default"); err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < pods; i += 8 {
				if _, err := srv.Client.CoreV1().Pods("load").Create(ctx, loadPod(i), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Logf("created %d pods in %v", pods, time.Since(began).Round(time.Millisecond))
	col, err := NewCollector(srv.Config, Options{})
	if err != nil {
		b.Fatal(err)
	}
	var heap uint64
	var items int
	var ms runtime.MemStats
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapInuse
		b.StartTimer()
		snap, err := col.Collect(ctx)
		b.StopTimer()
		if err != nil || len(snap.Pods) != pods {
			b.Fatalf("collect: %v, %d pods", err, len(snap.Pods))
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap = ms.HeapInuse - min(before, ms.HeapInuse)
		items = len(snap.Items())
		runtime.KeepAlive(snap)
		b.StartTimer()
	}
	b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
	b.Logf("snapshot of %d pods: %.1f MiB heap in use after Collect (snapshot alive), %d items", pods, float64(heap)/(1<<20), items)
}

func loadPod(i int) *corev1.Pod {
	c := func(name, image string) corev1.Container {
		return corev1.Container{Name: name, Image: image,
			Command:        []string{"/bin/server", "--config=/etc/app/config.yaml", "--listen=:8080"},
			Env:            []corev1.EnvVar{{Name: "MODE", Value: "production"}, {Name: "INDEX", Value: fmt.Sprint(i)}},
			VolumeMounts:   []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}},
			LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(8080)}}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt(8080)}}},
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("load-%04d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%50), "tier": "backend", "team": "load"}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%20),
			Volumes:     []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app"}}}}},
			Tolerations: []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "backend", Effect: corev1.TaintEffectNoSchedule}},
			Containers:  []corev1.Container{c("app", "registry.example/app:1.2.3"), c("proxy", "registry.example/proxy:2.0")}},
	}
}
