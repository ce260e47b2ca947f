package allinone

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/httpsserve"
	"github.com/harrier-sec/harrier/internal/kubetest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

const testToken = "0123456789abcdef0123456789abcdef"

// growingSource is a spool that keeps filling: records leave only when
// acked.
type growingSource struct {
	mu      sync.Mutex
	pending []*api.Record
	next    uint64
	acked   int
}

func (s *growingSource) add(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.next++
		s.pending = append(s.pending, &api.Record{Seq: s.next, Class: api.RecordClass_RECORD_CLASS_EVENT,
			Payload: &api.Record_Event{Event: &api.Event{Seq: s.next, Node: "node-a", Kind: api.EventKind_EVENT_KIND_EXEC}}})
	}
}

func (s *growingSource) Pending(_ context.Context, maxRecords, _ int) ([]*api.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pending[:min(maxRecords, len(s.pending))]), nil
}

func (s *growingSource) Acked(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := len(s.pending)
	s.pending = slices.DeleteFunc(s.pending, func(r *api.Record) bool { return slices.Contains(seqs, r.GetSeq()) })
	s.acked += before - len(s.pending)
	return nil
}

func (s *growingSource) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// TestEnrollAndRotate: an agent with no certificate enrolls with a
// bootstrap token, delivers over real QUIC on loopback, and renews its
// 6-second certificate several times while batches keep flowing (the
// backend closes each connection when its certificate expires, so every
// reconnect uses the renewed one). Every record reaches the store: 0 lost.
func TestEnrollAndRotate(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if _, _, err := transport.InitCA(pki); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueBackendCert(pki, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	const validity = 6 * time.Second
	svc, err := backend.NewService(backend.Config{
		DataDir: filepath.Join(dir, "backend"), APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Token: testToken,
		CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "backend.crt"), KeyFile: filepath.Join(pki, "backend.key"),
		CAKeyFile: filepath.Join(pki, "ca.key"), APITLS: true, Enroll: backend.EnrollConfig{CertValidity: confval.Duration(validity)},
	}, log.With("side", "backend"))
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := svc.Identity().CreateBootstrapToken(time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	agentDir := filepath.Join(dir, "agent")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(agentDir, "bootstrap-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := agent.WithDefaults(agent.Config{DataDir: agentDir, Uplink: agent.UplinkConfig{
		CAFile: filepath.Join(pki, "ca.crt"), ServerName: "127.0.0.1",
		Enroll: agent.EnrollConfig{Server: "https://" + svc.APIAddr().String(), TokenFile: tokenFile, Kind: agent.EnrollBootstrap},
	}}).Uplink
	if err := os.MkdirAll(filepath.Dir(up.CertFile), 0o700); err != nil {
		t.Fatal(err)
	}
	enroller, err := agent.NewEnroller(up, "node-a", log.With("side", "agent"))
	if err != nil {
		t.Fatal(err)
	}
	enroller.BackoffMin, enroller.BackoffMax = 50*time.Millisecond, 500*time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g errgroup.Group
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
	}()
	g.Go(func() error { return svc.Run(ctx) })

	// A certificate left on the node by another CA (the site made a new
	// one; the disk outlived the agent): not presented, and replaced.
	stale := filepath.Join(dir, "stale-pki")
	if _, _, err := transport.InitCA(stale); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueAgentCert(stale, "node-a", "agent"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ from, to string }{{"agent.crt", up.CertFile}, {"agent.key", up.KeyFile}} {
		b, err := os.ReadFile(filepath.Join(stale, f.from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Records pile up before the agent has a certificate: nothing is lost.
	src := &growingSource{}
	src.add(100)
	if err := enroller.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if leaf, err := enroller.Current(); err != nil {
		t.Fatalf("after enrolling over another CA's certificate: %v", err)
	} else if leaf.Issuer.CommonName == "" {
		t.Fatal("enrolled certificate has no issuer")
	}
	certs, err := httpsserve.LoadCertFiles(up.CertFile, up.KeyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(up.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v: want mode 0600", fi, err)
	}
	id, err := transport.CertAgentID(certs.Leaf())
	if err != nil || id != "node-a" {
		t.Fatalf("enrolled as %q, %v; want node-a", id, err)
	}
	var reloads atomic.Int32
	g.Go(func() error {
		return enroller.Run(ctx, func() error { reloads.Add(1); return certs.Reload() })
	})
	tlsConf, err := transport.ClientTLSWith(certs.GetClientCertificate, up.CAFile, up.ServerName)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := transport.NewClient(transport.ClientConfig{
		Addr: svc.IngestAddr().String(), TLS: tlsConf, AgentID: id, BatchRecords: 50,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	}, src, log.With("side", "uplink"))
	if err != nil {
		t.Fatal(err)
	}
	g.Go(func() error { return cl.Run(ctx) })

	// Keep producing for long enough for three or more renewals.
	deadline := time.Now().Add(3*validity + 2*time.Second)
	for time.Now().Before(deadline) {
		src.add(20)
		time.Sleep(50 * time.Millisecond)
	}
	produced := int(src.next)
	testenv.WaitFor(t, 30*time.Second, "every record acked", func() bool { return src.left() == 0 })
	if n := reloads.Load(); n < 3 {
		t.Fatalf("%d renewals, want at least 3", n)
	}
	st := cl.Stats()
	stored := storedRecords(t, svc, filepath.Join(pki, "ca.crt"), "node-a")
	t.Logf("produced %d, stored %d, renewals %d, reconnects %d", produced, stored, reloads.Load(), st.Reconnects)
	if stored != produced {
		t.Fatalf("backend stored %d records, agent produced %d: want 0 lost", stored, produced)
	}
	if leaf := certs.Leaf(); time.Until(leaf.NotAfter) <= 0 {
		t.Fatalf("certificate in use expired at %v", leaf.NotAfter)
	}
}

// storedRecords asks the API how many records the agent's batches stored.
func storedRecords(t *testing.T, svc *backend.Service, caFile, agentID string) int {
	t.Helper()
	pool, err := transport.LoadCAPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+svc.APIAddr().String()+"/api/v1/agents", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Agents []struct {
			AgentID string `json:"agent_id"`
			Records int    `json:"records"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	for _, a := range out.Agents {
		if strings.EqualFold(a.AgentID, agentID) {
			return a.Records
		}
	}
	return 0
}

// TestServiceAccountEnrollAgent: the agent side of Kubernetes enrollment
// against a real kube-apiserver: the pod's projected token (audience
// harrier) gets a certificate naming the pod's node, whatever the host is
// called; an agent whose config pins another ID stops with an error naming
// both instead of retrying.
func TestServiceAccountEnrollAgent(t *testing.T) {
	kube := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := kube.EnsureServiceAccount(ctx, "harrier", "harrier-agent"); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-3"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := kube.Client.CoreV1().Pods("harrier").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "harrier-agent-abcde"},
		Spec: corev1.PodSpec{ServiceAccountName: "harrier-agent", NodeName: "worker-3",
			Containers: []corev1.Container{{Name: "agent", Image: "harrier"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := kube.Client.CoreV1().ServiceAccounts("harrier").CreateToken(ctx, "harrier-agent", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{backend.Audience}, ExpirationSeconds: new(int64(3600)),
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if _, _, err := transport.InitCA(pki); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueBackendCert(pki, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	svc, err := backend.NewService(backend.Config{
		DataDir: filepath.Join(dir, "backend"), APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Token: testToken,
		CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "backend.crt"), KeyFile: filepath.Join(pki, "backend.key"),
		CAKeyFile: filepath.Join(pki, "ca.key"), APITLS: true,
		Enroll: backend.EnrollConfig{ServiceAccount: "harrier/harrier-agent", Kubeconfig: kube.Kubeconfig},
	}, log.With("side", "backend"))
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
	}()
	g.Go(func() error { return svc.Run(ctx) })
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}

	enroller := func(name, pinned string) (*agent.Enroller, agent.UplinkConfig) {
		up := agent.WithDefaults(agent.Config{DataDir: filepath.Join(dir, name), Uplink: agent.UplinkConfig{
			AgentID: pinned, CAFile: filepath.Join(pki, "ca.crt"), ServerName: "127.0.0.1",
			Enroll: agent.EnrollConfig{Server: "https://" + svc.APIAddr().String(), TokenFile: tokenFile, Kind: agent.EnrollServiceAccount},
		}}).Uplink
		// Only the data directory, as on a fresh node (the chart's
		// hostPath): the enroller makes pki/ itself.
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		e, err := agent.NewEnroller(up, "some-host-name", log.With("side", name))
		if err != nil {
			t.Fatal(err)
		}
		e.BackoffMin, e.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
		return e, up
	}
	e, up := enroller("agent", "")
	if err := e.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	id, _, err := transport.CertFileAgentID(up.CertFile)
	if err != nil || id != "worker-3" {
		t.Fatalf("enrolled as %q, %v; want the pod's node worker-3", id, err)
	}

	pinned, up := enroller("pinned", "host-b")
	err = pinned.Ensure(ctx)
	if err == nil || !strings.Contains(err.Error(), `uplink.agentID is "host-b"`) || !strings.Contains(err.Error(), `"worker-3"`) {
		t.Fatalf("Ensure with a pinned ID = %v, want an error naming host-b and worker-3", err)
	}
	if _, err := os.Stat(up.CertFile); err == nil {
		t.Fatal("a certificate for another agent was written")
	}
}
