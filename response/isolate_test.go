package response

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestIsolate: a real runc container serves two web servers on its own
// loopback, 8080 and 8081, 8081 being the allowed ("backend") address.
// Isolated, the container can no longer reach 8080, and neither can a
// process outside its cgroup that joined its network namespace (the
// server's replies are dropped on the way out and the client's packets on
// the way in), while 8081 still answers. Unisolated, 8080 answers again.
func TestIsolate(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	nsenter := testenv.RequireCommand(t, "nsenter", "util-linux")
	n, err := NewNetBlocker([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8081")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c := runctest.Start(t, runctest.Options{Args: []string{"/bin/busybox", "sh", "-c",
		"mkdir -p /www && echo served >/www/index.html && /bin/busybox httpd -p 127.0.0.1:8080 -h /www && /bin/busybox httpd -p 127.0.0.1:8081 -h /www && exec /bin/busybox sleep 3600"}})
	pid, err := c.InitPID()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inside := func(port string) string {
		out, err := c.Exec(ctx, "/bin/busybox", "timeout", "3", "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:"+port+"/")
		if err != nil {
			return "failed: " + err.Error()
		}
		return strings.TrimSpace(out)
	}
	// A host process, in the host's cgroup, in the container's netns.
	outside := func(port string) string {
		out, err := exec.CommandContext(ctx, nsenter, "--net=/proc/"+strconv.Itoa(pid)+"/ns/net", runctest.BusyboxPath,
			"timeout", "3", runctest.BusyboxPath, "wget", "-q", "-O", "-", "http://127.0.0.1:"+port+"/").CombinedOutput()
		if err != nil {
			return "failed: " + err.Error()
		}
		return strings.TrimSpace(string(out))
	}
	testenv.WaitFor(t, 10*time.Second, "both web servers answering", func() bool {
		a, b := inside("8080"), inside("8081")
		t.Logf("8080: %s; 8081: %s", a, b)
		return a == "served" && b == "served"
	})
	cg := filepath.Join(n.v2, runctest.CgroupParent, c.ID)
	if err := n.Isolate(cg); err != nil {
		t.Fatal(err)
	}
	if !n.Isolated(cg) {
		t.Error("Isolated says no")
	}
	for _, tc := range []struct {
		name, port string
		from       func(string) string
		answers    bool
	}{
		{"inside to 8080", "8080", inside, false},
		{"outside to 8080", "8080", outside, false},
		{"inside to the allowed 8081", "8081", inside, true},
		{"outside to the allowed 8081", "8081", outside, true},
	} {
		if got := tc.from(tc.port); (got == "served") != tc.answers {
			t.Errorf("isolated, %s: %q, want answered %v", tc.name, got, tc.answers)
		}
	}
	if n.Dropped() == 0 {
		t.Error("no packet counted as dropped")
	}
	t.Logf("isolated: %d packets dropped", n.Dropped())
	if err := n.Unisolate(cg); err != nil {
		t.Fatal(err)
	}
	if got := inside("8080"); got != "served" {
		t.Errorf("unisolated, inside to 8080: %q", got)
	}
	if got := outside("8080"); got != "served" {
		t.Errorf("unisolated, outside to 8080: %q", got)
	}
	if err := n.Isolate(n.v2); err == nil {
		t.Error("isolating the root cgroup was not refused")
	}
	if _, err := os.Stat(cg); err != nil {
		t.Fatal(err)
	}
}

func TestIsolateNetworkNeedsContainer(t *testing.T) {
	f := File{APIVersion: APIVersion, Kind: Kind, Policies: []Policy{
		{Name: "host", Mode: ModeEnforce, Match: Match{Detections: []string{"x"}}, Actions: []string{ActionIsolateNetwork}},
		{Name: "container", Mode: ModeEnforce, Match: Match{Detections: []string{"x"}, Where: WhereContainer}, Actions: []string{ActionIsolateNetwork}},
	}}
	err := f.Validate()
	if err == nil || !strings.Contains(err.Error(), `"host": isolate-network needs where: container`) || strings.Contains(err.Error(), `"container"`) {
		t.Errorf("validate: %v, want only the host policy refused", err)
	}
	if !f.NeedsNetBlocker() {
		t.Error("isolate-network does not load the network blocker")
	}
}
