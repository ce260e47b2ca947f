package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/transport"
)

// controlHandler is the agent's side of the backend's control channel: it
// applies the site's response policies and alert exceptions and carries
// out analysts' commands, each at most once.
type controlHandler struct {
	agentID  string
	roots    *x509.CertPool // the uplink's CA: commands must be signed by a backend under it
	response *responseRunner
	// exceptions applies the site's alert exceptions to the analytics.
	exceptions *exceptionsRunner
	answered   *answeredCommands
	now        func() time.Time
	log        *slog.Logger
}

func newControlHandler(agentID, caFile string, rr *responseRunner, exceptions *exceptionsRunner, log *slog.Logger) (*controlHandler, error) {
	roots, err := transport.LoadCAPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	answered, err := loadAnsweredCommands(filepath.Join(rr.dir, answeredFile))
	if err != nil {
		// Lost memory of answered commands: a repeated one could act twice
		// (the process actions check start times, so never on another
		// process). Say so and go on with an empty list.
		log.Error("answered commands not read; starting with none", "error", err)
	}
	return &controlHandler{agentID: agentID, roots: roots, response: rr, exceptions: exceptions, answered: answered, now: time.Now,
		log: log.With("component", "control")}, nil
}

// handle answers one Control frame.
func (h *controlHandler) handle(ctx context.Context, c *api.Control) *api.ControlAck {
	ack := &api.ControlAck{}
	if b := c.GetResponsePolicies(); b != nil {
		if err := h.response.applyBundle(ctx, b); err != nil {
			ack.ResponsePoliciesError = err.Error()
		}
	}
	if source, version := h.response.policiesState(); source == policiesFromBackend {
		ack.ResponsePoliciesVersion = version
	}
	if b := c.GetExceptions(); b != nil {
		if err := h.exceptions.apply(b); err != nil {
			ack.ExceptionsError = err.Error()
		}
	}
	ack.ExceptionsVersion = h.exceptions.version()
	for _, sc := range c.GetCommands() {
		ack.Results = append(ack.Results, h.command(sc))
	}
	return ack
}

// command verifies, carries out and records one command; a command
// answered before gets its first answer again.
func (h *controlHandler) command(sc *api.SignedCommand) *api.CommandResult {
	now := h.now()
	cmd, err := transport.VerifyCommand(sc, h.roots, h.agentID, now)
	if prev := h.answered.get(cmd.GetId()); prev != nil {
		return prev
	}
	res := &api.CommandResult{Id: cmd.GetId()}
	if err != nil {
		h.log.Warn("command refused", "command", cmd.GetId(), "action", cmd.GetAction(), "error", err)
		res.Refused = err.Error()
		if cmd.GetId() == "" || errors.Is(err, transport.ErrCommandRefused) && cmd.GetAgentId() != h.agentID {
			return res // not ours to remember
		}
	} else {
		ev := h.response.r.Command(cmd)
		h.response.record(ev)
		res.Response = ev.GetResponse()
	}
	keep := now.Add(24 * time.Hour)
	if exp := cmd.GetExpires(); exp != nil && exp.AsTime().Add(time.Hour).After(keep) {
		keep = exp.AsTime().Add(time.Hour)
	}
	if err := h.answered.put(res, keep, now); err != nil {
		h.log.Error("answered command not kept; a repeat could act again", "command", res.GetId(), "error", err)
	}
	return res
}

// answeredCommands remembers each command's answer until after its expiry,
// on disk, so that a command resent after a lost answer or an agent restart
// is answered, not carried out, again.
type answeredCommands struct {
	path string
	mu   sync.Mutex
	byID map[string]answeredCommand
}

type answeredCommand struct {
	Result json.RawMessage `json:"result"` // protojson CommandResult
	Keep   time.Time       `json:"keep"`
}

func loadAnsweredCommands(path string) (*answeredCommands, error) {
	a := &answeredCommands{path: path, byID: map[string]answeredCommand{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(raw, &a.byID); err != nil {
		a.byID = map[string]answeredCommand{}
		return a, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

func (a *answeredCommands) get(id string) *api.CommandResult {
	if id == "" {
		return nil
	}
	a.mu.Lock()
	e, ok := a.byID[id]
	a.mu.Unlock()
	if !ok {
		return nil
	}
	var r api.CommandResult
	if err := protojson.Unmarshal(e.Result, &r); err != nil {
		return nil
	}
	return &r
}

func (a *answeredCommands) put(r *api.CommandResult, keep, now time.Time) error {
	b, err := protojson.Marshal(r)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, e := range a.byID {
		if now.After(e.Keep) {
			delete(a.byID, id)
		}
	}
	a.byID[r.GetId()] = answeredCommand{Result: b, Keep: keep}
	out, err := json.Marshal(a.byID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(a.path), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(a.path, out)
}
