package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// Ports every node of a NetnsCluster uses, each in its own namespace.
const (
	netnsClientPort  = 4222
	netnsClusterPort = 6222
)

// NetnsCluster is three nats-servers, each in a network namespace of its
// own that the test made, joined by a bridge in a fourth one (the hub).
// Nothing of it is in the host's namespace, and nothing is written on the
// host: each namespace is held by a process of the test's (sleep), named
// by /proc/PID/ns/net, and goes with it. The test's clients reach the
// servers through Dialer, which opens its sockets in the hub; Partition
// cuts one server off its routes with iptables inside that server's
// namespace.
type NetnsCluster struct {
	Nodes   []*Node
	hub     string
	nsenter string
}

// nodeAddr is node i's address on the test-made bridge (198.18.0.0/15 is
// the range set aside for network tests; it exists only in the test's
// namespaces).
func nodeAddr(i int) string { return "198.18.0." + strconv.Itoa(i+1) }

// NewNetnsCluster makes the namespaces (gone when the test ends) and
// starts the three servers in them. It needs root, ip(8), nsenter(1) and,
// for Partition, iptables.
func NewNetnsCluster(t *testing.T) *NetnsCluster {
	t.Helper()
	testenv.RequireRoot(t)
	ipBin := testenv.RequireCommand(t, "ip", "apt-get install iproute2")
	nsenter := testenv.RequireCommand(t, "nsenter", "apt-get install util-linux")
	testenv.RequireCommand(t, "iptables", "apt-get install iptables")
	bin := Binary(t)
	c := &NetnsCluster{nsenter: nsenter}
	// newNetns starts a process in a new network namespace and returns
	// its PID and the namespace's path.
	newNetns := func() (pid int, path string) {
		t.Helper()
		cmd := exec.Command("sleep", "infinity")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		if err := cmd.Start(); err != nil {
			t.Fatalf("a process in a new network namespace: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd.Process.Pid, fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	}
	ip := func(ns string, args ...string) {
		t.Helper()
		if out, err := exec.Command(nsenter, append([]string{"--net=" + ns, ipBin}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s (in %s): %v: %s", strings.Join(args, " "), ns, err, out)
		}
	}
	_, c.hub = newNetns()
	ip(c.hub, "link", "set", "lo", "up")
	ip(c.hub, "link", "add", "br0", "type", "bridge")
	ip(c.hub, "addr", "add", "198.18.0.254/24", "dev", "br0")
	ip(c.hub, "link", "set", "br0", "up")
	for i := range 3 {
		pid, ns := newNetns()
		// Both ends made where they live: no interface in the host's
		// namespace, not even for a moment.
		port := "p" + strconv.Itoa(i)
		ip(c.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(pid))
		ip(c.hub, "link", "set", port, "master", "br0")
		ip(c.hub, "link", "set", port, "up")
		ip(ns, "link", "set", "lo", "up")
		ip(ns, "addr", "add", nodeAddr(i)+"/24", "dev", "eth0")
		ip(ns, "link", "set", "eth0", "up")
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, "nats://"+nodeAddr(j)+":"+strconv.Itoa(netnsClusterPort))
			}
		}
		n := &Node{Name: fmt.Sprintf("n%d", i), bin: bin, dir: t.TempDir(), netns: ns, addr: nodeAddr(i), clientPort: netnsClientPort,
			nsenter: nsenter}
		n.args = []string{"-a", n.addr, "-p", strconv.Itoa(netnsClientPort), "-n", n.Name, "-js", "-sd", filepath.Join(n.dir, "js"),
			"--cluster_name", "harrier-test", "--cluster", "nats://" + n.addr + ":" + strconv.Itoa(netnsClusterPort),
			"--routes", strings.Join(routes, ",")}
		startLogged(t, n)
		c.Nodes = append(c.Nodes, n)
	}
	d := c.Dialer()
	for _, n := range c.Nodes {
		testenv.WaitFor(t, 30*time.Second, "nats-server "+n.Name+" listens in its namespace", func() bool {
			conn, err := d.Dial("tcp", strings.TrimPrefix(n.URL(), "nats://"))
			if err == nil {
				conn.Close()
			}
			return err == nil
		})
	}
	return c
}

// Dialer opens connections from inside the cluster's hub namespace (for
// nats.SetCustomDialer).
func (c *NetnsCluster) Dialer() NetnsDialer {
	return NetnsDialer{Path: c.hub}
}

// Partition cuts node i off its routes to the other two, both ways, with
// iptables rules in its namespace; its clients still reach it.
func (c *NetnsCluster) Partition(t *testing.T, i int) { c.routeRules(t, i, "-I") }

// Heal removes Partition's rules.
func (c *NetnsCluster) Heal(t *testing.T, i int) { c.routeRules(t, i, "-D") }

func (c *NetnsCluster) routeRules(t *testing.T, i int, op string) {
	t.Helper()
	port := strconv.Itoa(netnsClusterPort)
	for _, rule := range [][]string{
		{"INPUT", "--dport", port}, {"INPUT", "--sport", port},
		{"OUTPUT", "--dport", port}, {"OUTPUT", "--sport", port},
	} {
		args := []string{"--net=" + c.Nodes[i].netns, "iptables", op, rule[0], "-p", "tcp", rule[1], rule[2], "-j", "DROP"}
		if out, err := exec.Command(c.nsenter, args...).CombinedOutput(); err != nil {
			t.Fatalf("nsenter %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// NetnsDialer dials from inside the network namespace at Path: the socket
// is made on a thread moved there for the moment, so that it belongs to
// that namespace for the rest of its life.
type NetnsDialer struct{ Path string }

// Dial is net.Dial from inside d's namespace.
func (d NetnsDialer) Dial(network, address string) (net.Conn, error) {
	runtime.LockOSThread()
	own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("this thread's network namespace: %w", err)
	}
	defer unix.Close(own)
	target, err := unix.Open(d.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open %s: %w", d.Path, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", d.Path, err)
	}
	conn, dialErr := net.DialTimeout(network, address, 5*time.Second)
	if err := unix.Setns(own, unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so the runtime ends it with this
		// goroutine instead of running others in the wrong namespace.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("back to the own network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	if dialErr != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", address, d.Path, dialErr)
	}
	return conn, nil
}

// startLogged starts n with its output in its directory's server.log, and
// stops it when the test ends (showing the log's tail if the test failed).
func startLogged(t *testing.T, n *Node) {
	t.Helper()
	f, err := os.Create(filepath.Join(n.dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	n.log = f
	n.Start(t)
	t.Cleanup(func() {
		n.stop()
		_ = f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(n.dir, "server.log"))
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("--- nats-server %s's log (tail)\n%s", n.Name, b)
		}
	})
}
