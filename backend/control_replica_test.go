package backend

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

// TestResponseControlAcrossReplicas: two replicated backends over real
// nats-servers share the response control. Policies pushed to one are
// the other's, with the same version; a command issued at one is sent by
// the other (the agent's), whose agent's answer is then the first's too.
func TestResponseControlAcrossReplicas(t *testing.T) {
	nodes := natstest.Cluster(t)
	cfg := replicate.Config{Servers: natstest.URLs(nodes), Replicas: 3}
	signer := testCommandSigner(t)
	var err error
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	a, _ := startTestReplica(ctx, t, &wg, cfg, "a", signer, IdentityConfig{})
	b, _ := startTestReplica(ctx, t, &wg, cfg, "b", signer, IdentityConfig{})

	policies := []byte("apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n  - {name: kill, mode: enforce, match: {detections: [miner]}, actions: [kill-process-tree]}\n")
	var set PolicyState
	testenv.WaitFor(t, time.Minute, "policies pushed to replica a", func() bool {
		set, err = a.SetPolicies(ctx, policies, "test")
		return err == nil
	})
	testenv.WaitFor(t, 10*time.Second, "replica b has a's policies", func() bool {
		p, err := b.Policies(ctx)
		return err == nil && p.Version == set.Version && p.YAML == string(policies)
	})

	start := time.Now().Add(-time.Minute)
	rec, err := a.Issue(ctx, CommandRequest{AgentID: "node-1", Action: "kill-process-tree", Target: CommandTarget{PID: 42, StartTime: &start}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	// The agent is connected to b: b sends it the policies and a's command.
	var ctl *api.Control
	testenv.WaitFor(t, 10*time.Second, "replica b has a's command for node-1", func() bool {
		ctl, err = b.PendingControl(ctx, "node-1", transport.ControlSent{})
		return err == nil && len(ctl.GetCommands()) == 1
	})
	if ctl.GetResponsePolicies().GetVersion() != set.Version {
		t.Errorf("b sends policies version %d, want %d", ctl.GetResponsePolicies().GetVersion(), set.Version)
	}
	ack := &api.ControlAck{ResponsePoliciesVersion: set.Version, Results: []*api.CommandResult{
		{Id: rec.ID, Response: &api.Response{Outcome: "done", Pids: []uint32{42}}}}}
	if err := b.ControlAcked(ctx, "node-1", ctl, ack); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "replica a has node-1's answer", func() bool {
		got, err := a.Command(ctx, rec.ID)
		agents, _ := a.AgentControls(ctx)
		return err == nil && got.State == "done" && agents["node-1"].PoliciesVersion == set.Version
	})
	if ctl, err := a.PendingControl(ctx, "node-1", transport.ControlSent{Policies: set.Version}); err != nil || len(ctl.GetCommands()) != 0 {
		t.Errorf("answered command still pending at a: %v %v", ctl, err)
	}
	// The same change applied again (a replica's crash before it saved its
	// position) changes nothing.
	p, _ := a.Policies(ctx)
	if err := a.applyPolicies(PolicyState{YAML: "again"}, set.Version); err != nil {
		t.Fatal(err)
	}
	if again, _ := a.Policies(ctx); again.Version != p.Version || again.YAML != p.YAML {
		t.Errorf("a replayed policies change made version %d (%q)", again.Version, again.YAML)
	}

	// An alert exception made at b is a's with the same version, sent by a
	// to its agent; a deletion at a is b's.
	x, err := b.AddException(ctx, ExceptionRequest{Detection: "miner", Scope: ScopeNamespace, Namespace: "shop", ExpiresIn: "1h"}, "ana")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "replica a has b's exception", func() bool {
		set, err := a.Exceptions(ctx)
		return err == nil && set.Version == x.Version && len(set.Exceptions) == 1 && set.Exceptions[0].ID == x.ID
	})
	if ctl, err := a.PendingControl(ctx, "node-1", transport.ControlSent{Policies: set.Version}); err != nil ||
		ctl.GetExceptions().GetVersion() != x.Version || ctl.GetExceptions().GetExceptions()[0].GetId() != x.ID {
		t.Errorf("a sends exceptions %v (%v), want version %d with %s", ctl.GetExceptions(), err, x.Version, x.ID)
	}
	if err := a.applyException(exceptionChange{Delete: x.ID, By: "again"}, x.Version); err != nil {
		t.Fatal(err)
	}
	if again, _ := a.Exceptions(ctx); again.Version != x.Version || len(again.Exceptions) != 1 {
		t.Errorf("a replayed exception change made version %d with %d exceptions", again.Version, len(again.Exceptions))
	}
	if err := a.DeleteException(ctx, x.ID, "ana"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "replica b has a's deletion", func() bool {
		set, err := b.Exceptions(ctx)
		return err == nil && set.Version > x.Version && len(set.Exceptions) == 0
	})
}

// startTestReplica starts a replicated backend's shared state (response
// control and identity) over the cluster's stream; its materializer runs
// until ctx ends (wg waits for it).
func startTestReplica(ctx context.Context, t *testing.T, wg *sync.WaitGroup, cfg replicate.Config, name string,
	signer func() (*tls.Certificate, error), icfg IdentityConfig) (*ResponseControl, *Identity) {
	t.Helper()
	st := openTestStore(t, BadgerConfig{})
	log := slog.New(slog.DiscardHandler)
	c := NewResponseControl(st, signer, log)
	id, err := NewIdentity(st, icfg, log)
	if err != nil {
		t.Fatal(err)
	}
	rc := cfg
	rc.ReplicaName = name
	var set *replicaSet
	testenv.WaitFor(t, time.Minute, "replica "+name+" joins the cluster's stream", func() bool {
		r, err := startReplica(rc, st, c, id, log)
		if err != nil {
			return false
		}
		set = r
		return true
	})
	t.Cleanup(func() { _ = set.close() })
	wg.Go(func() { _ = set.records.Run(ctx) })
	wg.Go(func() { _ = set.events.Run(ctx) })
	return c, id
}
