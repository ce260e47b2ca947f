//go:build cluster

// Package cluster tests the one-node test cluster that up.sh brings up and
// down.sh takes away (make test-cluster): the real scheduler places a pod,
// which gets its own network namespace and address and resolves a Service
// through cluster DNS; the controller-manager makes a Deployment's
// ReplicaSet; and teardown leaves nothing of the cluster on the machine.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// The addresses and names lib.sh gives the cluster.
const (
	clusterDir = "/var/lib/harrier-cluster"
	bridge     = "harrier0"
	podCIDR    = "10.244.0.0/24"
	nodeIP     = "10.244.0.1"
	busybox    = "harrier.test/busybox"
)

// chainPattern matches the iptables chains of the cluster (lib.sh).
var chainPattern = regexp.MustCompile(`^(KUBE-|CNI-|HARRIER-CLUSTER)`)

func TestCluster(t *testing.T) {
	testenv.RequireRoot(t)
	if d := os.Getenv("HARRIER_CLUSTER_DIR"); d != "" && d != clusterDir {
		t.Fatalf("this test checks %s; unset HARRIER_CLUSTER_DIR", clusterDir)
	}
	before := snapshotHost(t)

	start := time.Now()
	out, err := exec.Command("./up.sh").Output()
	up := time.Since(start)
	down := func() {
		start := time.Now()
		cmd := exec.Command("./down.sh")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("down.sh: %v\n%s", err, out)
		}
		t.Logf("teardown took %s", time.Since(start).Round(100*time.Millisecond))
	}
	if err != nil {
		dumpLogs(t)
		down()
		t.Fatalf("up.sh: %v\n%s", err, stderr(err))
	}
	t.Logf("bring-up took %s", up.Round(100*time.Millisecond))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	kubeconfig := lines[len(lines)-1]

	ok := t.Run("workloads", func(t *testing.T) { checkWorkloads(t, kubeconfig) }) &&
		t.Run("harrier", func(t *testing.T) { testHarrierInCluster(t, kubeconfig) })
	if !ok {
		dumpLogs(t)
	}
	down()
	checkNothingLeft(t, before)
}

func checkWorkloads(t *testing.T, kubeconfig string) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	image := busybox + ":" + busyboxTag(t)
	const ns = "default"

	// A Deployment serving one page, behind a Service.
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "httpd", Image: image, ImagePullPolicy: corev1.PullNever,
					Command: []string{"sh", "-c", "mkdir -p /tmp/www && echo harrier-cluster-ok >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"},
					Ports:   []corev1.ContainerPort{{ContainerPort: 8080}},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The controller-manager's deployment controller makes the ReplicaSet.
	poll(ctx, t, "the Deployment's ReplicaSet", func() (bool, error) {
		rs, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		for _, r := range rs.Items {
			if c := metav1.GetControllerOf(&r); c != nil && c.Kind == "Deployment" && c.Name == "web" && r.Status.ReadyReplicas == 1 {
				return true, nil
			}
		}
		return false, nil
	})

	// A bare pod, placed by the scheduler (no nodeName given).
	_, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64(1)),
			Containers: []corev1.Container{{
				Name: "probe", Image: image, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "3600"},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	poll(ctx, t, "pod probe Running", func() (bool, error) {
		pod, err = cs.CoreV1().Pods(ns).Get(ctx, "probe", metav1.GetOptions{})
		return err == nil && pod.Status.Phase == corev1.PodRunning, err
	})
	if pod.Spec.NodeName == "" {
		t.Error("pod probe has no node")
	}
	scheduled := false
	for _, c := range pod.Status.Conditions {
		scheduled = scheduled || (c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue)
	}
	if !scheduled {
		t.Errorf("pod probe was not scheduled: %+v", pod.Status.Conditions)
	}
	ip := net.ParseIP(pod.Status.PodIP)
	_, cidr, _ := net.ParseCIDR(podCIDR)
	if ip == nil || !cidr.Contains(ip) || ip.String() == nodeIP {
		t.Errorf("pod probe's IP %q is not a pod address in %s", pod.Status.PodIP, podCIDR)
	}
	if hostHas(t, ip) {
		t.Errorf("pod probe's IP %s is the host's: the pod has no network namespace of its own", ip)
	}

	kubectl := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(kubetest.BinDir(), "kubectl"), append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Inside the pod's network namespace: its own address on eth0.
	if got := kubectl("exec", "probe", "--", "ip", "-4", "addr", "show", "eth0"); !strings.Contains(got, "inet "+pod.Status.PodIP+"/") {
		t.Errorf("eth0 in pod probe does not carry %s:\n%s", pod.Status.PodIP, got)
	}
	// Cluster DNS (CoreDNS, reached through kube-proxy's Service rules)
	// resolves the Service to its address, and that address reaches the
	// Deployment's pod.
	if got := kubectl("exec", "probe", "--", "nslookup", "web.default.svc.cluster.local"); !strings.Contains(got, svc.Spec.ClusterIP) {
		t.Errorf("nslookup web.default.svc.cluster.local did not answer %s:\n%s", svc.Spec.ClusterIP, got)
	}
	// busybox-static's wget crashes (glibc's NSS cannot load in a static
	// binary), so the request is made with nc.
	addr := svc.Spec.ClusterIP + " 80"
	if got := kubectl("exec", "probe", "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 `+addr); !strings.Contains(got, "harrier-cluster-ok") {
		t.Errorf("GET / from pod probe to %s answered %q", addr, got)
	}
}

// poll waits for cond, failing the test at ctx's deadline.
func poll(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(context.Context) (bool, error) {
		ok, err := cond()
		last = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last error: %v)", what, err, last)
	}
}

func busyboxTag(t *testing.T) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "busybox-static").Output()
	if err != nil {
		t.Fatalf("busybox-static version: %v", err)
	}
	return regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(string(out), "_")
}

func hostHas(t *testing.T, ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// host is what of the cluster could be left on the machine.
type host struct {
	interfaces map[string]bool
	fixedDirs  map[string]bool
	sysctls    map[string]string
}

var (
	fixedDirs = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/var/lib/harrier"}
	sysctls   = []string{"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
		"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet"}
)

func snapshotHost(t *testing.T) host {
	h := host{interfaces: map[string]bool{}, fixedDirs: map[string]bool{}, sysctls: map[string]string{}}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		h.interfaces[i.Name] = true
	}
	for _, d := range fixedDirs {
		_, err := os.Stat(d)
		h.fixedDirs[d] = err == nil
	}
	for _, s := range sysctls {
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		h.sysctls[s] = strings.TrimSpace(string(b))
	}
	if h.interfaces[bridge] {
		t.Fatalf("%s exists before the test: a cluster is up (make cluster-down)", bridge)
	}
	return h
}

func checkNothingLeft(t *testing.T, before host) {
	after := snapshotHost(t)
	for name := range after.interfaces {
		if !before.interfaces[name] {
			t.Errorf("interface %s left behind", name)
		}
	}
	for d, existed := range after.fixedDirs {
		if existed && !before.fixedDirs[d] {
			t.Errorf("%s left behind", d)
		}
	}
	for s, v := range after.sysctls {
		if v != before.sysctls[s] {
			t.Errorf("%s is %s, was %s", s, v, before.sysctls[s])
		}
	}
	if _, err := os.Stat(clusterDir); err == nil {
		t.Errorf("%s left behind", clusterDir)
	}

	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (strings.HasPrefix(f[4], clusterDir+"/") ||
			strings.HasPrefix(f[4], "/var/lib/kubelet/") || strings.HasPrefix(f[4], "/run/netns/cni-")) {
			t.Errorf("mount left behind: %s", f[4])
		}
	}

	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			out, err := exec.Command(ipt, "-t", table, "-S").Output()
			if err != nil {
				continue // no such table (or no IPv6)
			}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) >= 2 && (f[0] == "-N" || f[0] == "-A") && chainPattern.MatchString(f[1]) ||
					strings.Contains(sc.Text(), "-j KUBE-") || strings.Contains(sc.Text(), "-j CNI-") {
					t.Errorf("%s -t %s: left behind: %s", ipt, table, sc.Text())
				}
			}
		}
	}

	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	for _, c := range cgroups {
		t.Errorf("cgroup %s left behind", c)
	}

	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, clusterDir) || strings.Contains(cmdline, "harrier.test/") {
			t.Errorf("process left behind: %s: %s", filepath.Dir(p), cmdline)
		}
	}
}

// dumpLogs prints the end of every component's log, to say why.
func dumpLogs(t *testing.T) {
	logs, _ := filepath.Glob(filepath.Join(clusterDir, "logs", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Logf("--- %s (end)\n%s", l, b)
	}
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return fmt.Sprint(err)
}
