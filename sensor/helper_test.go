package sensor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// The sensor ignores its own process, so behaviour under test is produced by
// a child: this test binary re-executed with helperEnv naming an action.
const helperEnv = "HARRIER_SENSOR_TEST_HELPER"

func TestMain(m *testing.M) {
	if action := os.Getenv(helperEnv); action != "" {
		if err := runHelper(action, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper runs this test binary as a child performing action and returns it
// after it exited successfully.
func helper(t *testing.T, action string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+action)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s %v: %v\n%s", action, args, err, out)
	}
	return cmd
}

func runHelper(action string, args []string) error {
	runtime.LockOSThread()
	switch action {
	case "connect":
		// A blocking connect, so the result is the final one (0).
		ap, err := net.ResolveTCPAddr("tcp", args[0])
		if err != nil {
			return err
		}
		family, sa := unix.AF_INET, unix.Sockaddr(nil)
		if ip4 := ap.IP.To4(); ip4 != nil {
			sa = &unix.SockaddrInet4{Port: ap.Port, Addr: [4]byte(ip4)}
		} else {
			family = unix.AF_INET6
			sa = &unix.SockaddrInet6{Port: ap.Port, Addr: [16]byte(ap.IP.To16())}
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Connect(fd, sa)
	case "listen-accept":
		// Listen on the port given, accept one connection, and exit.
		port, err := strconv.Atoi(args[0])
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(fd, 7); err != nil {
			return err
		}
		// The test dials once it reads this.
		if _, err := fmt.Println("listening"); err != nil {
			return err
		}
		nfd, _, err := unix.Accept(fd)
		if err != nil {
			return err
		}
		return unix.Close(nfd)
	case "unshare":
		return unix.Unshare(unix.CLONE_NEWUTS | unix.CLONE_NEWNET)
	case "memfd-exec":
		fd, err := unix.MemfdCreate("harrier-payload", 0)
		if err != nil {
			return err
		}
		bin, err := os.ReadFile("/bin/true")
		if err != nil {
			return err
		}
		if _, err := unix.Write(fd, bin); err != nil {
			return err
		}
		return unix.Exec(fmt.Sprintf("/proc/self/fd/%d", fd), []string{"payload", "--from-memory"}, nil)
	case "ptrace":
		sleeper := exec.Command("sleep", "5")
		if err := sleeper.Start(); err != nil {
			return err
		}
		defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
		if err := unix.PtraceAttach(sleeper.Process.Pid); err != nil {
			return err
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(sleeper.Process.Pid, &ws, unix.WALL, nil); err != nil {
			return err
		}
		return unix.PtraceDetach(sleeper.Process.Pid)
	case "module":
		// Loading /dev/null as a module always fails; the attempt is the event.
		f, err := os.Open("/dev/null")
		if err != nil {
			return err
		}
		defer f.Close()
		_ = unix.FinitModule(int(f.Fd()), "harrier=1", 0)
		return nil
	case "creds":
		// Raw syscalls: Go's wrappers repeat them on every thread.
		if _, _, e := unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0); e != 0 {
			return e
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, 0, ^uintptr(0), ^uintptr(0)); e != 0 {
			return e
		}
		return nil
	case "mount":
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return err
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return err
		}
		return unix.Mount("harrier-test", args[0], "tmpfs", unix.MS_NOSUID, "size=1m")
	case "files":
		// Create, rename and delete inside the watched directory given,
		// using paths relative to it, plus one open outside it.
		if err := os.Chdir(args[0]); err != nil {
			return err
		}
		if err := os.WriteFile("created.txt", []byte("x"), 0o600); err != nil {
			return err
		}
		if err := os.Rename("created.txt", "renamed.txt"); err != nil {
			return err
		}
		if err := os.Remove("renamed.txt"); err != nil {
			return err
		}
		if _, err := os.ReadFile(filepath.Join(args[0], "missing.txt")); err == nil {
			return fmt.Errorf("missing.txt exists")
		}
		return os.WriteFile(filepath.Join(args[1], "unwatched.txt"), []byte("x"), 0o600)
	case "chmod":
		// In args[0]: +x by a relative name (fchmodat), +x through an fd
		// (fchmod) and through AT_EMPTY_PATH (fchmodat2), 0644 of an
		// unwatched file; then 0600 of the watched file args[1].
		if err := os.Chdir(args[0]); err != nil {
			return err
		}
		if err := unix.Chmod("payload", 0o755); err != nil {
			return err
		}
		f, err := os.Open("fd-payload")
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.Fchmod(int(f.Fd()), 0o700); err != nil {
			return err
		}
		if err := unix.Fchmodat(int(f.Fd()), "", 0o711, unix.AT_EMPTY_PATH); err != nil && !errors.Is(err, unix.ENOSYS) {
			return err
		}
		if err := unix.Chmod("plain", 0o644); err != nil {
			return err
		}
		return unix.Chmod(args[1], 0o600)
	case "kill":
		// Pairs of pid and signal.
		for i := 0; i+1 < len(args); i += 2 {
			pid, err := strconv.Atoi(args[i])
			if err != nil {
				return err
			}
			sig, err := strconv.Atoi(args[i+1])
			if err != nil {
				return err
			}
			if err := unix.Kill(pid, unix.Signal(sig)); err != nil {
				return fmt.Errorf("kill %d %d: %w", pid, sig, err)
			}
		}
		return nil
	case "dns":
		return sendDNSQueries()
	case "spin":
		// Fork/exec args[0] times: process churn.
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return err
		}
		for range n {
			if err := exec.Command("/bin/true").Run(); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown helper action %q", action)
}

// sendDNSQueries sends DNS queries to 127.0.0.1:53 in every way the sensor
// hooks, plus a malformed payload and a query to another port. It first
// moves to a network namespace of its own with only loopback up, so nothing
// can leave the machine, and binds a server socket there so that no ICMP
// error refuses the sends on connected sockets.
func sendDNSQueries() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare net: %w", err)
	}
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ctl)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(ctl, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	lo := [4]byte{127, 0, 0, 1}
	srv, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(srv)
	if err := unix.Bind(srv, &unix.SockaddrInet4{Port: 53, Addr: lo}); err != nil {
		return fmt.Errorf("bind the stand-in server: %w", err)
	}
	dst := &unix.SockaddrInet4{Port: 53, Addr: lo}
	udp := func() (int, error) { return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0) }

	fd, err := udp()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, dnsQueryBytes(1, "sendto.harrier-test.example", 1), 0, dst); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	if _, err := unix.SendmsgN(fd, dnsQueryBytes(2, "sendmsg.harrier-test.example", 28), nil, dst, 0); err != nil {
		return fmt.Errorf("sendmsg: %w", err)
	}
	if err := unix.Sendto(fd, []byte("not a DNS query at all"), 0, dst); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	if err := unix.Sendto(fd, dnsQueryBytes(3, "other-port.harrier-test.example", 1), 0,
		&unix.SockaddrInet4{Port: 5353, Addr: lo}); err != nil {
		return fmt.Errorf("sendto 5353: %w", err)
	}

	// Connected first, then send (sendto without an address), as glibc
	// and busybox do; and sendmmsg, as glibc does for A and AAAA at once.
	cfd, err := udp()
	if err != nil {
		return err
	}
	defer unix.Close(cfd)
	if err := unix.Connect(cfd, dst); err != nil {
		return err
	}
	if err := unix.Sendto(cfd, dnsQueryBytes(4, "connected.harrier-test.example", 1), 0, nil); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	q := dnsQueryBytes(5, "sendmmsg.harrier-test.example", 1)
	iov := unix.Iovec{Base: &q[0]}
	iov.SetLen(len(q))
	msgs := [1]unix.Mmsghdr{{Hdr: unix.Msghdr{Iov: &iov}}}
	msgs[0].Hdr.SetIovlen(1)
	if _, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(cfd), uintptr(unsafe.Pointer(&msgs[0])), 1, 0, 0, 0); e != 0 {
		return fmt.Errorf("sendmmsg: %w", e)
	}
	// write(2) and writev(2) on the connected socket, as busybox nslookup
	// and Go's resolver do.
	if _, err := unix.Write(cfd, dnsQueryBytes(6, "write.harrier-test.example", 1)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := unix.Writev(cfd, [][]byte{dnsQueryBytes(7, "writev.harrier-test.example", 16)}); err != nil {
		return fmt.Errorf("writev: %w", err)
	}
	return sendDNSOverTCP(lo)
}

// sendDNSOverTCP sends three queries over TCP to 127.0.0.1:53 (in the
// helper's own network namespace): one write with the 2-byte length in
// front (Go, dig), one writev of [length][message] (glibc), one send.
func sendDNSOverTCP(lo [4]byte) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Port: 53, Addr: lo}); err != nil {
		return fmt.Errorf("bind the TCP stand-in server: %w", err)
	}
	if err := unix.Listen(ln, 4); err != nil {
		return err
	}
	framed := func(id uint16, name string, qtype uint16) (length, msg []byte) {
		msg = dnsQueryBytes(id, name, qtype)
		return []byte{byte(len(msg) >> 8), byte(len(msg))}, msg
	}
	send := []func(fd int) error{
		func(fd int) error {
			l, m := framed(8, "tcp-write.harrier-test.example", 1)
			_, err := unix.Write(fd, append(l, m...))
			return err
		},
		func(fd int) error {
			l, m := framed(9, "tcp-writev.harrier-test.example", 1)
			_, err := unix.Writev(fd, [][]byte{l, m})
			return err
		},
		func(fd int) error {
			l, m := framed(10, "tcp-send.harrier-test.example", 1)
			return unix.Sendto(fd, append(l, m...), 0, nil)
		},
	}
	for _, f := range send {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 53, Addr: lo}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("connect to the TCP stand-in: %w", err)
		}
		err = f(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("DNS over TCP: %w", err)
		}
	}
	return nil
}

// collector runs a sensor and keeps every event it emits.
type collector struct {
	s      *Sensor
	mu     sync.Mutex
	events []*api.Event
	// grew is closed, and replaced, whenever events grows.
	grew chan struct{}
}

func startSensor(t *testing.T, cfg Config) *collector {
	t.Helper()
	testenv.RequireRoot(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := New(cfg, log)
	if err != nil {
		t.Fatalf("start sensor: %v", err)
	}
	c := &collector{s: s, grew: make(chan struct{})}
	out := make(chan *api.Event, s.QueueSize())
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(context.Background())
	go func() { done <- s.Run(runCtx, out); close(out) }()
	go func() {
		for ev := range out {
			c.mu.Lock()
			c.events = append(c.events, ev)
			close(c.grew)
			c.grew = make(chan struct{})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("sensor run: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("sensor close: %v", err)
		}
	})
	return c
}

// waitFor returns the first event matching pred, waiting up to 5 s.
func (c *collector) waitFor(t *testing.T, what string, pred func(*api.Event) bool) *api.Event {
	t.Helper()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	seen := 0
	for {
		c.mu.Lock()
		for _, ev := range c.events[seen:] {
			if pred(ev) {
				c.mu.Unlock()
				return ev
			}
		}
		seen = len(c.events)
		grew := c.grew
		c.mu.Unlock()
		select {
		case <-grew:
		case <-timeout.C:
			t.Fatalf("no %s event among %d events", what, seen)
		}
	}
}

// none asserts that no event so far matches pred.
func (c *collector) none(t *testing.T, what string, pred func(*api.Event) bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range c.events {
		if pred(ev) {
			t.Errorf("unexpected %s event: %v", what, ev)
		}
	}
}
