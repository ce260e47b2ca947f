// Package kubetest runs a real Kubernetes control plane for tests: an etcd
// and a kube-apiserver on loopback, with generated certificates, RBAC,
// privileged pods allowed and auditing to a log file and, optionally, a
// webhook the test provides. There is no scheduler, controller-manager or
// kubelet: pods are never run, but their status (node binding, container
// statuses) can be written through the status subresource.
//
// The binaries are built by tests/kubeapi/build.sh (`make kubeapi`) into a
// cache outside the repository, keyed by version. [Start] skips the test
// when they are missing, or fails it when the CI environment variable is set.
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/internal/testpki"
)

// The versions build.sh builds; TestVersionsMatchBuild keeps them in step
// with tests/kubeapi/*/go.mod.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.6.16"
)

// DefaultAuditPolicy records request bodies (level Request) of everything
// but reads of health endpoints, and only metadata for secrets and token
// reviews, in the ResponseComplete stage.
const DefaultAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/livez*", "/readyz*"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "serviceaccounts/token"]
  - group: "authentication.k8s.io"
    resources: ["tokenreviews"]
- level: Request
`

// Options configures the control plane.
type Options struct {
	// CA signs every certificate; nil makes a new one. Pass one to make
	// an audit webhook receiver's serving certificate from the same CA.
	CA *testpki.CA
	// AuditWebhookURL, when set, is where the API server sends audit
	// event lists (audit.k8s.io/v1 EventList), presenting a client
	// certificate from CA with CommonName "kube-apiserver-audit" and
	// trusting CA for the receiver's certificate.
	AuditWebhookURL string
	// AuditWebhookToken, when set, makes the API server authenticate to
	// the audit webhook with this bearer token instead of a client
	// certificate.
	AuditWebhookToken string
	// AuditPolicy replaces DefaultAuditPolicy.
	AuditPolicy string
}

// Server is a running control plane.
type Server struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is a file holding Config.
	Kubeconfig string
	// AuditLog is the API server's JSON audit log.
	AuditLog string
	CA       *testpki.CA
	// URL is the API server's address (https://127.0.0.1:PORT).
	URL string
	// StartTime is how long etcd and the API server took to become ready.
	StartTime time.Duration
	dir       string
	t         testing.TB
	apiArgs   []string
	stopAPI   func()
}

func (s *Server) startAPIServer() (*exec.Cmd, error) {
	cmd := s.command(s.t, "kube-apiserver", filepath.Join(BinDir(), "kube-apiserver"), s.apiArgs...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kube-apiserver: %w", err)
	}
	s.stopAPI = stopOnCleanup(s.t, cmd)
	return cmd, nil
}

// StopAPIServer stops the kube-apiserver (etcd keeps running), to test
// what clients do while it is unreachable.
func (s *Server) StopAPIServer() { s.stopAPI() }

// RestartAPIServer starts the stopped kube-apiserver again on the same
// address and waits until it is ready.
func (s *Server) RestartAPIServer(ctx context.Context) error {
	cmd, err := s.startAPIServer()
	if err != nil {
		return err
	}
	return s.waitReady(ctx, cmd)
}

// BinDir is where build.sh leaves kube-apiserver and kubectl.
func BinDir() string { return filepath.Join(cacheRoot(), "kube-"+KubeVersion) }

// EtcdPath is the etcd build.sh builds.
func EtcdPath() string { return filepath.Join(cacheRoot(), "etcd-"+EtcdVersion, "etcd") }

func cacheRoot() string {
	if r := os.Getenv("HARRIER_KUBE_CACHE"); r != "" {
		return r
	}
	if os.Geteuid() == 0 {
		return "/var/cache/harrier-test"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "harrier-test")
	}
	return filepath.Join(os.TempDir(), "harrier-test")
}

// Available reports nil when the control plane binaries are built.
func Available() error {
	var missing []string
	for _, p := range []string{EtcdPath(), filepath.Join(BinDir(), "kube-apiserver"), filepath.Join(BinDir(), "kubectl")} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("test control plane not built (run `make kubeapi`): missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// Require skips t when the binaries are missing, or fails it when the CI
// environment variable is set, where `make test` builds them first.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		testenv.Missing(t, err.Error())
	}
}

// Start runs etcd and a kube-apiserver until the test ends, creates the
// default service accounts of "default" and "kube-system", and returns an
// admin client.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	Require(t)
	s, err := start(t, opts)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return s
}

func start(t testing.TB, opts Options) (*Server, error) {
	began := time.Now()
	// Not t.TempDir: unix socket and path lengths stay short, and the
	// processes are gone before the directory is removed.
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ca := opts.CA
	if ca == nil {
		if ca, err = testpki.NewCA(); err != nil {
			return nil, err
		}
	}
	s := &Server{CA: ca, dir: dir, AuditLog: filepath.Join(dir, "audit.log")}
	ports := testenv.FreePorts(t, 3)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	etcd := s.command(t, "etcd", EtcdPath(),
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"), "--unsafe-no-fsync",
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--log-level=warn")
	if err := etcd.Start(); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	_ = stopOnCleanup(t, etcd)

	files, err := s.writeFiles(opts)
	if err != nil {
		return nil, err
	}
	s.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[2]),
		"--tls-cert-file=" + files["serving.crt"], "--tls-private-key-file=" + files["serving.key"],
		"--client-ca-file=" + files["ca.crt"],
		"--service-account-key-file=" + files["sa.pub"], "--service-account-signing-key-file=" + files["sa.key"],
		"--service-account-issuer=https://kubernetes.default.svc", "--api-audiences=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC", "--allow-privileged=true",
		"--audit-policy-file=" + files["audit-policy.yaml"],
		"--audit-log-path=" + s.AuditLog, "--audit-log-format=json",
		"--endpoint-reconciler-type=none", // no kubernetes Service endpoints: the address is loopback
		"--profiling=false", "--v=0",
	}
	if opts.AuditWebhookURL != "" {
		args = append(args, "--audit-webhook-config-file="+files["audit-webhook.kubeconfig"],
			"--audit-webhook-batch-max-wait=1s")
	}
	s.t, s.apiArgs = t, args
	apiserver, err := s.startAPIServer()
	if err != nil {
		return nil, err
	}

	admin, err := ca.Issue(testpki.Cert{CommonName: "harrier-test-admin", Organization: []string{"system:masters"}})
	if err != nil {
		return nil, err
	}
	s.Config = &rest.Config{
		Host: s.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: ca.PEM, CertData: admin.CertPEM, KeyData: admin.KeyPEM,
		},
		QPS: 200, Burst: 400,
	}
	s.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, kubeconfig(s.URL, ca.PEM, admin), 0o600); err != nil {
		return nil, err
	}
	if s.Client, err = kubernetes.NewForConfig(s.Config); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := s.waitReady(ctx, apiserver); err != nil {
		return nil, err
	}
	for _, ns := range []string{"default", "kube-system"} {
		if err := s.EnsureServiceAccount(ctx, ns, "default"); err != nil {
			return nil, err
		}
	}
	s.StartTime = time.Since(began)
	t.Logf("kubetest: API server %s ready in %v", s.URL, s.StartTime.Round(time.Millisecond))
	return s, nil
}

// EnsureServiceAccount creates namespace/name (and the namespace) unless
// they exist: with no controller-manager nobody else does.
func (s *Server) EnsureServiceAccount(ctx context.Context, namespace, name string) error {
	_, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	_, err = s.Client.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	return nil
}

// Kubectl runs the test kubectl against the server as admin.
func (s *Server) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(BinDir(), "kubectl"), append([]string{"--kubeconfig=" + s.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (s *Server) waitReady(ctx context.Context, apiserver *exec.Cmd) error {
	exited := make(chan struct{})
	go func() {
		// Process.Wait is owned by stopOnCleanup; poll for exit instead.
		for ctx.Err() == nil {
			if apiserver.Process.Signal(syscall.Signal(0)) != nil {
				close(exited)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	rc := s.Client.CoreV1().RESTClient()
	var last error
	for {
		body, err := rc.Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil {
			return nil
		}
		last = fmt.Errorf("%w: %s", err, body)
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w (see %s)", last, filepath.Join(s.dir, "kube-apiserver.log"))
		case <-exited:
			return fmt.Errorf("kube-apiserver exited: %s", tail(filepath.Join(s.dir, "kube-apiserver.log")))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// command prepares a process logging to dir/name.log.
func (s *Server) command(t testing.TB, name, path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	f, err := os.Create(filepath.Join(s.dir, name+".log"))
	if err == nil {
		cmd.Stdout, cmd.Stderr = f, f
		t.Cleanup(func() {
			f.Close()
			if t.Failed() {
				t.Logf("kubetest: %s log tail:\n%s", name, tail(f.Name()))
			}
		})
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// stopOnCleanup stops cmd with SIGTERM (SIGKILL after 10 s) when the test
// ends, or earlier when the returned function is called.
func stopOnCleanup(t testing.TB, cmd *exec.Cmd) func() {
	var once sync.Once
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (s *Server) writeFiles(opts Options) (map[string]string, error) {
	serving, err := s.CA.Issue(testpki.Cert{CommonName: "kube-apiserver", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{"localhost", "kubernetes.default.svc"}, Server: true})
	if err != nil {
		return nil, err
	}
	saKey, saPub, err := testpki.ServiceAccountKeys()
	if err != nil {
		return nil, err
	}
	policy := opts.AuditPolicy
	if policy == "" {
		policy = DefaultAuditPolicy
	}
	content := map[string][]byte{
		"ca.crt": s.CA.PEM, "serving.crt": serving.CertPEM, "serving.key": serving.KeyPEM,
		"sa.key": saKey, "sa.pub": saPub, "audit-policy.yaml": []byte(policy),
	}
	if opts.AuditWebhookURL != "" {
		if opts.AuditWebhookToken != "" {
			content["audit-webhook.kubeconfig"] = tokenKubeconfig(opts.AuditWebhookURL, s.CA.PEM, opts.AuditWebhookToken)
		} else {
			client, err := s.CA.Issue(testpki.Cert{CommonName: "kube-apiserver-audit"})
			if err != nil {
				return nil, err
			}
			content["audit-webhook.kubeconfig"] = kubeconfig(opts.AuditWebhookURL, s.CA.PEM, client)
		}
	}
	files := map[string]string{}
	for name, b := range content {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, err
		}
		files[name] = p
	}
	return files, nil
}

// kubeconfig is a one-cluster, one-user kubeconfig (also the format of the
// audit webhook configuration) whose user has a client certificate.
func kubeconfig(server string, caPEM []byte, user testpki.KeyPair) []byte {
	return kubeconfigWithUser(server, caPEM, fmt.Sprintf("client-certificate-data: %s\n    client-key-data: %s",
		b64(user.CertPEM), b64(user.KeyPEM)))
}

// tokenKubeconfig is kubeconfig with a bearer token for the user.
func tokenKubeconfig(server string, caPEM []byte, token string) []byte {
	return kubeconfigWithUser(server, caPEM, fmt.Sprintf("token: %q", token))
}

func kubeconfigWithUser(server string, caPEM []byte, user string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: %q
    certificate-authority-data: %s
users:
- name: u
  user:
    %s
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`, server, b64(caPEM), user)
}

// tail is the last lines of a log file.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 40 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Ping checks the API server answers /readyz.
func (s *Server) Ping(ctx context.Context) error {
	_, err := s.Client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
