package response

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// startTree starts sh with two sleeping children and a nested shell with
// its own child, and returns it with the PIDs of its descendants once all
// four are there.
func startTree(t *testing.T) (*exec.Cmd, []int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 300 & sleep 301 & sh -c 'sleep 302 & wait' & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var desc []int
	testenv.WaitFor(t, 10*time.Second, "the process tree", func() bool {
		desc = desc[:0]
		queue := []int{cmd.Process.Pid}
		for len(queue) > 0 {
			kids := children("", queue[0])
			queue = append(queue[1:], kids...)
			desc = append(desc, kids...)
		}
		return len(desc) == 4
	})
	return cmd, desc
}

func startTime(t *testing.T, pid int) time.Time {
	t.Helper()
	st, err := procstat.Read("", pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	return boot.Add(st.SinceBoot())
}

// alive says whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}

func TestKillProcessTree(t *testing.T) {
	cmd, desc := startTree(t)
	root := cmd.Process.Pid
	// Another start time: the PID is "reused"; nothing may be signalled.
	_, err := KillProcessTree("", Target{PID: root, StartTime: startTime(t, root).Add(-time.Second)})
	if !errors.Is(err, ErrNotTarget) {
		t.Fatalf("a process with another start time: err %v, want ErrNotTarget", err)
	}
	for _, p := range append([]int{root}, desc...) {
		if !alive(p) {
			t.Fatalf("process %d died though the target did not match", p)
		}
	}

	killed, err := KillProcessTree("", Target{PID: root, StartTime: startTime(t, root)})
	if err != nil {
		t.Fatal(err)
	}
	if len(killed.PIDs) != 5 || killed.PIDs[0] != root {
		t.Errorf("killed %v, want %d and its 4 descendants %v", killed.PIDs, root, desc)
	}
	t.Logf("killed a tree of %d in %s", len(killed.PIDs), killed.Took)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the root ended with %v, want SIGKILL", err)
	}
	testenv.WaitFor(t, 5*time.Second, "every descendant gone", func() bool {
		for _, p := range desc {
			if alive(p) {
				return false
			}
		}
		return true
	})

	// Gone: ErrNotTarget, not some other failure.
	if _, err := KillProcessTree("", Target{PID: root, StartTime: time.Now()}); !errors.Is(err, ErrNotTarget) {
		t.Errorf("a process that is gone: %v, want ErrNotTarget", err)
	}
}
