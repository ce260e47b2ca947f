package sensor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
)

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

// TestFileCacheInvalidation: an unwatched file in a directory that holds a
// watched one (/etc/ld.so.cache beside /etc/shadow) is dismissed from a
// kernel cache after its first open; renamed to the watched name, the same
// file (the same dentry) must be reported again.
func TestFileCacheInvalidation(t *testing.T) {
	dir := t.TempDir()
	plain, secret := filepath.Join(dir, "plain"), filepath.Join(dir, "secret")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startSensor(t, Config{WatchPaths: []string{secret}})
	for range 3 {
		if out, err := exec.Command("cat", plain).CombinedOutput(); err != nil {
			t.Fatalf("cat: %v %s", err, out)
		}
	}
	st, err := c.s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.KernelFileCacheHits == 0 {
		t.Errorf("repeated opens of an unwatched file beside a watched one never hit the file cache: %+v", st)
	}
	c.none(t, "open of the unwatched file", func(ev *api.Event) bool {
		return ev.GetFileOpen().GetPath() == plain
	})
	if out, err := exec.Command("mv", plain, secret).CombinedOutput(); err != nil {
		t.Fatalf("mv: %v %s", err, out)
	}
	cat := exec.Command("cat", secret)
	if out, err := cat.CombinedOutput(); err != nil {
		t.Fatalf("cat: %v %s", err, out)
	}
	c.waitFor(t, "open after the file was renamed to the watched name", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_FILE_OPEN && ownChild(ev, cat.Process.Pid) &&
			ev.GetFileOpen().GetPath() == secret
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

func TestAtomicWriterPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/home/app/.aws/..2026_12_06_03_01_02.1234567/credentials", "/home/app/.aws/credentials"},
		{"/var/run/secrets/kubernetes.io/serviceaccount/..2026_01_31_23_59_59.9/token", "/var/run/secrets/kubernetes.io/serviceaccount/token"},
		{"/home/app/.aws/credentials", "/home/app/.aws/credentials"},
		{"/home/app/.aws/..data/credentials", "/home/app/.aws/..data/credentials"},
		{"/home/app/..2026_12_06_03_01_02./x", "/home/app/..2026_12_06_03_01_02./x"},
		{"/home/app/..2026_12_06_03_01_0x.12/x", "/home/app/..2026_12_06_03_01_0x.12/x"},
		{"/tmp/..2026_12_06_03_01_02.12", "/tmp/..2026_12_06_03_01_02.12"},
		{"/..", "/.."},
		{"", ""},
	}
	for _, tt := range tests {
		if got := atomicWriterPath(tt.in); got != tt.want {
			t.Errorf("atomicWriterPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
