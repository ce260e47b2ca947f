package backend

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// The users page: admins list the console's users and add, re-role and
// remove them and issue API tokens. Every change goes through the Console
// (audited with the admin who made it) and, being a session's form post,
// carries the session's CSRF token (guard checks it).
//
//	GET  /users                      admin: the users and the forms
//	POST /users                      admin: add (name, role, password)
//	POST /users/{name}/role          admin: change the role
//	POST /users/{name}/delete        admin: remove
//	POST /users/{name}/token         admin: a new API token, shown once
func (s *apiServer) routeUsersUI(mux *http.ServeMux) {
	with := func(h http.HandlerFunc) http.Handler {
		return s.allowUI(RoleAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s.console == nil {
				s.renderError(w, http.StatusServiceUnavailable, "Users are not available on this backend.")
				return
			}
			h(w, r)
		}))
	}
	mux.Handle("GET /users", with(s.uiUsers))
	mux.Handle("POST /users", with(s.uiAddUser))
	mux.Handle("POST /users/{name}/role", with(s.uiSetUserRole))
	mux.Handle("POST /users/{name}/delete", with(s.uiRemoveUser))
	mux.Handle("POST /users/{name}/token", with(s.uiNewUserToken))
}

type usersPage struct {
	Title string
	Users []UserView
	Roles []Role
	Me    string
	CSRF  string
	// Done says what the last change did; Error why it was refused.
	Done, Error string
	// Token is a token just issued (TokenUser's): shown this once.
	Token, TokenUser string
}

// renderUsers shows the users page with p's message; code is the status
// of the change that led here.
func (s *apiServer) renderUsers(w http.ResponseWriter, r *http.Request, code int, p usersPage) {
	p.Title, p.Roles = "Users", Roles
	pr := principalFrom(r)
	p.Me = pr.Name
	if pr.session != nil {
		p.CSRF = pr.session.CSRF
	}
	users, err := s.console.Users(r.Context())
	if err != nil {
		s.log.Error("ui: users", "err", err)
		p.Error = "The users could not be read; see the backend's log."
		code = http.StatusInternalServerError
	}
	for _, u := range users {
		p.Users = append(p.Users, u.view())
	}
	s.render(w, code, s.ui.users, p)
}

func (s *apiServer) uiUsers(w http.ResponseWriter, r *http.Request) {
	p := usersPage{}
	if d := r.URL.Query().Get("done"); d != "" {
		p.Done = d
	}
	s.renderUsers(w, r, http.StatusOK, p)
}

// usersDone sends the browser back to the list with what was done (a
// reload then does not post again).
func usersDone(w http.ResponseWriter, r *http.Request, msg string) {
	http.Redirect(w, r, "/users?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

// usersRefused shows the page again with why err refused the change.
func (s *apiServer) usersRefused(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	msg := "The change could not be stored; see the backend's log."
	switch {
	case errors.Is(err, ErrInvalid):
		code, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrNotFound):
		code, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, ErrConflict):
		code, msg = http.StatusConflict, err.Error()
	default:
		s.log.Error("ui: users change", "path", r.URL.Path, "err", err)
	}
	s.renderUsers(w, r, code, usersPage{Error: msg})
}

func (s *apiServer) uiAddUser(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	role, err := ParseRole(r.PostFormValue("role"))
	if err != nil {
		s.usersRefused(w, r, errors.Join(ErrInvalid, err))
		return
	}
	if _, err := s.console.AddUser(r.Context(), principalFrom(r), name, role, r.PostFormValue("password")); err != nil {
		s.usersRefused(w, r, err)
		return
	}
	usersDone(w, r, "Added "+name+" as "+string(role)+".")
}

// notSelf refuses a change that would lock the signed-in admin out: the
// last way back in would be the break-glass token.
func (s *apiServer) notSelf(w http.ResponseWriter, r *http.Request, what string) bool {
	if name := r.PathValue("name"); name == principalFrom(r).Name {
		s.usersRefused(w, r, errors.Join(ErrInvalid, errors.New("you may not "+what+" yourself: ask another admin")))
		return false
	}
	return true
}

func (s *apiServer) uiSetUserRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	role, err := ParseRole(r.PostFormValue("role"))
	if err != nil {
		s.usersRefused(w, r, errors.Join(ErrInvalid, err))
		return
	}
	if role != RoleAdmin && !s.notSelf(w, r, "demote") {
		return
	}
	if _, err := s.console.SetUserRole(r.Context(), principalFrom(r), name, role); err != nil {
		s.usersRefused(w, r, err)
		return
	}
	usersDone(w, r, name+" is now "+string(role)+".")
}

func (s *apiServer) uiRemoveUser(w http.ResponseWriter, r *http.Request) {
	if !s.notSelf(w, r, "remove") {
		return
	}
	name := r.PathValue("name")
	if err := s.console.RemoveUser(r.Context(), principalFrom(r), name); err != nil {
		s.usersRefused(w, r, err)
		return
	}
	usersDone(w, r, "Removed "+name+".")
}

func (s *apiServer) uiNewUserToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	id, tok, err := s.console.NewUserToken(r.Context(), principalFrom(r), name)
	if err != nil {
		s.usersRefused(w, r, err)
		return
	}
	// Rendered, not redirected: the token is in no URL and no log.
	s.renderUsers(w, r, http.StatusOK, usersPage{Done: "Issued token " + id + " for " + name + ".", Token: tok, TokenUser: name})
}
