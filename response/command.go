package response

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/harrier-sec/harrier/api"
)

// Undo actions, for commands only: each reverses a reversible action.
const (
	ActionUnblockNetwork   = "unblock-network"
	ActionUnisolateNetwork = "unisolate-network"
	ActionResumeContainer  = "resume-container"
	ActionRestoreFile      = "restore-file"
)

// PolicyManual names a command's action in its record's policy field, with
// who asked after the colon.
const PolicyManual = "manual"

// CommandActions lists the actions a command (an analyst's request from the
// backend) may name: the policies' actions and their undos.
func CommandActions() []string {
	return append(Actions(), ActionUnblockNetwork, ActionUnisolateNetwork, ActionResumeContainer, ActionRestoreFile)
}

// ValidateCommand says what an action's target lacks: a process action
// needs the PID and start time (so that a reused PID is never signalled),
// a container action the container's ID and cgroup path, restore-file the
// quarantined path and the path to restore.
func ValidateCommand(action string, t *api.CommandTarget) error {
	switch {
	case !slices.Contains(CommandActions(), action):
		return fmt.Errorf("action %q: want one of %s", action, strings.Join(CommandActions(), ", "))
	case action == ActionKillProcessTree || action == ActionQuarantine:
		if t.GetPid() == 0 || t.GetStartTime() == nil {
			return fmt.Errorf("%s needs target.pid and target.start_time", action)
		}
	case action == ActionRestoreFile:
		if !filepath.IsAbs(t.GetPath()) || !filepath.IsAbs(t.GetRestorePath()) {
			return fmt.Errorf("%s needs target.path (the quarantined file) and target.restore_path, both absolute", action)
		}
		if !strings.Contains(filepath.Base(t.GetPath()), quarantineSuffix) {
			return fmt.Errorf("%s restores only a file quarantine moved aside (*%s*)", action, quarantineSuffix)
		}
	default: // the container actions and their undos
		if t.GetContainerId() == "" || t.GetCgroup() == "" {
			return fmt.Errorf("%s needs target.container_id and target.cgroup (a host process's cgroup is a whole service)", action)
		}
	}
	return nil
}

// Parse reads a policy file's bytes strictly (unknown fields are errors)
// and validates it; name says where they came from, in errors.
func Parse(raw []byte, name string) (*File, error) {
	var f File
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return nil, fmt.Errorf("response policies %s: %w", name, err)
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("response policies %s: %w", name, err)
	}
	return &f, nil
}

// Command takes the action cmd asks for, now, in enforce mode, and returns
// its record; the agent spools the same record as Handle's. cmd has been
// verified (transport.VerifyCommand): this is the action alone.
func (r *Responder) Command(cmd *api.Command) *api.Event {
	t := cmd.GetTarget()
	resp := &api.Response{AlertId: cmd.GetAlertId(), Policy: PolicyManual + ":" + cmd.GetRequestedBy(),
		Mode: ModeEnforce, Action: cmd.GetAction()}
	proc := &api.Process{Pid: t.GetPid(), Tgid: t.GetPid(), StartTime: t.GetStartTime()}
	container := &api.Container{Id: t.GetContainerId(), Cgroup: t.GetCgroup()}
	if err := ValidateCommand(cmd.GetAction(), t); err != nil {
		resp.Outcome, resp.Error = OutcomeRefused, err.Error()
	} else if err := ValidateAllowProtected(cmd.GetAllowProtected()); err != nil {
		resp.Outcome, resp.Error = OutcomeRefused, err.Error()
	} else {
		r.command(cmd, proc, container, resp)
	}
	if at := cmd.GetIssued(); at != nil {
		resp.LatencyUs = time.Since(at.AsTime()).Microseconds()
	}
	r.count(resp)
	r.log.Info("response command", "command", cmd.GetId(), "by", cmd.GetRequestedBy(), "action", cmd.GetAction(),
		"outcome", resp.Outcome, "target", resp.Target, "error", resp.Error)
	if container.GetId() == "" {
		container = nil
	}
	return &api.Event{Time: timestamppb.Now(), Node: r.node, Kind: api.EventKind_EVENT_KIND_RESPONSE,
		Process: proc, Container: container, Detail: &api.Event_Response{Response: resp}}
}

func (r *Responder) command(cmd *api.Command, proc *api.Process, container *api.Container, resp *api.Response) {
	t := cmd.GetTarget()
	switch cmd.GetAction() {
	case ActionUnblockNetwork, ActionUnisolateNetwork:
		r.unblockNetwork(container, cmd.GetAction() == ActionUnisolateNetwork, resp)
	case ActionResumeContainer:
		r.containerAction(container, Decision{Policy: resp.Policy, Mode: ModeEnforce, Action: ActionResumeContainer}, resp)
	case ActionRestoreFile:
		r.restoreFile(t, resp)
	default:
		// The policies' actions, on a pseudo-alert naming the target; the
		// protected targets are refused to an analyst too, unless the
		// command allows their class (as a policy's allowProtected).
		a := &api.Alert{Id: cmd.GetAlertId(), Node: r.node, Process: proc, Container: container}
		if container.GetId() == "" {
			a.Container = nil
		}
		if pr := r.guard.protect.Check(a); pr != nil && !slices.Contains(cmd.GetAllowProtected(), pr.Class) {
			resp.Target = "process " + strconv.Itoa(int(proc.GetTgid()))
			resp.Outcome, resp.Error = OutcomeRefused, commandRefusal(pr)
			return
		}
		r.act(a, Decision{Policy: resp.Policy, Mode: ModeEnforce, Action: cmd.GetAction()}, resp)
	}
}

// unblockNetwork undoes this agent's block (or isolation) of c's cgroup.
func (r *Responder) unblockNetwork(c *api.Container, isolation bool, resp *api.Response) {
	n, err := r.netBlocker()
	if err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, fmt.Sprintf("block network unavailable: %v", err)
		return
	}
	cg, err := containerCgroup(n.v2, c.GetCgroup())
	if err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
		return
	}
	resp.Target = "cgroup " + cg
	is, undo, what := n.Blocked, n.Unblock, "blocked"
	if isolation {
		is, undo, what = n.Isolated, n.Unisolate, "isolated"
	}
	if !is(cg) {
		resp.Outcome, resp.Error = OutcomeRefused, "the network of "+cg+" is not "+what+" by this agent"
		return
	}
	if err := undo(cg); err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
		return
	}
	resp.Outcome = OutcomeDone
}

// restoreFile moves a quarantined file back, with the mode asked for
// (default 0755), in the host's file system or, with a container's cgroup,
// in the file system of a live process of that container. An existing file
// at the restore path is never overwritten.
func (r *Responder) restoreFile(t *api.CommandTarget, resp *api.Response) {
	root := ""
	if t.GetCgroup() != "" {
		if r.v2Err != nil {
			resp.Outcome, resp.Error = OutcomeFailed, r.v2Err.Error()
			return
		}
		cg, err := containerCgroup(r.v2, t.GetCgroup())
		if err != nil {
			resp.Outcome, resp.Error = OutcomeFailed, err.Error()
			return
		}
		pid, err := firstProcess(cg)
		if err != nil {
			resp.Outcome, resp.Error = OutcomeTargetGone, err.Error()
			return
		}
		root = "/proc/" + strconv.Itoa(pid) + "/root"
	}
	resp.Target = "file " + t.GetPath() + " to " + t.GetRestorePath()
	mode := os.FileMode(t.GetMode()) & os.ModePerm
	if mode == 0 {
		mode = 0o755
	}
	if _, err := os.Lstat(root + t.GetRestorePath()); err == nil {
		resp.Outcome, resp.Error = OutcomeRefused, t.GetRestorePath()+" exists: not overwritten"
		return
	}
	if err := os.Rename(root+t.GetPath(), root+t.GetRestorePath()); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			resp.Outcome, resp.Error = OutcomeTargetGone, err.Error()
			return
		}
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
		return
	}
	if err := os.Chmod(root+t.GetRestorePath(), mode); err != nil {
		resp.Outcome, resp.Error = OutcomeFailed, err.Error()
		return
	}
	resp.Outcome = OutcomeDone
}

// firstProcess is a live process of cgroup cg, to reach its file system.
func firstProcess(cg string) (int, error) {
	b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		return 0, fmt.Errorf("container's processes: %w", err)
	}
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process left in %s: its file system is not reachable", cg)
}

// commandRefusal is the record's error for a protected target an analyst's
// command did not allow.
func commandRefusal(pr *Protected) string {
	if _, never := neverAllowed[pr.Class]; never {
		return "protected: " + pr.Reason
	}
	return fmt.Sprintf("protected: %s; a command acts on it only with allow_protected: [%s]", pr.Reason, pr.Class)
}
