package response

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// copyFile copies an executable to a path of its own: a new inode.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestExecGuard: a marker program whose first action is to create a file
// (a copy of touch) is killed at exec under enforce, so the file never
// appears; under audit it runs and the hit is reported. Another copy of the
// same program, not listed, runs.
func TestExecGuard(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatal(err)
	}
	enforced, audited, unlisted := filepath.Join(dir, "marker-enforce"), filepath.Join(dir, "marker-audit"), filepath.Join(dir, "marker-unlisted")
	for _, p := range []string{enforced, audited, unlisted} {
		copyFile(t, touch, p)
	}
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	g, skipped, err := StartExecGuard([]ExecDeny{
		{Name: "tools", Mode: ModeEnforce, Paths: []string{enforced, filepath.Join(dir, "missing")}},
		{Name: "watch", Mode: ModeAudit, Paths: []string{audited}},
	}, boot)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 1 || g.Entries() != 2 {
		t.Errorf("skipped %v, entries %d: want the missing path skipped and 2 entries", skipped, g.Entries())
	}
	t.Logf("attached with %s", g.Attach)
	hits := guardHits(t, g)

	run := func(prog string) (string, error) {
		marker := prog + ".wrote"
		return marker, exec.Command(prog, marker).Run()
	}
	marker, err := run(enforced)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("enforced marker ended with %v, want SIGKILL", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the enforced marker ran its first instruction: %s exists (%v)", marker, err)
	}
	for _, p := range []string{audited, unlisted} {
		marker, err := run(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("%s did not run: %v", p, err)
		}
	}
	testenv.WaitFor(t, 5*time.Second, "two hits", func() bool { return len(hits()) == 2 })
	got := hits()
	if h := got[0]; h.List != "tools" || h.Path != enforced || !h.Killed || h.Err != nil || h.TGID == 0 {
		t.Errorf("enforce hit %+v", h)
	}
	if h := got[1]; h.List != "watch" || h.Path != audited || h.Killed || h.Mode != ModeAudit {
		t.Errorf("audit hit %+v", h)
	}
}

// TestExecGuardNames: a listed name is killed at exec wherever its file
// is, and when it is started through a link of that name (its comm); a
// copy under another name runs. A long name is compared on its first 31
// bytes, as validated.
func TestExecGuardNames(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatal(err)
	}
	const long = "harrier-test-miner-with-a-long-name" // 35 bytes: its file name is cut to 31 in the kernel's key
	named, other, longNamed := filepath.Join(dir, "harrier-miner"), filepath.Join(dir, "innocent"), filepath.Join(dir, long)
	for _, p := range []string{named, other, longNamed} {
		copyFile(t, touch, p)
	}
	link := filepath.Join(dir, "hminer-ln") // comm holds 15 bytes
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if err := (ExecDeny{Name: "x", Mode: ModeEnforce, Names: []string{long}}).validate(); err == nil {
		t.Errorf("a %d-byte name validated", len(long))
	}
	for _, bad := range []string{"", "a/b", ".."} {
		if err := (ExecDeny{Name: "x", Mode: ModeEnforce, Names: []string{bad}}).validate(); err == nil {
			t.Errorf("name %q validated", bad)
		}
	}
	if err := (ExecDeny{Name: "x", Mode: ModeEnforce, Drift: true, Names: []string{"xmrig"}}).validate(); err == nil {
		t.Error("drift with names validated")
	}
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := StartExecGuard([]ExecDeny{
		{Name: "miners", Mode: ModeEnforce, Names: []string{"harrier-miner", "hminer-ln", long[:maxDenyName]}},
	}, boot)
	if err != nil {
		t.Fatal(err)
	}
	hits := guardHits(t, g)

	for _, tt := range []struct {
		prog   string
		killed bool
	}{
		{named, true},     // the file's name
		{link, true},      // the name execve was given (comm), through a link to another file
		{longNamed, true}, // a long file name, on its first 31 bytes
		{other, false},    // the same program under another name
	} {
		marker := filepath.Join(dir, filepath.Base(tt.prog)+".wrote")
		err := exec.Command(tt.prog, marker).Run()
		_, statErr := os.Stat(marker)
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		switch {
		case tt.killed && (!killed || statErr == nil):
			t.Errorf("%s: ended with %v, marker %v: want killed before its first instruction", tt.prog, err, statErr)
		case !tt.killed && (err != nil || statErr != nil):
			t.Errorf("%s: ended with %v, marker %v: want it to run", tt.prog, err, statErr)
		}
	}
	testenv.WaitFor(t, 5*time.Second, "three hits", func() bool { return len(hits()) == 3 })
	got := hits()
	if h := got[0]; h.List != "miners" || h.Name != "harrier-miner" || h.Path != named || !h.Killed {
		t.Errorf("name hit %+v", h)
	}
	if h := got[1]; h.Name != "hminer-ln" || h.Path != link || !h.Killed {
		t.Errorf("comm hit %+v", h)
	}
}

// TestExecGuardHashes: a program listed by its sha256 is killed within
// milliseconds of its first exec, under whatever name and path, and dies
// before its first instruction at every later exec of that file; the same
// file changed (a new hash) runs, and so does an unlisted program.
func TestExecGuardHashes(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatal(err)
	}
	miner, renamed, unlisted := filepath.Join(dir, "miner"), filepath.Join(dir, "innocent-name"), filepath.Join(dir, "touch-copy")
	copyFile(t, sleep, miner)
	copyFile(t, sleep, renamed)
	copyFile(t, touch, unlisted)
	trueProg, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	quick := filepath.Join(dir, "quick")
	copyFile(t, trueProg, quick)
	sumOf := func(p string) [32]byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	sum, quickSum := sumOf(sleep), sumOf(trueProg)
	if err := (ExecDeny{Name: "x", Mode: ModeEnforce, SHA256: []string{"abc"}}).validate(); err == nil {
		t.Error("a short sha256 validated")
	}
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := StartExecGuard([]ExecDeny{{Name: "bad-hashes", Mode: ModeEnforce, SHA256: []string{hex.EncodeToString(sum[:]), hex.EncodeToString(quickSum[:])}}}, boot)
	if err != nil {
		t.Fatal(err)
	}
	// The responder's counters, as the agent wires them.
	r := NewResponder(nil, "node-a", func(*api.Event) {}, slog.New(slog.DiscardHandler))
	g.UseHashStats(r.ExecHashStats())
	hits := guardHits(t, g)
	killedBy := func(err error) bool {
		var ee *exec.ExitError
		return errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	}

	for _, prog := range []string{miner, renamed} {
		// First run: hashed while it sleeps, killed then.
		start := time.Now()
		err := exec.Command(prog, "30").Run()
		if !killedBy(err) || time.Since(start) > 5*time.Second {
			t.Fatalf("%s's first run ended with %v after %s, want SIGKILL within the hash check", prog, err, time.Since(start))
		}
		t.Logf("%s: first run killed %s after exec", filepath.Base(prog), time.Since(start).Round(time.Millisecond))
		// Later runs: killed at exec (it would otherwise sleep 30 s).
		start = time.Now()
		if err := exec.Command(prog, "3").Run(); !killedBy(err) || time.Since(start) > time.Second {
			t.Errorf("%s's second run ended with %v after %s, want killed at exec", prog, err, time.Since(start))
		}
	}
	// A listed program that exits before its check (it may not) is found
	// by its path, and dies at its next exec.
	if err := exec.Command(quick).Run(); err != nil && !killedBy(err) {
		t.Fatalf("quick: %v", err)
	}
	testenv.WaitFor(t, 5*time.Second, "the exited program's hash found", func() bool { return g.HashStats().Matched.Load() == 3 })
	if err := exec.Command(quick).Run(); !killedBy(err) {
		t.Errorf("quick's second run ended with %v, want killed at exec", err)
	}
	marker := filepath.Join(dir, "unlisted.wrote")
	for range 2 { // hashed once, then known to the kernel as checked
		if err := exec.Command(unlisted, marker).Run(); err != nil {
			t.Errorf("the unlisted program: %v", err)
		}
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the unlisted program did not run: %v", err)
	}
	// The listed file rewritten (another content, so another hash) runs.
	if err := os.Remove(miner); err != nil {
		t.Fatal(err)
	}
	copyFile(t, touch, miner)
	if err := exec.Command(miner, filepath.Join(dir, "rewritten.wrote")).Run(); err != nil {
		t.Errorf("the replaced file: %v", err)
	}

	testenv.WaitFor(t, 5*time.Second, "six hits", func() bool { return len(hits()) >= 6 })
	got := hits()
	if h := got[0]; h.List != "bad-hashes" || h.SHA256 != hex.EncodeToString(sum[:]) || !h.FirstRun || !h.Killed || h.Path != miner {
		t.Errorf("first-run hit %+v", h)
	}
	if h := got[1]; h.FirstRun || !h.Killed || h.Err != nil {
		t.Errorf("second-run hit %+v: want killed at exec", h)
	}
	// Killed when the check was quicker than true, else found gone.
	if h := got[4]; !h.FirstRun || !(h.Killed || errors.Is(h.Err, ErrNotTarget)) || h.Path != quick {
		t.Errorf("the quick program's hit %+v: want its first run, killed or gone", h)
	}
	if h := got[5]; h.FirstRun || !h.Killed {
		t.Errorf("the exited program's second run %+v: want killed at exec", h)
	}
	// The unlisted program and the rewritten file are hashed off the exec
	// path, so their counts may come after their runs have ended.
	st := g.HashStats()
	testenv.WaitFor(t, 5*time.Second, "the unlisted and the rewritten programs hashed", func() bool { return st.Hashed.Load() >= 4 })
	if st.Hashed.Load() < 4 || st.Matched.Load() != 3 {
		t.Errorf("hash stats: hashed %d, matched %d; want >= 4 and 3", st.Hashed.Load(), st.Matched.Load())
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	matched := -1.0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "harrier_response_exec_hash_checks_total" && m.GetLabel()[0].GetValue() == "matched" {
				matched = m.GetCounter().GetValue()
			}
		}
	}
	if matched != 3 {
		t.Errorf("harrier_response_exec_hash_checks_total{result=matched} = %v, want 3", matched)
	}
}

// TestHashPath: a file is hashed by its path only when it is the exec'd
// file: same device, inode and change time as the kernel reported.
func TestHashPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	hit := execdenyExecHit{Dev: uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)), Ino: st.Ino,
		Ctime: execdenyFileCtime{Sec: st.Ctim.Sec, Nsec: uint64(st.Ctim.Nsec)}}
	if sum, err := hashPath(p, hit); err != nil || sum != sha256.Sum256([]byte("#!/bin/sh\n")) {
		t.Fatalf("hashPath: %x %v", sum, err)
	}
	for name, h := range map[string]execdenyExecHit{
		"another inode":       {Dev: hit.Dev, Ino: hit.Ino + 1, Ctime: hit.Ctime},
		"another device":      {Dev: hit.Dev + 1, Ino: hit.Ino, Ctime: hit.Ctime},
		"another change time": {Dev: hit.Dev, Ino: hit.Ino, Ctime: execdenyFileCtime{Sec: hit.Ctime.Sec - 1, Nsec: hit.Ctime.Nsec}},
	} {
		if _, err := hashPath(p, h); err == nil {
			t.Errorf("%s: hashed", name)
		}
	}
	if _, err := hashPath("tool", hit); err == nil {
		t.Error("a relative path was hashed")
	}
}

// guardHits runs g until the test ends (then closes it) and returns what
// it has reported so far.
func guardHits(t *testing.T, g *ExecGuard) func() []ExecHit {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		hits []ExecHit
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		_ = g.Run(ctx, func(h ExecHit) { mu.Lock(); hits = append(hits, h); mu.Unlock() }, slog.New(slog.DiscardHandler))
	})
	t.Cleanup(func() { cancel(); wg.Wait(); _ = g.Close() })
	return func() []ExecHit { mu.Lock(); defer mu.Unlock(); return slices.Clone(hits) }
}
