package backend

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/harrier-sec/harrier/api"
)

// The alert exceptions' routes:
//
//	GET    /api/v1/exceptions            viewer: the set and each agent's applied version
//	POST   /api/v1/exceptions            analyst; body ExceptionRequest
//	DELETE /api/v1/exceptions/{id}       analyst
//	POST   /alerts/{id}/exception        analyst: the alert page's form
//	GET    /exceptions                   viewer: the list, which agents have each
//	POST   /exceptions/{id}/delete       analyst: the list's delete button
func (s *apiServer) routeExceptions(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/exceptions", s.withControl(s.allow(RoleViewer, http.HandlerFunc(s.listExceptions))))
	mux.Handle("POST /api/v1/exceptions", s.withControl(s.allow(RoleAnalyst, s.audited("exception.add", http.HandlerFunc(s.postException)))))
	mux.Handle("DELETE /api/v1/exceptions/{id}", s.withControl(s.allow(RoleAnalyst, s.audited("exception.delete", http.HandlerFunc(s.deleteException)))))
	mux.Handle("POST /alerts/{id}/exception", s.allowUI(RoleAnalyst, http.HandlerFunc(s.uiPostException)))
	mux.Handle("GET /exceptions", s.allowUI(RoleViewer, http.HandlerFunc(s.uiExceptions)))
	mux.Handle("POST /exceptions/{id}/delete", s.allowUI(RoleAnalyst, http.HandlerFunc(s.uiDeleteException)))
}

func (s *apiServer) listExceptions(w http.ResponseWriter, r *http.Request) {
	set, err := s.cfg.Control.Exceptions(r.Context())
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	agents, err := s.cfg.Control.AgentControls(r.Context())
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"exceptions": set, "agents": agents})
}

func (s *apiServer) postException(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req ExceptionRequest
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	x, err := s.cfg.Control.AddException(r.Context(), req, requester(r))
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"exception": x})
}

func (s *apiServer) deleteException(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Control.DeleteException(r.Context(), r.PathValue("id"), requester(r)); err != nil {
		s.controlError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("id")})
}

// exceptionExpiries are the form's choices.
var exceptionExpiries = []struct{ Value, Label string }{
	{"24h", "1 day"}, {"168h", "7 days"}, {"720h", "30 days"}, {"2160h", "90 days"}, {"8760h", "1 year"},
}

// exceptionForm is the alert page's "don't alert on this again when …",
// prefilled from the alert.
type exceptionForm struct {
	AlertID string
	Req     ExceptionRequest
	Scopes  []string
	Expires []struct{ Value, Label string }
	CSRF    string
	CanEdit bool
	// Existing are the exceptions made from this alert.
	Existing []SiteException
}

// exceptionFormFor fills the form from a: its detection, namespace,
// workload, image, process path, command line and destination.
func (s *apiServer) exceptionFormFor(r *http.Request, a *api.Alert) *exceptionForm {
	if s.cfg.Control == nil {
		return nil
	}
	c, p := a.GetContainer(), a.GetProcess()
	f := &exceptionForm{AlertID: a.GetId(), Scopes: ExceptionScopes, Expires: exceptionExpiries,
		Req: ExceptionRequest{AlertID: a.GetId(), Detection: a.GetDetectionId(), Cluster: a.GetCluster(), Namespace: c.GetPodNamespace(),
			Workload: c.GetWorkloadName(), Image: c.GetImage(), Process: p.GetExe(), Command: strings.Join(p.GetArgs(), " "),
			Destination: alertDestination(a), ExpiresIn: "720h"}}
	switch {
	case f.Req.Workload != "" && f.Req.Namespace != "":
		f.Req.Scope = ScopeWorkload
	case f.Req.Namespace != "":
		f.Req.Scope = ScopeNamespace
	default:
		f.Req.Scope = ScopeCluster
	}
	if pr := principalFrom(r); pr != nil && permitted(pr, RoleAnalyst, false) && pr.session != nil {
		f.CanEdit, f.CSRF = true, pr.session.CSRF
	}
	if set, err := s.cfg.Control.Exceptions(r.Context()); err == nil {
		for _, x := range set.Exceptions {
			if x.AlertID == a.GetId() {
				f.Existing = append(f.Existing, x)
			}
		}
	}
	return f
}

// alertDestination is the remote address of the alert's first connection
// evidence, as "ip:port".
func alertDestination(a *api.Alert) string {
	for _, ev := range a.GetEvidence() {
		if d := ev.GetConnect().GetDestination(); d.GetIp() != "" {
			return net.JoinHostPort(d.GetIp(), strconv.Itoa(int(d.GetPort())))
		}
	}
	return ""
}

// uiPostException makes the exception the alert page's form asks for.
func (s *apiServer) uiPostException(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Control == nil {
		s.renderError(w, http.StatusServiceUnavailable, "Response control is not running on this backend: exceptions reach agents through it.")
		return
	}
	id := r.PathValue("id")
	req := ExceptionRequest{AlertID: id, Detection: r.PostFormValue("detection"), Scope: r.PostFormValue("scope"),
		Namespace: r.PostFormValue("namespace"), Workload: r.PostFormValue("workload"), Image: r.PostFormValue("image"),
		Process: r.PostFormValue("process"), Command: r.PostFormValue("command"), Destination: r.PostFormValue("destination"),
		ExpiresIn: r.PostFormValue("expires_in"), Reason: r.PostFormValue("reason")}
	by := principalFrom(r)
	x, err := s.cfg.Control.AddException(r.Context(), req, by.Name)
	e := newAudit(s.cfg.Now(), by, "exception.add", "/alerts/"+id, "")
	if err != nil {
		e.Outcome = "refused: " + err.Error()
	} else {
		e.Detail = x.ID + " scope " + x.Scope + " detection " + orAll(x.Detection) + " until " + x.Expires.Format("2006-01-02 15:04Z")
	}
	s.auditUI(r, e)
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			s.renderError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Error("ui: add exception", "alert", id, "err", err)
		s.renderError(w, http.StatusInternalServerError, "The exception could not be stored; see the backend's log.")
		return
	}
	http.Redirect(w, r, "/exceptions#"+url.PathEscape(x.ID), http.StatusSeeOther)
}

func orAll(detection string) string {
	if detection == "" {
		return "(every detection)"
	}
	return detection
}

// auditUI records a console page's change; a failure is logged.
func (s *apiServer) auditUI(r *http.Request, e *AuditEntry) {
	if s.console == nil {
		return
	}
	if err := s.console.Audit(context.WithoutCancel(r.Context()), e); err != nil {
		s.log.Error("audit entry not stored", "action", e.Action, "user", e.User, "err", err)
	}
}

func (s *apiServer) uiDeleteException(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Control == nil {
		s.renderError(w, http.StatusServiceUnavailable, "Response control is not running on this backend.")
		return
	}
	id := r.PathValue("id")
	by := principalFrom(r)
	err := s.cfg.Control.DeleteException(r.Context(), id, by.Name)
	e := newAudit(s.cfg.Now(), by, "exception.delete", "/exceptions/"+id, id)
	if err != nil {
		e.Outcome = "refused: " + err.Error()
	}
	s.auditUI(r, e)
	switch {
	case errors.Is(err, ErrNotFound):
		s.renderError(w, http.StatusNotFound, "No exception with that ID.")
		return
	case err != nil:
		s.log.Error("ui: delete exception", "exception", id, "err", err)
		s.renderError(w, http.StatusInternalServerError, "The exception could not be deleted; see the backend's log.")
		return
	}
	http.Redirect(w, r, "/exceptions", http.StatusSeeOther)
}

type exceptionsPage struct {
	Title   string
	Error   string
	Set     ExceptionSet
	Rows    []exceptionRow
	Agents  []exceptionAgent
	CanEdit bool
	CSRF    string
}

type exceptionRow struct {
	SiteException
	Expired bool
	// Have are the agents applying a version that holds it; Lack the
	// others.
	Have, Lack []string
}

type exceptionAgent struct {
	ID      string
	Version uint64
	Error   string
	Current bool
}

func (s *apiServer) uiExceptions(w http.ResponseWriter, r *http.Request) {
	p := exceptionsPage{Title: "Exceptions"}
	if s.cfg.Control == nil {
		p.Error = "Response control is not running on this backend: exceptions reach agents through it."
		s.render(w, http.StatusOK, s.ui.exceptions, p)
		return
	}
	ctx := r.Context()
	var err error
	if p.Set, err = s.cfg.Control.Exceptions(ctx); err != nil {
		s.log.Error("ui: exceptions", "err", err)
		p.Error = "The exceptions could not be read; see the backend's log."
	}
	controls, err := s.cfg.Control.AgentControls(ctx)
	if err != nil {
		s.log.Error("ui: agent controls", "err", err)
		p.Error = "The agents' answers could not be read; see the backend's log."
	}
	agents, err := s.store.Agents(ctx)
	if err != nil {
		s.log.Error("ui: agents", "err", err)
		p.Error = "The agents could not be read; see the backend's log."
	}
	for _, a := range agents {
		ac := controls[a.ID]
		p.Agents = append(p.Agents, exceptionAgent{ID: a.ID, Version: ac.ExceptionsVersion, Error: ac.ExceptionsError,
			Current: ac.ExceptionsVersion == p.Set.Version})
	}
	now := s.cfg.Now()
	for _, x := range p.Set.Exceptions {
		row := exceptionRow{SiteException: x, Expired: !now.Before(x.Expires)}
		for _, a := range p.Agents {
			if a.Version >= x.Version {
				row.Have = append(row.Have, a.ID)
			} else {
				row.Lack = append(row.Lack, a.ID)
			}
		}
		p.Rows = append(p.Rows, row)
	}
	if pr := principalFrom(r); pr != nil && permitted(pr, RoleAnalyst, false) && pr.session != nil {
		p.CanEdit, p.CSRF = true, pr.session.CSRF
	}
	s.render(w, http.StatusOK, s.ui.exceptions, p)
}
