package response

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

func newCommand(action string, target *api.CommandTarget) *api.Command {
	return &api.Command{Id: "c-" + action, Action: action, Target: target, RequestedBy: "test", Issued: timestamppb.Now()}
}

func TestValidateCommand(t *testing.T) {
	now := timestamppb.Now()
	cases := []struct {
		action string
		target *api.CommandTarget
		ok     bool
	}{
		{ActionKillProcessTree, &api.CommandTarget{Pid: 7, StartTime: now}, true},
		{ActionKillProcessTree, &api.CommandTarget{Pid: 7}, false},
		{ActionQuarantine, &api.CommandTarget{StartTime: now}, false},
		{ActionBlockNetwork, &api.CommandTarget{ContainerId: "c", Cgroup: "/x"}, true},
		{ActionUnblockNetwork, &api.CommandTarget{Cgroup: "/x"}, false},
		{ActionResumeContainer, &api.CommandTarget{ContainerId: "c", Cgroup: "/x"}, true},
		{ActionRestoreFile, &api.CommandTarget{Path: "/bin/x.harrier-quarantine-1", RestorePath: "/bin/x"}, true},
		{ActionRestoreFile, &api.CommandTarget{Path: "/etc/shadow", RestorePath: "/tmp/x"}, false},
		{ActionRestoreFile, &api.CommandTarget{Path: "x.harrier-quarantine-1", RestorePath: "x"}, false},
		{"format-disk", &api.CommandTarget{}, false},
	}
	for _, tc := range cases {
		if err := ValidateCommand(tc.action, tc.target); (err == nil) != tc.ok {
			t.Errorf("ValidateCommand(%s, %v) = %v, want ok %v", tc.action, tc.target, err, tc.ok)
		}
	}
}

// TestCommandRestoreFile: a quarantined file is moved back with the mode
// asked for; an existing file at the restore path is never overwritten.
func TestCommandRestoreFile(t *testing.T) {
	dir := t.TempDir()
	moved := filepath.Join(dir, "tool.harrier-quarantine-20261206T120000Z")
	if err := os.WriteFile(moved, []byte("#!/bin/sh\n"), 0); err != nil {
		t.Fatal(err)
	}
	var got []*api.Event
	r := NewResponder(nil, "node", func(ev *api.Event) { got = append(got, ev) }, slog.New(slog.DiscardHandler))
	target := &api.CommandTarget{Path: moved, RestorePath: filepath.Join(dir, "tool"), Mode: 0o750}
	ev := r.Command(newCommand(ActionRestoreFile, target))
	if resp := ev.GetResponse(); resp.GetOutcome() != OutcomeDone || resp.GetPolicy() != "manual:test" {
		t.Fatalf("restore: %+v", resp)
	}
	fi, err := os.Stat(filepath.Join(dir, "tool"))
	if err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("restored file: %v %v, want mode 0750", fi, err)
	}
	// Quarantined again by hand; the original name is taken meanwhile.
	if err := os.WriteFile(moved, nil, 0); err != nil {
		t.Fatal(err)
	}
	if resp := r.Command(newCommand(ActionRestoreFile, target)).GetResponse(); resp.GetOutcome() != OutcomeRefused {
		t.Errorf("restore over an existing file: %+v, want refused", resp)
	}
	if len(got) != 0 {
		t.Error("Command recorded by itself; the caller records")
	}
}

// TestCommandBlockUnblock: an analyst blocks a cgroup's network and undoes
// it; undoing a block that is not there is refused, not silently done.
func TestCommandBlockUnblock(t *testing.T) {
	testenv.RequireRoot(t)
	n, err := NewNetBlocker(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	rel := fmt.Sprintf("/harrier-test-cmd-netblock-%d", os.Getpid())
	cg := filepath.Join(n.v2, rel)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(cg)
	r := NewResponder(nil, "node", func(*api.Event) {}, slog.New(slog.DiscardHandler))
	r.UseNetBlockerFactory(func() (*NetBlocker, error) { return n, nil })
	target := &api.CommandTarget{ContainerId: "c", Cgroup: rel}
	steps := []struct {
		action, outcome string
		blocked         bool
	}{
		{ActionBlockNetwork, OutcomeDone, true},
		{ActionUnisolateNetwork, OutcomeRefused, true},
		{ActionUnblockNetwork, OutcomeDone, false},
		{ActionUnblockNetwork, OutcomeRefused, false},
		{ActionIsolateNetwork, OutcomeDone, false},
		{ActionUnisolateNetwork, OutcomeDone, false},
	}
	for _, s := range steps {
		start := time.Now()
		resp := r.Command(newCommand(s.action, target)).GetResponse()
		if resp.GetOutcome() != s.outcome || n.Blocked(cg) != s.blocked || s.action == ActionIsolateNetwork && !n.Isolated(cg) {
			t.Errorf("%s: %+v, blocked %v; want %s, blocked %v", s.action, resp, n.Blocked(cg), s.outcome, s.blocked)
		}
		t.Logf("%s: %s in %s", s.action, resp.GetOutcome(), time.Since(start).Round(time.Microsecond))
	}
}
