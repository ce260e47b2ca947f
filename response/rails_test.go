package response

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

func TestProtectionCheck(t *testing.T) {
	p := OfflineProtection()
	p.never[4321] = protectAgent
	host := func(pid uint32, exe, comm string) *api.Alert {
		return &api.Alert{Process: &api.Process{Tgid: pid, Exe: exe, Comm: comm}}
	}
	inPod := func(ns, exe string) *api.Alert {
		return &api.Alert{Process: &api.Process{Tgid: 900, Exe: exe},
			Container: &api.Container{Id: "c1", PodNamespace: ns, PodName: "p"}}
	}
	tests := []struct {
		name  string
		alert *api.Alert
		want  string // class, "" for none
	}{
		{"host pid 1", host(1, "/usr/lib/systemd/systemd", "systemd"), protectHostInit},
		{"the agent", host(4321, "/usr/bin/harrier", "harrier"), protectAgent},
		{"containerd", host(700, "/usr/bin/containerd", "containerd"), ProtectRuntime},
		{"a shim by exe", host(701, "/usr/bin/containerd-shim-runc-v2", ""), ProtectRuntime},
		{"a shim by its 15-byte comm", host(702, "", "containerd-shim"), ProtectRuntime},
		{"deleted dockerd", host(703, "/usr/bin/dockerd (deleted)", ""), ProtectRuntime},
		{"conmon", host(704, "/usr/libexec/crio/conmon", "conmon"), ProtectRuntime},
		{"runc", host(705, "/usr/sbin/runc", "runc"), ProtectRuntime},
		{"kubelet", host(706, "/usr/bin/kubelet", "kubelet"), ProtectKubelet},
		{"k3s", host(707, "/usr/local/bin/k3s", "k3s-server"), ProtectKubelet},
		{"a host shell", host(708, "/usr/bin/bash", "bash"), ""},
		{"containerd-like name", host(709, "/usr/bin/containerdx", "containerdx"), ""},
		{"named containerd in a container", inPod("shop", "/tmp/containerd"), ""},
		{"kube-system workload", inPod("kube-system", "/coredns"), ProtectKubeSystem},
		{"a workload", inPod("shop", "/usr/bin/xmrig"), ""},
		{"no process", &api.Alert{Container: &api.Container{Id: "c1"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Check(tc.alert)
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("protected as %+v, want not protected", got)
			case tc.want != "" && (got == nil || got.Class != tc.want):
				t.Errorf("got %+v, want class %s", got, tc.want)
			}
		})
	}
}

func TestAllowProtectedValidate(t *testing.T) {
	base := "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n  - {name: p, mode: enforce, match: {detections: [x]}, actions: [kill-process-tree], allowProtected: [%s]}\n"
	for _, tc := range []struct{ allow, want string }{
		{"runtime, kubelet, kube-system", ""},
		{"agent", `allowProtected "agent": the agent and its parent are never acted on`},
		{"host-init", `allowProtected "host-init": the host's PID 1 is never acted on`},
		{"containerd", `allowProtected "containerd": want kubelet, runtime, kube-system`},
	} {
		_, err := Load(writeFile(t, strings.Replace(base, "%s", tc.allow, 1)))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("allowProtected [%s]: err %v, want %q", tc.allow, err, tc.want)
		}
	}
}

// startNamed starts a copy of sleep named name in a directory of its own,
// optionally in a new mount namespace (as a container's process is).
func startNamed(t *testing.T, name string, newMountNS bool) (pid int, exe string, wait func() error) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "300")
	if newMountNS {
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The copy runs once /proc shows its executable (not the Go child
	// before exec).
	testenv.WaitFor(t, 5*time.Second, "the copy to run", func() bool {
		got, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe")
		return err == nil && got == exe
	})
	return cmd.Process.Pid, exe, cmd.Wait
}

// TestProtectedRealProcess: a real process whose executable is a copy
// named containerd, on the host, is refused by an enforcing kill policy,
// whatever the alert says its executable is; a policy with
// allowProtected: [runtime] kills it; the same copy in a mount namespace of
// its own with an alert naming its container is an ordinary target.
func TestProtectedRealProcess(t *testing.T) {
	testenv.RequireRoot(t)
	policies := func(allow string) *File {
		f, err := Load(writeFile(t, "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n"+
			"  - {name: kill, mode: enforce, match: {detections: [miner]}, actions: [kill-process-tree]"+allow+"}\n"))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	alert := func(pid int, exe string, container *api.Container) *api.Alert {
		return &api.Alert{Id: "a", DetectionId: "miner", FirstSeen: timestamppb.Now(), Container: container,
			Process: &api.Process{Tgid: uint32(pid), Exe: exe, StartTime: timestamppb.New(startTime(t, pid))}}
	}
	outcome := func(f *File, a *api.Alert) *api.Response {
		t.Helper()
		evs := NewResponder(f, "node-a", func(*api.Event) {}, slog.New(slog.DiscardHandler)).Handle(a)
		if len(evs) != 1 {
			t.Fatalf("%d records, want 1", len(evs))
		}
		return evs[0].GetResponse()
	}

	pid, exe, wait := startNamed(t, "containerd", false)
	for _, a := range []*api.Alert{
		alert(pid, exe, nil),
		// The alert is wrong or forged: the live process decides.
		alert(pid, "/usr/bin/xmrig", &api.Container{Id: "c1"}),
	} {
		resp := outcome(policies(""), a)
		if resp.GetOutcome() != OutcomeRefused || !strings.Contains(resp.GetError(), "allowProtected: [runtime]") {
			t.Errorf("containerd on the host: %v, want refused naming allowProtected: [runtime]", resp)
		}
		time.Sleep(50 * time.Millisecond)
		if !alive(pid) {
			t.Fatal("the protected process was killed")
		}
	}
	resp := outcome(policies(", allowProtected: [runtime]"), alert(pid, exe, nil))
	if resp.GetOutcome() != OutcomeDone {
		t.Fatalf("with allowProtected: [runtime]: %v, want done", resp)
	}
	var ee *exec.ExitError
	if err := wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the allowed target ended with %v, want SIGKILL", err)
	}

	pid, exe, wait = startNamed(t, "containerd", true)
	resp = outcome(policies(""), alert(pid, exe, &api.Container{Id: "c1", PodNamespace: "shop"}))
	if resp.GetOutcome() != OutcomeDone {
		t.Fatalf("a copy named containerd in a container: %v, want done", resp)
	}
	if err := wait(); !errors.As(err, &ee) {
		t.Errorf("the container's process ended with %v, want killed", err)
	}
}

func TestSeverityAnyCase(t *testing.T) {
	for _, s := range []string{"high", "High", "HIGH", "SEVERITY_HIGH"} {
		f, err := Load(writeFile(t, "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n"+
			"  - {name: p, mode: audit, match: {minSeverity: "+s+"}, actions: [kill-process-tree]}\n"))
		if err != nil {
			t.Fatalf("minSeverity %s: %v", s, err)
		}
		if got := f.Policies[0].Match.MinSeverity; got != api.Severity_SEVERITY_HIGH {
			t.Errorf("minSeverity %s read as %v", s, got)
		}
	}
}

// TestKillSparesProtectedDescendants: killing a host shell's tree spares a
// child that is the container runtime (a copy named containerd) and kills
// the rest; the record says what was spared.
func TestKillSparesProtectedDescendants(t *testing.T) {
	testenv.RequireRoot(t)
	_, daemonExe, _ := startNamed(t, "containerd", false)
	cmd := exec.Command("sh", "-c", daemonExe+" 301 & sleep 302 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var daemonPID, sleepPID int
	testenv.WaitFor(t, 5*time.Second, "the shell's two children", func() bool {
		daemonPID, sleepPID = 0, 0
		for _, c := range children("", cmd.Process.Pid) {
			switch exe, _ := os.Readlink("/proc/" + strconv.Itoa(c) + "/exe"); {
			case exe == daemonExe:
				daemonPID = c
			case filepath.Base(exe) == "sleep":
				sleepPID = c
			}
		}
		return daemonPID != 0 && sleepPID != 0
	})
	t.Cleanup(func() { _ = syscall.Kill(daemonPID, syscall.SIGKILL) })
	f, err := Load(writeFile(t, "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n"+
		"  - {name: kill, mode: enforce, match: {detections: [shell]}, actions: [kill-process-tree]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	evs := NewResponder(f, "node-a", func(*api.Event) {}, slog.New(slog.DiscardHandler)).Handle(&api.Alert{DetectionId: "shell",
		Process: &api.Process{Tgid: uint32(cmd.Process.Pid), Exe: "/bin/sh", StartTime: timestamppb.New(startTime(t, cmd.Process.Pid))}})
	resp := evs[0].GetResponse()
	if resp.GetOutcome() != OutcomeDone || !strings.Contains(resp.GetTarget(), "spared protected descendants ["+strconv.Itoa(daemonPID)+"]") {
		t.Fatalf("record %v, want done, sparing %d", resp, daemonPID)
	}
	testenv.WaitFor(t, 5*time.Second, "the shell and sleep gone", func() bool { return !alive(sleepPID) && !alive(cmd.Process.Pid) })
	if !alive(daemonPID) {
		t.Error("the runtime under the shell was killed")
	}
}

// TestCommandAllowProtected: an analyst's command on a protected target is
// refused unless it allows the target's class; a class that is never
// allowed (the host's PID 1, the agent) cannot be named.
func TestCommandAllowProtected(t *testing.T) {
	testenv.RequireRoot(t)
	r := NewResponder(nil, "node-a", func(*api.Event) {}, slog.New(slog.DiscardHandler))
	pid, _, wait := startNamed(t, "containerd", false)
	command := func(allow ...string) *api.Response {
		t.Helper()
		return r.Command(&api.Command{Id: "cmd-1", AgentId: "node-a", Action: ActionKillProcessTree, RequestedBy: "test",
			Target:         &api.CommandTarget{Pid: uint32(pid), StartTime: timestamppb.New(startTime(t, pid))},
			AllowProtected: allow}).GetResponse()
	}
	for _, tt := range []struct {
		allow []string
		want  string
	}{
		{nil, "a command acts on it only with allow_protected: [runtime]"},
		{[]string{ProtectKubelet}, "allow_protected: [runtime]"},
		{[]string{protectHostInit}, "never acted on"},
	} {
		resp := command(tt.allow...)
		if resp.GetOutcome() != OutcomeRefused || !strings.Contains(resp.GetError(), tt.want) {
			t.Errorf("allow %v: %v, want refused with %q", tt.allow, resp, tt.want)
		}
		time.Sleep(50 * time.Millisecond)
		if !alive(pid) {
			t.Fatalf("allow %v: the protected process was killed", tt.allow)
		}
	}
	if resp := command(ProtectRuntime); resp.GetOutcome() != OutcomeDone {
		t.Fatalf("allow [runtime]: %v, want done", resp)
	}
	var ee *exec.ExitError
	if err := wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the allowed target ended with %v, want SIGKILL", err)
	}
}
