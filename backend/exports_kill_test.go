package backend

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/internal/confval"
)

const killChildEnv = "HARRIER_EXPORT_KILL_CHILD" // <store dir> <webhook URL>

func killTestExport(url string) export.Config {
	return export.Config{Name: "hook", Type: export.TypeWebhook, Webhook: &export.WebhookConfig{URL: url},
		BatchSize: 100, MaxPerSecond: 1000,
		Retry: export.RetryConfig{Initial: confval.Duration(50 * time.Millisecond), Max: confval.Duration(500 * time.Millisecond)}}
}

// runKillChild is the exporting process TestExportSurvivesKill starts and
// kills (TestMain runs it instead of the tests when killChildEnv is set).
func runKillChild(spec string) int {
	args := strings.Fields(spec)
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, killChildEnv+": want <store dir> <webhook URL>")
		return 2
	}
	st, err := OpenBadgerStore(args[0], nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	m, err := export.New([]export.Config{killTestExport(args[1])}, st, st.ExportKV(), export.Options{Poll: 20 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestExportSurvivesKill: the exporting process is killed with SIGKILL
// twice in mid-stream (no chance to save anything) and started again over
// the same Badger directory: every alert reaches the webhook, and the only
// repeats are of the batch in flight at each kill.
func TestExportSurvivesKill(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		got[r.Header.Get(export.EventIDHeader)]++
		mu.Unlock()
	}))
	defer srv.Close()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }

	dir := t.TempDir()
	st, err := OpenBadgerStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ingestAlerts(t, st, 0, 5000)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir+" "+srv.URL)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	waitFor := func(n int, timeout time.Duration) {
		deadline := time.Now().Add(timeout)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d alerts delivered, want %d", count(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, at := range []int{1500, 3500} {
		cmd := start()
		waitFor(at, time.Minute)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	cmd := start()
	waitFor(5000, time.Minute)
	time.Sleep(200 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d alerts delivered, %d repeats after two SIGKILLs", len(got), dups)
	if len(got) != 5000 {
		t.Errorf("%d alerts delivered, want 5000", len(got))
	}
	if dups > 2*100 {
		t.Errorf("%d repeats: more than the batch in flight at each kill", dups)
	}
}
