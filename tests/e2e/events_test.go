// Package e2e runs the harrier binary as a user would, against the real
// kernel, real processes and real containers.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// buildHarrier builds the static binary into a directory anyone can read.
func buildHarrier(t *testing.T) string {
	t.Helper()
	// Not t.TempDir: its parent is private, and one test runs the binary
	// as an unprivileged user.
	dir, err := os.MkdirTemp("", "harrier-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "harrier")
	cmd := exec.Command("go", "build", "-o", bin, "../..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// streamEvents starts `harrier events ARGS...`, waits until the sensor is
// attached, runs act, and returns the decoded events printed until one
// satisfies last, the event act's behaviour ends with.
func streamEvents(t *testing.T, bin string, act func(), last func(*api.Event) bool, args ...string) []*api.Event {
	t.Helper()
	decode := func(line string) *api.Event {
		ev := &api.Event{}
		if err := protojson.Unmarshal([]byte(line), ev); err != nil {
			t.Fatalf("output line is not an event: %v\n%s", err, line)
		}
		return ev
	}
	var events []*api.Event
	for _, line := range streamLines(t, bin, act, func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return last(decode(l)) })
	}, args...) {
		events = append(events, decode(line))
	}
	return events
}

// streamLines runs `harrier events ARGS...` around act and returns its
// non-empty output lines, once done says the lines printed so far are all
// it waits for.
func streamLines(t *testing.T, bin string, act func(), done func([]string) bool, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"events"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		lines []string
	)
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				mu.Lock()
				lines = append(lines, line)
				mu.Unlock()
			}
		}
	}()
	started := time.Now()
	ready := make(chan struct{})
	var logs bytes.Buffer
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "probe=syscalls") {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
		t.Logf("sensor attached %v after start", time.Since(started).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("sensor not ready after 10s; log:\n%s", logs.String())
	}
	act()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		ok := done(lines)
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("what the test waits for was not printed within 30 s; printed:\n%s", strings.Join(lines, "\n"))
		}
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	<-outDone
	<-logsDone
	if err := cmd.Wait(); err != nil {
		t.Fatalf("harrier events: %v\n%s", err, logs.String())
	}
	return lines
}

func TestEventsCommand(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)

	var truePid int
	events := streamEvents(t, bin, func() {
		cmd := exec.Command("/bin/true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		truePid = cmd.Process.Pid
		if err := exec.Command("cat", "/etc/passwd").Run(); err != nil {
			t.Fatal(err)
		}
	}, execOf("cat"), "--kind", "exec")
	found := false
	for _, ev := range events {
		if ev.GetKind() != api.EventKind_EVENT_KIND_EXEC {
			t.Errorf("--kind exec printed a %v event", ev.GetKind())
		}
		if ev.GetProcess().GetTgid() == uint32(truePid) && strings.HasSuffix(ev.GetProcess().GetExe(), "/true") {
			found = true
		}
	}
	if !found {
		t.Errorf("exec of /bin/true (pid %d) not among %d printed events", truePid, len(events))
	}

	// --table prints a header and rows.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "events", "--table", "--duration", "1s").Output()
	if err != nil {
		t.Fatalf("events --table: %v", err)
	}
	if !strings.HasPrefix(string(out), "TIME") || !strings.Contains(string(out), "KIND") {
		t.Errorf("table output starts %q", firstLine(out))
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

func TestEventsStatus(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	out, err := exec.Command(bin, "events", "--status").Output()
	if err != nil {
		t.Fatalf("events --status: %v", err)
	}
	var got struct {
		Status struct {
			Kernel     string
			CgroupMode string
			Probes     []struct {
				Name     string
				Attached bool
				Attach   string
			}
			Syscalls []string
		}
		Stats map[string]any
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("status is not JSON: %v\n%s", err, out)
	}
	if got.Status.Kernel == "" || got.Status.CgroupMode == "" || len(got.Status.Syscalls) < 20 || got.Stats == nil {
		t.Errorf("status incomplete: %s", out)
	}
	attached := map[string]string{}
	for _, p := range got.Status.Probes {
		if p.Attached {
			attached[p.Name] = p.Attach
		}
	}
	for _, want := range []string{"exec", "fork", "exit", "syscalls"} {
		if attached[want] == "" {
			t.Errorf("probe %s not attached: %s", want, out)
		}
	}
}

func TestEventsContainerFilter(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	bin := buildHarrier(t)
	ctr := runctest.Start(t, runctest.Options{})
	events := streamEvents(t, bin, func() {
		// First a host process the filter must drop: it is past the filter
		// by the time the container's exec, which ends the wait, is printed.
		_ = exec.Command("/bin/true").Run()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if out, err := ctr.Exec(ctx, "id"); err != nil {
			t.Fatalf("exec in container: %v %s", err, out)
		}
	}, execOf("id"), "--container", ctr.ID[:16])
	if len(events) == 0 {
		t.Fatal("no events from the container")
	}
	sawID := false
	for _, ev := range events {
		if ev.GetContainer().GetId() != ctr.ID {
			t.Errorf("--container printed an event from %q", ev.GetContainer().GetId())
		}
		if ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ev.GetProcess().GetComm() == "id" {
			sawID = true
		}
	}
	if !sawID {
		t.Error("exec of id in the container not printed")
	}
}

// TestErrorsAreClear checks the messages a user gets for common mistakes.
func TestErrorsAreClear(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("sensor:\n  watchPahts: [/etc]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("sensor:\n  watchPaths: [etc/shadow]\n  ringBufferBytes: 1000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		uid  uint32
		want []string
	}{
		{"not root", []string{"events"}, 65534, []string{"needs root"}},
		{"unknown config field", []string{"events", "-c", badConfig}, 0, []string{badConfig, "watchPahts"}},
		{"invalid values", []string{"events", "-c", invalid}, 0, []string{"must be absolute", "ringBufferBytes"}},
		{"missing config", []string{"events", "-c", filepath.Join(dir, "none.yaml")}, 0, []string{"none.yaml"}},
		{"unknown kind", []string{"events", "--kind", "exec,teleport"}, 0, []string{"teleport", "want one of", "file_open"}},
		{"simulate without a mode", []string{"simulate"}, 0, []string{"choose one mode", "--local", "--kubeconfig"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			if tt.uid != 0 {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.uid}}
			}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("%v succeeded: %s", tt.args, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%v output lacks %q:\n%s", tt.args, w, out)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	bin := buildHarrier(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "harrier ") {
		t.Errorf("version: %v %q", err, out)
	}
}

// execOf matches the exec event of comm.
func execOf(comm string) func(*api.Event) bool {
	return func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ev.GetProcess().GetComm() == comm
	}
}
