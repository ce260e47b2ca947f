package admission

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testpki"
)

// warningLog collects the warnings the API server returns to a client.
type warningLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningLog) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// violationLog records OnViolation calls.
type violationLog struct {
	mu  sync.Mutex
	got []string // checkID object
}

func (v *violationLog) add(f *api.Finding, req *admissionv1.AdmissionRequest) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.got = append(v.got, f.GetCheckId()+" "+refString(f.GetObject())+" "+string(req.Operation))
}

func (v *violationLog) list() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.got...)
}

type guardEnv struct {
	ks       *kubetest.Server
	client   kubernetes.Interface // its warnings go to warns
	warns    *warningLog
	reg      *Registrar
	certFile string
	keyFile  string
}

// guard is one running webhook server, registered with the API server.
type guard struct {
	srv        *Server
	violations *violationLog
	stop       func()
}

func pod(name, ns string, privileged bool, lbls map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	if privileged {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &privileged}
	}
	return p
}

// start runs a guard for cfg, registers it and waits until the API server
// calls it (a dry-run create reaches it).
func (e *guardEnv) start(t *testing.T, ctx context.Context, cfg Config, checker PodChecker) *guard {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Enabled, cfg.CertFile, cfg.KeyFile = true, e.certFile, e.keyFile
	cfg.URL = "https://" + l.Addr().String() + ValidatePath
	v := &violationLog{}
	srv, err := NewServer(cfg, Options{Checker: checker, OnViolation: v.add})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, l) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	vwc, err := WebhookConfiguration(cfg, e.ks.CA.PEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Apply(ctx, vwc); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for srv.Handler.Stats().Reviews == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the API server never called the webhook")
		}
		_, _ = e.client.CoreV1().Pods("apps").Create(ctx, pod("probe", "apps", false, nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		time.Sleep(100 * time.Millisecond)
	}
	e.warns.take()
	return &guard{srv: srv, violations: v, stop: stop}
}

func newGuardEnv(t *testing.T, ctx context.Context) *guardEnv {
	ks := kubetest.Start(t, kubetest.Options{})
	for _, ns := range []string{"apps", "trusted"} {
		if err := ks.EnsureServiceAccount(ctx, ns, "default"); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := ks.CA.Issue(testpki.Cert{CommonName: "harrier-admission", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &guardEnv{ks: ks, warns: &warningLog{}, certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key")}
	if err := os.WriteFile(e.certFile, pair.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.keyFile, pair.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	rc := rest.CopyConfig(ks.Config)
	rc.WarningHandler = e.warns
	if e.client, err = kubernetes.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	if e.reg, err = NewRegistrar(ks.Config); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestAdmissionAPIServer registers the guard with a real API server and
// creates pods and workloads through it.
func TestAdmissionAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newGuardEnv(t, ctx)
	pods := func(ns string) interface {
		Create(context.Context, *corev1.Pod, metav1.CreateOptions) (*corev1.Pod, error)
	} {
		return e.client.CoreV1().Pods(ns)
	}
	exemptLabel := map[string]string{"harrier.io/admission": "exempt"}

	t.Run("deny", func(t *testing.T) {
		g := e.start(t, ctx, Config{Mode: ModeDeny, ExemptNamespaces: []string{"kube-system", "trusted"},
			ExemptLabels: "harrier.io/admission=exempt"}, testChecker{})
		defer g.stop()
		_, err := pods("apps").Create(ctx, pod("privileged", "apps", true, nil), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("privileged pod: %v, want forbidden", err)
		}
		for _, want := range []string{"Pod apps/privileged fails 1 control(s)", `[pss-privileged] container "app": securityContext.privileged: true`,
			"fix: set securityContext.privileged to false"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("denial %q lacks %q", err, want)
			}
		}
		if _, err := pods("apps").Create(ctx, pod("compliant", "apps", false, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("compliant pod: %v", err)
		}
		privileged := true
		// kubectl debug: a privileged ephemeral container added to it.
		compliant, err := e.client.CoreV1().Pods("apps").Get(ctx, "compliant", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		compliant.Spec.EphemeralContainers = append(compliant.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox",
				SecurityContext: &corev1.SecurityContext{Privileged: &privileged}}})
		_, err = e.client.CoreV1().Pods("apps").UpdateEphemeralContainers(ctx, "compliant", compliant, metav1.UpdateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `container "debugger"`) {
			t.Fatalf("privileged ephemeral container: %v", err)
		}
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps"},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx",
						SecurityContext: &corev1.SecurityContext{Privileged: &privileged}}}}}}}
		_, err = e.client.AppsV1().Deployments("apps").Create(ctx, dep, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `Deployment apps/web fails 1 control(s)`) {
			t.Fatalf("privileged deployment: %v", err)
		}
		before := g.srv.Handler.Stats().Reviews
		if _, err := pods("trusted").Create(ctx, pod("privileged", "trusted", true, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("exempt namespace: %v", err)
		}
		if _, err := pods("apps").Create(ctx, pod("privileged-exempt", "apps", true, exemptLabel), metav1.CreateOptions{}); err != nil {
			t.Fatalf("exempt label: %v", err)
		}
		if got := g.srv.Handler.Stats().Reviews; got != before {
			t.Errorf("exempt objects reached the webhook (%d reviews): the selectors did not exclude them", got-before)
		}
		if v := g.violations.list(); len(v) != 3 || v[0] != "pss-privileged Pod apps/privileged CREATE" ||
			v[1] != "pss-privileged Pod apps/compliant UPDATE" || v[2] != "pss-privileged Deployment apps/web CREATE" {
			t.Errorf("violations %q", v)
		}
		// The object as registered.
		vwc, err := e.reg.Get(ctx, DefaultWebhookName)
		if err != nil {
			t.Fatal(err)
		}
		wh := vwc.Webhooks[0]
		if *wh.FailurePolicy != admissionregv1.Ignore || *wh.TimeoutSeconds != 3 || *wh.SideEffects != admissionregv1.SideEffectClassNone ||
			wh.NamespaceSelector.MatchExpressions[0].Values[1] != "trusted" || wh.ObjectSelector.MatchExpressions[0].Operator != metav1.LabelSelectorOpNotIn {
			t.Errorf("registered webhook %+v", wh)
		}
	})

	t.Run("audit", func(t *testing.T) {
		g := e.start(t, ctx, Config{Mode: ModeAudit}, testChecker{})
		defer g.stop()
		if _, err := pods("apps").Create(ctx, pod("audited", "apps", true, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("audit mode refused: %v", err)
		}
		warns := e.warns.take()
		if len(warns) != 1 || !strings.Contains(warns[0], `harrier: [pss-privileged] container "app": securityContext.privileged: true`) {
			t.Errorf("client warnings %q", warns)
		}
		if v := g.violations.list(); len(v) != 1 || v[0] != "pss-privileged Pod apps/audited CREATE" {
			t.Errorf("violations %q", v)
		}
		// The audit annotation reaches the API server's audit log.
		key := `"` + DefaultWebhookName + `.harrier.io/violations":"pss-privileged"`
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, _ := os.ReadFile(e.ks.AuditLog)
			if strings.Contains(string(b), key) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("audit log has no %s", key)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("fail open when the guard is down", func(t *testing.T) {
		for _, tt := range []struct {
			policy string
			admit  bool
		}{{FailurePolicyIgnore, true}, {FailurePolicyFail, false}} {
			g := e.start(t, ctx, Config{Mode: ModeDeny, FailurePolicy: tt.policy}, testChecker{})
			g.stop()
			_, err := pods("apps").Create(ctx, pod("down-"+strings.ToLower(tt.policy), "apps", true, nil), metav1.CreateOptions{})
			if tt.admit && err != nil {
				t.Errorf("failurePolicy %s, guard down: %v", tt.policy, err)
			}
			if !tt.admit && (err == nil || !strings.Contains(err.Error(), "failed calling webhook")) {
				t.Errorf("failurePolicy %s, guard down: %v, want refused", tt.policy, err)
			}
		}
	})

	t.Run("slow checker answers within the budget", func(t *testing.T) {
		g := e.start(t, ctx, Config{Mode: ModeDeny, TimeoutSeconds: 1}, testChecker{delay: 3 * time.Second})
		defer g.stop()
		timeouts := g.srv.Handler.Stats().Timeouts
		began := time.Now()
		_, err := pods("apps").Create(ctx, pod("slow", "apps", true, nil), metav1.CreateOptions{})
		took := time.Since(began)
		if err != nil {
			t.Fatalf("slow guard: %v", err)
		}
		warns := e.warns.take()
		if len(warns) != 1 || !strings.Contains(warns[0], "exceeded its 800ms budget; admitted (failurePolicy Ignore)") {
			t.Errorf("warnings %q (took %v): the API server did not get the guard's answer", warns, took)
		}
		if got := g.srv.Handler.Stats().Timeouts - timeouts; got != 1 {
			t.Errorf("timeouts counted %d, want 1", got)
		}
	})

	t.Run("concurrent agents apply once", func(t *testing.T) {
		cfg := Config{URL: "https://127.0.0.1:1/validate", Mode: ModeDeny}
		vwc, err := WebhookConfiguration(cfg, e.ks.CA.PEM)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				r, err := NewRegistrar(e.ks.Config)
				if err == nil {
					err = r.Apply(ctx, vwc)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent Apply: %v", err)
			}
		}
		first, err := e.reg.Get(ctx, DefaultWebhookName)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.reg.Apply(ctx, vwc); err != nil {
			t.Fatal(err)
		}
		again, err := e.reg.Get(ctx, DefaultWebhookName)
		if err != nil {
			t.Fatal(err)
		}
		if again.ResourceVersion != first.ResourceVersion {
			t.Errorf("re-applying the same webhooks wrote the object (%s -> %s)", first.ResourceVersion, again.ResourceVersion)
		}
		cfg.TimeoutSeconds = 7
		if err := Register(ctx, e.ks.Config, cfg, e.ks.CA.PEM); err != nil {
			t.Fatal(err)
		}
		changed, err := e.reg.Get(ctx, DefaultWebhookName)
		if err != nil {
			t.Fatal(err)
		}
		if *changed.Webhooks[0].TimeoutSeconds != 7 {
			t.Errorf("changed config not applied: timeout %d", *changed.Webhooks[0].TimeoutSeconds)
		}

		// Owned by a ClusterRole: the reference names the role's UID, and a
		// new role of the same name (a reinstall) moves it.
		cs := e.client
		for round := range 2 {
			role, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "harrier-agent-owner"}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			owned := cfg
			owned.OwnerClusterRole = role.Name
			if err := Register(ctx, e.ks.Config, owned, e.ks.CA.PEM); err != nil {
				t.Fatal(err)
			}
			got, err := e.reg.Get(ctx, DefaultWebhookName)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != role.UID || got.OwnerReferences[0].Kind != "ClusterRole" {
				t.Errorf("round %d: owner references %+v, want ClusterRole %s (%s)", round, got.OwnerReferences, role.Name, role.UID)
			}
			if err := cs.RbacV1().ClusterRoles().Delete(ctx, role.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		missing := cfg
		missing.OwnerClusterRole = "no-such-role"
		if err := Register(ctx, e.ks.Config, missing, e.ks.CA.PEM); err == nil || !strings.Contains(err.Error(), "owner clusterrole no-such-role") {
			t.Errorf("Register with a missing owner: %v, want an error naming it", err)
		}
	})

	t.Run("unregister", func(t *testing.T) {
		if err := Unregister(ctx, e.ks.Config, Config{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.reg.Get(ctx, DefaultWebhookName); !apierrors.IsNotFound(err) {
			t.Fatalf("after Unregister: %v", err)
		}
		if err := Unregister(ctx, e.ks.Config, Config{}); err != nil {
			t.Fatalf("second Unregister: %v", err)
		}
		if err := Register(ctx, e.ks.Config, Config{URL: "https://127.0.0.1:1/validate"}, e.ks.CA.PEM); err != nil {
			t.Fatalf("Register: %v", err)
		}
		if _, err := e.reg.Get(ctx, DefaultWebhookName); err != nil {
			t.Fatal(fmt.Errorf("after Register: %w", err))
		}
	})
}
