package proc

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// statLine builds a /proc/PID/stat line with the given comm, ppid and
// starttime (field 22) and plausible filler elsewhere.
func statLine(pid, comm, ppid, start string) string {
	f := []string{pid, "(" + comm + ")", "S", ppid, "1", "1", "0", "-1", "4194560", "100", "0", "0", "0", "1", "2", "0", "0", "20", "0", "1", "0", start, "1000", "200"}
	return strings.Join(f, " ") + "\n"
}

const statusText = "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\nPPid:\t0\nUid:\t1000\t0\t0\t0\nGid:\t100\t50\t50\t50\nGroups:\t\n"

type fakeProc struct {
	stat, status, cmdline, cgroup string
	exe, cwd                      string // symlink targets; "" = no link
	omit                          []string
}

func writeFakeProc(t *testing.T, root, pid string, p fakeProc) {
	t.Helper()
	dir := filepath.Join(root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"stat": p.stat, "status": p.status, "cmdline": p.cmdline, "cgroup": p.cgroup} {
		if slices.Contains(p.omit, name) {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"exe": p.exe, "cwd": p.cwd} {
		if target == "" {
			continue
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSeedFakeTree(t *testing.T) {
	root := t.TempDir()
	procs := map[string]fakeProc{
		"1": {
			stat: statLine("1", "systemd", "0", "1"), status: statusText,
			cmdline: "/sbin/init\x00splash\x00", cgroup: "0::/init.scope\n",
			exe: "/usr/lib/systemd/systemd", cwd: "/",
		},
		"2": {stat: statLine("2", "kthreadd", "0", "1"), status: statusText}, // kernel thread: no exe, cwd or cmdline
		"300": {
			stat: statLine("300", "evil) (x", "1", "12345"), status: statusText,
			cmdline: "./payload\x00", exe: "/tmp/payload (deleted)", cwd: "/tmp",
			cgroup: "12:pids:/docker/abc\n11:cpu,cpuacct:/docker/abc\n0::/system.slice/docker-abc.scope\n",
		},
		"301": {
			stat: statLine("301", "3", "300", "12346"), status: statusText,
			exe: "/memfd:x (deleted)", cgroup: "12:pids:/v1only\n11:cpu:/other\n",
			cmdline: strings.Repeat("a", 40) + "\x00" + strings.Repeat("b", 40) + "\x00",
		},
		"302": {stat: statLine("302", "rewrote", "1", "5"), status: statusText, cmdline: "nginx: worker process"},
		"400": {omit: []string{"stat"}, status: statusText},                                         // vanished
		"401": {stat: statLine("401", "x", "1", "5"), omit: []string{"status"}},                     // vanished mid-read
		"500": {stat: "garbage", status: statusText},                                                // malformed
		"501": {stat: statLine("501", "x", "1", "5"), status: "Name:\tx\n"},                         // no Uid line
		"502": {stat: statLine("502", "existing", "1", "5"), status: statusText, exe: "/from/seed"}, // already cached
	}
	for pid, p := range procs {
		writeFakeProc(t, root, pid, p)
	}
	for _, name := range []string{"self", "sys", "0"} {
		if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	c := New(Config{MaxArgBytes: 64})
	c.Exec(Entry{Tgid: 502, Exe: "/from/event"})
	n, err := c.Seed(root)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("Seed inserted %d, want 5", n)
	}

	tests := []struct {
		pid  uint32
		want Entry
	}{
		{1, Entry{Tgid: 1, Ppid: 0, Comm: "systemd", Exe: "/usr/lib/systemd/systemd", Cwd: "/", Cgroup: "/init.scope",
			Args: []string{"/sbin/init", "splash"}, StartBootNs: 1e7, Uid: 1000, Euid: 0, Gid: 100, Egid: 50}},
		{2, Entry{Tgid: 2, Comm: "kthreadd", StartBootNs: 1e7, Uid: 1000, Gid: 100, Egid: 50}},
		{300, Entry{Tgid: 300, Ppid: 1, Comm: "evil) (x", Exe: "/tmp/payload", Cwd: "/tmp", Args: []string{"./payload"},
			Cgroup: "/system.slice/docker-abc.scope", StartBootNs: 12345 * 1e7, Uid: 1000, Gid: 100, Egid: 50,
			ExeOrigin: ExeOrigin{Deleted: true}}},
		{301, Entry{Tgid: 301, Ppid: 300, Comm: "3", Exe: "/memfd:x", Cgroup: "/v1only", StartBootNs: 12346 * 1e7,
			Args: []string{strings.Repeat("a", 40), strings.Repeat("b", 22)}, ArgsTruncated: true,
			Uid: 1000, Gid: 100, Egid: 50, ExeOrigin: ExeOrigin{Memfd: true, Deleted: true}}},
		{302, Entry{Tgid: 302, Ppid: 1, Comm: "rewrote", Args: []string{"nginx: worker process"}, StartBootNs: 5e7,
			Uid: 1000, Gid: 100, Egid: 50}},
		{502, Entry{Tgid: 502, Exe: "/from/event"}},
	}
	for _, tt := range tests {
		got, ok := c.Get(tt.pid)
		if !ok {
			t.Errorf("pid %d not seeded", tt.pid)
			continue
		}
		if got.Comm != tt.want.Comm || got.Exe != tt.want.Exe || got.Cwd != tt.want.Cwd || got.Cgroup != tt.want.Cgroup ||
			!slices.Equal(got.Args, tt.want.Args) || got.ArgsTruncated != tt.want.ArgsTruncated ||
			got.Ppid != tt.want.Ppid || got.StartBootNs != tt.want.StartBootNs || got.ExeOrigin != tt.want.ExeOrigin ||
			got.Uid != tt.want.Uid || got.Euid != tt.want.Euid || got.Gid != tt.want.Gid || got.Egid != tt.want.Egid {
			t.Errorf("pid %d:\n got %+v\nwant %+v", tt.pid, got, tt.want)
		}
	}
	for _, pid := range []uint32{400, 401, 500, 501} {
		if _, ok := c.Get(pid); ok {
			t.Errorf("pid %d should have been skipped", pid)
		}
	}
	if s := c.Stats(); s.Seeded != 5 || s.SeedFailed != 2 || s.SeedPermissionDenied != 0 {
		t.Errorf("stats = %+v", s)
	}
	if got := tgids(c.Ancestry(301, 5)); !slices.Equal(got, []uint32{300, 1}) {
		t.Errorf("seeded ancestry = %v, want [300 1]", got)
	}
	// A kernel exec event with an exact start in the same tick is the same process.
	c.Exec(Entry{Tgid: 300, StartBootNs: 12345*1e7 + 3e6, Exe: "/bin/sh"})
	if e, _ := c.Get(300); e.Cwd != "/tmp" || c.Stats().Reused != 0 {
		t.Errorf("exact-time exec treated as pid reuse: %+v", e)
	}

	if _, err := c.Seed(filepath.Join(root, "missing")); err == nil {
		t.Error("Seed of a missing root succeeded")
	}
}

func TestSeedPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		withoutFileOverride(t)
	}
	root := t.TempDir()
	writeFakeProc(t, root, "7", fakeProc{stat: statLine("7", "x", "1", "5"), status: statusText})
	if err := os.Chmod(filepath.Join(root, "7", "status"), 0); err != nil {
		t.Fatal(err)
	}
	c := New(Config{})
	if n, err := c.Seed(root); err != nil || n != 0 {
		t.Fatalf("Seed = %d, %v; want 0, nil", n, err)
	}
	if s := c.Stats(); s.SeedPermissionDenied != 1 || s.SeedFailed != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// withoutFileOverride makes the rest of the test read files as root reads
// them without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: by their mode, like
// any other user. Capabilities belong to a thread, so the test's goroutine is
// locked to its thread, and is never unlocked: the runtime then ends the
// thread with the goroutine instead of reusing it.
func withoutFileOverride(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	caps[0].Effective &^= 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		t.Fatalf("capset: %v", err)
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name                 string
		in                   string
		uid, euid, gid, egid uint32
		wantErr              bool
	}{
		{"normal", statusText, 1000, 0, 100, 50, false},
		{"setuid", "Uid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n", 1000, 0, 1000, 1000, false},
		{"missing gid", "Uid:\t1\t1\t1\t1\n", 0, 0, 0, 0, true},
		{"short line", "Uid:\t1\nGid:\t1\t1\t1\t1\n", 0, 0, 0, 0, true},
		{"not a number", "Uid:\tx\t1\t1\t1\nGid:\t1\t1\t1\t1\n", 0, 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, euid, gid, egid, err := parseStatus(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if uid != tt.uid || euid != tt.euid || gid != tt.gid || egid != tt.egid {
				t.Fatalf("ids = %d %d %d %d", uid, euid, gid, egid)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		comm    string
		ppid    uint32
		start   uint64
		wantErr bool
	}{
		{"normal", statLine("9", "bash", "8", "777"), "bash", 8, 777, false},
		{"comm with parens and spaces", statLine("9", ") (a b", "8", "777"), ") (a b", 8, 777, false},
		{"no parens", "9 bash S 8", "", 0, 0, true},
		{"truncated", "9 (bash) S 8 1 1", "", 0, 0, true},
		{"bad ppid", strings.Replace(statLine("9", "b", "8", "7"), " 8 ", " x ", 1), "", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			comm, ppid, start, err := parseStat(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if comm != tt.comm || ppid != tt.ppid || start != tt.start {
				t.Fatalf("got %q %d %d", comm, ppid, start)
			}
		})
	}
}

func TestSeedRealProc(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Fatalf("no procfs: %v", err)
	}
	// The child says it is running once its argv is in place (Start
	// returns before execve lays it out), then waits for its stdin.
	script := "echo running; read x"
	child := exec.Command("sh", "-c", script)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = child.Wait()
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "running\n" {
		t.Fatalf("child said %q: %v", line, err)
	}

	c := New(Config{})
	n, err := c.Seed("/proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d processes, stats %+v", n, c.Stats())

	self, ok := c.Get(uint32(os.Getpid()))
	if !ok {
		t.Fatal("own process not seeded")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if self.Exe != exe {
		t.Errorf("own exe = %q, want %q", self.Exe, exe)
	}
	if self.Ppid != uint32(os.Getppid()) {
		t.Errorf("own ppid = %d, want %d", self.Ppid, os.Getppid())
	}
	if len(self.Args) == 0 || self.Args[0] != os.Args[0] {
		t.Errorf("own args = %q, want argv[0] %q", self.Args, os.Args[0])
	}
	if self.Uid != uint32(os.Getuid()) || self.Euid != uint32(os.Geteuid()) || self.StartBootNs == 0 {
		t.Errorf("own entry = %+v", self)
	}

	kid, ok := c.Get(uint32(child.Process.Pid))
	if !ok {
		t.Fatal("child not seeded")
	}
	if !slices.Equal(kid.Args, []string{"sh", "-c", script}) || kid.Ppid != uint32(os.Getpid()) || kid.Comm != "sh" {
		t.Errorf("child = %+v", kid)
	}
	if kid.StartBootNs < self.StartBootNs {
		t.Errorf("child started (%d) before its parent (%d)", kid.StartBootNs, self.StartBootNs)
	}
	if got := c.Ancestry(kid.Tgid, 64); len(got) == 0 || got[0].Tgid != self.Tgid {
		t.Errorf("child ancestry = %v, want to start with %d", tgids(got), self.Tgid)
	}
}
