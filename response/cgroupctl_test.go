package response

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
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
