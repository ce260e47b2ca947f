package response

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestExecGuardDrift: in a real runc container, a copy of busybox written
// into the container's writable layer after it started is a drift binary.
// Whose first action is to create a file: under enforce it is killed at
// exec and the file never appears; under audit it runs and the hit is
// reported; busybox from the image (the lower layer) always runs. A drift
// entry scoped to a namespace covers only the containers observed in it.
func TestExecGuardDrift(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		deny   ExecDeny
		ns     string // the observed container's namespace; "" observes none
		killed bool   // the drift binary is killed
		hit    bool   // the kernel reports a hit
	}{
		// No unscoped entry enforces here: it would kill every other test's
		// drift binaries on this machine (tests of other packages run at the
		// same time). The scoped enforce below takes the same kernel path.
		{"audit all containers", ExecDeny{Name: "drift", Mode: ModeAudit, Drift: true}, "", false, true},
		{"enforce in a matching namespace", ExecDeny{Name: "drift", Mode: ModeEnforce, Drift: true, Namespaces: []string{"shop"}}, "shop", true, true},
		{"enforce in another namespace", ExecDeny{Name: "drift", Mode: ModeEnforce, Drift: true, Namespaces: []string{"shop"}}, "dev", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := runctest.Start(t, runctest.Options{})
			g, _, err := StartExecGuard([]ExecDeny{tc.deny}, boot)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			t.Logf("attached with %s", g.Attach)
			observed := &api.Container{Id: c.ID, Cgroup: runctest.CgroupParent + "/" + c.ID, PodNamespace: tc.ns}
			if tc.ns != "" {
				if err := g.ObserveContainer(observed); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			var (
				mu   sync.Mutex
				hits []ExecHit
				wg   sync.WaitGroup
			)
			wg.Go(func() {
				_ = g.Run(ctx, func(h ExecHit) { mu.Lock(); hits = append(hits, h); mu.Unlock() }, slog.New(slog.DiscardHandler))
			})
			defer func() { cancel(); wg.Wait() }()

			// The image's busybox: the lower layer, never drift.
			if out, err := c.Exec(ctx, "/bin/busybox", "touch", "/lower-wrote"); err != nil {
				t.Fatalf("busybox from the image: %v %s", err, out)
			}
			if _, err := os.Stat(c.Path("/lower-wrote")); err != nil {
				t.Errorf("busybox from the image did not run: %v", err)
			}
			// Written after the start: the upper layer.
			if err := c.CopyIn(runctest.BusyboxPath, "/drift/busybox", 0o755); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(c.UpperPath("/drift/busybox")); err != nil {
				t.Fatalf("the copy is not in the upper layer: %v", err)
			}
			out, err := c.Exec(ctx, "/drift/busybox", "touch", "/drift-wrote")
			_, statErr := os.Stat(c.Path("/drift-wrote"))
			if tc.killed {
				if err == nil {
					t.Errorf("the drift binary exited normally, want killed (%s)", out)
				}
				if !errors.Is(statErr, os.ErrNotExist) {
					t.Errorf("the drift binary ran its first instruction: /drift-wrote exists (%v)", statErr)
				}
			} else {
				if err != nil || statErr != nil {
					t.Errorf("the drift binary did not run: %v %s, %v", err, out, statErr)
				}
			}
			if !tc.hit {
				time.Sleep(200 * time.Millisecond)
				mu.Lock()
				defer mu.Unlock()
				if len(hits) != 0 {
					t.Errorf("hits %+v, want none", hits)
				}
				return
			}
			testenv.WaitFor(t, 5*time.Second, "the drift hit", func() bool { mu.Lock(); defer mu.Unlock(); return len(hits) > 0 })
			mu.Lock()
			defer mu.Unlock()
			h := hits[0]
			if len(hits) != 1 || !h.Drift || h.Path != "/drift/busybox" || h.List != "drift" || h.Killed != tc.killed || h.Err != nil || h.TGID == 0 || h.CgroupID == 0 {
				t.Errorf("hits %+v, want one drift hit on /drift/busybox, killed %v", hits, tc.killed)
			}
			if tc.ns != "" && h.Container.GetId() != c.ID {
				t.Errorf("hit names container %q, want %s", h.Container.GetId(), c.ID)
			}
		})
	}
}

func TestExecDenyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		deny ExecDeny
		err  string
	}{
		{"paths", ExecDeny{Name: "a", Mode: ModeEnforce, Paths: []string{"/x"}}, ""},
		{"drift everywhere", ExecDeny{Name: "a", Mode: ModeAudit, Drift: true}, ""},
		{"drift scoped", ExecDeny{Name: "a", Mode: ModeEnforce, Drift: true, Namespaces: []string{"shop"}, Images: []string{"reg/*"}}, ""},
		{"drift and paths", ExecDeny{Name: "a", Mode: ModeEnforce, Drift: true, Paths: []string{"/x"}}, "one or the other"},
		{"neither", ExecDeny{Name: "a", Mode: ModeEnforce}, "no paths"},
		{"scope without drift", ExecDeny{Name: "a", Mode: ModeEnforce, Paths: []string{"/x"}, Namespaces: []string{"shop"}}, "scope drift only"},
		{"bad glob", ExecDeny{Name: "a", Mode: ModeEnforce, Drift: true, Images: []string{"["}}, "image glob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.deny.validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("validate: %v, want %q", err, tc.err)
			}
		})
	}
}

// TestObserveContainerOnce: a container whose cgroup cannot be found is an
// error once, not on each of its events.
func TestObserveContainerOnce(t *testing.T) {
	testenv.RequireRoot(t)
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := StartExecGuard([]ExecDeny{{Name: "drift", Mode: ModeEnforce, Drift: true, Namespaces: []string{"shop"}}}, boot)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	c := &api.Container{Id: "gone", Cgroup: "/harrier-test-no-such-cgroup", PodNamespace: "shop"}
	if err := g.ObserveContainer(c); err == nil {
		t.Error("a missing cgroup was no error")
	}
	if err := g.ObserveContainer(c); err != nil {
		t.Errorf("the second event of the same container: %v", err)
	}
}
