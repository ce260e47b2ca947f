package backend

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

// TestIdentityAcrossReplicas: two replicated backends over real
// nats-servers share enrollment and revocation. A bootstrap token made at
// one enrolls at the other and its uses are counted once for both (two
// enrollments racing for its last use at the two replicas: one wins); a
// revocation made at one refuses the agent at the other (handshakes,
// renewals, enrollments) and closes its connections there; an unrevocation
// at the other accepts it again at both.
func TestIdentityAcrossReplicas(t *testing.T) {
	nodes := natstest.Cluster(t)
	cfg := replicate.Config{Servers: natstest.URLs(nodes), Replicas: 3}
	caCert, caKey := enrollPKI(t, t.TempDir())
	icfg := IdentityConfig{CACert: caCert, CAKey: caKey, Validity: time.Hour}
	signer := testCommandSigner(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	_, a := startTestReplica(ctx, t, &wg, cfg, "a", signer, icfg)
	_, b := startTestReplica(ctx, t, &wg, cfg, "b", signer, icfg)
	var mu sync.Mutex
	var disconnectedAtB []string
	b.OnRevoke(func(agentID string) { mu.Lock(); disconnectedAtB = append(disconnectedAtB, agentID); mu.Unlock() })
	csr, _ := newCSR(t)
	enroll := func(id *Identity, token, agent string) error {
		_, err := id.Enroll(ctx, EnrollRequest{Kind: KindBootstrap, Token: token, AgentID: agent, CSR: string(csr)})
		return err
	}

	// A token made at a (once the stream takes changes), used at b.
	var twice string
	testenv.WaitFor(t, time.Minute, "replica a makes a bootstrap token", func() bool {
		var err error
		twice, _, err = a.CreateBootstrapToken(time.Hour, 2)
		return err == nil
	})
	testenv.WaitFor(t, 10*time.Second, "replica b enrolls node-1 with a's token", func() bool { return enroll(b, twice, "node-1") == nil })
	if err := enroll(a, twice, "node-1"); err == nil {
		t.Error("replica a enrolled node-1 again while b's enrollment of it holds the ID")
	} else {
		wantIdentityError(t, err, statusConflict, "already enrolled")
	}
	if err := enroll(a, twice, "node-2"); err != nil {
		t.Fatalf("second use of the token at a: %v", err)
	}
	if err := enroll(b, twice, "node-3"); err == nil {
		t.Error("a two-use token enrolled three agents across the replicas")
	} else {
		wantIdentityError(t, err, statusUnauthorized, "used up")
	}

	// Two enrollments race for a token's only use, one at each replica.
	once, _, err := a.CreateBootstrapToken(time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Both replicas have it, so that both pass their own checks and sign:
	// the stream's order decides.
	testenv.WaitFor(t, 10*time.Second, "replica b has the new token", func() bool {
		var tok bootstrapToken
		var found bool
		err := b.db.View(func(txn *badger.Txn) error {
			var err error
			found, err = getJSON(txn, tokenKey(once), &tok)
			return err
		})
		return err == nil && found
	})
	errs := make([]error, 2)
	var race sync.WaitGroup
	for i, id := range []*Identity{a, b} {
		race.Go(func() { errs[i] = enroll(id, once, []string{"node-race-a", "node-race-b"}[i]) })
	}
	race.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("two enrollments with a one-use token at two replicas: errors %v and %v, want exactly one to succeed", errs[0], errs[1])
	}
	enrolledA, err := a.Enrolled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "both replicas list the same enrollments", func() bool {
		enrolledB, err := b.Enrolled(ctx)
		if err != nil || len(enrolledB) != len(enrolledA) {
			return false
		}
		for k, v := range enrolledA {
			if w, ok := enrolledB[k]; !ok || !w.EnrolledAt.Equal(v.EnrolledAt) || !w.NotAfter.Equal(v.NotAfter) {
				return false
			}
		}
		return true
	})
	if len(enrolledA) != 3 {
		t.Errorf("%d agents enrolled, want node-1, node-2 and one of the race: %v", len(enrolledA), enrolledA)
	}

	// A revocation at a refuses node-1 at b.
	if err := b.Authorize("node-1"); err != nil {
		t.Fatalf("node-1 refused before any revocation: %v", err)
	}
	if err := a.Revoke("node-1"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "replica b refuses node-1", func() bool { return b.Authorize("node-1") != nil })
	mu.Lock()
	if len(disconnectedAtB) != 1 || disconnectedAtB[0] != "node-1" {
		t.Errorf("replica b closed the connections of %v, want node-1's", disconnectedAtB)
	}
	mu.Unlock()
	if _, err := b.Renew("node-1", string(csr)); err == nil {
		t.Error("replica b renewed the certificate of node-1, revoked at a")
	} else {
		wantIdentityError(t, err, statusForbidden, "revoked")
	}
	if !b.Revoked()["node-1"].Equal(a.Revoked()["node-1"]) {
		t.Errorf("revocation time: %v at b, %v at a", b.Revoked()["node-1"], a.Revoked()["node-1"])
	}
	if err := b.Unrevoke("node-1"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "replica a accepts node-1 again", func() bool { return a.Authorize("node-1") == nil })
	if _, err := a.Renew("node-1", string(csr)); err != nil {
		t.Errorf("renewal at a after b's unrevocation: %v", err)
	}
}

// FuzzIdentityApplyControl feeds stream messages to a replica's identity:
// whatever the bytes, it returns (an error for what is not a change) and
// a refused or malformed change changes nothing it should not.
func FuzzIdentityApplyControl(f *testing.F) {
	f.Add([]byte(`{"at":"2026-12-07T00:00:00Z","revoke":"node-1"}`))
	f.Add([]byte(`{"at":"2026-12-07T00:00:00Z","unrevoke":"node-1"}`))
	f.Add([]byte(`{"at":"2026-12-07T00:00:00Z","token":{"hash":"` + strings.Repeat("ab", 32) + `","token":{"expires":"2999-01-01T00:00:00Z","uses_left":1}}}`))
	f.Add([]byte(`{"at":"2026-12-07T00:00:00Z","enroll":{"agent_id":"node-2","kind":"bootstrap","token_hash":"` + strings.Repeat("ab", 32) + `"}}`))
	f.Add([]byte(`{"revoke":"../x"}`))
	f.Add([]byte(`not json`))
	st := openTestStore(f, BadgerConfig{})
	id, err := NewIdentity(st, IdentityConfig{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	var seq uint64
	f.Fuzz(func(t *testing.T, change []byte) {
		seq++
		_ = id.ApplyControl(seq, change)
		for agentID := range id.Revoked() {
			if transport.ValidAgentID(agentID) != nil {
				t.Fatalf("revoked an invalid agent ID %q", agentID)
			}
		}
	})
}
