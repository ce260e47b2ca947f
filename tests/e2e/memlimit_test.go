package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestMemoryLimitFromCgroup runs `harrier run` in a memory cgroup limited to
// the DaemonSet's 296 MiB and checks the Go runtime adopted a limit below it.
func TestMemoryLimitFromCgroup(t *testing.T) {
	testenv.RequireRoot(t)
	const limit = 296 << 20
	cg, limitFile := "", ""
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil { // v1 (hybrid hosts)
		cg, limitFile = fmt.Sprintf("/sys/fs/cgroup/memory/harrier-e2e-%d", os.Getpid()), "memory.limit_in_bytes"
	} else {
		cg, limitFile = fmt.Sprintf("/sys/fs/cgroup/harrier-e2e-%d", os.Getpid()), "memory.max"
	}
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		for i := 0; i < 50; i++ { // the cgroup empties once the process has exited
			if err := syscall.Rmdir(cg); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("cgroup %s left behind", cg)
	})
	if err := os.WriteFile(filepath.Join(cg, limitFile), []byte(strconv.Itoa(limit)), 0o644); err != nil {
		t.Fatalf("set limit: %v", err)
	}

	bin := buildHarrier(t)
	dir := t.TempDir()
	metrics := testenv.FreeAddr(t)
	cfg := filepath.Join(dir, "harrier.yaml")
	conf := fmt.Sprintf("dataDir: %s\nmetricsAddr: %s\nbackend:\n  apiAddr: 127.0.0.1:0\n  ingestAddr: 127.0.0.1:0\n", dir, metrics)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The shell moves itself into the cgroup, then becomes harrier.
	cmd := exec.CommandContext(ctx, "sh", "-c", `echo $$ > "$1/cgroup.procs" && exec "$2" run -c "$3"`, "sh", cg, bin, cfg)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	var logs strings.Builder
	cmd.Stderr = &logs
	cmd.Env = append(os.Environ(), "GOMEMLIMIT=") // an inherited GOMEMLIMIT would win
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("harrier run's log:\n%s", logs.String())
		}
	})
	re := regexp.MustCompile(`(?m)^go_gc_gomemlimit_bytes (\S+)$`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if m := re.FindSubmatch(body); m != nil {
				got, _ := strconv.ParseFloat(string(m[1]), 64)
				if got <= 0 || got >= limit || got < limit/2 {
					t.Fatalf("GOMEMLIMIT %.0f bytes, want below the cgroup's %d and above half of it", got, limit)
				}
				if !strings.Contains(logs.String(), "Go memory limit from the cgroup") {
					t.Errorf("the limit was not logged")
				}
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("agent metrics never showed go_gc_gomemlimit_bytes")
}
