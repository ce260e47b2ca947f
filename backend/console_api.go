package backend

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The console's routes (the least role each needs):
//
//	GET  /api/v1/me                                   viewer: who am I
//	GET  /api/v1/alerts/{id}/triage                   viewer
//	POST /api/v1/alerts/{id}/triage                   analyst; body TriageRequest
//	GET  /api/v1/users, POST /api/v1/users            admin; body {name, role, password}
//	DELETE /api/v1/users/{name}                       admin
//	POST /api/v1/users/{name}/tokens                  admin: a new API token, shown once
//	PUT  /api/v1/users/{name}/role                    admin: body {role}
//	GET  /api/v1/audit?limit=                         admin
//	POST /alerts/{id}/triage                          analyst: the alert page's form
//	GET  /audit                                       admin: the audit log page
func (s *apiServer) routeConsole(mux *http.ServeMux) {
	with := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if s.console == nil {
				writeError(w, http.StatusServiceUnavailable, "users and triage are not available on this backend")
				return
			}
			h(w, r)
		}
	}
	mux.Handle("GET /api/v1/me", s.allow(RoleViewer, http.HandlerFunc(s.me)))
	mux.Handle("GET /api/v1/alerts/{id}/triage", s.allow(RoleViewer, with(s.getTriage)))
	mux.Handle("POST /api/v1/alerts/{id}/triage", s.allow(RoleAnalyst, with(s.postTriage)))
	mux.Handle("GET /api/v1/users", s.allow(RoleAdmin, with(s.listUsers)))
	mux.Handle("POST /api/v1/users", s.allow(RoleAdmin, with(s.addUser)))
	mux.Handle("DELETE /api/v1/users/{name}", s.allow(RoleAdmin, with(s.removeUser)))
	mux.Handle("POST /api/v1/users/{name}/tokens", s.allow(RoleAdmin, with(s.newUserToken)))
	mux.Handle("PUT /api/v1/users/{name}/role", s.allow(RoleAdmin, with(s.setUserRole)))
	mux.Handle("GET /api/v1/audit", s.allow(RoleAdmin, with(s.listAudit)))
	mux.Handle("POST /alerts/{id}/triage", s.allowUI(RoleAnalyst, with(s.uiPostTriage)))
	mux.Handle("GET /audit", s.allowUI(RoleAdmin, with(s.uiAudit)))
}

func (s *apiServer) me(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r)
	writeJSON(w, http.StatusOK, map[string]string{"user": p.Name, "role": string(p.Role), "via": p.Via})
}

// consoleError answers err: 400 invalid, 404 not found, 409 conflict.
func (s *apiServer) consoleError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.internalError(w, r, err)
	}
}

func (s *apiServer) getTriage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.store.Alert(r.Context(), id); err != nil {
		s.consoleError(w, r, err)
		return
	}
	t, err := s.console.Triage(r.Context(), id)
	if err != nil {
		s.consoleError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"triage": t})
}

func (s *apiServer) postTriage(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req TriageRequest
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	t, err := s.console.SetTriage(r.Context(), principalFrom(r), r.PathValue("id"), req)
	if err != nil {
		s.consoleError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"triage": t})
}

func (s *apiServer) listUsers(w http.ResponseWriter, r *http.Request) {
	users, err := s.console.Users(r.Context())
	if err != nil {
		s.consoleError(w, r, err)
		return
	}
	out := make([]UserView, 0, len(users))
	for _, u := range users {
		out = append(out, u.view())
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

// AddUserRequest is the body of POST /api/v1/users.
type AddUserRequest struct {
	Name     string `json:"name"`
	Role     Role   `json:"role"`
	Password string `json:"password,omitempty"`
}

func (s *apiServer) addUser(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req AddUserRequest
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := s.console.AddUser(r.Context(), principalFrom(r), req.Name, req.Role, req.Password)
	if err != nil {
		s.consoleError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"user": u})
}

func (s *apiServer) removeUser(w http.ResponseWriter, r *http.Request) {
	if err := s.console.RemoveUser(r.Context(), principalFrom(r), r.PathValue("name")); err != nil {
		s.consoleError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": r.PathValue("name")})
}

// SetRoleRequest is the body of PUT /api/v1/users/{name}/role.
type SetRoleRequest struct {
	Role Role `json:"role"`
}

func (s *apiServer) setUserRole(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req SetRoleRequest
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := s.console.SetUserRole(r.Context(), principalFrom(r), r.PathValue("name"), req.Role)
	if err != nil {
		s.consoleError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": u})
}

func (s *apiServer) newUserToken(w http.ResponseWriter, r *http.Request) {
	id, tok, err := s.console.NewUserToken(r.Context(), principalFrom(r), r.PathValue("name"))
	if err != nil {
		s.consoleError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"user": r.PathValue("name"), "id": id, "token": tok})
}

func auditLimit(r *http.Request) (int, error) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return DefaultLimit, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, &paramError{param: "limit", msg: "want an integer from 1 to " + strconv.Itoa(MaxLimit)}
	}
	return n, nil
}

func (s *apiServer) listAudit(w http.ResponseWriter, r *http.Request) {
	limit, err := auditLimit(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	entries, err := s.console.AuditLog(r.Context(), limit)
	if err != nil {
		s.consoleError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"audit": entries})
}

// triageView is what the alert page's triage part shows.
type triageView struct {
	Triage  Triage
	States  []string
	Users   []string
	CanEdit bool
	CSRF    string
	Error   string
}

// triageFor fills the alert page's triage part for the signed-in user.
func (s *apiServer) triageFor(r *http.Request, alertID string) *triageView {
	if s.console == nil {
		return nil
	}
	v := &triageView{States: TriageStates}
	var err error
	if v.Triage, err = s.console.Triage(r.Context(), alertID); err != nil {
		s.log.Error("ui: triage", "alert", alertID, "err", err)
		v.Error = "The triage could not be read; see the backend's log."
		return v
	}
	users, err := s.console.Users(r.Context())
	if err != nil {
		s.log.Error("ui: users", "err", err)
	}
	for _, u := range users {
		v.Users = append(v.Users, u.Name)
	}
	// Who may be chosen besides the stored users: the current assignee
	// (kept when the form is sent) and the signed-in user, who may be one
	// of the identity provider's (oidc:…).
	if a := v.Triage.Assignee; a != "" && !slices.Contains(v.Users, a) {
		v.Users = append(v.Users, a)
	}
	if p := principalFrom(r); p != nil && permitted(p, RoleAnalyst, false) && p.session != nil {
		v.CanEdit, v.CSRF = true, p.session.CSRF
		if !slices.Contains(v.Users, p.Name) {
			v.Users = append(v.Users, p.Name)
		}
	}
	return v
}

// uiPostTriage takes the alert page's form and goes back to the page.
func (s *apiServer) uiPostTriage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	req := TriageRequest{State: r.PostFormValue("state"), Comment: r.PostFormValue("comment")}
	if a, ok := r.PostForm["assignee"]; ok {
		assignee := strings.TrimSpace(strings.Join(a, ""))
		req.Assignee = &assignee
	}
	if _, err := s.console.SetTriage(r.Context(), principalFrom(r), id, req); err != nil {
		if errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) {
			s.renderError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Error("ui: set triage", "alert", id, "err", err)
		s.renderError(w, http.StatusInternalServerError, "The triage could not be stored; see the backend's log.")
		return
	}
	http.Redirect(w, r, "/alerts/"+url.PathEscape(id)+"#triage", http.StatusSeeOther)
}

type auditPage struct {
	Title   string
	Error   string
	Entries []AuditEntry
}

func (s *apiServer) uiAudit(w http.ResponseWriter, r *http.Request) {
	p := auditPage{Title: "Audit log"}
	var err error
	if p.Entries, err = s.console.AuditLog(r.Context(), MaxLimit); err != nil {
		s.log.Error("ui: audit", "err", err)
		p.Error = "The audit log could not be read; see the backend's log."
	}
	s.render(w, http.StatusOK, s.ui.audit, p)
}

// renderError shows msg on a page of its own.
func (s *apiServer) renderError(w http.ResponseWriter, code int, msg string) {
	s.render(w, code, s.ui.alerts, alertsPage{Title: "Error", Error: msg})
}
