package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// notifySocket is a unixgram socket standing in for systemd's
// NOTIFY_SOCKET; messages yields each datagram the service sends.
type notifySocket struct {
	path     string
	messages chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &notifySocket{path: path, messages: make(chan string, 16)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.messages)
				return
			}
			n.messages <- string(buf[:k])
		}
	}()
	return n
}

// await waits for a datagram carrying the line want (e.g. READY=1).
func (n *notifySocket) await(t *testing.T, want string, logs fmt.Stringer) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-n.messages:
			if !ok {
				t.Fatalf("notify socket closed before %s\n%s", want, logs)
			}
			for _, line := range strings.Split(m, "\n") {
				if line == want {
					return
				}
			}
		case <-deadline:
			t.Fatalf("no %s within 30 s\n%s", want, logs)
		}
	}
}

// startNotified starts bin with NOTIFY_SOCKET pointing at a socket the test
// owns, as systemd does for a Type=notify unit.
func startNotified(t *testing.T, bin string, args ...string) (*exec.Cmd, *notifySocket, *testenv.Buffer) {
	t.Helper()
	n := newNotifySocket(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path)
	logs := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, n, logs
}

// stopNotified sends SIGTERM (what systemd sends) and expects STOPPING=1
// and a clean exit.
func stopNotified(t *testing.T, cmd *exec.Cmd, n *notifySocket, logs *testenv.Buffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	n.await(t, "STOPPING=1", logs)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("did not stop on SIGTERM\n%s", logs)
	}
}

// attachedBefore checks that the sensor logged its attach before READY=1.
// The log was written first, but it crosses a pipe while READY=1 crosses a
// socket, so it may be read a moment later.
func attachedBefore(t *testing.T, logs *testenv.Buffer) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(logs.String(), "probe attached") {
			return
		}
	}
	t.Errorf("READY=1 came but the sensor never logged an attach:\n%s", logs)
}

// TestSdNotify: each long-running mode sends READY=1 once it can do its job
// (for the agent: spool open and sensor attached) and STOPPING=1 on SIGTERM,
// which is what the packaged Type=notify units rely on.
func TestSdNotify(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	pki := t.TempDir()
	for _, args := range [][]string{
		{"certs", "init", "--out", pki},
		{"certs", "backend", "--out", pki, "--host", "127.0.0.1"},
		{"certs", "agent", "--out", pki, "node-1"},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("harrier %v: %v\n%s", args, err, out)
		}
	}

	t.Run("run", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "harrier.yaml")
		conf := fmt.Sprintf("dataDir: %s\nbackend:\n  apiAddr: 127.0.0.1:0\n  ingestAddr: 127.0.0.1:0\n", t.TempDir())
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd, n, logs := startNotified(t, bin, "run", "-c", cfg)
		n.await(t, "READY=1", logs)
		attachedBefore(t, logs)
		stopNotified(t, cmd, n, logs)
	})

	t.Run("agent", func(t *testing.T) {
		// No backend is listening: the agent is ready once it can spool,
		// whether or not its uplink is connected.
		cfg := filepath.Join(t.TempDir(), "agent.yaml")
		conf := fmt.Sprintf("dataDir: %s\nuplink:\n  addr: %s\n  agentID: node-1\n  caFile: %s\n  certFile: %s\n  keyFile: %s\n",
			t.TempDir(), testenv.FreeAddr(t), filepath.Join(pki, "ca.crt"),
			filepath.Join(pki, "node-1.crt"), filepath.Join(pki, "node-1.key"))
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd, n, logs := startNotified(t, bin, "agent", "-c", cfg)
		n.await(t, "READY=1", logs)
		attachedBefore(t, logs)
		stopNotified(t, cmd, n, logs)
	})

	t.Run("backend", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "backend.yaml")
		conf := fmt.Sprintf("dataDir: %s\nbackend:\n  apiAddr: 127.0.0.1:0\n  ingestAddr: 127.0.0.1:0\n  caFile: %s\n  certFile: %s\n  keyFile: %s\n",
			t.TempDir(), filepath.Join(pki, "ca.crt"), filepath.Join(pki, "backend.crt"), filepath.Join(pki, "backend.key"))
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd, n, logs := startNotified(t, bin, "backend", "-c", cfg)
		n.await(t, "READY=1", logs)
		stopNotified(t, cmd, n, logs)
	})
}
