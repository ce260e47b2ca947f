package execontent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
)

// execOf is the exec event the sensor would give for a process running path.
func execOf(t *testing.T, pid int, path string) *api.Event {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &api.Event{
		Kind:    api.EventKind_EVENT_KIND_EXEC,
		Process: &api.Process{Tgid: uint32(pid), Exe: path},
		Detail: &api.Event_Exec{Exec: &api.Exec{
			ExeDevice: uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)), ExeInode: st.Ino,
			ExeCtimeNs: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
		}},
	}
}

func next(t *testing.T, r *Reader) *api.ExeContent {
	t.Helper()
	select {
	case ev := <-r.Events():
		if ev.GetKind() != api.EventKind_EVENT_KIND_EXE_CONTENT {
			t.Fatalf("kind %v", ev.GetKind())
		}
		return ev.GetExeContent()
	case <-time.After(10 * time.Second):
		t.Fatalf("no exe_content event; stats %+v", r.Stats())
		return nil
	}
}

func none(t *testing.T, r *Reader) {
	t.Helper()
	select {
	case ev := <-r.Events():
		t.Fatalf("unexpected event %v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestReader(t *testing.T) {
	dir := t.TempDir()
	sleep, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skipf("no /bin/sleep: %v", err)
	}
	// A copy of sleep with a signature whose second string straddles the
	// reader's first chunk boundary (256 KiB), past the ELF's own bytes.
	body := slices.Clone(sleep)
	for len(body) < 256<<10-6 {
		body = append(body, 0)
	}
	body = body[:256<<10-6]
	// Reversed: the test binary must not hold the signature itself.
	body = append(body, Reversed("xmodnar\x00giRMX\x00x//:pct+mutarts")...)
	miner := filepath.Join(dir, "kworker")
	if err := os.WriteFile(miner, body, 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, sleep, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := New(Config{}, DefaultSignatures())
	go func() { _ = r.Run(ctx) }()

	run := func(path string) *exec.Cmd {
		cmd := exec.Command(path, "5")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	m := run(miner)
	r.Offer(execOf(t, m.Process.Pid, miner))
	c := next(t, r)
	sum := sha256.Sum256(body)
	if c.GetSha256() != hex.EncodeToString(sum[:]) || !c.GetElf() || c.GetSize() != uint64(len(body)) ||
		!slices.Equal(c.GetTools(), []string{"xmrig"}) {
		t.Errorf("miner content = %v", c)
	}

	// The same file again, from another process: read once only.
	m2 := run(miner)
	r.Offer(execOf(t, m2.Process.Pid, miner))
	none(t, r)

	p := run(plain)
	r.Offer(execOf(t, p.Process.Pid, plain))
	if c := next(t, r); len(c.GetTools()) != 0 || c.GetSha256() == "" {
		t.Errorf("plain content = %v", c)
	}

	// A host process that exited is read through its path, but only while
	// the file there is the one it ran.
	gone := exec.Command(plain, "0")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	ev := execOf(t, gone.Process.Pid, plain)
	ev.GetExec().ExeCtimeNs-- // as if the file changed since the exec
	r.Offer(ev)
	none(t, r)
	if st := r.Stats(); st.Changed != 1 {
		t.Errorf("stats %+v: want one changed file", st)
	}

	// This program's own file is never read.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r.Offer(execOf(t, os.Getpid(), self))
	none(t, r)
}

// A file over MaxFileBytes is scanned up to it and not hashed.
func TestReaderLargeFile(t *testing.T) {
	dir := t.TempDir()
	sleep, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skipf("no /bin/sleep: %v", err)
	}
	big := append(slices.Clone(sleep), bytes.Repeat([]byte{0}, 1<<20)...)
	path := filepath.Join(dir, "big")
	if err := os.WriteFile(path, big, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := New(Config{MaxFileBytes: 512 << 10}, DefaultSignatures())
	go func() { _ = r.Run(ctx) }()
	cmd := exec.Command(path, "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	r.Offer(execOf(t, cmd.Process.Pid, path))
	c := next(t, r)
	if c.GetSha256() != "" || c.GetError() == "" || c.GetSize() != uint64(len(big)) {
		t.Errorf("large file content = %v", c)
	}
}
