// Package natstest runs real nats-server processes for tests: clustered
// with JetStream on loopback ports, each killable with SIGKILL and
// restartable over its own store. The server is built from the Go module
// proxy by tests/nats/build.sh (cached under /var/cache/harrier-test).
package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// Binary builds (or finds in the test cache) nats-server.
func Binary(t *testing.T) string { return testenv.BuiltTool(t, "nats") }

// Node is one nats-server of a test cluster.
type Node struct {
	Name       string
	bin, dir   string
	args       []string
	clientPort int
	// netns, when set, is the network namespace the node runs in
	// (/proc/PID/ns/net of the process holding it), at addr; nsenter is
	// nsenter(1).
	netns, addr, nsenter string
	cmd                  *exec.Cmd
	done                 chan struct{}
	log                  *os.File
}

// URL is the node's client URL.
func (n *Node) URL() string {
	addr := n.addr
	if addr == "" {
		addr = "127.0.0.1"
	}
	return "nats://" + addr + ":" + strconv.Itoa(n.clientPort)
}

// Start starts the node (again, over its own JetStream store).
func (n *Node) Start(t *testing.T) {
	t.Helper()
	if n.netns != "" {
		// nsenter execs the server: its PID is the server's.
		n.cmd = exec.Command(n.nsenter, append([]string{"--net=" + n.netns, n.bin}, n.args...)...)
	} else {
		n.cmd = exec.Command(n.bin, n.args...)
	}
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	n.done = done
	cmd := n.cmd
	go func() { _ = cmd.Wait(); close(done) }()
}

// Kill9 kills the node as a crash would, and waits for it to be gone.
func (n *Node) Kill9() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// stop ends the node with SIGTERM, SIGKILL after 10 s.
func (n *Node) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		n.Kill9()
	}
}

// Cluster starts three nats-servers with JetStream, clustered on loopback
// ports, and waits until each takes client connections. They are stopped
// (and their logs shown, if the test failed) when the test ends.
func Cluster(t *testing.T) []*Node {
	t.Helper()
	bin := Binary(t)
	nodes := make([]*Node, 3)
	ports := testenv.FreePorts(t, 6)
	clusterPorts := ports[3:]
	for i := range nodes {
		nodes[i] = &Node{Name: fmt.Sprintf("n%d", i), bin: bin, dir: t.TempDir(), clientPort: ports[i]}
	}
	for i, n := range nodes {
		var routes []string
		for j := range nodes {
			if j != i {
				routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(clusterPorts[j]))
			}
		}
		n.args = []string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.clientPort), "-n", n.Name, "-js", "-sd", filepath.Join(n.dir, "js"),
			"--cluster_name", "harrier-test", "--cluster", "nats://127.0.0.1:" + strconv.Itoa(clusterPorts[i]),
			"--routes", strings.Join(routes, ",")}
		startLogged(t, n)
	}
	for _, n := range nodes {
		waitListening(t, n)
	}
	return nodes
}

// Single starts one nats-server with JetStream on a loopback port, with
// extra arguments (TLS, a configuration file), and waits until it listens.
func Single(t *testing.T, extra ...string) *Node {
	t.Helper()
	n := &Node{Name: "single", bin: Binary(t), dir: t.TempDir(), clientPort: testenv.FreePorts(t, 1)[0]}
	n.args = append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.clientPort), "-n", n.Name, "-js", "-sd", filepath.Join(n.dir, "js")}, extra...)
	startLogged(t, n)
	waitListening(t, n)
	return n
}

func waitListening(t *testing.T, n *Node) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(n.clientPort))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server %s does not listen: %v", n.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URLs are the nodes' client URLs.
func URLs(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.URL())
	}
	return out
}
