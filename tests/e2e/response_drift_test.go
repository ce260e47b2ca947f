package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	for _, mode := range []string{"enforce", "audit"} {
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
