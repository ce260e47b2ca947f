package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestResponseDriftKilledAtExec: a real agent with a drift execDeny entry
// and a real runc container: busybox copied into the container's writable
// layer after it started, whose first action is to create a file, is killed
// at exec under enforce (the file never appears, the record says
// kill-at-exec done on a drift executable of that container); under audit
// it runs and the record says audited. Busybox from the image runs.
func TestResponseDriftKilledAtExec(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	// Audit only: an unscoped enforcing drift entry would kill the drift
	// binaries of every test running beside this one (the sensor's, the
	// detections'); TestExecGuardDrift enforces on a scoped entry.
	for _, mode := range []string{"audit"} {
		t.Run(mode, func(t *testing.T) {
			e := startResponseNode(t, "edge-drift-"+mode, fmt.Sprintf(`execDeny:
  - name: drift-%s
    mode: %s
    drift: true
`, mode, mode))
			c := runctest.Start(t, runctest.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if out, err := c.Exec(ctx, "/bin/busybox", "touch", "/lower-wrote"); err != nil {
				t.Fatalf("busybox from the image: %v %s", err, out)
			}
			if _, err := os.Stat(c.Path("/lower-wrote")); err != nil {
				t.Errorf("busybox from the image did not run: %v", err)
			}
			if err := c.CopyIn(runctest.BusyboxPath, "/drift/busybox", 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := c.Exec(ctx, "/drift/busybox", "touch", "/drift-wrote")
			_, statErr := os.Stat(c.Path("/drift-wrote"))
			var container string
			resp := e.response(t, func(ev *api.Event) bool {
				container = ev.GetContainer().GetId()
				return ev.GetResponse().GetAction() == "kill-at-exec"
			})
			if container != c.ID {
				t.Errorf("the record names container %q, want %s", container, c.ID)
			}
			t.Logf("%s: %+v", mode, resp)
			if resp.GetPolicy() != "drift-"+mode || resp.GetMode() != mode || resp.GetTarget() != "drift /drift/busybox" {
				t.Errorf("record %+v, want kill-at-exec by drift-%s on drift /drift/busybox", resp, mode)
			}
			switch mode {
			case "enforce":
				if err == nil || !errors.Is(statErr, os.ErrNotExist) {
					t.Errorf("the drift binary ran (%v %s); /drift-wrote: %v", err, out, statErr)
				}
				if resp.GetOutcome() != "done" {
					t.Errorf("outcome %q, want done (killed at exec)", resp.GetOutcome())
				}
			case "audit":
				if err != nil || statErr != nil {
					t.Errorf("audit: the drift binary did not run: %v %s, %v", err, out, statErr)
				}
				if resp.GetOutcome() != "audited" {
					t.Errorf("outcome %q, want audited", resp.GetOutcome())
				}
			}
		})
	}
}

// TestResponseIsolateNetwork: a real agent isolates a real container when an
// alert comes from it: before, the container reaches its own loopback web
// server; after the marker ran in it, packets to and from it are dropped
// (wget times out), and the backend has the record naming the cgroup.
func TestResponseIsolateNetwork(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	e := startResponseNode(t, "edge-isolate-network", `policies:
  - name: isolate-on-marker
    mode: enforce
    match: {detections: [test-alert], where: container}
    actions: [isolate-network]
`)
	c := runctest.Start(t, runctest.Options{Args: []string{"/bin/busybox", "sh", "-c",
		"mkdir -p /www && echo served >/www/index.html && exec /bin/busybox httpd -f -p 127.0.0.1:8080 -h /www"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fetch := func() string {
		out, err := c.Exec(ctx, "/bin/busybox", "timeout", "3", "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/")
		return fmt.Sprintf("%s %v", out, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the container's web server answering", func() bool {
		return strings.HasPrefix(fetch(), "served")
	})
	if _, err := c.Exec(ctx, "/bin/busybox", "sh", "-c", "echo HARRIER-TEST-ALERT"); err != nil {
		t.Fatal(err)
	}
	resp := e.response(t, func(ev *api.Event) bool { return ev.GetContainer().GetId() == c.ID })
	if resp.GetAction() != "isolate-network" || resp.GetOutcome() != "done" || !strings.HasSuffix(resp.GetTarget(), "/"+c.ID) {
		t.Fatalf("record %+v, want isolate-network done on the container's cgroup", resp)
	}
	if out := fetch(); strings.HasPrefix(out, "served") {
		t.Errorf("after the isolation the container still reaches its web server: %s", out)
	}
	t.Logf("isolated %s: %s", resp.GetTarget(), fetch())
}
