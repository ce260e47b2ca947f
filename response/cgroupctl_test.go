package response

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestContainerActions: pause-container freezes every process of a
// (test-made) container cgroup, stop-container kills them all.
func TestContainerActions(t *testing.T) {
	testenv.RequireRoot(t)
	v2, err := UnifiedMount()
	if err != nil {
		t.Fatal(err)
	}
	rel := fmt.Sprintf("/harrier-test-ctl-%d", os.Getpid())
	cg := filepath.Join(v2, rel)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(cg)
	proc := exec.Command("sh", "-c", "echo $$ > "+cg+"/cgroup.procs && exec sleep 300")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- proc.Wait() }()
	defer func() { _ = writeCgroupFile(cg, "cgroup.kill", "1"); <-done }()
	testenv.WaitFor(t, 5*time.Second, "the process in the cgroup", func() bool {
		b, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		return len(b) > 0
	})

	f, err := Load(writeFile(t, `apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - {name: pause, mode: enforce, match: {detections: [p], where: container}, actions: [pause-container]}
  - {name: stop, mode: enforce, match: {detections: [s], where: container}, actions: [stop-container]}
  - {name: host, mode: enforce, match: {detections: [h], where: container}, actions: [stop-container]}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := NewResponder(f, "n", func(*api.Event) {}, slog.New(slog.DiscardHandler))
	alert := func(det, cgroup string) *api.Alert {
		return &api.Alert{DetectionId: det, Container: &api.Container{Id: "c1", Cgroup: cgroup}}
	}
	outcome := func(a *api.Alert) *api.Response {
		evs := r.Handle(a)
		if len(evs) != 1 {
			t.Fatalf("%d records", len(evs))
		}
		return evs[0].GetResponse()
	}
	if resp := outcome(alert("p", rel)); resp.GetOutcome() != OutcomeDone || resp.GetTarget() != "cgroup "+cg || !frozen(cg) {
		t.Fatalf("pause: %+v, frozen %v", resp, frozen(cg))
	}
	if resp := outcome(alert("h", "/")); resp.GetOutcome() != OutcomeFailed {
		t.Errorf("the root cgroup: %+v, want failed", resp)
	}
	if err := writeCgroupFile(cg, "cgroup.freeze", "0"); err != nil {
		t.Fatal(err)
	}
	if resp := outcome(alert("s", rel)); resp.GetOutcome() != OutcomeDone {
		t.Fatalf("stop: %+v", resp)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("stopped process ended with %v, want SIGKILL", err)
		}
		done <- err
	case <-time.After(5 * time.Second):
		t.Error("stop-container left the process running")
	}
}

// TestUnifiedMountInsideCgroupNamespace: a process in its own cgroup
// namespace (as the agent's pod is) that sees both its namespace's cgroup2
// mount and the host's hierarchy (the chart's hostPath) acts through the
// host's, where the sensor's cgroup paths start.
func TestUnifiedMountInsideCgroupNamespace(t *testing.T) {
	if dir := os.Getenv("HARRIER_TEST_UNIFIED_MOUNT"); dir != "" {
		// The child, in its namespaces: print what UnifiedMount picked.
		v2, err := UnifiedMount()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(v2)
		os.Exit(0)
	}
	testenv.RequireRoot(t)
	host, err := UnifiedMount()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(host, &st); err != nil || st.Ino != 1 {
		t.Fatalf("UnifiedMount() = %s (inode %d, %v): not the hierarchy's root", host, st.Ino, err)
	}
	cg := filepath.Join(host, fmt.Sprintf("harrier-test-cgns-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(cg)
	nsView := t.TempDir()
	// Into the cgroup, then a new cgroup and mount namespace whose own
	// cgroup2 mount (root "/" there) comes after the host's in mountinfo.
	script := `echo $$ > "$1/cgroup.procs" && exec unshare --cgroup --mount --propagation private sh -c 'mount -t cgroup2 none "$0" && exec "$1" -test.run="^TestUnifiedMountInsideCgroupNamespace$"' "$2" "$3"`
	cmd := exec.Command("sh", "-c", script, "sh", cg, nsView, os.Args[0])
	cmd.Env = append(os.Environ(), "HARRIER_TEST_UNIFIED_MOUNT="+nsView)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != host {
		t.Errorf("inside a cgroup namespace UnifiedMount() = %q, want the host's hierarchy %q (the namespace's own mount is %s)", got, host, nsView)
	}
}
