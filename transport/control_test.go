package transport

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// queueControl is a ControlSource holding one policy version and a queue of
// commands per agent; a command leaves the queue when the agent answers it.
type queueControl struct {
	mu       sync.Mutex
	policies *api.PolicyBundle
	commands map[string][]*api.SignedCommand
	acks     []*api.ControlAck
	sentWith []uint64
}

func (q *queueControl) PendingControl(_ context.Context, agentID string, sent ControlSent) (*api.Control, error) {
	policiesSent := sent.Policies
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sentWith = append(q.sentWith, policiesSent)
	c := &api.Control{Commands: q.commands[agentID]}
	if q.policies != nil && q.policies.GetVersion() != policiesSent {
		c.ResponsePolicies = q.policies
	}
	return c, nil
}

func (q *queueControl) ControlAcked(_ context.Context, agentID string, sent *api.Control, ack *api.ControlAck) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.acks = append(q.acks, ack)
	answered := map[string]bool{}
	for _, r := range ack.GetResults() {
		answered[r.GetId()] = true
	}
	var left []*api.SignedCommand
	for _, sc := range q.commands[agentID] {
		var cmd api.Command
		if err := proto.Unmarshal(sc.GetCommand(), &cmd); err != nil || !answered[cmd.GetId()] {
			left = append(left, sc)
		}
	}
	q.commands[agentID] = left
	return nil
}

func (q *queueControl) snapshot() []*api.ControlAck {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*api.ControlAck(nil), q.acks...)
}

// serverSigner is the test PKI's backend key and chain, as the backend
// signs commands with them.
func (p *testPKI) serverSigner(t *testing.T) (*tls.Certificate, [][]byte) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.path("server.crt"), p.path("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &cert, cert.Certificate
}

func (p *testPKI) pool(t *testing.T) *x509.CertPool {
	t.Helper()
	pool, err := LoadCAPool(p.path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

func testCommand(agentID, id string, now time.Time) *api.Command {
	return &api.Command{Id: id, AgentId: agentID, Action: "kill-process-tree",
		Issued: timestamppb.New(now), Expires: timestamppb.New(now.Add(time.Hour)),
		Target: &api.CommandTarget{Pid: 4242, StartTime: timestamppb.New(now.Add(-time.Minute))}, RequestedBy: "test"}
}

func TestControlChannel(t *testing.T) {
	pki := newTestPKI(t, "site")
	cert, chain := pki.serverSigner(t)
	now := time.Now()
	sc, err := SignCommand(testCommand("node-a", "cmd-1", now), cert.PrivateKey.(crypto.Signer), chain)
	if err != nil {
		t.Fatal(err)
	}
	src := &queueControl{policies: &api.PolicyBundle{Version: 3, Yaml: []byte("kind: ResponsePolicies")},
		commands: map[string][]*api.SignedCommand{"node-a": {sc}}}
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t), Control: src, ControlInterval: time.Hour}, newMemSink())

	roots := pki.pool(t)
	var mu sync.Mutex
	var got []*api.Command
	var policies []uint64
	handler := func(_ context.Context, c *api.Control) *api.ControlAck {
		mu.Lock()
		defer mu.Unlock()
		ack := &api.ControlAck{}
		if p := c.GetResponsePolicies(); p != nil {
			policies = append(policies, p.GetVersion())
			ack.ResponsePoliciesVersion = p.GetVersion()
		}
		for _, sc := range c.GetCommands() {
			cmd, err := VerifyCommand(sc, roots, "node-a", time.Now())
			if err != nil {
				ack.Results = append(ack.Results, &api.CommandResult{Id: cmd.GetId(), Refused: err.Error()})
				continue
			}
			got = append(got, cmd)
			ack.Results = append(ack.Results, &api.CommandResult{Id: cmd.GetId(), Response: &api.Response{Outcome: "done"}})
		}
		return ack
	}
	cl, _ := startClient(t, ClientConfig{Addr: srv.Addr().String(), TLS: pki.agentTLS(t, "node-a", pki), AgentID: "node-a",
		HeartbeatInterval: time.Hour, Control: handler}, newSliceSource(nil))

	waitFor(t, "the policies and the command answered", func() bool { return len(src.snapshot()) >= 1 })
	mu.Lock()
	if len(got) != 1 || got[0].GetId() != "cmd-1" || got[0].GetTarget().GetPid() != 4242 || len(policies) != 1 || policies[0] != 3 {
		t.Errorf("agent got commands %v and policies %v; want cmd-1 and version 3", got, policies)
	}
	mu.Unlock()

	// A new command and a new policy version go out when notified, and the
	// answered command is not sent again.
	sc2, err := SignCommand(testCommand("node-a", "cmd-2", time.Now()), cert.PrivateKey.(crypto.Signer), chain)
	if err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.commands["node-a"] = append(src.commands["node-a"], sc2)
	src.policies = &api.PolicyBundle{Version: 4}
	src.mu.Unlock()
	srv.NotifyControl("node-a")
	waitFor(t, "the second control answered", func() bool { return len(src.snapshot()) >= 2 })
	mu.Lock()
	if len(got) != 2 || got[1].GetId() != "cmd-2" || len(policies) != 2 || policies[1] != 4 {
		t.Errorf("after notify: commands %v, policies %v; want cmd-1, cmd-2 and versions 3, 4", got, policies)
	}
	mu.Unlock()
	if st := srv.Stats(); st.Controls < 2 || st.ControlErrors != 0 {
		t.Errorf("server stats %+v: want 2 controls answered, no errors", st)
	}
	if st := cl.Stats(); st.Controls < 2 {
		t.Errorf("client stats %+v: want 2 controls answered", st)
	}
}

// A client without a control handler refuses the backend's streams: the
// server counts the failure and the uplink keeps working.
func TestControlToOldAgent(t *testing.T) {
	pki := newTestPKI(t, "site")
	src := &queueControl{policies: &api.PolicyBundle{Version: 1}, commands: map[string][]*api.SignedCommand{}}
	sink := newMemSink()
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t), Control: src, ControlInterval: time.Hour}, sink)
	startClient(t, ClientConfig{Addr: srv.Addr().String(), TLS: pki.agentTLS(t, "old", pki), AgentID: "old"},
		newSliceSource(makeRecords(10, nil)))
	waitFor(t, "records delivered", func() bool { return sink.records() == 10 })
	waitFor(t, "the control failure counted", func() bool { return srv.Stats().ControlErrors >= 1 })
	if len(src.snapshot()) != 0 {
		t.Error("an agent without a handler answered a control")
	}
}

func TestVerifyCommand(t *testing.T) {
	site, other := newTestPKI(t, "site"), newTestPKI(t, "other")
	cert, chain := site.serverSigner(t)
	otherCert, otherChain := other.serverSigner(t)
	now := time.Now()
	sign := func(cmd *api.Command, c *tls.Certificate, ch [][]byte) *api.SignedCommand {
		sc, err := SignCommand(cmd, c.PrivateKey.(crypto.Signer), ch)
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	good := sign(testCommand("node-a", "c1", now), cert, chain)
	tampered := proto.Clone(good).(*api.SignedCommand)
	tampered.Command = bytes.Replace(tampered.Command, []byte("kill-process-tree"), []byte("stop-container\x00\x00\x00"), 1)
	expired := testCommand("node-a", "c2", now.Add(-3*time.Hour))
	future := testCommand("node-a", "c3", now.Add(time.Hour))
	// An agent certificate chains to the CA too, but is no server.
	agentCert, agentKey, err := IssueAgent(site.caCert, site.caKey, "node-b", testValidity)
	if err != nil {
		t.Fatal(err)
	}
	agentPair, err := tls.X509KeyPair(agentCert, agentKey)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		sc   *api.SignedCommand
		want string // "" accepts
	}{
		{"good", good, ""},
		{"another agent's", sign(testCommand("node-b", "c4", now), cert, chain), "addressed to agent"},
		{"tampered", tampered, "bad signature"},
		{"another site's backend", sign(testCommand("node-a", "c5", now), otherCert, otherChain), "not this site's backend"},
		{"signed by an agent", sign(testCommand("node-a", "c6", now), &agentPair, agentPair.Certificate), "not this site's backend"},
		{"expired", sign(expired, cert, chain), "expired"},
		{"issued in the future", sign(future, cert, chain), "future"},
		{"no chain", &api.SignedCommand{Command: good.Command, Signature: good.Signature}, "no signer"},
	}
	roots := site.pool(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := VerifyCommand(tc.sc, roots, "node-a", now)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "" && cmd.GetId() == "":
				t.Fatal("accepted command has no ID")
			case tc.want != "" && (err == nil || !errors.Is(err, ErrCommandRefused) || !bytes.Contains([]byte(err.Error()), []byte(tc.want))):
				t.Fatalf("error %v, want ErrCommandRefused saying %q", err, tc.want)
			}
		})
	}
}

func FuzzReadControl(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteControl(&buf, &api.Control{ResponsePolicies: &api.PolicyBundle{Version: 2, Yaml: []byte("x: 1")},
		Commands:   []*api.SignedCommand{{Command: []byte{1, 2}, Signature: []byte{3}}},
		Exceptions: &api.ExceptionBundle{Version: 3, Exceptions: []*api.AlertException{{Id: "exc-1", Namespaces: []string{"shop"}, Commands: []string{"curl *"}}}}}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(header(0))
	f.Add([]byte{0, 0, 0, 2, 0x0a, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ReadControl(bytes.NewReader(data), fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error does not wrap ErrBadFrame: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteControl(&out, c); err != nil {
			t.Fatal(err)
		}
		// Whatever decodes must verify to a refusal or a command, never panic.
		for _, sc := range c.GetCommands() {
			_, _ = VerifyCommand(sc, x509.NewCertPool(), "a", time.Now())
		}
	})
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
