package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/response"
	"github.com/harrier-sec/harrier/transport"
)

// TestControlHandlerAnswersOnce: a command resent after a lost answer, or
// after an agent restart, gets its first answer again and is not carried out
// twice; a command for another agent or signed by no backend of this site is
// refused; a policy bundle that does not load leaves the policies in force.
func TestControlHandlerAnswersOnce(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, err := transport.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFiles(dir, "ca", caCert, nil); err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(agentID, id string) *api.SignedCommand {
		now := time.Now()
		sc, err := transport.SignCommand(&api.Command{Id: id, AgentId: agentID, Issued: timestamppb.New(now),
			Expires: timestamppb.New(now.Add(time.Hour)), Action: response.ActionResumeContainer,
			Target: &api.CommandTarget{ContainerId: "c", Cgroup: "/harrier-no-such-cgroup"}}, pair.PrivateKey.(crypto.Signer), pair.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	var mu sync.Mutex
	var records []*api.Event
	newHandler := func() *controlHandler {
		log := slog.New(slog.DiscardHandler)
		rules, err := analytics.LoadRules()
		if err != nil {
			t.Fatal(err)
		}
		engine, err := analytics.NewEngine(analytics.Config{}, rules, analytics.Options{Node: "node"})
		if err != nil {
			t.Fatal(err)
		}
		rr := &responseRunner{record: func(ev *api.Event) { mu.Lock(); records = append(records, ev); mu.Unlock() },
			dir: filepath.Join(dir, "response"), log: log}
		rr.r = response.NewResponder(nil, "node", rr.record, log)
		h, err := newControlHandler("node-a", filepath.Join(dir, "ca.crt"), rr, newExceptionsRunner(engine, dir, log), log)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	h := newHandler()
	cmd := sign("node-a", "cmd-1")
	first := h.handle(context.Background(), &api.Control{Commands: []*api.SignedCommand{cmd, sign("node-b", "cmd-2")}})
	if len(first.GetResults()) != 2 || first.GetResults()[0].GetResponse().GetOutcome() != response.OutcomeFailed ||
		first.GetResults()[1].GetRefused() == "" {
		t.Fatalf("first answer %v: want cmd-1 carried out (failed: no such cgroup), cmd-2 refused", first)
	}
	again := h.handle(context.Background(), &api.Control{Commands: []*api.SignedCommand{cmd}})
	restarted := newHandler().handle(context.Background(), &api.Control{Commands: []*api.SignedCommand{cmd}})
	for _, ack := range []*api.ControlAck{again, restarted} {
		if len(ack.GetResults()) != 1 || ack.GetResults()[0].GetResponse().GetError() != first.GetResults()[0].GetResponse().GetError() {
			t.Errorf("repeat answered %v, want the first answer", ack)
		}
	}
	mu.Lock()
	if len(records) != 1 {
		t.Errorf("%d response records, want 1: the command was carried out more than once", len(records))
	}
	mu.Unlock()

	// Policies: a good bundle is applied and kept; a bad one is refused and
	// the good one stays in force.
	good := []byte("apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies: [{name: p, mode: audit, match: {minSeverity: high}, actions: [kill-process-tree]}]\n")
	ack := h.handle(context.Background(), &api.Control{ResponsePolicies: &api.PolicyBundle{Version: 7, Yaml: good}})
	if ack.GetResponsePoliciesVersion() != 7 || ack.GetResponsePoliciesError() != "" {
		t.Fatalf("good bundle: %v", ack)
	}
	ack = h.handle(context.Background(), &api.Control{ResponsePolicies: &api.PolicyBundle{Version: 8, Yaml: []byte("kind: x\n")}})
	if ack.GetResponsePoliciesVersion() != 7 || ack.GetResponsePoliciesError() == "" {
		t.Errorf("bad bundle: %v, want version 7 kept and the error", ack)
	}
	if len(h.response.r.Policies().Policies) != 1 {
		t.Error("the bad bundle replaced the policies in force")
	}
	kept, err := os.ReadFile(filepath.Join(dir, "response", backendPoliciesFile))
	if err != nil || string(kept) != string(good) {
		t.Errorf("kept on disk: %q %v", kept, err)
	}
	f, version, err := newHandler().response.loadBackendPolicies()
	if err != nil || version != 7 || len(f.Policies) != 1 {
		t.Errorf("reloaded: %v version %d %v", f, version, err)
	}

	// Alert exceptions: applied to the engine, acknowledged, kept for a
	// restart; a bad bundle is refused and the set in force stays.
	bundle := &api.ExceptionBundle{Version: 4, Exceptions: []*api.AlertException{{Id: "exc-1", Detection: "sensitive-files",
		Namespaces: []string{"shop"}, Expires: timestamppb.New(time.Now().Add(time.Hour))}}}
	ack = h.handle(context.Background(), &api.Control{Exceptions: bundle})
	if ack.GetExceptionsVersion() != 4 || ack.GetExceptionsError() != "" || h.exceptions.version() != 4 {
		t.Fatalf("exceptions bundle: ack %v, engine version %d", ack, h.exceptions.version())
	}
	ack = h.handle(context.Background(), &api.Control{Exceptions: &api.ExceptionBundle{Version: 5, Exceptions: []*api.AlertException{{Id: "empty"}}}})
	if ack.GetExceptionsVersion() != 4 || !strings.Contains(ack.GetExceptionsError(), "sets no field") || h.exceptions.version() != 4 {
		t.Errorf("bad exceptions bundle: ack %v, engine version %d, want 4 kept and the error", ack, h.exceptions.version())
	}
	if ack := h.handle(context.Background(), &api.Control{}); ack.GetExceptionsVersion() != 4 {
		t.Errorf("a control without exceptions acked version %d", ack.GetExceptionsVersion())
	}
	// A restart: the kept bundle is applied to the new engine.
	if v := newHandler().exceptions.version(); v != 4 {
		t.Errorf("after a restart the engine applies exceptions version %d, want 4 from disk", v)
	}
}
