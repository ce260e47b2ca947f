package simulate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/kubetest"
)

// emptyBackend answers the alerts API with no alerts.
func emptyBackend(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer test-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"alerts":[]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func clusterOptions(t *testing.T, srv *kubetest.Server, ns string, names ...string) ClusterOptions {
	sc, err := ParseScenarios(names)
	if err != nil {
		t.Fatal(err)
	}
	// The API server creates its own Service shortly after it starts; the
	// simulator reads it for the network policies.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := srv.Client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("service default/kubernetes: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ClusterOptions{Scenarios: sc, APIURL: emptyBackend(t), Token: "test-token", Kube: srv.Config,
		Namespace: ns, HarrierImage: "registry.example/harrier:test", ReadyTimeout: 30 * time.Second}
}

// waitForPod polls until pod ns/name exists.
func waitForPod(ctx context.Context, c kubernetes.Interface, ns, name string) (*corev1.Pod, error) {
	for {
		p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return p, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pod %s/%s never created: %w", ns, name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// assertCleanedUp checks that nothing the run created is left: the
// namespace is gone or terminating (this API server has no namespace
// controller to finish the job), and every object in it is deleted.
func assertCleanedUp(t *testing.T, c kubernetes.Interface, ns string) {
	t.Helper()
	ctx := context.Background()
	n, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		t.Fatal(err)
	case n.DeletionTimestamp == nil:
		t.Errorf("namespace %s was not deleted", ns)
	}
	counts := map[string]func() (int, error){
		"pods": func() (int, error) {
			l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"services": func() (int, error) {
			l, err := c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"configmaps": func() (int, error) {
			l, err := c.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"serviceaccounts": func() (int, error) {
			l, err := c.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"networkpolicies": func() (int, error) {
			l, err := c.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
	}
	for res, count := range counts {
		if n, err := count(); err != nil || n != 0 {
			t.Errorf("%s left in %s: %d (%v)", res, ns, n, err)
		}
	}
}

// setReady writes a Ready status through the status subresource, as a
// kubelet would.
func setReady(ctx context.Context, c kubernetes.Interface, p *corev1.Pod) error {
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	_, err := c.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

// TestClusterObjectsAndCleanup runs the cluster mode against a real API
// server: every object is accepted, read back and checked for the safety
// properties while the run waits for its pods; the pods are then made
// Ready through the status subresource, the run goes on to follow the
// attacker's log (which needs a kubelet, absent here, so it fails), and the
// clean-up removes everything.
func TestClusterObjectsAndCleanup(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	c := srv.Client
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "harrier-simulate-objects"
	opts := clusterOptions(t, srv, ns, "recon", "lateral")

	checked := make(chan error, 1)
	go func() { checked <- inspectRun(ctx, t, srv, ns) }()
	rep, err := RunCluster(ctx, opts)
	if cerr := <-checked; cerr != nil {
		t.Fatal(cerr)
	}
	if err == nil || !strings.Contains(err.Error(), "the attacker's log") {
		t.Fatalf("RunCluster = %v, %v; want it to reach the attacker's log (and fail: no kubelet)", rep, err)
	}
	t.Logf("run ended as expected without a kubelet: %v", err)
	assertCleanedUp(t, c, ns)
}

// inspectRun reads the run's objects back once the attacker pod exists,
// checks them, then marks every pod Ready.
func inspectRun(ctx context.Context, t *testing.T, srv *kubetest.Server, ns string) error {
	c := srv.Client
	att, err := waitForPod(ctx, c, ns, attackerName)
	if err != nil {
		return err
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	n, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Labels[managedByLabel] != managedBy || n.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		fail("namespace labels %v", n.Labels)
	}
	for _, sc := range []string{"recon", "lateral"} {
		p, err := c.CoreV1().Pods(ns).Get(ctx, victimName(sc), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.DNSPolicy != corev1.DNSNone || p.Spec.DNSConfig == nil || !slices.Equal(p.Spec.DNSConfig.Nameservers, []string{"127.0.0.1"}) {
			fail("%s: DNS %s %+v, want None with 127.0.0.1 only", p.Name, p.Spec.DNSPolicy, p.Spec.DNSConfig)
		}
		web := p.Spec.Containers[0]
		if s := web.SecurityContext; web.Name != "web" || s == nil || s.RunAsNonRoot == nil || !*s.RunAsNonRoot ||
			s.RunAsUser == nil || *s.RunAsUser != victimUID || s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
			fail("%s: web container %s runs with %+v", p.Name, web.Name, web.SecurityContext)
		}
		init := p.Spec.InitContainers[0]
		if !strings.Contains(strings.Join(init.Command, " "), "ip addr add 169.254.169.254/32 dev lo") ||
			!slices.Equal(init.SecurityContext.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) {
			fail("%s: init container %v %+v", p.Name, init.Command, init.SecurityContext.Capabilities)
		}
		// The admission plugin projected the real token of the victim's
		// own service account.
		if p.Spec.ServiceAccountName != victimName(sc) || !slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool {
			return v.Projected != nil && strings.HasPrefix(v.Name, "kube-api-access-")
		}) {
			fail("%s: account %s, volumes %v: no projected token", p.Name, p.Spec.ServiceAccountName, p.Spec.Volumes)
		}
		if !slices.ContainsFunc(web.Env, func(e corev1.EnvVar) bool { return e.Name == PoolEnv && strings.HasSuffix(e.Value, ":3333") }) {
			fail("%s: no %s", p.Name, PoolEnv)
		}
	}
	if att.Spec.AutomountServiceAccountToken == nil || *att.Spec.AutomountServiceAccountToken ||
		slices.ContainsFunc(att.Spec.Volumes, func(v corev1.Volume) bool { return v.Projected != nil }) {
		fail("the attacker pod has a token")
	}
	// The plan points the attacker at the victims' Services only.
	cm, err := c.CoreV1().ConfigMaps(ns).Get(ctx, planName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	plan, err := ParsePlan([]byte(cm.Data["plan.json"]))
	if err != nil {
		fail("plan: %v", err)
	}
	for _, s := range plan.Scenarios {
		svc, err := c.CoreV1().Services(ns).Get(ctx, victimName(s.Name), metav1.GetOptions{})
		if err != nil || svc.Spec.ClusterIP != s.Victim {
			fail("scenario %s victim %s is not its Service's ClusterIP (%v)", s.Name, s.Victim, err)
		}
		if s.Name == "recon" && !strings.Contains(strings.Join(s.Steps, "\n"), "for h in "+attackerPodIP+" $(hostname -i); do nc -z") {
			fail("recon scan is not limited to the attacker pod and the victim: %q", s.Steps)
		}
	}
	nps, err := c.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(nps.Items) != 2 {
		fail("%d network policies, want 2", len(nps.Items))
	}
	for _, np := range nps.Items {
		if len(np.Spec.PolicyTypes) != 2 || len(np.Spec.Egress) == 0 {
			fail("network policy %s: %+v", np.Name, np.Spec)
		}
		for _, r := range np.Spec.Egress {
			for _, to := range r.To {
				if to.NamespaceSelector != nil || to.IPBlock != nil && !strings.HasSuffix(to.IPBlock.CIDR, "/32") {
					fail("network policy %s lets pods out of the namespace: %+v", np.Name, to)
				}
			}
		}
	}
	// No RBAC binding names any of the run's accounts.
	rbs, err := c.RbacV1().RoleBindings("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	crbs, err := c.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, b := range rbs.Items {
		if b.Namespace == ns {
			fail("role binding %s in the run's namespace", b.Name)
		}
	}
	for _, b := range crbs.Items {
		for _, s := range b.Subjects {
			if s.Namespace == ns {
				fail("cluster role binding %s names %s/%s", b.Name, s.Namespace, s.Name)
			}
		}
	}
	if err := reconAsVictim(ctx, t, srv, ns); err != nil {
		fail("recon's API step: %v", err)
	}
	pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range pods.Items {
		if err := setReady(ctx, c, &pods.Items[i]); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// reconAsVictim runs the recon scenario's API step, exactly as the victim's
// shell would, with busybox wget and a real token of victim-recon's
// account, against the real API server: the SelfSubjectRulesReview succeeds
// (any account may ask), which is what sa-suspicious-op alerts on, and the
// account has no rule beyond the defaults.
func reconAsVictim(ctx context.Context, t *testing.T, srv *kubetest.Server, ns string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Log("busybox not installed: the API step was not run")
		return nil
	}
	tr, err := srv.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, victimName("recon"),
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(tr.Status.Token), 0o600); err != nil {
		return err
	}
	var step string
	for _, st := range Scenarios()[0].Steps(clusterStepEnv("10.96.0.10")) {
		if slices.Contains(st.Raises, api.DetectionSASuspiciousOp) {
			step = strings.ReplaceAll(st.Command, tokenPath, token)
		}
	}
	hostPort := strings.TrimPrefix(srv.URL, "https://")
	host, port, _ := strings.Cut(hostPort, ":")
	cmd := exec.CommandContext(ctx, bb, "sh", "-c", step)
	cmd.Env = []string{"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", step, err, out)
	}
	if !strings.Contains(string(out), `"SelfSubjectRulesReview"`) || !strings.Contains(string(out), `"resourceRules"`) {
		return fmt.Errorf("answer %s", out)
	}
	// The audit event sa-suspicious-op matches: the account's user, the
	// resource, a success.
	user := `"username":"system:serviceaccount:` + ns + `:victim-recon"`
	for range 50 {
		log, _ := os.ReadFile(srv.AuditLog)
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, user) && strings.Contains(line, `"resource":"selfsubjectrulesreviews"`) && strings.Contains(line, `"code":201`) {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no audit event of %s asking selfsubjectrulesreviews with code 201 in %s", user, srv.AuditLog)
}

// TestClusterReadyTimeout: pods that never run end the run with an error
// naming each pod and its status, and the clean-up still removes
// everything.
func TestClusterReadyTimeout(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	const ns = "harrier-simulate-timeout"
	opts := clusterOptions(t, srv, ns, "webshell")
	opts.ReadyTimeout = 2 * time.Second
	_, err := RunCluster(context.Background(), opts)
	for _, want := range []string{
		"pod " + ns + "/victim-webshell not ready after 2s: phase Pending; not scheduled",
		"pod " + ns + "/attacker not ready after 2s",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
	}
	assertCleanedUp(t, srv.Client, ns)
}

// TestClusterCancelled: Ctrl-C (ctx cancelled) mid-run still deletes
// everything, with a context of its own for the clean-up.
func TestClusterCancelled(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	const ns = "harrier-simulate-cancel"
	opts := clusterOptions(t, srv, ns, "webshell", "mining")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if _, err := waitForPod(ctx, srv.Client, ns, attackerName); err == nil {
			cancel()
		}
	}()
	_, err := RunCluster(ctx, opts)
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertCleanedUp(t, srv.Client, ns)
}

// TestClusterNamespaceTaken: an existing namespace is refused and left
// alone.
func TestClusterNamespaceTaken(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx := context.Background()
	if err := srv.EnsureServiceAccount(ctx, "shop", "default"); err != nil {
		t.Fatal(err)
	}
	_, err := RunCluster(ctx, clusterOptions(t, srv, "shop", "webshell"))
	if err == nil || !strings.Contains(err.Error(), "namespace shop exists") {
		t.Fatalf("err = %v", err)
	}
	n, err := srv.Client.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if err != nil || n.DeletionTimestamp != nil {
		t.Fatalf("the existing namespace was touched: %v %v", n.DeletionTimestamp, err)
	}
	if _, err := srv.Client.CoreV1().ServiceAccounts("shop").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCleanupLeftovers: --cleanup deletes the namespaces labelled as the
// simulator's, with their objects, and nothing else.
func TestCleanupLeftovers(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx := context.Background()
	c := srv.Client
	mk := func(name string, lbl map[string]string) {
		t.Helper()
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().ConfigMaps(name).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: lbl}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("harrier-simulate-left", map[string]string{managedByLabel: managedBy})
	mk("harrier-simulate-lookalike", map[string]string{managedByLabel: "someone-else"})
	mk("unrelated", nil)
	names, err := Cleanup(ctx, srv.Config)
	if err != nil || !slices.Equal(names, []string{"harrier-simulate-left"}) {
		t.Fatalf("Cleanup = %v, %v", names, err)
	}
	assertCleanedUp(t, c, "harrier-simulate-left")
	for _, ns := range []string{"harrier-simulate-lookalike", "unrelated"} {
		n, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil || n.DeletionTimestamp != nil {
			t.Errorf("namespace %s was touched: %v", ns, err)
		}
		if _, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "x", metav1.GetOptions{}); err != nil {
			t.Errorf("configmap in %s: %v", ns, err)
		}
	}
	// A second clean-up finds the terminating namespace again and is fine.
	if _, err := Cleanup(ctx, srv.Config); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}
