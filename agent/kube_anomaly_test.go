package agent

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testpki"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/kube/audit"
)

// TestAuditAnomaliesAPIServer proves the learned control-plane anomalies
// through a real API server: real service-account tokens and a user's client
// certificate make requests during the learning period (1 s here), then both
// known and new ones; the audit webhook and the audit log each bring the
// anomalies on the new requests, and none on the known ones or on a
// controller's.
func TestAuditAnomaliesAPIServer(t *testing.T) {
	ctx, srv, viaHook, viaFile := startAuditRig(t)

	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	deployer, controller, alice := anomalyActors(t, rctx, srv)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	createPod := func(c kubernetes.Interface, ns, name, image string) {
		t.Helper()
		_, err := c.CoreV1().Pods(ns).Create(rctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}}, metav1.CreateOptions{})
		must("create pod "+ns+"/"+name, err)
	}
	createDeployment := func(c kubernetes.Interface, ns, name, image string) {
		t.Helper()
		labels := map[string]string{"app": name}
		_, err := c.AppsV1().Deployments(ns).Create(rctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}}}}, metav1.CreateOptions{})
		must("create deployment "+ns+"/"+name, err)
	}
	getSecret := func(c kubernetes.Interface, ns, name string) {
		t.Helper()
		_, err := c.CoreV1().Secrets(ns).Get(rctx, name, metav1.GetOptions{})
		must("get secret "+ns+"/"+name, err)
	}
	listSecrets := func(c kubernetes.Interface, ns string) {
		t.Helper()
		_, err := c.CoreV1().Secrets(ns).List(rctx, metav1.ListOptions{})
		must("list secrets "+ns, err)
	}

	// Learning: what each actor does in its first second.
	createDeployment(deployer, "shop", "web", "registry.local/shop/web:1.0")
	getSecret(deployer, "shop", "db-creds")
	listSecrets(deployer, "shop")
	getSecret(alice, "shop", "db-creds")
	createPod(controller, "shop", "web-7d4f-abcde", "registry.local/shop/web:1.0")

	time.Sleep(1500 * time.Millisecond)

	// Known: the same actors doing what they learned (a new image of the
	// same project is the same repository).
	createDeployment(deployer, "shop", "api", "registry.local/shop/api:2.3")
	getSecret(deployer, "shop", "db-creds")
	listSecrets(deployer, "shop")
	getSecret(alice, "shop", "db-creds")
	// A controller's requests are not judged, wherever they go.
	createPod(controller, "kube-system", "coredns-5d78-xyz", "registry.k8s.io/coredns/coredns:v1.12.0")
	getSecret(controller, "kube-system", "controller-creds")

	// New: the CI account deploys a miner in kube-system and reads a
	// secret there; it then probes whether it may read cluster role
	// bindings (RBAC says no). Alice reads a secret she never read.
	createPod(deployer, "kube-system", "miner", "docker.io/xmrig/xmrig:6.21")
	getSecret(deployer, "kube-system", "cloud-creds")
	_, err := deployer.RbacV1().ClusterRoleBindings().Get(rctx, "cluster-admin", metav1.GetOptions{})
	if err == nil {
		t.Fatal("the deployer may read cluster role bindings: the probe must be refused")
	}
	getSecret(alice, "kube-system", "etcd-backup-key")

	want := map[string][]string{ // object: the anomalies it must raise
		"kube-system/miner":           {"anomalous-pod-deployment"},
		"kube-system/cloud-creds":     {"anomalous-secret-access", "sa-permission-anomaly"},
		"/cluster-admin":              {"sa-permission-anomaly"},
		"kube-system/etcd-backup-key": {"anomalous-secret-access"},
	}
	benign := []string{"shop/api", "shop/db-creds", "shop/", "shop/web", "shop/web-7d4f-abcde", "kube-system/coredns-5d78-xyz",
		"kube-system/controller-creds"}
	anomalies := []string{"anomalous-pod-deployment", "anomalous-secret-access", "sa-permission-anomaly"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var missing []string
		for obj, ids := range want {
			for _, id := range ids {
				for via, sink := range map[string]*alertSink{"webhook": viaHook, "log": viaFile} {
					if !sink.raisedOn(id, obj) {
						missing = append(missing, via+": "+id+" on "+obj)
					}
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing %v; webhook raised %v, log raised %v", missing, viaHook.all(), viaFile.all())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for via, sink := range map[string]*alertSink{"webhook": viaHook, "log": viaFile} {
		for _, obj := range benign {
			for _, id := range anomalies {
				if sink.raisedOn(id, obj) {
					t.Errorf("%s: %s on %s, which its actor learned or is not judged", via, id, obj)
				}
			}
		}
	}
	// The alerts say who did what that was new.
	viaHook.mu.Lock()
	defer viaHook.mu.Unlock()
	for _, a := range viaHook.raised {
		if !slices.Contains(anomalies, a.GetDetectionId()) {
			continue
		}
		ev := a.GetEvidence()[0].GetAudit()
		t.Logf("%s (%s): %s [source %v]", a.GetDetectionId(), a.GetSeverity(), a.GetSummary(), ev.GetSourceIps())
		if a.GetDetectionId() == "anomalous-pod-deployment" &&
			(ev.GetUser() != "system:serviceaccount:shop:deployer" || !strings.Contains(a.GetSummary(), "docker.io/xmrig it deployed in kube-system")) {
			t.Errorf("anomalous-pod-deployment by %s: %q", ev.GetUser(), a.GetSummary())
		}
		if a.GetDetectionId() == "anomalous-secret-access" && ev.GetName() == "etcd-backup-key" && ev.GetUser() != "alice" {
			t.Errorf("anomalous-secret-access on etcd-backup-key by %s, want alice", ev.GetUser())
		}
		if a.GetDetectionId() == "sa-permission-anomaly" && ev.GetName() == "cluster-admin" &&
			!strings.Contains(a.GetSummary(), "first get clusterrolebindings cluster-wide (answered 403)") {
			t.Errorf("sa-permission-anomaly summary %q", a.GetSummary())
		}
	}
}

// anomalyActors sets up, as an admin, the actors of TestAuditAnomaliesAPIServer
// and returns their clients: a CI service account (shop/deployer) that may
// deploy and read secrets cluster-wide, the replicaset controller's service
// account with the same rights, and a person (alice, a client certificate)
// who may read secrets.
func anomalyActors(t *testing.T, ctx context.Context, srv *kubetest.Server) (deployer, controller, alice kubernetes.Interface) {
	t.Helper()
	c := srv.Client
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("shop/default", srv.EnsureServiceAccount(ctx, "shop", "default"))
	must("shop/deployer", srv.EnsureServiceAccount(ctx, "shop", "deployer"))
	must("kube-system/replicaset-controller", srv.EnsureServiceAccount(ctx, "kube-system", "replicaset-controller"))
	for _, s := range []struct{ ns, name string }{{"shop", "db-creds"}, {"kube-system", "cloud-creds"},
		{"kube-system", "etcd-backup-key"}, {"kube-system", "controller-creds"}} {
		_, err := c.CoreV1().Secrets(s.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.name},
			StringData: map[string]string{"password": "not-a-real-one"}}, metav1.CreateOptions{})
		must("secret "+s.ns+"/"+s.name, err)
	}
	_, err := c.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "harrier-test-deployer"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create", "get"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"create", "get"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}},
		}}, metav1.CreateOptions{})
	must("deployer role", err)
	_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "harrier-test-deployer"},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "harrier-test-deployer"},
		Subjects: []rbacv1.Subject{
			{Kind: "ServiceAccount", Namespace: "shop", Name: "deployer"},
			{Kind: "ServiceAccount", Namespace: "kube-system", Name: "replicaset-controller"},
			{Kind: "User", Name: "alice", APIGroup: "rbac.authorization.k8s.io"},
		}}, metav1.CreateOptions{})
	must("deployer binding", err)

	tokenClient := func(ns, name, agent string) kubernetes.Interface {
		tok, err := c.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
		must("token "+ns+"/"+name, err)
		return kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL, BearerToken: tok.Status.Token, UserAgent: agent,
			TLSClientConfig: rest.TLSClientConfig{CAData: srv.CA.PEM}})
	}
	deployer = tokenClient("shop", "deployer", "argocd-application-controller/v3.1.0")
	controller = tokenClient("kube-system", "replicaset-controller", "kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/abcdef0/system:serviceaccount:kube-system:replicaset-controller")
	cert, err := srv.CA.Issue(testpki.Cert{CommonName: "alice", Organization: []string{"shop-admins"}})
	must("alice's certificate", err)
	alice = kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL, UserAgent: "kubectl/v1.37.2 (linux/amd64) kubernetes/abcdef0",
		TLSClientConfig: rest.TLSClientConfig{CAData: srv.CA.PEM, CertData: cert.CertPEM, KeyData: cert.KeyPEM}})

	// RBAC's cache takes a moment to see the binding: wait until each
	// actor may read what it reads first. These reads are the actors'
	// first requests, so they belong to their learning.
	for _, actor := range []kubernetes.Interface{deployer, controller, alice} {
		var lastErr error
		for i := range 50 {
			if _, lastErr = actor.CoreV1().Secrets("shop").Get(ctx, "db-creds", metav1.GetOptions{}); lastErr == nil {
				break
			}
			time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
		}
		must("an actor's first read", lastErr)
	}
	return deployer, controller, alice
}

// TestAuditPostgresAPIServer proves exposed-postgres-trust and
// exposed-postgres-broad-range through a real API server: a pg_hba.conf
// ConfigMap, a Postgres StatefulSet mounting it and an exposed Service, each
// written with the API, are joined from the audit webhook and the audit log.
// The same Postgres behind a ClusterIP service, and an exposed one with a
// password-only pg_hba.conf for the pod network, raise neither.
func TestAuditPostgresAPIServer(t *testing.T) {
	ctx, srv, viaHook, viaFile := startAuditRig(t)

	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	c := srv.Client
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	postgres := func(ns, hba string, svcType corev1.ServiceType) {
		t.Helper()
		must("namespace "+ns, srv.EnsureServiceAccount(rctx, ns, "default"))
		_, err := c.CoreV1().ConfigMaps(ns).Create(rctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "pg-config"},
			Data: map[string]string{"pg_hba.conf": hba, "postgresql.conf": "listen_addresses = '*'\n"}}, metav1.CreateOptions{})
		must("configmap "+ns, err)
		labels := map[string]string{"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": "orders"}
		_, err = c.AppsV1().StatefulSets(ns).Create(rctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "orders-db"},
			Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						Containers: []corev1.Container{{Name: "postgres", Image: "docker.io/library/postgres:17.2",
							Args:         []string{"-c", "hba_file=/etc/postgresql/pg_hba.conf"},
							VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/postgresql"}}}},
						Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
							ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "pg-config"}}}}},
					}}}}, metav1.CreateOptions{})
		must("statefulset "+ns, err)
		_, err = c.CoreV1().Services(ns).Create(rctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "orders-db"},
			Spec: corev1.ServiceSpec{Type: svcType, Selector: labels, Ports: []corev1.ServicePort{{Port: 5432}}}}, metav1.CreateOptions{})
		must("service "+ns, err)
	}
	postgres("pg-trust", "local all all trust\nhost all all 10.0.0.0/8 trust\n", corev1.ServiceTypeLoadBalancer)
	postgres("pg-broad", "local all all peer\nhostssl all all 0.0.0.0/0 scram-sha-256\n", corev1.ServiceTypeNodePort)
	postgres("pg-internal", "host all all 0.0.0.0/0 trust\n", corev1.ServiceTypeClusterIP)
	postgres("pg-safe", "local all all peer\nhost all all 10.0.0.0/8 scram-sha-256\n", corev1.ServiceTypeLoadBalancer)

	// raisedIn: the namespaces where each sink raised id (the trigger, the
	// last evidence, is the object written last: the Service).
	raisedIn := func(s *alertSink, id string) []string {
		s.mu.Lock()
		defer s.mu.Unlock()
		var out []string
		for _, a := range s.raised {
			if a.GetDetectionId() == id {
				ev := a.GetEvidence()
				out = append(out, ev[len(ev)-1].GetAudit().GetNamespace())
			}
		}
		slices.Sort(out)
		return out
	}
	want := map[string][]string{"exposed-postgres-trust": {"pg-trust"}, "exposed-postgres-broad-range": {"pg-broad"}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for id, nss := range want {
			for _, s := range []*alertSink{viaHook, viaFile} {
				if !slices.Equal(raisedIn(s, id), nss) {
					ok = false
				}
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			for id, nss := range want {
				t.Errorf("%s: webhook %v, log %v, want %v", id, raisedIn(viaHook, id), raisedIn(viaFile, id), nss)
			}
			t.Fatalf("webhook raised %v, log raised %v", viaHook.all(), viaFile.all())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // nothing else arrives late
	for id, nss := range want {
		for via, s := range map[string]*alertSink{"webhook": viaHook, "log": viaFile} {
			if got := raisedIn(s, id); !slices.Equal(got, nss) {
				t.Errorf("%s: %s in %v, want %v", via, id, got, nss)
			}
		}
	}
	viaHook.mu.Lock()
	defer viaHook.mu.Unlock()
	for _, a := range viaHook.raised {
		if !strings.HasPrefix(a.GetDetectionId(), "exposed-postgres") {
			continue
		}
		t.Logf("%s (%s): %s; evidence %d events", a.GetDetectionId(), a.GetSeverity(), a.GetSummary(), len(a.GetEvidence()))
		if len(a.GetEvidence()) != 3 {
			t.Errorf("%s: evidence %d events, want the ConfigMap, the StatefulSet and the Service", a.GetDetectionId(), len(a.GetEvidence()))
		}
	}
}

// startAuditRig starts a real API server whose audit events reach the
// agent's pipeline twice — by its audit webhook and by tailing its audit
// log — and returns the sinks of the alerts each path raises. Everything
// stops when the test ends.
func startAuditRig(t *testing.T) (context.Context, *kubetest.Server, *alertSink, *alertSink) {
	t.Helper()
	kubetest.Require(t)
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	hookFiles := newWebhookFiles(t, ca)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	run := goRunner(t, ctx, &wg)
	cfg := Config{DataDir: hookFiles.dir, Kube: kube.Config{Mode: "off", Audit: kube.AuditConfig{WebhookAddr: hookFiles.addr,
		CertFile: hookFiles.cert, KeyFile: hookFiles.key, ClientCAFile: hookFiles.ca}}}
	cfg.Sensor.Node = "cp-1"
	hook, err := startKube(ctx, cfg, run, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := kubetest.Start(t, kubetest.Options{CA: ca, AuditWebhookURL: "https://" + hookFiles.addr + "/", AuditPolicy: audit.RecommendedPolicy()})
	tail, err := startKube(ctx, Config{DataDir: hookFiles.dir, Kube: kube.Config{Mode: "off", Audit: kube.AuditConfig{LogPath: srv.AuditLog}}}, run, log)
	if err != nil {
		t.Fatal(err)
	}
	viaHook := newAlertSink(t, ctx, hook.audit)
	viaFile := newAlertSink(t, ctx, tail.audit)
	time.Sleep(2 * time.Second) // the tailer starts at the end of the existing log
	return ctx, srv, viaHook, viaFile
}
