package sensor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
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

func TestWatchedFileOpen(t *testing.T) {
	watched := t.TempDir()
	unwatched := t.TempDir()
	secret := filepath.Join(watched, "secret")
	if err := os.WriteFile(secret, []byte("token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(unwatched, "plain"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startSensor(t, Config{WatchPaths: append(DefaultWatchPaths(), watched+"/")})

	// cat with a relative path: the kernel resolves the full path.
	cat := exec.Command("cat", "secret")
	cat.Dir = watched
	if out, err := cat.CombinedOutput(); err != nil {
		t.Fatalf("cat: %v %s", err, out)
	}
	ev := c.waitFor(t, "open of the watched file", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_OPEN && ownChild(ev, cat.Process.Pid)
	})
	fo := ev.GetFileOpen()
	if fo.GetPath() != secret || !fo.GetRead() || fo.GetWrite() || fo.GetCreate() || fo.GetResult() < 0 {
		t.Errorf("file_open = %v, want read-only open of %s", fo, secret)
	}
	if !slices.Equal(ev.GetProcess().GetArgs(), []string{"cat", "secret"}) {
		t.Errorf("args %q", ev.GetProcess().GetArgs())
	}

	// A default watch path: /etc/passwd through "..".
	cat2 := exec.Command("cat", "../etc/passwd")
	cat2.Dir = "/usr"
	if out, err := cat2.CombinedOutput(); err != nil {
		t.Fatalf("cat: %v %s", err, out)
	}
	c.waitFor(t, "open of /etc/passwd", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_OPEN && ownChild(ev, cat2.Process.Pid) &&
			ev.GetFileOpen().GetPath() == "/etc/passwd"
	})

	// Create, rename, unlink and a failed open, all relative to the cwd.
	h := helper(t, "files", watched, unwatched)
	pid := h.Process.Pid
	created := c.waitFor(t, "create", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_OPEN && ownChild(ev, pid) &&
			ev.GetFileOpen().GetPath() == filepath.Join(watched, "created.txt")
	})
	if fo := created.GetFileOpen(); !fo.GetCreate() || !fo.GetWrite() || !fo.GetTruncate() || fo.GetRead() {
		t.Errorf("create flags = %v", fo)
	}
	ren := c.waitFor(t, "rename", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_RENAME && ownChild(ev, pid)
	})
	if r := ren.GetFileRename(); r.GetOldPath() != filepath.Join(watched, "created.txt") ||
		r.GetNewPath() != filepath.Join(watched, "renamed.txt") || r.GetResult() != 0 {
		t.Errorf("rename = %v", r)
	}
	unl := c.waitFor(t, "unlink", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_UNLINK && ownChild(ev, pid)
	})
	if u := unl.GetFileUnlink(); u.GetPath() != filepath.Join(watched, "renamed.txt") || u.GetResult() != 0 || u.GetDirectory() {
		t.Errorf("unlink = %v", u)
	}
	missing := c.waitFor(t, "failed open", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_OPEN && ownChild(ev, pid) &&
			ev.GetFileOpen().GetPath() == filepath.Join(watched, "missing.txt")
	})
	if missing.GetFileOpen().GetResult() != -int64(unix.ENOENT) {
		t.Errorf("failed open result %d, want -ENOENT", missing.GetFileOpen().GetResult())
	}
	// Nothing outside the watch list crosses to user space.
	c.none(t, "unwatched open", func(ev *api.Event) bool {
		return strings.HasPrefix(ev.GetFileOpen().GetPath(), unwatched)
	})
	st, err := c.s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.KernelFileFiltered == 0 {
		t.Error("the kernel filter counted no filtered open")
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
	port := freePort(t)
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

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
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

	h = helper(t, "module")
	ml := c.waitFor(t, "finit_module", kind(api.EventKind_EVENT_KIND_MODULE_LOAD, h.Process.Pid)).GetModuleLoad()
	if ml.GetSyscall() != "finit_module" || ml.GetPath() != "/dev/null" || ml.GetParams() != "harrier=1" || ml.GetResult() >= 0 {
		t.Errorf("module load = %v", ml)
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

// TestDirCacheInvalidation: opens in a directory that cannot hold watched
// files are dismissed from a kernel cache without walking the path; moving
// that directory under a watched prefix must make its files visible again.
func TestDirCacheInvalidation(t *testing.T) {
	base := t.TempDir()
	watched := filepath.Join(base, "watched")
	sub := filepath.Join(base, "plain", "sub")
	for _, d := range []string{watched, sub} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sub, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startSensor(t, Config{WatchPaths: []string{watched + "/"}})
	for range 3 {
		if out, err := exec.Command("cat", filepath.Join(sub, "f")).CombinedOutput(); err != nil {
			t.Fatalf("cat: %v %s", err, out)
		}
	}
	st, err := c.s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.KernelDirCacheHits == 0 {
		t.Errorf("repeated opens in an unwatched directory never hit the cache: %+v", st)
	}
	c.none(t, "open in the unwatched directory", func(ev *api.Event) bool {
		return strings.HasPrefix(ev.GetFileOpen().GetPath(), base)
	})

	// mv runs in a child: the sensor ignores its own process.
	if out, err := exec.Command("mv", filepath.Join(base, "plain"), watched+"/").CombinedOutput(); err != nil {
		t.Fatalf("mv: %v %s", err, out)
	}
	moved := filepath.Join(watched, "plain", "sub", "f")
	cat := exec.Command("cat", moved)
	if out, err := cat.CombinedOutput(); err != nil {
		t.Fatalf("cat: %v %s", err, out)
	}
	c.waitFor(t, "open after the directory moved under a watched prefix", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_OPEN && ownChild(ev, cat.Process.Pid) &&
			ev.GetFileOpen().GetPath() == moved
	})
}

// TestChmod: a mode that sets an execute bit is reported wherever the file
// is, with its absolute path; other modes only under a watched prefix.
func TestChmod(t *testing.T) {
	dir := t.TempDir()
	watched := filepath.Join(t.TempDir(), "watched")
	if err := os.MkdirAll(watched, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(watched, "secret")
	for _, f := range []string{filepath.Join(dir, "payload"), filepath.Join(dir, "fd-payload"), filepath.Join(dir, "plain"), secret} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := startSensor(t, Config{WatchPaths: []string{watched + "/"}})
	h := helper(t, "chmod", dir, secret)
	chmodOf := func(path string, mode uint32) func(*api.Event) bool {
		return func(ev *api.Event) bool {
			return ev.GetKind() == api.EventKind_EVENT_KIND_CHMOD && ownChild(ev, h.Process.Pid) &&
				ev.GetChmod().GetPath() == path && ev.GetChmod().GetMode() == mode
		}
	}
	tests := []struct {
		what string
		path string
		mode uint32
	}{
		{"chmod 0755 by a relative name", filepath.Join(dir, "payload"), 0o755},
		{"fchmod 0700", filepath.Join(dir, "fd-payload"), 0o700},
		{"fchmodat2 AT_EMPTY_PATH 0711", filepath.Join(dir, "fd-payload"), 0o711},
		{"chmod 0600 of a watched file", secret, 0o600},
	}
	for _, tt := range tests {
		ev := c.waitFor(t, tt.what, chmodOf(tt.path, tt.mode))
		if ev.GetChmod().GetResult() != 0 {
			t.Errorf("%s: result %d", tt.what, ev.GetChmod().GetResult())
		}
	}
	c.none(t, "chmod 0644 of an unwatched file", func(ev *api.Event) bool {
		return ev.GetChmod().GetPath() == filepath.Join(dir, "plain")
	})
}

// TestChmodInContainer: "chmod +x" of a downloaded file inside a container
// reports the path as the container sees it.
func TestChmodInContainer(t *testing.T) {
	runctest.Require(t)
	c := startSensor(t, Config{})
	ctr := runctest.Start(t, runctest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := ctr.Exec(ctx, "sh", "-c", "cd /tmp && echo x > dl && chmod +x ./dl && chmod 644 dl"); err != nil {
		t.Fatalf("exec in container: %v %s", err, out)
	}
	ev := c.waitFor(t, "chmod +x in the container", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_CHMOD && ev.GetContainer().GetId() == ctr.ID &&
			ev.GetProcess().GetComm() == "chmod"
	})
	if ch := ev.GetChmod(); ch.GetPath() != "/tmp/dl" || ch.GetMode()&0o111 == 0 || ch.GetResult() != 0 {
		t.Errorf("chmod = %v, want +x of /tmp/dl", ch)
	}
	c.none(t, "chmod 644 of an unwatched file", func(ev *api.Event) bool {
		return ev.GetChmod().GetPath() == "/tmp/dl" && ev.GetChmod().GetMode() == 0o644
	})
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
// socket, are decoded as DNS queries; other ports are not reported, and a
// payload that is not a query is kept with an empty name and counted.
func TestDNSQuery(t *testing.T) {
	c := startSensor(t, Config{})
	h := helper(t, "dns")
	byName := func(name string) func(*api.Event) bool {
		return func(ev *api.Event) bool {
			return ev.GetKind() == api.EventKind_EVENT_KIND_DNS_QUERY && ownChild(ev, h.Process.Pid) &&
				ev.GetDnsQuery().GetName() == name
		}
	}
	for _, tt := range []struct {
		name  string
		qtype uint32
		id    uint32
	}{
		{"sendto.harrier-test.example", 1, 1},
		{"sendmsg.harrier-test.example", 28, 2},
		{"connected.harrier-test.example", 1, 4},
		{"sendmmsg.harrier-test.example", 1, 5},
	} {
		q := c.waitFor(t, "DNS query "+tt.name, byName(tt.name)).GetDnsQuery()
		if q.GetQtype() != tt.qtype || q.GetTransactionId() != tt.id || q.GetServer().GetIp() != "127.0.0.1" ||
			q.GetServer().GetPort() != 53 || q.GetServer().GetFamily() != "ipv4" {
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

// TestShedOrderUnderOverload: with nobody reading, fork and exit stop
// entering the queue once it is half full, and the rest of it goes to the
// other kinds; every shed and drop is counted.
func TestShedOrderUnderOverload(t *testing.T) {
	testenv.RequireRoot(t)
	s := newRawSensor(t, Config{QueueSize: 64})
	out, stop := runRaw(t, s, s.QueueSize())
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i := 0; i < 20; i++ {
			_ = exec.Command("/bin/true").Run()
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.QueueShed["fork"] > 0 && st.QueueShed["exit"] > 0 && st.QueueDropped["exec"] > 0 {
			if st.QueueShed["exec"] != 0 {
				t.Errorf("exec events were shed: %v", st.QueueShed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no shedding after 20 s: shed %v dropped %v", st.QueueShed, st.QueueDropped)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	close(out)
	i := 0
	for ev := range out {
		if i >= s.QueueSize()/2 && (ev.GetKind() == api.EventKind_EVENT_KIND_FORK || ev.GetKind() == api.EventKind_EVENT_KIND_EXIT) {
			t.Fatalf("a %s entered the queue at position %d, past the shed mark", ev.GetKind(), i)
		}
		i++
	}
	if i != s.QueueSize() {
		t.Fatalf("queue holds %d events, want it full (%d)", i, s.QueueSize())
	}
}

// TestHomeWatchPaths: inside a home directory only the credential, history
// and login files are watched, for /root and every /home/<user>, in a
// container as on the host; sources and caches next to them are not.
func TestHomeWatchPaths(t *testing.T) {
	runctest.Require(t)
	c := startSensor(t, Config{})
	files := map[string]runctest.File{}
	for _, p := range []string{"/home/app/.aws/credentials", "/home/app/src/main.go", "/root/.ssh/known_hosts",
		"/root/.cache/go-build/x", "/home/app/.bash_history", "/home/app/.cache/pip/x", "/homely/.ssh/id_rsa"} {
		files[p] = runctest.File{Content: "x\n"}
	}
	ctr := runctest.Start(t, runctest.Options{Image: files})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var script strings.Builder
	for p := range files {
		script.WriteString("cat " + p + " >/dev/null; ")
	}
	if out, err := ctr.Exec(ctx, "sh", "-c", script.String()); err != nil {
		t.Fatalf("exec in container: %v %s", err, out)
	}
	opened := func(path string) func(*api.Event) bool {
		return func(ev *api.Event) bool {
			return ev.GetContainer().GetId() == ctr.ID && ev.GetFileOpen().GetPath() == path
		}
	}
	for _, p := range []string{"/home/app/.aws/credentials", "/root/.ssh/known_hosts", "/home/app/.bash_history"} {
		c.waitFor(t, "open of "+p, opened(p))
	}
	for _, p := range []string{"/home/app/src/main.go", "/root/.cache/go-build/x", "/home/app/.cache/pip/x", "/homely/.ssh/id_rsa"} {
		c.none(t, "open of "+p, opened(p))
	}
}

// TestKernelShedsOrdinaryReadsUnderPressure: with the ring buffer over half
// full, the kernel drops read-only opens of ordinary watched paths, and keeps
// room for sensitive paths and writes, which still arrive.
func TestKernelShedsOrdinaryReadsUnderPressure(t *testing.T) {
	testenv.RequireRoot(t)
	dir, plain, secret, written := shedFiles(t)
	s := newRawSensor(t, Config{RingBufferBytes: 64 << 10, WakeupBytes: 60 << 10, WatchPaths: []string{dir + "/"},
		SensitivePaths: []string{secret}})
	// Nobody reads the ring yet: ordinary reads (by a child: the sensor
	// ignores its own process) fill it past half.
	if out, err := exec.Command("sh", "-c", `i=0; while [ $i -lt 3000 ]; do read x < "$1"; i=$((i+1)); done`, "sh", plain).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.KernelShedReads == 0 {
		t.Fatalf("no ordinary read shed with the ring full: %+v", st)
	}
	if out, err := exec.Command("sh", "-c", `read x < "$1"; echo y > "$2"`, "sh", secret, written).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	out, stop := runRaw(t, s, 1<<16)
	waitSecretAndWrite(t, "under pressure", out, secret, written)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestShedWhenTheQueueIsOld: far below shedAt, once the oldest queued event
// has waited longer than maxQueueDelay, ordinary reads are shed, while a
// sensitive read and a write still enter the queue; once the consumer has
// caught up, ordinary reads enter again.
func TestShedWhenTheQueueIsOld(t *testing.T) {
	testenv.RequireRoot(t)
	dir, plain, secret, written := shedFiles(t)
	s := newRawSensor(t, Config{QueueSize: 8192, MaxQueueDelay: confval.Duration(50 * time.Millisecond), WatchPaths: []string{dir + "/"},
		SensitivePaths: []string{secret}})
	// Queue ages are read from a clock that stands still until the test
	// moves it, so no read can age the queue but the test's step.
	start := time.Now()
	var elapsed atomic.Int64
	s.queueNow = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	out, stop := runRaw(t, s, s.QueueSize())
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	// reads opens plain n times (by a child: the sensor ignores its own
	// process) and waits until the sensor has received them all.
	reads := func(n int) {
		t.Helper()
		before, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do read x < "$1"; i=$((i+1)); done`, n)
		if out, err := exec.Command("sh", "-c", script, "sh", plain).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.Received-before.Received >= uint64(n) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sensor received %d of %d reads", st.Received-before.Received, n)
			}
		}
	}
	// Nobody consumes: 300 reads wait in the queue, far below shedAt.
	reads(300)
	if st, _ := s.Stats(); st.QueueShed["file_open"] != 0 || len(out) < 300 {
		t.Fatalf("shed %v with a young queue of %d", st.QueueShed, len(out))
	}
	elapsed.Add(int64(100 * time.Millisecond)) // the head is now older than 50 ms
	queued := len(out)
	reads(300)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// The check runs every 64 records: at most that many entered after the
	// queue grew old.
	if shed := st.QueueShed["file_open"]; shed < 300-queueClockStride || len(out) > queued+queueClockStride {
		t.Fatalf("old queue: %d ordinary reads shed, the queue grew from %d to %d", shed, queued, len(out))
	}
	if st.QueueHeadAge < 50*time.Millisecond {
		t.Errorf("old queue: reported head age %v", st.QueueHeadAge)
	}
	if out, err := exec.Command("sh", "-c", `read x < "$1"; echo y > "$2"`, "sh", secret, written).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	// The consumer catches up; the sensitive read and the write were queued.
	waitSecretAndWrite(t, "old queue", out, secret, written)
	for len(out) > 0 {
		<-out
	}
	shedBefore := st.QueueShed["file_open"]
	reads(200)
	if st, _ := s.Stats(); st.QueueShed["file_open"] != shedBefore {
		t.Fatalf("with the queue drained, %d more ordinary reads were shed", st.QueueShed["file_open"]-shedBefore)
	}
}

// waitSecretAndWrite reads out until it has seen an open of secret and a
// write open of written: what overload must never shed.
func waitSecretAndWrite(t *testing.T, when string, out <-chan *api.Event, secret, written string) {
	t.Helper()
	var gotSecret, gotWrite bool
	deadline := time.After(10 * time.Second)
	for !gotSecret || !gotWrite {
		select {
		case ev := <-out:
			switch ev.GetFileOpen().GetPath() {
			case secret:
				gotSecret = true
			case written:
				gotWrite = gotWrite || ev.GetFileOpen().GetWrite()
			}
		case <-deadline:
			t.Fatalf("%s: sensitive read seen %v, write seen %v", when, gotSecret, gotWrite)
		}
	}
}

// newRawSensor is a sensor with cfg, closed at the end of the test.
func newRawSensor(t *testing.T, cfg Config) *Sensor {
	t.Helper()
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// runRaw runs s into a channel of the given size that nobody reads until
// the test does; stop ends Run and returns its error.
func runRaw(t *testing.T, s *Sensor, size int) (out chan *api.Event, stop func() error) {
	t.Helper()
	out = make(chan *api.Event, size)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, out) }()
	return out, func() error { cancel(); return <-done }
}

// shedFiles makes a directory with an ordinary file and a sensitive one
// (both existing) and the path of a file to write.
func shedFiles(t *testing.T) (dir, plain, secret, written string) {
	t.Helper()
	dir = t.TempDir()
	plain, secret, written = filepath.Join(dir, "plain"), filepath.Join(dir, "secret"), filepath.Join(dir, "written")
	for _, p := range []string{plain, secret} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, plain, secret, written
}
