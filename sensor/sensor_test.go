package sensor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// These tests load the real sensor into the running kernel and produce real
// behaviour from child processes; they need root (CI runs them as root).

func ownChild(ev *api.Event, pid int) bool { return ev.GetProcess().GetTgid() == uint32(pid) }

func TestExecForkExit(t *testing.T) {
	c := startSensor(t, Config{})
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	exe, err := filepath.EvalSymlinks("/bin/true")
	if err != nil {
		t.Fatal(err)
	}

	ev := c.waitFor(t, "exec of /bin/true", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ownChild(ev, pid)
	})
	p := ev.GetProcess()
	if p.GetExe() != exe || !slices.Equal(p.GetArgs(), []string{"/bin/true"}) || p.GetComm() != "true" {
		t.Errorf("exec process = exe %q args %q comm %q, want %q [/bin/true] true", p.GetExe(), p.GetArgs(), p.GetComm(), exe)
	}
	if p.GetPpid() != uint32(os.Getpid()) || p.GetUid() != 0 || p.GetEuid() != 0 {
		t.Errorf("exec ppid %d uid %d euid %d, want ppid %d uid 0", p.GetPpid(), p.GetUid(), p.GetEuid(), os.Getpid())
	}
	if ev.GetExec().GetFilename() != "/bin/true" {
		t.Errorf("exec filename %q, want /bin/true", ev.GetExec().GetFilename())
	}
	wd, _ := os.Getwd()
	if p.GetCwd() != wd {
		t.Errorf("cwd %q, want %q", p.GetCwd(), wd)
	}
	if p.GetExeOrigin().GetOverlayUpper() || p.GetExeOrigin().GetMemfd() || p.GetExeOrigin().GetDeleted() {
		t.Errorf("host binary marked with origin %v", p.GetExeOrigin())
	}
	if len(ev.GetAncestry()) == 0 || ev.GetAncestry()[0].GetPid() != uint32(os.Getpid()) {
		t.Errorf("ancestry should start with the test process %d: %v", os.Getpid(), ev.GetAncestry())
	} else if self, _ := os.Executable(); ev.GetAncestry()[0].GetExe() != self {
		t.Errorf("parent exe %q, want %q", ev.GetAncestry()[0].GetExe(), self)
	}
	if ev.GetContainer() != nil && ev.GetContainer().GetRuntime() != "" {
		t.Errorf("host process got container %v", ev.GetContainer())
	}
	if want := unifiedCgroup(t); p.GetCgroup() != want {
		t.Errorf("host process cgroup %q, want %q (the test's own)", p.GetCgroup(), want)
	}
	if ns := ev.GetNamespaces(); ns.GetPid() == 0 || ns.GetMnt() == 0 || ns.GetNet() == 0 {
		t.Errorf("namespaces not filled: %v", ns)
	}
	if d := time.Since(ev.GetTime().AsTime()); d < 0 || d > time.Minute {
		t.Errorf("event time %v is %v away from now", ev.GetTime().AsTime(), d)
	}

	fork := c.waitFor(t, "fork of the child", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FORK && ev.GetFork().GetChildTgid() == uint32(pid)
	})
	if fork.GetProcess().GetTgid() != uint32(os.Getpid()) {
		t.Errorf("fork parent %d, want %d", fork.GetProcess().GetTgid(), os.Getpid())
	}
	exit := c.waitFor(t, "exit of the child", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXIT && ownChild(ev, pid)
	})
	if exit.GetExit().GetCode() != 0 || exit.GetProcess().GetExe() != exe {
		t.Errorf("exit = %v exe %q", exit.GetExit(), exit.GetProcess().GetExe())
	}

	// A failing command reports its exit code.
	cmd = exec.Command("/bin/sh", "-c", "exit 7")
	_ = cmd.Run()
	exit = c.waitFor(t, "exit 7", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXIT && ownChild(ev, cmd.Process.Pid)
	})
	if exit.GetExit().GetCode() != 7 {
		t.Errorf("exit code %d, want 7", exit.GetExit().GetCode())
	}
}

func TestConnectListenAccept(t *testing.T) {
	c := startSensor(t, Config{})
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if conn, err := ln.Accept(); err == nil {
				conn.Close()
			}
		}()
		h := helper(t, "connect", ln.Addr().String())
		ln.Close()
		ev := c.waitFor(t, "connect over "+network, func(ev *api.Event) bool {
			return ev.GetKind() == api.EventKind_EVENT_KIND_CONNECT && ownChild(ev, h.Process.Pid)
		})
		ap := ln.Addr().(*net.TCPAddr)
		dst := ev.GetConnect().GetDestination()
		wantFamily := map[string]string{"tcp4": "ipv4", "tcp6": "ipv6"}[network]
		if dst.GetIp() != ap.IP.String() || dst.GetPort() != uint32(ap.Port) || dst.GetFamily() != wantFamily {
			t.Errorf("%s destination = %v, want %s port %d", network, dst, ap.IP, ap.Port)
		}
		if ev.GetConnect().GetResult() != 0 || ev.GetConnect().GetProtocol() != api.Protocol_PROTOCOL_TCP {
			t.Errorf("%s connect result %d protocol %v", network, ev.GetConnect().GetResult(), ev.GetConnect().GetProtocol())
		}
	}

	// A refused connect reports the error.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], closed)
	cmd.Env = append(os.Environ(), helperEnv+"=connect")
	_ = cmd.Run()
	ev := c.waitFor(t, "refused connect", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_CONNECT && ownChild(ev, cmd.Process.Pid)
	})
	if ev.GetConnect().GetResult() != -int64(unix.ECONNREFUSED) {
		t.Errorf("refused connect result %d", ev.GetConnect().GetResult())
	}

	// listen + accept in a child.
	port := testenv.FreePorts(t, 1)[0]
	srv := exec.Command(os.Args[0], strconv.Itoa(port))
	srv.Env = append(os.Environ(), helperEnv+"=listen-accept")
	srvOut, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(srvOut).ReadString('\n'); line != "listening\n" {
		t.Fatalf("listen helper said %q: %v", line, err)
	}
	conn, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("dial the helper: %v", err)
	}
	local := conn.LocalAddr().(*net.TCPAddr)
	conn.Close()
	if err := srv.Wait(); err != nil {
		t.Fatalf("listen helper: %v", err)
	}
	lev := c.waitFor(t, "listen", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_LISTEN && ownChild(ev, srv.Process.Pid)
	})
	if l := lev.GetListen(); l.GetLocal().GetPort() != uint32(port) || l.GetLocal().GetIp() != "127.0.0.1" || l.GetBacklog() != 7 {
		t.Errorf("listen = %v, want 127.0.0.1:%d backlog 7", l, port)
	}
	aev := c.waitFor(t, "accept", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_ACCEPT && ownChild(ev, srv.Process.Pid)
	})
	if a := aev.GetAccept(); a.GetLocal().GetPort() != uint32(port) || a.GetRemote().GetPort() != uint32(local.Port) ||
		a.GetRemote().GetIp() != "127.0.0.1" || a.GetResult() < 0 {
		t.Errorf("accept = %v, want remote port %d", a, local.Port)
	}
}

func TestPrivilegedBehaviour(t *testing.T) {
	c := startSensor(t, Config{})
	kind := func(k api.EventKind, pid int) func(*api.Event) bool {
		return func(ev *api.Event) bool { return ev.GetKind() == k && ownChild(ev, pid) }
	}

	h := helper(t, "unshare")
	ns := c.waitFor(t, "unshare", kind(api.EventKind_EVENT_KIND_NAMESPACE_CHANGE, h.Process.Pid)).GetNamespaceChange()
	if ns.GetSyscall() != "unshare" || !slices.Equal(ns.GetNamespaces(), []string{"uts", "net"}) || ns.GetResult() != 0 {
		t.Errorf("unshare = %v", ns)
	}

	h = helper(t, "memfd-exec")
	mf := c.waitFor(t, "memfd_create", kind(api.EventKind_EVENT_KIND_MEMFD_CREATE, h.Process.Pid)).GetMemfdCreate()
	if mf.GetName() != "harrier-payload" || mf.GetResult() < 0 {
		t.Errorf("memfd_create = %v", mf)
	}
	ex := c.waitFor(t, "exec from memfd", func(ev *api.Event) bool {
		return kind(api.EventKind_EVENT_KIND_EXEC, h.Process.Pid)(ev) && slices.Contains(ev.GetProcess().GetArgs(), "--from-memory")
	})
	if p := ex.GetProcess(); !p.GetExeOrigin().GetMemfd() || !strings.Contains(p.GetExe(), "memfd:harrier-payload") ||
		!slices.Equal(p.GetArgs(), []string{"payload", "--from-memory"}) {
		t.Errorf("memfd exec process = exe %q origin %v args %q", p.GetExe(), p.GetExeOrigin(), p.GetArgs())
	}

	h = helper(t, "ptrace")
	pt := c.waitFor(t, "ptrace", kind(api.EventKind_EVENT_KIND_PTRACE, h.Process.Pid)).GetPtrace()
	if pt.GetRequest() != unix.PTRACE_ATTACH || pt.GetTargetPid() == 0 || pt.GetResult() != 0 {
		t.Errorf("ptrace = %v", pt)
	}

	// A kernel without module support has no finit_module syscall, hence no
	// tracepoint for it: the status must say so rather than the event arrive.
	if slices.Contains(c.s.Status().Syscalls, "finit_module") {
		h = helper(t, "module")
		ml := c.waitFor(t, "finit_module", kind(api.EventKind_EVENT_KIND_MODULE_LOAD, h.Process.Pid)).GetModuleLoad()
		if ml.GetSyscall() != "finit_module" || ml.GetPath() != "/dev/null" || ml.GetParams() != "harrier=1" || ml.GetResult() >= 0 {
			t.Errorf("module load = %v", ml)
		}
	} else if !slices.ContainsFunc(c.s.Status().Unavailable, func(u string) bool { return strings.Contains(u, "sys_exit_finit_module") }) {
		t.Errorf("finit_module neither reported nor listed unavailable: %v", c.s.Status().Unavailable)
	}

	h = helper(t, "creds")
	cr := c.waitFor(t, "setuid", func(ev *api.Event) bool {
		return kind(api.EventKind_EVENT_KIND_CREDENTIAL_CHANGE, h.Process.Pid)(ev) && ev.GetCredentialChange().GetSyscall() == "setuid"
	}).GetCredentialChange()
	if cr.GetUid() != 0 || cr.GetEuid() != -1 || cr.GetResult() != 0 {
		t.Errorf("setuid = %v", cr)
	}
	cr = c.waitFor(t, "setresgid", func(ev *api.Event) bool {
		return kind(api.EventKind_EVENT_KIND_CREDENTIAL_CHANGE, h.Process.Pid)(ev) && ev.GetCredentialChange().GetSyscall() == "setresgid"
	}).GetCredentialChange()
	if cr.GetGid() != 0 || cr.GetEgid() != -1 || cr.GetSgid() != -1 {
		t.Errorf("setresgid = %v", cr)
	}

	dir := t.TempDir()
	h = helper(t, "mount", dir)
	mt := c.waitFor(t, "mount", func(ev *api.Event) bool {
		return kind(api.EventKind_EVENT_KIND_MOUNT, h.Process.Pid)(ev) && ev.GetMount().GetFstype() == "tmpfs"
	}).GetMount()
	if mt.GetSource() != "harrier-test" || mt.GetTarget() != dir || mt.GetFstype() != "tmpfs" || mt.GetResult() != 0 ||
		mt.GetFlags()&unix.MS_NOSUID == 0 {
		t.Errorf("mount = %v", mt)
	}
}

func TestContainerEvents(t *testing.T) {
	runctest.Require(t)
	c := startSensor(t, Config{})
	ctr := runctest.Start(t, runctest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := ctr.Exec(ctx, "cat", "/etc/passwd"); err != nil {
		t.Fatalf("exec in container: %v %s", err, out)
	}
	inCtr := func(ev *api.Event) bool { return ev.GetContainer().GetId() == ctr.ID }

	ex := c.waitFor(t, "exec of cat in the container", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && inCtr(ev) && ev.GetProcess().GetComm() == "cat"
	})
	if got := ex.GetContainer(); got.GetRuntime() != "runc" || !strings.HasSuffix(got.GetCgroup(), "/harrier/"+ctr.ID) {
		t.Errorf("container = %v, want runc %s", got, ctr.ID)
	}
	// The exec was counted as attributed to a container (the sensor counts
	// right after the send, so allow it a moment).
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := c.s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.InContainer["exec"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats().InContainer = %v after an exec in a container, want exec > 0", st.InContainer)
		}
	}
	if p := ex.GetProcess(); p.GetExe() != "/bin/busybox" || p.GetExeOrigin().GetOverlayUpper() {
		t.Errorf("image binary: exe %q origin %v, want /bin/busybox from the image", p.GetExe(), p.GetExeOrigin())
	}
	hostNS, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("pid:[%d]", ex.GetNamespaces().GetPid()) == hostNS {
		t.Errorf("container process reports the host pid namespace %s", hostNS)
	}
	initPID, err := ctr.InitPID()
	if err != nil {
		t.Fatal(err)
	}
	ctrNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", initPID))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("mnt:[%d]", ex.GetNamespaces().GetMnt()); want != ctrNS {
		t.Errorf("mnt namespace %s, want %s", want, ctrNS)
	}
	// Paths are as the container sees them.
	c.waitFor(t, "open of /etc/passwd in the container", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_OPEN && inCtr(ev) && ev.GetFileOpen().GetPath() == "/etc/passwd"
	})

	// A binary dropped into the writable layer and run.
	if err := ctr.CopyIn(runctest.BusyboxPath, "/opt/busybox", 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := ctr.Exec(ctx, "/opt/busybox", "true"); err != nil {
		t.Fatalf("exec dropped binary: %v %s", err, out)
	}
	dropped := c.waitFor(t, "exec of the dropped binary", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && inCtr(ev) && ev.GetProcess().GetExe() == "/opt/busybox"
	})
	if !dropped.GetProcess().GetExeOrigin().GetOverlayUpper() {
		t.Errorf("binary in the upper layer not marked: origin %v", dropped.GetProcess().GetExeOrigin())
	}
}

// TestProcessCacheBoundedUnderChurn runs thousands of real short processes
// through a deliberately small cache.
func TestProcessCacheBoundedUnderChurn(t *testing.T) {
	const maxLive, keepExited = 256, 128
	c := startSensor(t, Config{ProcessCacheSize: maxLive, ExitedProcesses: keepExited})
	n := 3000
	if testing.Short() {
		n = 500
	}
	h := helper(t, "spin", strconv.Itoa(n))
	// Wait for the last child's exit to be processed.
	c.waitFor(t, "exit of the churn helper", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXIT && ownChild(ev, h.Process.Pid)
	})
	st, err := c.s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	pc := st.ProcessCache
	if pc.Live > maxLive || pc.Exited > keepExited || c.s.procs.Len() > maxLive+keepExited {
		t.Errorf("cache grew past its bounds: %+v", pc)
	}
	if pc.Exits < uint64(n) {
		t.Errorf("saw %d exits, want at least %d", pc.Exits, n)
	}
	execs := 0
	c.mu.Lock()
	for _, ev := range c.events {
		if ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ev.GetProcess().GetPpid() == uint32(h.Process.Pid) {
			execs++
			if len(ev.GetAncestry()) == 0 || ev.GetAncestry()[0].GetPid() != uint32(h.Process.Pid) {
				t.Errorf("churn child lost its ancestry: %v", ev.GetAncestry())
				break
			}
		}
	}
	c.mu.Unlock()
	if execs != n {
		t.Errorf("got %d exec events for %d processes (kernel stats %+v)", execs, n, st)
	}
}

// TestSignalToProtectedProcess: signals to the sensor (and to pids added
// with ProtectPID) are reported, signal 0 probes included; others are not.
func TestSignalToProtectedProcess(t *testing.T) {
	c := startSensor(t, Config{})
	sleeper := func() *exec.Cmd {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	protected, other := sleeper(), sleeper()
	if err := c.s.ProtectPID(uint32(protected.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	h := helper(t, "kill", strconv.Itoa(self), "0", strconv.Itoa(protected.Process.Pid), strconv.Itoa(int(unix.SIGTERM)),
		strconv.Itoa(other.Process.Pid), strconv.Itoa(int(unix.SIGTERM)))
	for _, tt := range []struct {
		what   string
		target int
		sig    int32
	}{
		{"kill -0 of the sensor", self, 0},
		{"SIGTERM to a protected pid", protected.Process.Pid, int32(unix.SIGTERM)},
	} {
		ev := c.waitFor(t, tt.what, func(ev *api.Event) bool {
			return ev.GetKind() == api.EventKind_EVENT_KIND_SIGNAL && ownChild(ev, h.Process.Pid) &&
				ev.GetSignal().GetTargetPid() == uint32(tt.target)
		})
		if s := ev.GetSignal(); s.GetSignal() != tt.sig || s.GetResult() != 0 {
			t.Errorf("%s: signal = %v, want %d", tt.what, s, tt.sig)
		}
	}
	c.none(t, "signal to an unprotected pid", func(ev *api.Event) bool {
		return ev.GetSignal().GetTargetPid() == uint32(other.Process.Pid)
	})
}

// TestDNSQuery: UDP datagrams to port 53, by address or on a connected
// socket (sent, or written with write and writev), and DNS over TCP are
// decoded as DNS queries; other ports are not reported, and a payload that
// is not a query is kept with an empty name and counted.
func TestDNSQuery(t *testing.T) {
	c := startSensor(t, Config{})
	h := helper(t, "dns")
	byName := func(name string) func(*api.Event) bool {
		return func(ev *api.Event) bool {
			return ev.GetKind() == api.EventKind_EVENT_KIND_DNS_QUERY && ownChild(ev, h.Process.Pid) &&
				ev.GetDnsQuery().GetName() == name
		}
	}
	udp, tcp := api.Protocol_PROTOCOL_UDP, api.Protocol_PROTOCOL_TCP
	for _, tt := range []struct {
		name    string
		qtype   uint32
		id      uint32
		proto   api.Protocol
		syscall string
	}{
		{"sendto.harrier-test.example", 1, 1, udp, "sendto"},
		{"sendmsg.harrier-test.example", 28, 2, udp, "sendmsg"},
		{"connected.harrier-test.example", 1, 4, udp, "sendto"},
		{"sendmmsg.harrier-test.example", 1, 5, udp, "sendmmsg"},
		{"write.harrier-test.example", 1, 6, udp, "write"},
		{"writev.harrier-test.example", 16, 7, udp, "writev"},
		{"tcp-write.harrier-test.example", 1, 8, tcp, "write"},
		{"tcp-writev.harrier-test.example", 1, 9, tcp, "writev"},
		{"tcp-send.harrier-test.example", 1, 10, tcp, "sendto"},
	} {
		q := c.waitFor(t, "DNS query "+tt.name, byName(tt.name)).GetDnsQuery()
		if q.GetQtype() != tt.qtype || q.GetTransactionId() != tt.id || q.GetServer().GetIp() != "127.0.0.1" ||
			q.GetServer().GetPort() != 53 || q.GetServer().GetFamily() != "ipv4" || q.GetProtocol() != tt.proto ||
			q.GetSyscall() != tt.syscall {
			t.Errorf("%s: query = %v", tt.name, q)
		}
	}
	c.waitFor(t, "malformed DNS payload", byName(""))
	c.none(t, "datagram to port 5353", func(ev *api.Event) bool {
		return ev.GetDnsQuery().GetServer().GetPort() == 5353 || strings.HasPrefix(ev.GetDnsQuery().GetName(), "other-port.")
	})
	st, err := c.s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.DNSDecodeErrors == 0 {
		t.Error("the malformed payload was not counted")
	}
}

// TestExecStdioSockets: a shell started by "nc -e" has a TCP socket as
// stdin and stdout, and the exec event names its peer.
func TestExecStdioSockets(t *testing.T) {
	runctest.Require(t) // for busybox-static
	c := startSensor(t, Config{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			_, err = conn.Write([]byte("exit\n"))
			_, _ = io.Copy(io.Discard, conn)
			conn.Close()
		}
		accepted <- err
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	nc := exec.Command(runctest.BusyboxPath, "nc", "127.0.0.1", strconv.Itoa(port), "-e", "/bin/sh")
	if out, err := nc.CombinedOutput(); err != nil {
		t.Fatalf("nc -e: %v %s", err, out)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	ev := c.waitFor(t, "exec of the shell", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ownChild(ev, nc.Process.Pid) &&
			ev.GetExec().GetFilename() == "/bin/sh"
	})
	ss := ev.GetExec().GetStdioSockets()
	if len(ss) < 2 {
		t.Fatalf("stdio sockets = %v, want fd 0 and 1", ss)
	}
	for i, s := range ss[:2] {
		r := s.GetRemote()
		if s.GetFd() != uint32(i) || s.GetFamily() != "ipv4" || r.GetIp() != "127.0.0.1" || r.GetPort() != uint32(port) {
			t.Errorf("stdio socket %d = %v, want 127.0.0.1:%d", i, s, port)
		}
	}
	// nc itself started with pipes: no sockets.
	first := c.waitFor(t, "exec of nc", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ownChild(ev, nc.Process.Pid) &&
			ev.GetExec().GetFilename() == runctest.BusyboxPath
	})
	if got := first.GetExec().GetStdioSockets(); len(got) != 0 {
		t.Errorf("nc started with pipes, got stdio sockets %v", got)
	}
}

// unifiedCgroup is this process's cgroup v2 path from /proc/self/cgroup.
func unifiedCgroup(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return ""
}

// LD_PRELOAD in a new program's environment is reported with its exec,
// wherever it sits among the variables; other variables are not.
func TestExecLDPreload(t *testing.T) {
	c := startSensor(t, Config{})
	var env []string
	for i := range 40 {
		env = append(env, fmt.Sprintf("FILLER_%d=%s", i, strings.Repeat("x", i*7)))
	}
	vars := func(n, size int) []string { // os/exec keeps one of each name
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("MORE_%d=%s", i, strings.Repeat("y", size)))
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		env       []string
		want      string
		unscanned bool
	}{
		{"first", append([]string{"LD_PRELOAD=/dev/shm/.l.so"}, env...), "/dev/shm/.l.so", false},
		{"after 40 others", append(slices.Clone(env), "LD_PRELOAD=/tmp/a.so /tmp/b.so"), "/tmp/a.so /tmp/b.so", false},
		{"unset, a look-alike set", append(slices.Clone(env), "LD_PRELOADX=/tmp/x.so", "XLD_PRELOAD=/tmp/y.so"), "", false},
		{"set empty", append(slices.Clone(env), "LD_PRELOAD="), "", false},
		// A short last variable ends the scan, but nothing is unscanned.
		{"ending in a short variable", append(slices.Clone(env), "A=b"), "", false},
		{"after 400 others", append(vars(400, 8), "LD_PRELOAD=/tmp/late.so"), "/tmp/late.so", false},
		// Past the strings the kernel looks at (512 of them, or 16 KiB):
		// not reported, but counted.
		{"after 600 others", append(vars(600, 1), "LD_PRELOAD=/tmp/later.so"), "", true},
		{"after 20 KiB of others", append(vars(20, 1024), "LD_PRELOAD=/tmp/far.so"), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := c.s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/true")
			cmd.Env = tc.env
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			ev := c.waitFor(t, "exec of /bin/true", func(ev *api.Event) bool {
				return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ownChild(ev, pid)
			})
			if got := ev.GetExec().GetLdPreload(); got != tc.want {
				t.Errorf("LD_PRELOAD %q, want %q", got, tc.want)
			}
			after, err := c.s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			// Other processes exec meanwhile: only a case past the limits
			// must raise the count.
			if tc.unscanned && after.KernelEnvUnscanned == before.KernelEnvUnscanned {
				t.Error("an environment past the scanned strings was not counted")
			}
			// Other processes' huge environments are rare enough here.
			if !tc.unscanned && after.KernelEnvUnscanned != before.KernelEnvUnscanned {
				t.Errorf("an environment scanned whole was counted as unscanned (%d -> %d)", before.KernelEnvUnscanned, after.KernelEnvUnscanned)
			}
		})
	}
}
