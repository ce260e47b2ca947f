package leader

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/kubetest"
)

func TestConfigValidate(t *testing.T) {
	d := func(s string) confval.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return confval.Duration(v)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{"defaults", Config{}, ""},
		{"short test durations", Config{LeaseDuration: d("2s"), RenewDeadline: d("1.5s"), RetryPeriod: d("300ms")}, ""},
		{"renew not below lease", Config{LeaseDuration: d("10s")}, "renewDeadline 10s: must be shorter than leaseDuration 10s"},
		{"renew against default lease", Config{RenewDeadline: d("20s")}, "must be shorter than leaseDuration 15s"},
		{"retry too long for renew", Config{RetryPeriod: d("9s")}, "must be longer than 1.2 × retryPeriod 9s"},
		{"negative", Config{RetryPeriod: d("-1s")}, "must not be negative"},
		{"sub-second lease", Config{LeaseDuration: d("500ms"), RenewDeadline: d("400ms"), RetryPeriod: d("100ms")}, "at least 1s"},
		{"long name", Config{LeaseName: strings.Repeat("a", 254)}, "longer than 253"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	dir := t.TempDir()
	nsFile := filepath.Join(dir, "namespace")
	if got := (Config{}).WithDefaults(nsFile); got.Namespace != DefaultNamespace || got.LeaseName != DefaultLeaseName ||
		got.LeaseDuration.Std() != DefaultLeaseDuration || got.RenewDeadline.Std() != DefaultRenewDeadline || got.RetryPeriod.Std() != DefaultRetryPeriod {
		t.Errorf("defaults without a pod namespace: %+v", got)
	}
	if err := os.WriteFile(nsFile, []byte("security\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := (Config{}).WithDefaults(nsFile).Namespace; got != "security" {
		t.Errorf("namespace from the service account file = %q", got)
	}
	if got := (Config{Namespace: "mine"}).WithDefaults(nsFile).Namespace; got != "mine" {
		t.Errorf("configured namespace overridden: %q", got)
	}
	if (Config{}).On() != true || (Config{Enabled: new(false)}).On() {
		t.Error("On: enabled by default, off when set false")
	}
}

// candidate runs one elector and records its terms of leadership.
type candidate struct {
	e      *Elector
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	starts []time.Time
	stops  []time.Time // when lead saw its context end and returned
}

func (c *candidate) terms() (starts, stops int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.starts), len(c.stops)
}

func (c *candidate) leading() bool {
	s, e := c.terms()
	return s > e
}

func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

var testTiming = Config{LeaseDuration: confval.Duration(2 * time.Second), RenewDeadline: confval.Duration(1500 * time.Millisecond),
	RetryPeriod: confval.Duration(300 * time.Millisecond)}

func campaign(t *testing.T, rc *rest.Config, namespace, lease, id string, release bool) *candidate {
	t.Helper()
	leases, err := NewLeases(rc, namespace)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testTiming
	cfg.LeaseName = lease
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("candidate", id)
	e, err := New(leases, cfg, id, log)
	if err != nil {
		t.Fatal(err)
	}
	e.ReleaseOnCancel = release
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{e: e, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		e.Run(ctx, func(ctx context.Context) {
			c.mu.Lock()
			c.starts = append(c.starts, time.Now())
			c.mu.Unlock()
			<-ctx.Done()
			// A task that takes a moment to wind down: the lease must not
			// be handed over before it has.
			time.Sleep(100 * time.Millisecond)
			c.mu.Lock()
			c.stops = append(c.stops, time.Now())
			c.mu.Unlock()
		})
	}()
	t.Cleanup(c.stop)
	return c
}

// waitLeader waits until exactly one of cs leads and returns it.
func waitLeader(t *testing.T, within time.Duration, cs ...*candidate) *candidate {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var leaders []*candidate
		for _, c := range cs {
			if c.leading() {
				leaders = append(leaders, c)
			}
		}
		if len(leaders) > 1 {
			t.Fatalf("%d leaders at once", len(leaders))
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader within %v", within)
	return nil
}

// neverTwo fails t if both candidates lead at the same moment during d.
func neverTwo(t *testing.T, d time.Duration, a, b *candidate) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if a.leading() && b.leading() {
			t.Fatal("two leaders at once")
		}
	}
}

// TestElectionAPIServer runs electors against a real API server: one
// leads; a clean stop hands over at once; a crash-like stop (no release)
// hands over once the lease expires; a leader that can no longer renew
// (its RBAC revoked) stops leading within RenewDeadline.
func TestElectionAPIServer(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "harrier"
	if err := srv.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}

	t.Run("release on cancel", func(t *testing.T) {
		a := campaign(t, srv.Config, ns, "release", "node-a", true)
		b := campaign(t, srv.Config, ns, "release", "node-b", true)
		first := waitLeader(t, 5*time.Second, a, b)
		other := map[*candidate]*candidate{a: b, b: a}[first]
		neverTwo(t, 1500*time.Millisecond, a, b) // several renewals pass
		if n, _ := first.terms(); n != 1 {
			t.Fatalf("leader started %d terms", n)
		}
		if other.e.Holder() != first.e.Identity() {
			t.Errorf("follower sees holder %q, want %q", other.e.Holder(), first.e.Identity())
		}
		stopped := time.Now()
		first.stop()
		second := waitLeader(t, 2*time.Second, a, b)
		if second != other {
			t.Fatal("the stopped candidate leads")
		}
		took := time.Since(stopped)
		first.mu.Lock()
		oldStop := first.stops[0]
		first.mu.Unlock()
		other.mu.Lock()
		newStart := other.starts[0]
		other.mu.Unlock()
		if !oldStop.Before(newStart) {
			t.Errorf("new leader started at %v before the old one's task ended at %v", newStart, oldStop)
		}
		// Released: faster than waiting out the 2s lease.
		if took > 1500*time.Millisecond {
			t.Errorf("takeover after release took %v", took)
		}
		lease, err := srv.Client.CoordinationV1().Leases(ns).Get(ctx, "release", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if h := deref(lease.Spec.HolderIdentity); h != other.e.Identity() || lease.Spec.LeaseTransitions == nil || *lease.Spec.LeaseTransitions != 1 {
			t.Errorf("lease holder %q transitions %v", h, lease.Spec.LeaseTransitions)
		}
		t.Logf("takeover after release: %v", took)
	})

	t.Run("crash without release", func(t *testing.T) {
		a := campaign(t, srv.Config, ns, "crash", "node-a", false)
		waitLeader(t, 5*time.Second, a)
		b := campaign(t, srv.Config, ns, "crash", "node-b", false)
		neverTwo(t, 2500*time.Millisecond, a, b) // longer than the lease: a renews
		if b.leading() {
			t.Fatal("follower took a renewed lease")
		}
		stopped := time.Now()
		a.stop()
		if waitLeader(t, 5*time.Second, a, b) != b {
			t.Fatal("stopped candidate leads")
		}
		took := time.Since(stopped)
		// b takes over once the lease it last saw renewed is 2s old.
		if took < 1500*time.Millisecond || took > 3500*time.Millisecond {
			t.Errorf("takeover after a crash took %v, want about the 2s lease", took)
		}
		t.Logf("takeover after crash: %v", took)
	})

	t.Run("renewal refused", func(t *testing.T) {
		// Each candidate a service account allowed what the chart's Role
		// allows: get, create and update leases in the namespace.
		_, err := srv.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "lease"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}}}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		clientFor := func(sa string) *rest.Config {
			if err := srv.EnsureServiceAccount(ctx, ns, sa); err != nil {
				t.Fatal(err)
			}
			_, err := srv.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
				RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "lease"},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := srv.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return &rest.Config{Host: srv.URL, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: srv.CA.PEM}}
		}
		a := campaign(t, clientFor("agent-a"), ns, "revoked", "node-a", true)
		waitLeader(t, 10*time.Second, a) // RBAC's cache may take a moment
		b := campaign(t, clientFor("agent-b"), ns, "revoked", "node-b", true)
		neverTwo(t, time.Second, a, b)
		revoked := time.Now()
		if err := srv.Client.RbacV1().RoleBindings(ns).Delete(ctx, "agent-a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		for a.leading() {
			if time.Since(revoked) > 5*time.Second {
				t.Fatal("leader kept leading without renewing")
			}
			time.Sleep(20 * time.Millisecond)
		}
		lost := time.Since(revoked)
		if waitLeader(t, 5*time.Second, a, b) != b {
			t.Fatal("revoked candidate leads")
		}
		took := time.Since(revoked)
		a.mu.Lock()
		oldStop := a.stops[0]
		a.mu.Unlock()
		b.mu.Lock()
		newStart := b.starts[0]
		b.mu.Unlock()
		if !oldStop.Before(newStart) {
			t.Errorf("new leader started at %v, before the revoked one stopped at %v", newStart, oldStop)
		}
		t.Logf("revoked leader stopped after %v; takeover after %v", lost, took)
	})
}
