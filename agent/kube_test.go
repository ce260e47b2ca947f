package agent

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/internal/testpki"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/kube/audit"
)

// alertSink runs one engine over an audit event channel and records the
// detections it raises.
type alertSink struct {
	mu  sync.Mutex
	ids map[string]*api.Alert
	// objects are the detections raised per audited object (namespace/name).
	objects map[string][]string
	// raised are all new alerts, in order.
	raised []*api.Alert
}

func newAlertSink(t *testing.T, ctx context.Context, events <-chan *api.Event, proxyAddressFiles ...string) *alertSink {
	// A short learning period, so that sa-anomalous-op can fire within the test.
	var cfg Config
	cfg.Analytics.Baseline.LearningPeriod = confval.Duration(time.Second)
	cfg.Analytics.ProxyAddressFiles = proxyAddressFiles
	engine, err := NewEngine(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := &alertSink{ids: map[string]*api.Alert{}, objects: map[string][]string{}}
	emit := func(a *api.Alert) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if a.GetCount() == 1 {
			s.raised = append(s.raised, a)
		}
		if _, ok := s.ids[a.GetDetectionId()]; !ok {
			s.ids[a.GetDetectionId()] = a
		}
		if ev := a.GetEvidence(); len(ev) > 0 && ev[0].GetAudit() != nil {
			obj := ev[0].GetAudit().GetNamespace() + "/" + ev[0].GetAudit().GetName()
			s.objects[obj] = append(s.objects[obj], a.GetDetectionId())
		}
	}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				engine.Process(ev, emit)
			case now := <-tick.C:
				engine.Tick(now, emit)
			}
		}
	}()
	return s
}

func (s *alertSink) missing(want []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, id := range want {
		if s.ids[id] == nil {
			out = append(out, id)
		}
	}
	return out
}

// raisedOn says whether detection id alerted on the object namespace/name.
func (s *alertSink) raisedOn(id, object string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.objects[object], id)
}

func (s *alertSink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id := range s.ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// TestAuditDetectionsAPIServer makes real requests to a real API server and
// checks that every control-plane detection comes out of the engine, from
// the audit webhook and from the audit log.
func TestAuditDetectionsAPIServer(t *testing.T) {
	kubetest.Require(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	hookFiles := newWebhookFiles(t, ca)
	dir, addr := hookFiles.dir, hookFiles.addr

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	run := goRunner(t, ctx, &wg)
	cfg := Config{DataDir: dir, Kube: kube.Config{Mode: "off", Audit: kube.AuditConfig{WebhookAddr: addr,
		CertFile: hookFiles.cert, KeyFile: hookFiles.key, ClientCAFile: hookFiles.ca}}}
	cfg.Sensor.Node = "cp-1"
	hook, err := startKube(ctx, cfg, run, log)
	if err != nil {
		t.Fatal(err)
	}
	// The policy the chart ships, so that this test proves it.
	srv := kubetest.Start(t, kubetest.Options{CA: ca, AuditWebhookURL: "https://" + addr + "/", AuditPolicy: audit.RecommendedPolicy()})
	fileCfg := Config{DataDir: dir, Kube: kube.Config{Mode: "off", Audit: kube.AuditConfig{LogPath: srv.AuditLog}}}
	tail, err := startKube(ctx, fileCfg, run, log)
	if err != nil {
		t.Fatal(err)
	}
	viaHook := newAlertSink(t, ctx, hook.audit)
	viaFile := newAlertSink(t, ctx, tail.audit)
	time.Sleep(2 * time.Second) // the tailer starts at the end of the existing log
	// The API server's own bootstrap (default RBAC, priority classes, ...)
	// raises nothing.
	if got := viaHook.all(); len(got) != 0 {
		t.Fatalf("alerts before any request: %v", got)
	}

	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	makeRequests(t, rctx, srv)

	want := []string{"privileged-container", "sensitive-mount", "exposed-dashboard", "exposed-service", "high-priv-role",
		"cluster-admin-binding", "kube-system-container", "events-deleted", "admission-webhook", "coredns-modified",
		"sa-suspicious-op", "sa-anomalous-op", "pentest-tool", "mining-image", "exec-into-pod", "exec-into-system-pod",
		"anonymous-access"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mh, mf := viaHook.missing(want), viaFile.missing(want)
		// Each exposed application is its own alert: Kubeflow's too.
		for _, obj := range []string{"default/redis-np", "default/kubeflow-pipelines-ui"} {
			if !viaHook.raisedOn("exposed-service", obj) {
				mh = append(mh, "exposed-service on "+obj)
			}
			if !viaFile.raisedOn("exposed-service", obj) {
				mf = append(mf, "exposed-service on "+obj)
			}
		}
		if len(mh) == 0 && len(mf) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing alerts: webhook %v (got %v), file %v (got %v); receiver %+v, tailer %+v",
				mh, viaHook.all(), mf, viaFile.all(), hook.receiver.Stats(), tail.tailer.Stats())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if viaHook.raisedOn("exposed-service", "default/web-lb") || viaFile.raisedOn("exposed-service", "default/web-lb") {
		t.Error("exposed-service on a web front end's load balancer")
	}
	a := viaHook.ids["cluster-admin-binding"]
	if ev := a.GetEvidence()[0].GetAudit(); ev.GetUser() != "harrier-test-admin" || ev.GetResource() != "clusterrolebindings" {
		t.Errorf("cluster-admin-binding evidence %v", ev)
	}
	if ev := viaHook.ids["sa-anomalous-op"].GetEvidence()[0].GetAudit(); ev.GetResource() != "selfsubjectrulesreviews" {
		t.Errorf("sa-anomalous-op evidence %v, want the rules review", ev)
	}
	t.Logf("webhook: %+v; tailer: %+v; alerts %v", hook.receiver.Stats(), tail.tailer.Stats(), viaHook.all())
}

// makeRequests does, as an attacker or a careless admin would, one request
// per control-plane detection.
func makeRequests(t *testing.T, ctx context.Context, srv *kubetest.Server) {
	t.Helper()
	c := srv.Client
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	yes := true
	pod := func(ns, name, image string, mod func(*corev1.Pod)) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}}
		if mod != nil {
			mod(p)
		}
		_, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		must("create pod "+ns+"/"+name, err)
	}
	pod("default", "priv", "busybox", func(p *corev1.Pod) {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
	})
	pod("default", "sock", "busybox", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/docker.sock"}}}}
	})
	pod("default", "miner", "docker.io/someone/xmrig:6.21", nil)
	pod("kube-system", "backdoor", "busybox", nil)

	_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "mallory-admin"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "mallory", APIGroup: "rbac.authorization.k8s.io"}},
	}, metav1.CreateOptions{})
	must("cluster-admin binding", err)
	_, err = c.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "everything"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}},
	}, metav1.CreateOptions{})
	must("wildcard role", err)

	svc := func(name string, typ corev1.ServiceType, selector map[string]string) {
		_, err := c.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Type: typ, Selector: selector, Ports: []corev1.ServicePort{{Port: 443}}}}, metav1.CreateOptions{})
		must("service "+name, err)
	}
	svc("dashboard-lb", corev1.ServiceTypeLoadBalancer, map[string]string{"k8s-app": "kubernetes-dashboard"})
	svc("redis-np", corev1.ServiceTypeNodePort, map[string]string{"app": "redis"})
	svc("kubeflow-pipelines-ui", corev1.ServiceTypeLoadBalancer, map[string]string{"app": "ml-pipeline-ui", "app.kubernetes.io/part-of": "kubeflow"})
	svc("web-lb", corev1.ServiceTypeLoadBalancer, map[string]string{"app": "shop-web"}) // a web front end is meant to face out

	_, err = c.CoreV1().Events("default").Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "priv"}, Reason: "Test", Message: "m"}, metav1.CreateOptions{})
	must("create event", err)
	must("delete events", c.CoreV1().Events("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}))

	url := "https://127.0.0.1:1/never"
	ignore := admissionv1.Ignore
	none := admissionv1.SideEffectClassNone
	timeout := int32(1)
	_, err = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "sneaky"},
		Webhooks: []admissionv1.ValidatingWebhook{{
			Name: "sneaky.example.com", ClientConfig: admissionv1.WebhookClientConfig{URL: &url},
			Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}}}},
			// Matches nothing this test creates: the API server never calls it.
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"harrier-test": "never"}},
			FailurePolicy:  &ignore, SideEffects: &none, TimeoutSeconds: &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	must("webhook configuration", err)

	cm, err := c.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns"},
		Data: map[string]string{"Corefile": ".:53 {\n    forward . /etc/resolv.conf\n}\n"}}, metav1.CreateOptions{})
	must("coredns configmap", err)
	cm.Data["Corefile"] = ".:53 {\n    hosts {\n        203.0.113.7 bank.example\n        fallthrough\n    }\n    forward . /etc/resolv.conf\n}\n"
	_, err = c.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{})
	must("update coredns", err)

	// A workload's token used with kubectl's user agent to ask what it may do.
	must("service account", srv.EnsureServiceAccount(ctx, "default", "web"))
	tok, err := c.CoreV1().ServiceAccounts("default").CreateToken(ctx, "web", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	must("token", err)
	saCfg := &rest.Config{Host: srv.URL, BearerToken: tok.Status.Token, UserAgent: "kubectl/v1.37.2 (linux/amd64) kubernetes/abcdef0",
		TLSClientConfig: rest.TLSClientConfig{CAData: srv.CA.PEM}}
	sa := kubernetes.NewForConfigOrDie(saCfg)
	_, err = sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
		Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{Verb: "list", Resource: "secrets"}},
	}, metav1.CreateOptions{})
	must("self subject access review", err)

	// After the learning period (1 s here), the same account does
	// something it never did.
	time.Sleep(1500 * time.Millisecond)
	_, err = sa.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authzv1.SelfSubjectRulesReview{
		Spec: authzv1.SelfSubjectRulesReviewSpec{Namespace: "default"}}, metav1.CreateOptions{})
	must("self subject rules review", err)

	// A penetration testing tool.
	hunterCfg := rest.CopyConfig(srv.Config)
	hunterCfg.UserAgent = "kube-hunter/0.6.8"
	_, err = kubernetes.NewForConfigOrDie(hunterCfg).CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	must("kube-hunter list", err)

	// Exec into pods: with no kubelet it fails after authorization, but the
	// request is audited as made.
	for _, p := range []struct{ ns, name string }{{"default", "priv"}, {"kube-system", "backdoor"}} {
		_ = c.CoreV1().RESTClient().Post().Namespace(p.ns).Resource("pods").Name(p.name).SubResource("exec").
			Param("command", "id").Param("stdout", "true").Do(ctx).Error()
	}

	// RBAC lets anonymous users read namespaces, and one does.
	_, err = c.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ns-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list"}}}}, metav1.CreateOptions{})
	must("ns-reader role", err)
	_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "anon-ns-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "ns-reader"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "system:anonymous", APIGroup: "rbac.authorization.k8s.io"}}}, metav1.CreateOptions{})
	must("anonymous binding", err)
	anon := kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: srv.CA.PEM}})
	var lastErr error
	for i := range 50 { // RBAC's cache takes a moment to see the binding
		if _, lastErr = anon.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); lastErr == nil {
			break
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
	}
	must("anonymous list namespaces", lastErr)
}

// TestAuditWebhookTokenAPIServer has the real API server authenticate to
// the audit webhook with a bearer token (a webhook kubeconfig user with a
// token, as clusters whose API server has no client certificate for it
// do), and the receiver require it.
func TestAuditWebhookTokenAPIServer(t *testing.T) {
	kubetest.Require(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	hookFiles := newWebhookFiles(t, ca)
	dir, addr := hookFiles.dir, hookFiles.addr
	const token = "audit-webhook-token-0123456789"
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	run := goRunner(t, ctx, &wg)
	cfg := Config{DataDir: dir, Kube: kube.Config{Mode: "off", Audit: kube.AuditConfig{WebhookAddr: addr,
		CertFile: hookFiles.cert, KeyFile: hookFiles.key, TokenFile: filepath.Join(dir, "token")}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Sensor.Node = "cp-1"
	hook, err := startKube(ctx, cfg, run, log)
	if err != nil {
		t.Fatal(err)
	}
	sink := newAlertSink(t, ctx, hook.audit)
	srv := kubetest.Start(t, kubetest.Options{CA: ca, AuditWebhookURL: "https://" + addr + "/", AuditWebhookToken: token})
	yes := true
	_, err = srv.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "priv"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox",
			SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(sink.missing([]string{"privileged-container"})) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no privileged-container alert through the token-authenticated webhook; receiver %+v", hook.receiver.Stats())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := hook.receiver.Stats(); st.Rejected != 0 {
		t.Errorf("receiver rejected %d posts from the API server", st.Rejected)
	}
}

// TestAuditProxyAddressAPIServer: requests to a real API server from an
// address on the proxy list raise api-from-proxy. The same requests, read
// from the audit log by an engine whose list holds other addresses, do not.
// The test's client is on loopback, so loopback is the listed "proxy".
func TestAuditProxyAddressAPIServer(t *testing.T) {
	kubetest.Require(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	hookFiles := newWebhookFiles(t, ca)
	dir, addr := hookFiles.dir, hookFiles.addr
	listed, other := filepath.Join(dir, "proxies.txt"), filepath.Join(dir, "other-proxies.txt")
	if err := os.WriteFile(listed, []byte("# the test client's addresses\n127.0.0.1\n::1/128\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("192.0.2.0/24 # TEST-NET-1\n2001:db8::/32\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	run := goRunner(t, ctx, &wg)
	cfg := Config{DataDir: dir, Kube: kube.Config{Mode: "off", Audit: kube.AuditConfig{WebhookAddr: addr,
		CertFile: hookFiles.cert, KeyFile: hookFiles.key, ClientCAFile: hookFiles.ca}}}
	cfg.Sensor.Node = "cp-1"
	hook, err := startKube(ctx, cfg, run, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := kubetest.Start(t, kubetest.Options{CA: ca, AuditWebhookURL: "https://" + addr + "/", AuditPolicy: audit.RecommendedPolicy()})
	tail, err := startKube(ctx, Config{DataDir: dir, Kube: kube.Config{Mode: "off", Audit: kube.AuditConfig{LogPath: srv.AuditLog}}}, run, log)
	if err != nil {
		t.Fatal(err)
	}
	viaListed := newAlertSink(t, ctx, hook.audit, listed)
	viaOther := newAlertSink(t, ctx, tail.audit, other)
	time.Sleep(2 * time.Second) // the tailer starts at the end of the existing log

	// A privileged pod: privileged-container in both engines shows each has
	// read the request.
	yes := true
	_, err = srv.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "priv"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox",
			SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !viaListed.raisedOn("privileged-container", "default/priv") || !viaOther.raisedOn("privileged-container", "default/priv") {
		if time.Now().After(deadline) {
			t.Fatalf("the pod request did not reach both engines: webhook %v, log %v", viaListed.all(), viaOther.all())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !viaListed.raisedOn("api-from-proxy", "default/priv") {
		t.Errorf("no api-from-proxy for a request from a listed address; alerts %v", viaListed.all())
	}
	if slices.Contains(viaOther.all(), "api-from-proxy") {
		t.Errorf("api-from-proxy from addresses not on the list: %v", viaOther.all())
	}
}

// webhookFiles are a webhook's serving certificate for 127.0.0.1 (signed
// by the test CA), the CA, the directory holding them and a free loopback
// address to serve on.
type webhookFiles struct{ dir, cert, key, ca, addr string }

func newWebhookFiles(t *testing.T, ca *testpki.CA) webhookFiles {
	t.Helper()
	dir := t.TempDir()
	serving, err := ca.Issue(testpki.Cert{CommonName: "harrier-webhook", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	w := webhookFiles{dir: dir, cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key"), ca: filepath.Join(dir, "ca.crt")}
	for path, b := range map[string][]byte{w.cert: serving.CertPEM, w.key: serving.KeyPEM, w.ca: ca.PEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w.addr = testenv.FreeAddr(t)
	return w
}

// goRunner is the agent's run function for tests: each part on wg, an
// error that is not ctx's fails t.
func goRunner(t *testing.T, ctx context.Context, wg *sync.WaitGroup) func(string, func() error) {
	return func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
}
