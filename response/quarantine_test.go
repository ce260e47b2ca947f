package response

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestQuarantineExecutable: a running program's file is moved aside with
// mode 000, a copy named by its SHA-256 is kept, and the process itself is
// left alone (another action kills it).
func TestQuarantineExecutable(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "dropper")
	copyFile(t, sleep, exe)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	want := hex.EncodeToString(sum[:])
	proc := exec.Command(exe, "300")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = proc.Process.Kill(); _ = proc.Wait() }()
	testenv.WaitFor(t, 5*time.Second, "the program running", func() bool {
		l, _ := os.Readlink("/proc/" + strconv.Itoa(proc.Process.Pid) + "/exe")
		return l == exe
	})

	f, err := Load(writeFile(t, "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n"+
		"  - {name: q, mode: enforce, match: {detections: [dropper]}, actions: [quarantine-executable]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := NewResponder(f, "n", func(*api.Event) {}, slog.New(slog.DiscardHandler))
	qdir := filepath.Join(dir, "quarantine")
	r.UseQuarantineDir(qdir)
	a := &api.Alert{DetectionId: "dropper", Process: &api.Process{Tgid: uint32(proc.Process.Pid), Exe: exe,
		StartTime: timestamppb.New(startTime(t, proc.Process.Pid))}}
	evs := r.Handle(a)
	resp := evs[0].GetResponse()
	if resp.GetOutcome() != OutcomeDone || !strings.Contains(resp.GetTarget(), want) {
		t.Fatalf("record %+v, want done with sha256 %s", resp, want)
	}
	if _, err := os.Stat(exe); !os.IsNotExist(err) {
		t.Errorf("%s is still in place (%v)", exe, err)
	}
	moved, _ := filepath.Glob(exe + ".harrier-quarantine-*")
	if len(moved) != 1 {
		t.Fatalf("moved aside: %v", moved)
	}
	if fi, err := os.Stat(moved[0]); err != nil || fi.Mode().Perm() != 0 {
		t.Errorf("moved file %v %v, want mode 000", fi.Mode(), err)
	}
	kept, err := os.ReadFile(filepath.Join(qdir, want))
	if err != nil || sha256.Sum256(kept) != sum {
		t.Errorf("forensic copy: %v", err)
	}
	// Audit: nothing moved.
	f.Policies[0].Mode = ModeAudit
	copyFile(t, sleep, exe)
	if resp := r.Handle(a)[0].GetResponse(); resp.GetOutcome() != OutcomeAudited {
		t.Errorf("audit: %+v", resp)
	}
	if _, err := os.Stat(exe); err != nil {
		t.Errorf("audit moved the file: %v", err)
	}
}
