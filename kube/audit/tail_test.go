package audit

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
)

func line(id string) string {
	return strings.Replace(sampleEvent, `"auditID":"a1"`, `"auditID":"`+id+`"`, 1) + "\n"
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// collect reads audit IDs from out until it has n or 10 s pass.
func collect(t *testing.T, out <-chan *api.Event, n int) []string {
	t.Helper()
	var ids []string
	deadline := time.After(10 * time.Second)
	for len(ids) < n {
		select {
		case ev := <-out:
			ids = append(ids, ev.GetAudit().GetAuditId())
		case <-deadline:
			t.Fatalf("got %v, want %d events", ids, n)
		}
	}
	return ids
}

func startTailer(t *testing.T, dir string, out chan *api.Event) (stop func(), tl *Tailer) {
	tl = &Tailer{Path: filepath.Join(dir, "audit.log"), StateFile: filepath.Join(dir, "state", "pos"), Out: out,
		Poll: 20 * time.Millisecond, MaxLineBytes: 8192, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}, tl
}

// waitSaved waits until the position tl saved satisfies cond: the tailer's
// only outward sign of having opened the log or noticed a truncation.
func waitSaved(t *testing.T, tl *Tailer, what string, cond func(position) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if p, ok := tl.load(); ok && cond(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tailer: %s: not within 10 s", what)
		}
	}
}

func TestTailer(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "audit.log")
	appendTo(t, log, line("old")) // before the first start: not replayed
	out := make(chan *api.Event, 64)
	stop, tl := startTailer(t, dir, out)
	waitSaved(t, tl, "open the log at its end", func(p position) bool { return p.Offset == int64(len(line("old"))) })
	appendTo(t, log, line("1")+`{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"2"`) // partial line
	if got := collect(t, out, 1); got[0] != "1" {
		t.Fatalf("got %v", got)
	}
	appendTo(t, log, `}`+"\n"+"garbage\n"+strings.Repeat("x", 9000)+"\n"+line("3"))
	if got := collect(t, out, 2); got[0] != "2" || got[1] != "3" {
		t.Fatalf("got %v", got)
	}
	// Rotation by rename: the rest of the old file, then the new one.
	appendTo(t, log, line("4"))
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, log+".1", line("5"))
	appendTo(t, log, line("6"))
	if got := strings.Join(collect(t, out, 3), ","); got != "4,5,6" {
		t.Fatalf("across rotation got %s", got)
	}
	// Truncation (copytruncate).
	if err := os.Truncate(log, 0); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, tl, "notice the truncation", func(p position) bool { return p.Offset == 0 })
	appendTo(t, log, line("7"))
	if got := collect(t, out, 1); got[0] != "7" {
		t.Fatalf("after truncation got %v", got)
	}
	waitSaved(t, tl, "save the position after 7", func(p position) bool { return p.Offset == int64(len(line("7"))) })
	stop()
	if st := tl.Stats(); st.Events != 7 || st.Rejected != 2 {
		t.Fatalf("stats %+v, want 7 events, 2 rejected", st)
	}
	// A restart resumes at the saved position: nothing replayed, nothing lost.
	appendTo(t, log, line("8"))
	stop, _ = startTailer(t, dir, out)
	defer stop()
	if got := collect(t, out, 1); got[0] != "8" {
		t.Fatalf("after restart got %v", got)
	}
	select {
	case ev := <-out:
		t.Fatalf("extra event %s", ev.GetAudit().GetAuditId())
	case <-time.After(200 * time.Millisecond):
	}
}
