package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/internal/testpki"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/kube/admission"
	"github.com/harrier-sec/harrier/kube/leader"
	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/store"
)

// TestInventoryLeaderToBackend: an agent elected leader against a real API
// server takes an inventory snapshot, evaluates posture and spools the
// chunks; stored by a real backend store, they become the cluster's
// inventory and findings.
func TestInventoryLeaderToBackend(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.EnsureServiceAccount(ctx, "harrier", "default"); err != nil {
		t.Fatal(err)
	}
	yes := true
	_, err := srv.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "priv"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36",
			SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	spool, err := store.Open(store.Config{Dir: t.TempDir(), MinFreeBytes: -1}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	cfg := WithDefaults(Config{DataDir: t.TempDir(), Kube: kube.Config{Kubeconfig: srv.Kubeconfig, Node: "node-a",
		LeaderElection: leader.Config{Namespace: "harrier", LeaseName: "inventory",
			LeaseDuration: confval.Duration(2 * time.Second), RenewDeadline: confval.Duration(1500 * time.Millisecond),
			RetryPeriod: confval.Duration(300 * time.Millisecond)}}})
	cfg.Analytics.Cluster = "lab"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	notified := make(chan struct{}, 16)
	runner := newLeaderRunner(log)
	rctx, rcancel := context.WithCancel(ctx)
	errs := make(chan error, 4)
	done := make(chan struct{})
	run := func(_ string, f func() error) {
		go func() {
			defer func() { done <- struct{}{} }()
			if err := f(); err != nil {
				errs <- err
			}
		}()
	}
	env := clusterEnv{cfg: cfg, spool: spool, notify: func() { notified <- struct{}{} }, log: log}
	if err := startLeader(rctx, cfg, runner, env, run); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notified:
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		t.Fatal("no inventory snapshot spooled within 60s")
	}
	rcancel()
	<-done
	if runner.transitions.Load() < 1 {
		t.Error("the agent never led")
	}

	recs, err := spool.Next(1000, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	batch := &api.Batch{AgentId: "node-a"}
	for _, r := range recs {
		if r.Class != store.ClassFinding {
			t.Fatalf("record of class %v", r.Class)
		}
		rec := &api.Record{}
		if err := proto.Unmarshal(r.Payload, rec); err != nil {
			t.Fatal(err)
		}
		rec.Seq = wireSeq(r.RecordID)
		batch.Records = append(batch.Records, rec)
	}
	if len(batch.Records) == 0 {
		t.Fatal("no chunks spooled")
	}
	bs, err := backend.OpenBadgerStore(filepath.Join(t.TempDir(), "backend"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	if _, err := bs.Ingest(ctx, "node-a", batch); err != nil {
		t.Fatal(err)
	}
	snaps, err := bs.Snapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].Cluster != "lab" || snaps[0].Node != "node-a" {
		t.Fatalf("snapshots %+v %v", snaps, err)
	}
	items, err := bs.Inventory(ctx, backend.InventoryQuery{Kind: "Pod", Namespace: "default"})
	if err != nil || len(items) != 1 || items[0].Item.GetObject().GetName() != "priv" {
		t.Fatalf("pods in the inventory: %v %v", items, err)
	}
	fs, err := bs.Findings(ctx, backend.FindingQuery{Check: "pss-privileged"})
	if err != nil || len(fs) != 1 || fs[0].GetObject().GetName() != "priv" || fs[0].GetCluster() != "lab" {
		t.Fatalf("pss-privileged findings %v %v", fs, err)
	}
	// The admin's bootstrap cluster-admin bindings are not findings.
	if fs, _ := bs.Findings(ctx, backend.FindingQuery{Check: "rbac-cluster-admin-binding"}); len(fs) != 0 {
		t.Errorf("bootstrap bindings reported: %v", fs)
	}
}

// TestNodePostureInHeartbeat: this node's kubelet settings become node
// findings in the heartbeat, keep their first_seen, and a backend lists
// them with the cluster's findings until a heartbeat no longer has them.
func TestNodePostureInHeartbeat(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nprotectKernelDefaults: true\nauthentication:\n  anonymous:\n    enabled: true\nreadOnlyPort: 10255\n")
	cfg := WithDefaults(Config{DataDir: dir, Kube: kube.Config{KubeletConfig: path, Node: "node-a"}})
	cfg.Analytics.Cluster = "lab"
	np := newNodePosture(cfg, slog.New(slog.DiscardHandler))
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	first := np.Findings(t0)
	ids := func(fs []*api.Finding) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.GetCheckId())
		}
		slices.Sort(out)
		return out
	}
	if got := ids(first); !slices.Equal(got, []string{"kubelet-anonymous-auth", "kubelet-read-only-port"}) {
		t.Fatalf("findings %v", got)
	}
	// Fixed on disk: seen at the next check, not before.
	write("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nprotectKernelDefaults: true\nreadOnlyPort: 10255\n")
	if got := ids(np.Findings(t0.Add(time.Minute))); len(got) != 2 {
		t.Fatalf("re-read before %v: %v", nodePostureEvery, got)
	}
	later := np.Findings(t0.Add(nodePostureEvery + time.Second))
	if got := ids(later); !slices.Equal(got, []string{"kubelet-read-only-port"}) {
		t.Fatalf("after the fix: %v", got)
	}
	if !later[0].GetFirstSeen().AsTime().Equal(t0) || later[0].GetCluster() != "lab" || later[0].GetNode() != "node-a" {
		t.Errorf("finding %v: want first_seen %v, cluster lab, node node-a", later[0], t0)
	}

	bs, err := backend.OpenBadgerStore(filepath.Join(dir, "backend"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	ctx := context.Background()
	if _, err := bs.Ingest(ctx, "node-a", &api.Batch{AgentId: "node-a", Health: &api.AgentHealth{Node: "node-a", NodeFindings: later}}); err != nil {
		t.Fatal(err)
	}
	fs, err := bs.Findings(ctx, backend.FindingQuery{Cluster: "lab"})
	if err != nil || len(fs) != 1 || fs[0].GetCheckId() != "kubelet-read-only-port" {
		t.Fatalf("backend findings %v %v", fs, err)
	}
	if f, err := bs.Finding(ctx, fs[0].GetId()); err != nil || f.GetCheckId() != "kubelet-read-only-port" {
		t.Fatalf("finding by ID: %v %v", f, err)
	}
	if fs, _ := bs.Findings(ctx, backend.FindingQuery{Cluster: "other"}); len(fs) != 0 {
		t.Errorf("cluster filter: %v", fs)
	}
	if _, err := bs.Ingest(ctx, "node-a", &api.Batch{AgentId: "node-a", Health: &api.AgentHealth{Node: "node-a"}}); err != nil {
		t.Fatal(err)
	}
	if fs, _ := bs.Findings(ctx, backend.FindingQuery{}); len(fs) != 0 {
		t.Errorf("fixed node findings still listed: %v", fs)
	}
	// Off: nothing is read.
	cfg.Kube.KubeletConfig = "off"
	if np := newNodePosture(cfg, slog.New(slog.DiscardHandler)); np.Findings(t0) != nil {
		t.Error("kubeletConfig off still reports")
	}
}

// TestAdmissionGuardWiring: the agent's admission guard, with the posture
// checks, registered with a real API server, denies a privileged pod in
// deny mode and admits a compliant one; turned off, the agent removes the
// registration.
func TestAdmissionGuardWiring(t *testing.T) {
	kubetest.Require(t)
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := kubetest.Start(t, kubetest.Options{CA: ca})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hook := newWebhookFiles(t, ca)
	cfg := WithDefaults(Config{DataDir: hook.dir, Kube: kube.Config{Kubeconfig: srv.Kubeconfig, Node: "node-a",
		Admission: admission.Config{Enabled: true, Addr: hook.addr, CertFile: hook.cert, KeyFile: hook.key,
			CAFile: hook.ca, Mode: "deny", Checks: []string{"pss-privileged", "pss-host-path"},
			URL: "https://" + hook.addr + admission.ValidatePath}}})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	gctx, gcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	run := goRunner(t, ctx, &wg)
	sink := newAdmissionSink()
	guard, err := startAdmission(gctx, cfg, run, sink, log)
	if err != nil || guard == nil {
		t.Fatalf("startAdmission: %v %v", guard, err)
	}
	yes := true
	pods := srv.Client.CoreV1().Pods("default")
	privileged := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "priv"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36",
			SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := pods.Create(ctx, privileged, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "pss-privileged") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("privileged pod not denied by the guard: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	compliant := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ok"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36"}}}}
	if _, err := pods.Create(ctx, compliant, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("compliant pod refused: %v", err)
	}
	if st := guard.Handler.Stats(); st.Denied == 0 || st.Allowed == 0 {
		t.Errorf("guard stats %+v", st)
	}
	// Each refusal was handed to analytics, as refused and a dry run (so
	// admission-violation leaves it out).
	select {
	case ev := <-sink.events:
		a := ev.GetAdmission()
		if ev.GetKind() != api.EventKind_EVENT_KIND_ADMISSION || a.GetCheckId() != "pss-privileged" || a.GetAllowed() ||
			a.GetMode() != "deny" || !a.GetDryRun() || a.GetName() != "priv" || a.GetNamespace() != "default" {
			t.Errorf("deny-mode violation event %v", ev)
		}
	default:
		t.Error("the refusal reached no event")
	}
	gcancel()
	wg.Wait()

	// A serving certificate the API server would refuse (another CA's):
	// the guard does not start, the log says why, the agent goes on.
	other, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	foreign := newWebhookFiles(t, other)
	bad := cfg
	bad.Kube.Admission.CertFile, bad.Kube.Admission.KeyFile = foreign.cert, foreign.key
	var logs testenv.Buffer
	bctx, bcancel := context.WithCancel(ctx)
	if g, err := startAdmission(bctx, bad, run, nil, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || g != nil {
		t.Errorf("startAdmission with another CA's certificate: %v %v, want no guard and no error", g, err)
	}
	bcancel()
	wg.Wait()
	if out := logs.String(); !strings.Contains(out, "admission guard not started") || !strings.Contains(out, foreign.cert) ||
		!strings.Contains(out, "unknown authority") {
		t.Errorf("the log does not say why the guard did not start:\n%s", out)
	}

	// Turned off: the registration goes.
	cfg.Kube.Admission.Enabled = false
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	if g, err := startAdmission(octx, cfg, run, nil, log); err != nil || g != nil {
		t.Fatalf("startAdmission (off): %v %v", g, err)
	}
	wg.Wait()
	if _, err := srv.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "harrier-admission", metav1.GetOptions{}); err == nil {
		t.Error("the registration is still there with the guard off")
	}
}

// TestAdmissionAlertThroughPipeline: in audit mode the agent's guard,
// registered with a real API server, admits a privileged pod that alice
// creates, and the agent's pipeline (engine → spool) holds one
// admission-violation alert naming the check, the pod, its namespace and
// alice. The same pod again (a create that fails AlreadyExists after
// admission, then a delete and a re-create) folds into that alert rather
// than raising another; server-side dry runs raise nothing.
func TestAdmissionAlertThroughPipeline(t *testing.T) {
	kubetest.Require(t)
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := kubetest.Start(t, kubetest.Options{CA: ca})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.EnsureServiceAccount(ctx, "apps", "default"); err != nil {
		t.Fatal(err)
	}
	hook := newWebhookFiles(t, ca)
	cfg := WithDefaults(Config{DataDir: hook.dir, Sensor: sensor.Config{Node: "node-a"}, Kube: kube.Config{Kubeconfig: srv.Kubeconfig,
		Admission: admission.Config{Enabled: true, Addr: hook.addr, CertFile: hook.cert, KeyFile: hook.key,
			CAFile: hook.ca, Mode: "audit", Checks: []string{"pss-privileged"},
			URL: "https://" + hook.addr + admission.ValidatePath}}})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	spool, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "spool")}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	engine, err := NewEngine(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's pipeline with no sensor events: only the guard feeds it.
	events := make(chan *api.Event)
	sink := newAdmissionSink()
	var stats atomic.Pointer[analytics.Stats]
	var capped atomic.Uint64
	piped := make(chan error, 1)
	go func() {
		piped <- pipeline(events, func(*api.Event) {}, nil, sink.events, nil, engine, map[api.EventKind]bool{}, -1, spool,
			func() {}, &stats, &capped, newAlertLatency(), func(*api.Alert) {}, log)
	}()
	gctx, gcancel := context.WithCancel(ctx)
	defer gcancel()
	var wg sync.WaitGroup
	guard, err := startAdmission(gctx, cfg, goRunner(t, ctx, &wg), sink, log)
	if err != nil || guard == nil {
		t.Fatalf("startAdmission: %v %v", guard, err)
	}

	as := rest.CopyConfig(srv.Config)
	as.Impersonate = rest.ImpersonationConfig{UserName: "alice", Groups: []string{"system:masters"}}
	alice, err := kubernetes.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}
	pods := alice.CoreV1().Pods("apps")
	yes := true
	privileged := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "priv", Namespace: "apps"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36",
			SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}}
	// Dry runs until the registration is in place: the guard warns, and no
	// alert comes of them.
	deadline := time.Now().Add(30 * time.Second)
	for guard.Handler.Stats().Warned == 0 {
		if _, err := pods.Create(ctx, privileged, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("dry run refused in audit mode: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the guard never reviewed the privileged pod")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := pods.Create(ctx, privileged, metav1.CreateOptions{}); err != nil {
		t.Fatalf("audit mode refused the privileged pod: %v", err)
	}
	if _, err := pods.Create(ctx, privileged, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v; want AlreadyExists", err)
	}
	zero := int64(0)
	if err := pods.Delete(ctx, "priv", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, privileged, metav1.CreateOptions{}); err != nil {
		t.Fatalf("re-create: %v", err)
	}
	// OnViolation ran before each answer; wait for the pipeline to take the
	// last one, then stop it (the engine sends the open alert's update).
	for len(sink.events) > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	close(events)
	if err := <-piped; err != nil {
		t.Fatal(err)
	}
	gcancel()
	wg.Wait()
	if n := sink.dropped.Load(); n != 0 {
		t.Errorf("%d violations dropped", n)
	}

	recs, err := spool.Next(1000, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	var alerts []*api.Alert
	for _, r := range recs {
		rec := &api.Record{}
		if err := proto.Unmarshal(r.Payload, rec); err != nil {
			t.Fatal(err)
		}
		if a := rec.GetAlert(); a != nil {
			alerts = append(alerts, a)
		}
	}
	ids := map[string]bool{}
	var first, last *api.Alert
	for _, a := range alerts {
		if a.GetDetectionId() != string(api.DetectionAdmissionViolation) {
			t.Errorf("unexpected alert %s: %s", a.GetDetectionId(), a.GetSummary())
			continue
		}
		ids[a.GetId()] = true
		if first == nil {
			first = a
		}
		last = a
	}
	if len(ids) != 1 || first == nil {
		t.Fatalf("%d admission-violation alerts, want 1 (updated): %v", len(ids), alerts)
	}
	if first.GetCount() != 1 || last.GetCount() != 3 {
		t.Errorf("counts: first %d, last %d; want 1 then 3 (three real submissions, dry runs left out)", first.GetCount(), last.GetCount())
	}
	if first.GetSeverity() != api.Severity_SEVERITY_HIGH || len(first.GetMitre()) != 2 {
		t.Errorf("severity %v, MITRE %v", first.GetSeverity(), first.GetMitre())
	}
	const want = `alice created Pod apps/priv: [pss-privileged] container "c": `
	if !strings.HasPrefix(first.GetSummary(), want) || !strings.HasSuffix(first.GetSummary(), "(audit mode: admitted)") {
		t.Errorf("summary %q", first.GetSummary())
	}
	if c := first.GetContainer(); c.GetPodNamespace() != "apps" || c.GetPodName() != "priv" || c.GetName() != "c" {
		t.Errorf("alert container %v", c)
	}
	ev := first.GetEvidence()
	if len(ev) != 1 {
		t.Fatalf("evidence %v", ev)
	}
	a := ev[0].GetAdmission()
	if a.GetCheckId() != "pss-privileged" || a.GetUser() != "alice" || a.GetNamespace() != "apps" || a.GetName() != "priv" ||
		a.GetKind() != "Pod" || a.GetContainer() != "c" || a.GetDetail() == "" || a.GetRemediation() == "" || !a.GetAllowed() ||
		a.GetDryRun() || a.GetOperation() != "CREATE" || a.GetRequestUid() == "" {
		t.Errorf("evidence %v", a)
	}
}
