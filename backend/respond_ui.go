package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/harrier-sec/harrier/api"
	respond "github.com/harrier-sec/harrier/response"
)

// Responding from the console: the alert and incident pages offer a
// responder the analyst actions that fit the alert's target; each goes
// through a confirmation page that states what will happen to what, and
// its outcome has a page of its own (the state as stored now: reload to
// see the agent's answer).
//
//	GET  /alerts/{id}/respond?action=&incident=   responder: the confirmation
//	POST /alerts/{id}/respond                     responder: issue the command
//	GET  /response/commands/{id}                  viewer: the command and its outcome
func (s *apiServer) routeRespondUI(mux *http.ServeMux) {
	mux.Handle("GET /alerts/{id}/respond", s.allowUI(RoleResponder, http.HandlerFunc(s.uiRespondConfirm)))
	mux.Handle("POST /alerts/{id}/respond", s.allowUI(RoleResponder, http.HandlerFunc(s.uiRespondIssue)))
	mux.Handle("GET /response/commands/{id}", s.allowUI(RoleViewer, http.HandlerFunc(s.uiCommand)))
}

// consoleActions are the analyst actions the console offers, in order.
var consoleActions = []string{respond.ActionKillProcessTree, respond.ActionPauseContainer, respond.ActionResumeContainer,
	respond.ActionBlockNetwork, respond.ActionUnblockNetwork}

// respondAction is one action offered for an alert, with what it will do.
type respondAction struct {
	Action string
	// Label is the button's text; Effect says exactly what the agent does.
	Label, Effect string
}

// alertActions are the actions that fit a's target: the process actions
// need the process's start time (the agent refuses a reused pid), the
// container actions the container's cgroup.
func alertActions(a *api.Alert) []respondAction {
	var out []respondAction
	p, c := a.GetProcess(), a.GetContainer()
	node := a.GetNode()
	for _, act := range consoleActions {
		switch act {
		case respond.ActionKillProcessTree:
			if p.GetTgid() == 0 || p.GetStartTime() == nil {
				continue
			}
			out = append(out, respondAction{act, "Kill process tree", fmt.Sprintf(
				"The agent on node %s sends SIGKILL to process %d (%s, started %s) and every process descended from it, if that pid still belongs to the process that started then.",
				node, p.GetTgid(), p.GetExe(), fmtTime(p.GetStartTime()))})
		default:
			if c.GetId() == "" || c.GetCgroup() == "" {
				continue
			}
			what := containerText(c)
			var label, effect string
			switch act {
			case respond.ActionPauseContainer:
				label, effect = "Pause container", "freezes every process of container "+what+" (cgroup freezer); resume-container thaws it"
			case respond.ActionResumeContainer:
				label, effect = "Resume container", "thaws container "+what+", paused before"
			case respond.ActionBlockNetwork:
				label, effect = "Block network", "drops every new outbound connection of container "+what+" (cgroup socket filter); unblock-network lifts it"
			case respond.ActionUnblockNetwork:
				label, effect = "Unblock network", "lifts the network block of container "+what
			}
			out = append(out, respondAction{act, label, "The agent on node " + node + " " + effect + "."})
		}
	}
	return out
}

func containerText(c *api.Container) string {
	var b strings.Builder
	if c.GetPodNamespace() != "" {
		b.WriteString(c.GetPodNamespace() + "/")
	}
	if c.GetPodName() != "" {
		b.WriteString(c.GetPodName() + "/")
	}
	b.WriteString(c.GetName())
	fmt.Fprintf(&b, " (id %s, cgroup %s)", shortID(c.GetId()), c.GetCgroup())
	return b.String()
}

// respondView is the alert page's respond part and the incident rows'
// buttons: the actions, for a responder only, and the alert's commands.
type respondView struct {
	AlertID  string
	Incident string
	Actions  []respondAction
	Commands []CommandRecord
	// CanRespond: the user may ask for actions (a responder or admin).
	CanRespond bool
	Error      string
}

// canRespond reports whether r's user may ask for response actions from
// the console.
func canRespond(r *http.Request) bool {
	p := principalFrom(r)
	return p != nil && permitted(p, RoleResponder, false)
}

// respondFor fills the alert page's respond part.
func (s *apiServer) respondFor(r *http.Request, a *api.Alert) *respondView {
	v := &respondView{AlertID: a.GetId(), CanRespond: canRespond(r)}
	if s.cfg.Control == nil {
		v.Error = "Response control is not running on this backend."
		v.CanRespond = false
		return v
	}
	if v.CanRespond {
		v.Actions = alertActions(a)
	}
	cmds, err := s.cfg.Control.Commands(r.Context(), "", MaxLimit)
	if err != nil {
		s.log.Error("ui: commands", "alert", a.GetId(), "err", err)
		v.Error = "The alert's commands could not be read; see the backend's log."
		return v
	}
	for _, c := range cmds {
		if c.AlertID == a.GetId() {
			v.Commands = append(v.Commands, c)
		}
	}
	return v
}

type respondConfirmPage struct {
	Title    string
	Alert    *api.Alert
	Action   respondAction
	Incident string
	CSRF     string
	TTL      string
}

// offered returns the action named for a, or an error saying why it is not
// offered.
func offered(a *api.Alert, action string) (respondAction, error) {
	for _, ra := range alertActions(a) {
		if ra.Action == action {
			return ra, nil
		}
	}
	if !slices.Contains(consoleActions, action) {
		return respondAction{}, fmt.Errorf("%w: action %q: the console offers %s", ErrInvalid, action, strings.Join(consoleActions, ", "))
	}
	return respondAction{}, fmt.Errorf("%w: %s does not fit alert %s: it lacks the target (a process start time, or a container's cgroup)", ErrInvalid, action, a.GetId())
}

func (s *apiServer) respondAlert(w http.ResponseWriter, r *http.Request) (*api.Alert, respondAction, bool) {
	if s.cfg.Control == nil {
		s.renderError(w, http.StatusServiceUnavailable, "Response control is not running on this backend.")
		return nil, respondAction{}, false
	}
	a, err := s.store.Alert(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNotFound):
		s.renderError(w, http.StatusNotFound, "No alert with that ID.")
		return nil, respondAction{}, false
	case err != nil:
		s.log.Error("ui: get alert", "err", err)
		s.renderError(w, http.StatusInternalServerError, "The alert could not be read; see the backend's log.")
		return nil, respondAction{}, false
	}
	action := r.FormValue("action")
	ra, err := offered(a, action)
	if err != nil {
		s.renderError(w, http.StatusBadRequest, err.Error())
		return nil, respondAction{}, false
	}
	return a, ra, true
}

// uiRespondConfirm states what the action will do and to what, with the
// form that asks for it.
func (s *apiServer) uiRespondConfirm(w http.ResponseWriter, r *http.Request) {
	a, ra, ok := s.respondAlert(w, r)
	if !ok {
		return
	}
	p := respondConfirmPage{Title: "Confirm: " + ra.Label, Alert: a, Action: ra, Incident: r.FormValue("incident"), TTL: DefaultCommandTTL.String()}
	if pr := principalFrom(r); pr.session != nil {
		p.CSRF = pr.session.CSRF
	}
	s.render(w, http.StatusOK, s.ui.respondConfirm, p)
}

// uiRespondIssue issues the confirmed command, audits it and shows its
// page.
func (s *apiServer) uiRespondIssue(w http.ResponseWriter, r *http.Request) {
	a, ra, ok := s.respondAlert(w, r)
	if !ok {
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if inc := r.PostFormValue("incident"); inc != "" && !strings.Contains(reason, inc) {
		reason = strings.TrimSpace(reason + " (incident " + inc + ")")
	}
	by := principalFrom(r)
	rec, err := s.cfg.Control.Issue(r.Context(), CommandRequest{AlertID: a.GetId(), Action: ra.Action, Reason: reason}, by.Name)
	e := newAudit(s.cfg.Now(), by, "response.command", "/alerts/"+a.GetId(), ra.Action)
	if err != nil {
		e.Outcome = "refused: " + err.Error()
	} else {
		e.Detail = ra.Action + " → " + rec.ID + " on " + rec.AgentID
	}
	if s.console != nil {
		if aerr := s.console.Audit(context.WithoutCancel(r.Context()), e); aerr != nil {
			s.log.Error("audit entry not stored", "action", e.Action, "user", e.User, "err", aerr)
		}
	}
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			s.renderError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Error("ui: issue command", "alert", a.GetId(), "action", ra.Action, "err", err)
		s.renderError(w, http.StatusInternalServerError, "The command could not be issued; see the backend's log.")
		return
	}
	http.Redirect(w, r, "/response/commands/"+url.PathEscape(rec.ID), http.StatusSeeOther)
}

type commandPage struct {
	Title   string
	Command CommandRecord
	Effect  string
}

// uiCommand shows one command as stored now: pending until its agent
// answers, then the outcome, pids, latency and error.
func (s *apiServer) uiCommand(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Control == nil {
		s.renderError(w, http.StatusServiceUnavailable, "Response control is not running on this backend.")
		return
	}
	rec, err := s.cfg.Control.Command(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNotFound):
		s.renderError(w, http.StatusNotFound, "No command with that ID.")
		return
	case err != nil:
		s.log.Error("ui: get command", "err", err)
		s.renderError(w, http.StatusInternalServerError, "The command could not be read; see the backend's log.")
		return
	}
	rec.Signed = nil
	if rec.State == CommandPending {
		// The page reloads itself until the agent answers: no script
		// (the CSP allows none), the browser's own Refresh.
		w.Header().Set("Refresh", "2")
	}
	s.render(w, http.StatusOK, s.ui.command, commandPage{Title: "Command " + rec.ID, Command: rec})
}
