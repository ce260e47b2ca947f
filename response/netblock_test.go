package response

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestNetBlocker: a shell in a cgroup of its own, blocked, cannot connect
// to a loopback listener (EPERM), can still reach the allowed one (the
// "backend") and port 53 (the kernel answers, not the block); unblocked, it
// connects again.
func TestNetBlocker(t *testing.T) {
	testenv.RequireRoot(t)
	bash := testenv.RequireCommand(t, "bash", "bash")
	listen := func() (net.Listener, string) {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return l, l.Addr().String()
	}
	_, backend := listen()
	_, other := listen()
	n, err := NewNetBlocker([]netip.AddrPort{netip.MustParseAddrPort(backend)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	cg := filepath.Join(n.v2, fmt.Sprintf("harrier-test-netblock-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(cg)

	// The shell joins the cgroup, then tries what it is told, one line each.
	errFile := filepath.Join(t.TempDir(), "stderr")
	sh := exec.Command(bash, "-c", `echo $$ > `+cg+`/cgroup.procs
while read host port; do
  if (exec 3<>/dev/tcp/$host/$port) 2>`+errFile+`; then echo connected; else tail -c 200 `+errFile+` | tr '\n' ' '; echo; fi
done`)
	stdin, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = sh.Wait() }()
	lines := bufio.NewReader(stdout)
	try := func(addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		if _, err := io.WriteString(stdin, host+" "+port+"\n"); err != nil {
			t.Fatal(err)
		}
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(line)
	}
	if got := try(other); got != "connected" {
		t.Fatalf("before the block: %q", got)
	}
	got, err := n.CgroupOf(sh.Process.Pid)
	if err != nil || got != cg {
		t.Fatalf("CgroupOf: %q %v, want %s", got, err, cg)
	}
	if err := n.Block(cg); err != nil {
		t.Fatal(err)
	}
	if got := try(other); !strings.Contains(got, "Operation not permitted") {
		t.Errorf("blocked: %q, want EPERM", got)
	}
	if got := try(backend); got != "connected" {
		t.Errorf("blocked, to the allowed backend: %q", got)
	}
	if got := try("127.0.0.1:53"); !strings.Contains(got, "Connection refused") {
		t.Errorf("blocked, to port 53: %q, want the kernel's refusal (nothing listens), not the block's", got)
	}
	if n.Refused() == 0 {
		t.Error("no refusal counted")
	}
	if err := n.Block(n.v2); err == nil {
		t.Error("the root cgroup was blocked")
	}
	if err := n.Unblock(cg); err != nil {
		t.Fatal(err)
	}
	if got := try(other); got != "connected" {
		t.Errorf("after unblock: %q", got)
	}
}
