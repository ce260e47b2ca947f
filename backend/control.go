package backend

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/internal/badgerkv"
	respond "github.com/harrier-sec/harrier/response"
	"github.com/harrier-sec/harrier/transport"
)

// Keys of the control channel's state.
const (
	prefixPolicies       = "y/" // y/response → JSON PolicyState: the site's response policies
	prefixCommand        = "k/" // k/<command id> → JSON CommandRecord
	prefixCommandPending = "u/" // u/<agent>\x00<command id> → empty: not answered yet
	prefixAgentControl   = "v/" // v/<agent> → JSON AgentControl: what the agent applied
)

// Command states: pending until the agent answers, then the outcome of its
// action (response.Outcome*), "refused" when the agent refused the command
// itself, or "expired" when it expired unanswered.
const (
	CommandPending = "pending"
	CommandExpired = "expired"
	CommandRefused = "refused"
)

// Command validity bounds.
const (
	DefaultCommandTTL = 15 * time.Minute
	MaxCommandTTL     = 7 * 24 * time.Hour
	// maxCommandsPerControl bounds one Control frame; the rest go next.
	maxCommandsPerControl = 64
	maxPolicyBytes        = 1 << 20
)

// PolicyState is the site's response policy file as the backend holds it.
type PolicyState struct {
	Version   uint64    `json:"version"`
	SHA256    string    `json:"sha256"`
	Updated   time.Time `json:"updated"`
	UpdatedBy string    `json:"updated_by"`
	Policies  int       `json:"policies"`
	ExecDeny  int       `json:"exec_deny"`
	YAML      string    `json:"yaml"`
}

// CommandRequest is what an analyst asks for (POST /api/v1/response/commands).
type CommandRequest struct {
	AgentID string `json:"agent_id,omitempty"`
	// AlertID fills the agent and the target from the alert when they are
	// not given.
	AlertID string        `json:"alert_id,omitempty"`
	Action  string        `json:"action"`
	Target  CommandTarget `json:"target"`
	Reason  string        `json:"reason,omitempty"`
	// ExpiresIn is a Go duration ("10m"); default DefaultCommandTTL.
	ExpiresIn string `json:"expires_in,omitempty"`
	// AllowProtected names the protected targets (kubelet, runtime,
	// kube-system) this command may act on, as a policy's allowProtected.
	AllowProtected []string `json:"allow_protected,omitempty"`
}

// CommandTarget is api.CommandTarget in the API's JSON.
type CommandTarget struct {
	PID         uint32     `json:"pid,omitempty"`
	StartTime   *time.Time `json:"start_time,omitempty"`
	ContainerID string     `json:"container_id,omitempty"`
	Cgroup      string     `json:"cgroup,omitempty"`
	Path        string     `json:"path,omitempty"`
	RestorePath string     `json:"restore_path,omitempty"`
	Mode        uint32     `json:"mode,omitempty"`
}

func (t CommandTarget) proto() *api.CommandTarget {
	p := &api.CommandTarget{Pid: t.PID, ContainerId: t.ContainerID, Cgroup: t.Cgroup, Path: t.Path, RestorePath: t.RestorePath, Mode: t.Mode}
	if t.StartTime != nil {
		p.StartTime = timestamppb.New(*t.StartTime)
	}
	return p
}

// CommandRecord is one command and, once answered, its outcome.
type CommandRecord struct {
	ID          string        `json:"id"`
	AgentID     string        `json:"agent_id"`
	Action      string        `json:"action"`
	Target      CommandTarget `json:"target"`
	AlertID     string        `json:"alert_id,omitempty"`
	RequestedBy string        `json:"requested_by"`
	Reason      string        `json:"reason,omitempty"`
	// AllowProtected is the request's: the protected classes allowed.
	AllowProtected []string  `json:"allow_protected,omitempty"`
	Issued         time.Time `json:"issued"`
	Expires        time.Time `json:"expires"`
	State          string    `json:"state"`
	// Answered, Error, PIDs, TargetText and LatencyMS come from the agent's
	// answer.
	Answered   *time.Time `json:"answered,omitempty"`
	Error      string     `json:"error,omitempty"`
	PIDs       []uint32   `json:"pids,omitempty"`
	TargetText string     `json:"target_text,omitempty"`
	// LatencyMS is from the request to the action, at the agent.
	LatencyMS float64 `json:"latency_ms,omitempty"`
	// Signed is the command as sent: the agent verifies these bytes.
	Signed []byte `json:"signed"`
}

// AgentControl is what an agent last answered on the control channel.
type AgentControl struct {
	PoliciesVersion uint64 `json:"policies_version"`
	PoliciesError   string `json:"policies_error,omitempty"`
	// ExceptionsVersion is the alert exceptions version the agent applies.
	ExceptionsVersion uint64    `json:"exceptions_version"`
	ExceptionsError   string    `json:"exceptions_error,omitempty"`
	Answered          time.Time `json:"answered"`
}

// ResponseControl keeps the site's response policies and analysts'
// commands, and serves them to agents through the QUIC server's control
// channel (transport.ControlSource).
type ResponseControl struct {
	db    *badger.DB
	store Store
	// journal appends each command record to the responses' export order.
	journal *BadgerStore
	signer  func() (*tls.Certificate, error)
	now     func() time.Time
	log     *slog.Logger
	// notify wakes an agent's control sender ("" for all); set by the
	// service once the QUIC server exists.
	notifyMu sync.Mutex
	notify   func(agentID string)
	// mu serialises writes of the policies' version.
	mu sync.Mutex
	// replicator, when set (a replicated backend), carries every change to
	// every replica, this one included, which applies it through
	// ApplyControl: the stream's order is every replica's.
	replicator ControlReplicator
	// console applies the console's changes (users, triage, audit), which
	// travel with the response control's; nil refuses them.
	console *Console
}

// ControlReplicator carries a change of the response control to every
// replica and returns once this replica has applied it.
type ControlReplicator interface {
	Replicate(ctx context.Context, change []byte) error
}

// SetReplicator makes c a replica's: changes go through r.
func (c *ResponseControl) SetReplicator(r ControlReplicator) { c.replicator = r }

// SetConsole makes c carry con's changes (NewConsole calls it).
func (c *ResponseControl) SetConsole(con *Console) { c.console = con }

// controlChange is one change of the response control, as replicas
// exchange it: new policies (their version is given when applied), a
// command's new state, or an agent's answer.
type controlChange struct {
	Policies     *PolicyState   `json:"policies,omitempty"`
	Command      *CommandRecord `json:"command,omitempty"`
	AgentID      string         `json:"agent_id,omitempty"`
	AgentControl *AgentControl  `json:"agent_control,omitempty"`
	// Console is a change of users, triage or the audit log (console.go).
	Console *consoleChange `json:"console,omitempty"`
	// Exception adds or deletes an alert exception (exceptions.go).
	Exception *exceptionChange `json:"exception,omitempty"`
}

// change applies ch here, or, in a replicated backend, through the
// replicator (which applies it here too, in the stream's order).
func (c *ResponseControl) change(ctx context.Context, ch controlChange) error {
	if c.replicator == nil {
		return c.apply(ch, 0)
	}
	b, err := json.Marshal(ch)
	if err != nil {
		return err
	}
	return c.replicator.Replicate(ctx, b)
}

// ApplyControl applies a change another replica (or this one) made: the
// replicated backend's stream calls it, in order, on every replica, with
// the change's stream sequence.
func (c *ResponseControl) ApplyControl(ctx context.Context, seq uint64, change []byte) error {
	var ch controlChange
	if err := json.Unmarshal(change, &ch); err != nil {
		return fmt.Errorf("response control change: %w", err)
	}
	return c.apply(ch, seq)
}

// apply applies ch; seq is its stream sequence in a replicated backend (0
// in a single one).
func (c *ResponseControl) apply(ch controlChange, seq uint64) error {
	switch {
	case ch.Policies != nil:
		return c.applyPolicies(*ch.Policies, seq)
	case ch.Command != nil:
		return c.applyCommand(*ch.Command)
	case ch.AgentControl != nil:
		return c.db.Update(func(txn *badger.Txn) error {
			return setJSON(txn, key(prefixAgentControl, ch.AgentID), *ch.AgentControl, 0)
		})
	case ch.Exception != nil:
		return c.applyException(*ch.Exception, seq)
	case ch.Console != nil:
		if c.console == nil {
			return errors.New("console change: this backend has no console")
		}
		return c.console.apply(*ch.Console)
	}
	return errors.New("response control change: empty")
}

// applyPolicies makes p the next version: the next number in a single
// backend; the change's stream sequence in a replicated one, so that every
// replica gives it the same version and a change applied again (after a
// crash between the change and the replica's position) is not a new one.
func (c *ResponseControl) applyPolicies(p PolicyState, seq uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	applied := false
	err := c.db.Update(func(txn *badger.Txn) error {
		var prev PolicyState
		if _, err := getJSON(txn, key(prefixPolicies, "response"), &prev); err != nil {
			return err
		}
		switch {
		case seq == 0:
			p.Version = prev.Version + 1
		case seq <= prev.Version:
			return nil // applied before
		default:
			p.Version = seq
		}
		applied = true
		return setJSON(txn, key(prefixPolicies, "response"), p, 0)
	})
	if err != nil {
		return fmt.Errorf("store response policies: %w", err)
	}
	if !applied {
		return nil
	}
	c.log.Info("response policies changed", "version", p.Version, "by", p.UpdatedBy, "policies", p.Policies, "execDeny", p.ExecDeny)
	c.wake("")
	return nil
}

// applyCommand stores a command's record, pending (its agent is woken) or
// finished (it leaves the pending); a state it already has is not stored
// again, so a change applied twice is one record.
func (c *ResponseControl) applyCommand(rec CommandRecord) error {
	if old, err := c.Command(context.Background(), rec.ID); err == nil && old.State == rec.State {
		return nil
	}
	err := c.journal.journalUpdate(export.KindResponses, func(txn *badger.Txn, add func([]byte) error) error {
		if err := setJSON(txn, key(prefixCommand, rec.ID), rec, 0); err != nil {
			return err
		}
		if err := addResponseRecord(add, rec); err != nil {
			return err
		}
		if rec.State == CommandPending {
			return txn.Set(pendingKey(rec.AgentID, rec.ID), nil)
		}
		return txn.Delete(pendingKey(rec.AgentID, rec.ID))
	})
	if err != nil {
		return fmt.Errorf("store command %s: %w", rec.ID, err)
	}
	if rec.State == CommandPending {
		c.wake(rec.AgentID)
	}
	return nil
}

// NewResponseControl uses st's database; signer returns the backend's
// serving certificate and key, which sign commands.
func NewResponseControl(st *BadgerStore, signer func() (*tls.Certificate, error), log *slog.Logger) *ResponseControl {
	return &ResponseControl{db: st.db, store: st, journal: st, signer: signer, now: time.Now, log: log}
}

// SetNotify sets how agents are woken when something is due for them.
func (c *ResponseControl) SetNotify(notify func(agentID string)) {
	c.notifyMu.Lock()
	c.notify = notify
	c.notifyMu.Unlock()
}

func (c *ResponseControl) wake(agentID string) {
	c.notifyMu.Lock()
	n := c.notify
	c.notifyMu.Unlock()
	if n != nil {
		n(agentID)
	}
}

// Policies returns the policies in force at the backend (version 0: none
// set yet).
func (c *ResponseControl) Policies(ctx context.Context) (PolicyState, error) {
	var p PolicyState
	err := c.db.View(func(txn *badger.Txn) error {
		_, err := getJSON(txn, key(prefixPolicies, "response"), &p)
		return err
	})
	if err != nil {
		return p, fmt.Errorf("read response policies: %w", err)
	}
	return p, ctx.Err()
}

// ErrInvalid wraps every refusal of what a caller sent.
var ErrInvalid = errors.New("invalid")

// SetPolicies validates raw as a response policy file and makes it the next
// version, which every agent is sent at once (or when it connects).
func (c *ResponseControl) SetPolicies(ctx context.Context, raw []byte, by string) (PolicyState, error) {
	if len(raw) > maxPolicyBytes {
		return PolicyState{}, fmt.Errorf("%w: policy file of %d bytes exceeds %d", ErrInvalid, len(raw), maxPolicyBytes)
	}
	f, err := respond.Parse(raw, "as sent")
	if err != nil {
		return PolicyState{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	sum := sha256.Sum256(raw)
	p := PolicyState{SHA256: hex.EncodeToString(sum[:]), Updated: c.now().UTC(), UpdatedBy: by,
		Policies: len(f.Policies), ExecDeny: len(f.ExecDeny), YAML: string(raw)}
	if err := c.change(ctx, controlChange{Policies: &p}); err != nil {
		return PolicyState{}, err
	}
	return c.Policies(ctx)
}

// Issue signs and stores the command req asks for and wakes its agent.
func (c *ResponseControl) Issue(ctx context.Context, req CommandRequest, by string) (CommandRecord, error) {
	if req.AlertID != "" {
		if err := c.fromAlert(ctx, &req); err != nil {
			return CommandRecord{}, err
		}
	}
	if err := transport.ValidAgentID(req.AgentID); err != nil {
		return CommandRecord{}, fmt.Errorf("%w: agent_id: %w", ErrInvalid, err)
	}
	target := req.Target.proto()
	if err := respond.ValidateCommand(req.Action, target); err != nil {
		return CommandRecord{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := respond.ValidateAllowProtected(req.AllowProtected); err != nil {
		return CommandRecord{}, fmt.Errorf("%w: allow_protected: %w", ErrInvalid, err)
	}
	ttl := DefaultCommandTTL
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 || d > MaxCommandTTL {
			return CommandRecord{}, fmt.Errorf("%w: expires_in %q: want a duration up to %s", ErrInvalid, req.ExpiresIn, MaxCommandTTL)
		}
		ttl = d
	}
	cert, err := c.signer()
	if err != nil {
		return CommandRecord{}, fmt.Errorf("command signing key: %w", err)
	}
	signKey, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return CommandRecord{}, errors.New("command signing key: the backend's key cannot sign")
	}
	idBytes := make([]byte, 12)
	if _, err := rand.Read(idBytes); err != nil {
		return CommandRecord{}, err
	}
	now := c.now().UTC()
	cmd := &api.Command{Id: "cmd-" + hex.EncodeToString(idBytes), AgentId: req.AgentID, Issued: timestamppb.New(now),
		Expires: timestamppb.New(now.Add(ttl)), Action: req.Action, Target: target, RequestedBy: by, Reason: req.Reason, AlertId: req.AlertID,
		AllowProtected: req.AllowProtected}
	sc, err := transport.SignCommand(cmd, signKey, cert.Certificate)
	if err != nil {
		return CommandRecord{}, err
	}
	signed, err := proto.Marshal(sc)
	if err != nil {
		return CommandRecord{}, err
	}
	rec := CommandRecord{ID: cmd.GetId(), AgentID: req.AgentID, Action: req.Action, Target: req.Target, AlertID: req.AlertID,
		RequestedBy: by, Reason: req.Reason, AllowProtected: req.AllowProtected, Issued: now, Expires: now.Add(ttl), State: CommandPending, Signed: signed}
	if err := c.change(ctx, controlChange{Command: &rec}); err != nil {
		return CommandRecord{}, fmt.Errorf("store command: %w", err)
	}
	c.log.Info("response command issued", "command", rec.ID, "agent", rec.AgentID, "action", rec.Action, "by", by, "expires", rec.Expires)
	return rec, ctx.Err()
}

// fromAlert fills the agent and the target from the alert req names.
func (c *ResponseControl) fromAlert(ctx context.Context, req *CommandRequest) error {
	a, err := c.store.Alert(ctx, req.AlertID)
	if err != nil {
		return fmt.Errorf("%w: alert %q: %w", ErrInvalid, req.AlertID, err)
	}
	if req.AgentID == "" {
		agents, err := c.store.Agents(ctx)
		if err != nil {
			return err
		}
		// The agent whose heartbeats name the alert's node, else the agent
		// named like the node (agents are named after their node by default).
		for _, ag := range agents {
			if ag.Health.GetNode() == a.GetNode() || req.AgentID == "" && ag.ID == a.GetNode() {
				req.AgentID = ag.ID
			}
		}
		if req.AgentID == "" {
			return fmt.Errorf("%w: no agent reports node %q of alert %s; give agent_id", ErrInvalid, a.GetNode(), req.AlertID)
		}
	}
	t := &req.Target
	if t.PID == 0 && t.StartTime == nil && a.GetProcess().GetStartTime() != nil {
		t.PID = a.GetProcess().GetTgid()
		st := a.GetProcess().GetStartTime().AsTime()
		t.StartTime = &st
	}
	if t.ContainerID == "" && t.Cgroup == "" {
		t.ContainerID, t.Cgroup = a.GetContainer().GetId(), a.GetContainer().GetCgroup()
	}
	return nil
}

// Command returns one command.
func (c *ResponseControl) Command(ctx context.Context, id string) (CommandRecord, error) {
	var rec CommandRecord
	err := c.db.View(func(txn *badger.Txn) error {
		ok, err := getJSON(txn, key(prefixCommand, id), &rec)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return rec, fmt.Errorf("command %q: %w", id, err)
	}
	return rec, ctx.Err()
}

// Commands lists commands, newest first, of agentID ("" for all), at most
// limit.
func (c *ResponseControl) Commands(ctx context.Context, agentID string, limit int) ([]CommandRecord, error) {
	var out []CommandRecord
	err := c.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, key(prefixCommand)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			var rec CommandRecord
			if _, err := getJSON(txn, item.KeyCopy(nil), &rec); err != nil {
				return err
			}
			if agentID == "" || rec.AgentID == agentID {
				out = append(out, rec)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	slices.SortFunc(out, func(a, b CommandRecord) int { return b.Issued.Compare(a.Issued) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// AgentControls returns what each agent last answered.
func (c *ResponseControl) AgentControls(ctx context.Context) (map[string]AgentControl, error) {
	out := map[string]AgentControl{}
	err := c.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, key(prefixAgentControl)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			var ac AgentControl
			if _, err := getJSON(txn, item.KeyCopy(nil), &ac); err != nil {
				return err
			}
			out[strings.TrimPrefix(string(item.Key()), prefixAgentControl)] = ac
		}
		return nil
	})
	return out, err
}

func pendingKey(agentID, id string) []byte { return key(prefixCommandPending, agentID, "\x00", id) }

// PendingControl implements transport.ControlSource: the policies and the
// alert exceptions when the connection has not delivered the current
// versions, and the agent's
// unanswered commands that have not expired (those that have are marked
// expired here).
func (c *ResponseControl) PendingControl(ctx context.Context, agentID string, sent transport.ControlSent) (*api.Control, error) {
	p, err := c.Policies(ctx)
	if err != nil {
		return nil, err
	}
	ctl := &api.Control{}
	if p.Version != 0 && p.Version != sent.Policies {
		ctl.ResponsePolicies = &api.PolicyBundle{Version: p.Version, Yaml: []byte(p.YAML), Updated: timestamppb.New(p.Updated)}
	}
	xs, err := c.Exceptions(ctx)
	if err != nil {
		return nil, err
	}
	if xs.Version != 0 && xs.Version != sent.Exceptions {
		ctl.Exceptions = exceptionBundle(xs)
	}
	now := c.now()
	var expired []CommandRecord
	err = c.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, key(prefixCommandPending, agentID, "\x00")) {
			id := strings.TrimPrefix(string(item.Key()), string(key(prefixCommandPending, agentID, "\x00")))
			var rec CommandRecord
			ok, err := getJSON(txn, key(prefixCommand, id), &rec)
			if err != nil {
				return err
			}
			switch {
			case !ok:
				continue
			case now.After(rec.Expires):
				expired = append(expired, rec)
				continue
			case len(ctl.Commands) >= maxCommandsPerControl:
				continue
			}
			sc := new(api.SignedCommand)
			if err := proto.Unmarshal(rec.Signed, sc); err != nil {
				return fmt.Errorf("command %s: %w", id, err)
			}
			ctl.Commands = append(ctl.Commands, sc)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pending commands of %s: %w", agentID, err)
	}
	for _, rec := range expired {
		rec.State = CommandExpired
		if err := c.finish(ctx, rec); err != nil {
			return nil, err
		}
		c.log.Warn("response command expired before its agent took it", "command", rec.ID, "agent", agentID, "action", rec.Action)
	}
	return ctl, nil
}

// finish stores rec as answered (or expired): it leaves the pending.
func (c *ResponseControl) finish(ctx context.Context, rec CommandRecord) error {
	return c.change(ctx, controlChange{Command: &rec})
}

// addResponseRecord appends rec, as exports send it (without the signed
// command), to the responses' export order.
func addResponseRecord(add func([]byte) error, rec CommandRecord) error {
	target, err := json.Marshal(rec.Target)
	if err != nil {
		return fmt.Errorf("response record: %w", err)
	}
	v, err := json.Marshal(export.ResponseAction{ID: rec.ID, AgentID: rec.AgentID, Action: rec.Action, Target: target,
		AlertID: rec.AlertID, RequestedBy: rec.RequestedBy, Reason: rec.Reason, Issued: rec.Issued, Expires: rec.Expires,
		State: rec.State, Answered: rec.Answered, Error: rec.Error, PIDs: rec.PIDs, TargetText: rec.TargetText,
		LatencyMS: rec.LatencyMS})
	if err != nil {
		return fmt.Errorf("response record: %w", err)
	}
	return add(v)
}

// ControlAcked implements transport.ControlSource: it stores the policies
// version the agent applies and each command's outcome.
func (c *ResponseControl) ControlAcked(ctx context.Context, agentID string, sent *api.Control, ack *api.ControlAck) error {
	now := c.now().UTC()
	ac := AgentControl{PoliciesVersion: ack.GetResponsePoliciesVersion(), PoliciesError: ack.GetResponsePoliciesError(),
		ExceptionsVersion: ack.GetExceptionsVersion(), ExceptionsError: ack.GetExceptionsError(), Answered: now}
	if err := c.change(ctx, controlChange{AgentID: agentID, AgentControl: &ac}); err != nil {
		return fmt.Errorf("store %s's control answer: %w", agentID, err)
	}
	if ac.PoliciesError != "" {
		c.log.Error("agent refused the response policies", "agent", agentID, "version", sent.GetResponsePolicies().GetVersion(), "error", ac.PoliciesError)
	}
	if ac.ExceptionsError != "" {
		c.log.Error("agent refused the alert exceptions", "agent", agentID, "version", sent.GetExceptions().GetVersion(), "error", ac.ExceptionsError)
	}
	for _, res := range ack.GetResults() {
		rec, err := c.Command(ctx, res.GetId())
		if errors.Is(err, ErrNotFound) || err == nil && rec.AgentID != agentID {
			c.log.Warn("agent answered a command it was not sent", "agent", agentID, "command", res.GetId())
			continue
		}
		if err != nil {
			return err
		}
		rec.Answered = &now
		if res.GetRefused() != "" {
			rec.State, rec.Error = CommandRefused, res.GetRefused()
		} else {
			r := res.GetResponse()
			rec.State, rec.Error, rec.PIDs, rec.TargetText = r.GetOutcome(), r.GetError(), r.GetPids(), r.GetTarget()
			rec.LatencyMS = float64(r.GetLatencyUs()) / 1000
		}
		if err := c.finish(ctx, rec); err != nil {
			return fmt.Errorf("store command %s's outcome: %w", rec.ID, err)
		}
		c.log.Info("response command answered", "command", rec.ID, "agent", agentID, "action", rec.Action, "state", rec.State, "error", rec.Error)
	}
	return nil
}
