package backend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// principal is who a request comes from: a user (by session or API token)
// or one of the generated credentials.
type principal struct {
	Name string
	Role Role
	// Via is how it was authenticated: viaSession, viaUserToken,
	// viaAPIToken, viaResponseToken.
	Via    string
	Remote string
	// session is the browser session's (Via viaSession).
	session *session
}

// How a principal was authenticated.
const (
	viaSession       = "session"
	viaUserToken     = "token"
	viaAPIToken      = "api-token"
	viaResponseToken = "response-token"
)

// breakGlassUser is the user name that signs in with the API token.
const breakGlassUser = "api-token"

type principalKey struct{}

func principalFrom(r *http.Request) *principal {
	p, _ := r.Context().Value(principalKey{}).(*principal)
	return p
}

// session is a browser's sign-in, stored under the SHA-256 of its ID (the
// cookie's value), so that the store never holds a usable cookie.
type session struct {
	User string `json:"user"`
	// UserCreated tells the user from a later one of the same name: a
	// session outlives neither the removal nor a re-creation.
	UserCreated time.Time `json:"user_created"`
	// BreakGlass sessions were opened with the API token (role admin).
	BreakGlass bool `json:"break_glass,omitempty"`
	// OIDC sessions were opened by the site's identity provider; Role is
	// the role their groups mapped to at sign-in (there is no stored user).
	OIDC    bool      `json:"oidc,omitempty"`
	Role    Role      `json:"role,omitempty"`
	CSRF    string    `json:"csrf"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Remote  string    `json:"remote"`
}

func sessionKey(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return key(prefixSession, hex.EncodeToString(sum[:]))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand does not fail on Linux
	return hex.EncodeToString(b)
}

// newSession stores a session for user and returns its ID.
func (c *Console) newSession(user string, userCreated time.Time, breakGlass bool, remote string) (string, session, error) {
	return c.newSessionFor(session{User: user, UserCreated: userCreated, BreakGlass: breakGlass, Remote: remote})
}

// newSessionFor stores s with a new CSRF token and times and returns its ID.
func (c *Console) newSessionFor(s session) (string, session, error) {
	id := randomHex(32)
	now := c.now().UTC()
	s.CSRF, s.Created, s.Expires = randomHex(32), now, now.Add(c.sessionTTL)
	err := c.db.Update(func(txn *badger.Txn) error { return setJSON(txn, sessionKey(id), s, c.sessionTTL) })
	if err != nil {
		return "", session{}, fmt.Errorf("store session: %w", err)
	}
	return id, s, nil
}

// session returns the live session id, extending it when half its time
// is gone.
func (c *Console) session(id string) (session, bool, error) {
	var s session
	var ok bool
	err := c.db.View(func(txn *badger.Txn) error {
		var err error
		ok, err = getJSON(txn, sessionKey(id), &s)
		return err
	})
	if err != nil || !ok {
		return session{}, false, err
	}
	now := c.now()
	if !now.Before(s.Expires) {
		return session{}, false, nil
	}
	if s.Expires.Sub(now) < c.sessionTTL/2 {
		s.Expires = now.UTC().Add(c.sessionTTL)
		if err := c.db.Update(func(txn *badger.Txn) error { return setJSON(txn, sessionKey(id), s, c.sessionTTL) }); err != nil {
			return session{}, false, fmt.Errorf("extend session: %w", err)
		}
	}
	return s, true, nil
}

func (c *Console) endSession(id string) error {
	return c.db.Update(func(txn *badger.Txn) error { return txn.Delete(sessionKey(id)) })
}

// authenticate finds who r comes from: a bearer token (the API token, the
// response token or a user's token) or a session cookie. nil: nobody.
func (s *apiServer) authenticate(r *http.Request) (*principal, error) {
	remote := remoteHost(r)
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return nil, nil
		}
		if len(s.token) > 0 && subtle.ConstantTimeCompare([]byte(tok), s.token) == 1 {
			return &principal{Name: breakGlassUser, Role: RoleAdmin, Via: viaAPIToken, Remote: remote}, nil
		}
		if rt := s.cfg.ResponseToken; rt != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(rt)) == 1 {
			return &principal{Name: respondedBy, Role: RoleResponder, Via: viaResponseToken, Remote: remote}, nil
		}
		if s.console == nil {
			return nil, nil
		}
		u, ok, err := s.console.userByToken(r.Context(), tok)
		if err != nil || !ok {
			return nil, err
		}
		return &principal{Name: u.Name, Role: u.Role, Via: viaUserToken, Remote: remote}, nil
	}
	ck, err := r.Cookie(cookieName)
	if err != nil || s.console == nil || len(ck.Value) != 64 {
		return nil, nil
	}
	sess, ok, err := s.console.session(ck.Value)
	if err != nil || !ok {
		return nil, err
	}
	p := &principal{Name: sess.User, Role: RoleAdmin, Via: viaSession, Remote: remote, session: &sess}
	switch {
	case sess.BreakGlass:
	case sess.OIDC:
		// Signed in by the identity provider: valid while it is configured.
		if s.cfg.OIDC == nil || !slices.Contains(Roles, sess.Role) {
			return nil, nil
		}
		p.Role = sess.Role
	default:
		// The user's role now: a removed user's sessions end, a changed
		// role applies at once.
		u, err := s.console.User(r.Context(), sess.User)
		if errors.Is(err, ErrNotFound) || (err == nil && !u.Created.Equal(sess.UserCreated)) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		p.Role = u.Role
	}
	return p, nil
}

func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// permitted reports whether p may use a route that needs role. The
// response token may use the response routes only (its old meaning); the
// API token, spread to scripts and `harrier simulate`, may do everything
// an admin may but ask for response actions or change their policies.
func permitted(p *principal, need Role, responseRoute bool) bool {
	switch p.Via {
	case viaResponseToken:
		return responseRoute
	case viaAPIToken:
		if responseRoute && need != RoleViewer {
			return false
		}
	}
	return p.Role.Allows(need)
}

// maxFormBytes bounds a console form (the triage form's comment is at most
// maxCommentBytes).
const maxFormBytes = 64 << 10

// isSafeMethod: methods that change nothing and need no CSRF token.
func isSafeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// csrfOK checks a state change made with a session cookie: the session's
// CSRF token in the X-CSRF-Token header (scripts) or the form field csrf
// (forms), and an Origin, when the browser sends one, of this server.
func csrfOK(r *http.Request, sess *session) bool {
	if o := r.Header.Get("Origin"); o != "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if o != scheme+"://"+r.Host {
			return false
		}
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(sess.CSRF)) == 1
}

// guard authenticates, checks the role and, for a session's state change,
// the CSRF token; refused requests get JSON (api) or a page (ui).
func (s *apiServer) guard(need Role, responseRoute, ui bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		if p == nil {
			if ui {
				s.renderLogin(w, http.StatusUnauthorized, "")
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="harrier"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
			return
		}
		if !permitted(p, need, responseRoute) {
			s.log.Info("request refused: role", "path", r.URL.Path, "user", p.Name, "role", p.Role, "via", p.Via, "need", need)
			msg := fmt.Sprintf("%s (%s) may not do this: it needs the role %s", p.Name, p.Role, need)
			switch {
			case p.Via == viaResponseToken:
				msg = "the response token may only use the response routes"
			case p.Via == viaAPIToken && responseRoute:
				msg = "this needs the response token (<tokenDir>/response-token) or a user with the role " + string(need) + ", not the API token"
			}
			if ui {
				s.renderError(w, http.StatusForbidden, msg)
				return
			}
			writeError(w, http.StatusForbidden, msg)
			return
		}
		if p.Via == viaSession && !isSafeMethod(r.Method) {
			if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
				r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes) // the CSRF check parses the form
			}
			if !csrfOK(r, p.session) {
				s.log.Warn("request refused: CSRF token missing or wrong", "path", r.URL.Path, "user", p.Name, "remote", p.Remote)
				if ui {
					s.renderError(w, http.StatusForbidden, "The form was stale or did not come from this console; reload the page and try again.")
					return
				}
				writeError(w, http.StatusForbidden, "missing or wrong CSRF token (X-CSRF-Token) for a session's change")
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// allow guards an API route for role; allowUI a web page.
func (s *apiServer) allow(need Role, h http.Handler) http.Handler {
	return s.guard(need, false, false, h)
}
func (s *apiServer) allowUI(need Role, h http.Handler) http.Handler {
	return s.guard(need, false, true, h)
}

// audited records a state change the console does not store itself
// (tokens, revocations, response policies and commands) with its outcome.
func (s *apiServer) audited(action string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		if s.console == nil {
			return
		}
		e := newAudit(s.cfg.Now(), principalFrom(r), action, r.URL.Path, "")
		if rec.code >= 300 {
			e.Outcome = fmt.Sprintf("refused: HTTP %d", rec.code)
		}
		if err := s.console.Audit(context.WithoutCancel(r.Context()), e); err != nil {
			s.log.Error("audit entry not stored", "action", action, "user", e.User, "err", err)
		}
	})
}

// Login rate limits: failures within loginWindow, per user name and per
// source address.
const (
	loginWindow        = 15 * time.Minute
	maxFailuresPerUser = 5
	maxFailuresPerAddr = 20
	// maxLimiterKeys bounds the limiter's memory against a spray of names.
	maxLimiterKeys = 10000
)

// loginLimiter counts failed sign-ins.
type loginLimiter struct {
	now      func() time.Time
	mu       sync.Mutex
	failures map[string][]time.Time // "u:<name>" and "a:<address>"
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	return &loginLimiter{now: now, failures: map[string][]time.Time{}}
}

// blocked returns how long until user and addr may try again (0: now).
func (l *loginLimiter) blocked(user, addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var wait time.Duration
	for _, k := range []struct {
		key string
		max int
	}{{"u:" + user, maxFailuresPerUser}, {"a:" + addr, maxFailuresPerAddr}} {
		f := l.recent(k.key, now)
		if len(f) >= k.max {
			wait = max(wait, f[len(f)-k.max].Add(loginWindow).Sub(now))
		}
	}
	return wait
}

func (l *loginLimiter) fail(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.failures) >= maxLimiterKeys {
		for k := range l.failures {
			if len(l.recent(k, now)) == 0 {
				delete(l.failures, k)
			}
		}
	}
	for _, k := range []string{"u:" + user, "a:" + addr} {
		l.failures[k] = append(l.recent(k, now), now)
	}
}

// recent drops k's failures older than the window; the caller holds mu.
func (l *loginLimiter) recent(k string, now time.Time) []time.Time {
	f := l.failures[k]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= loginWindow {
		i++
	}
	f = f[i:]
	if len(f) == 0 {
		delete(l.failures, k)
		return nil
	}
	l.failures[k] = f
	return f
}

// loginForm shows the form (GET) or signs in (POST): a user name and
// password, or the user name api-token with the API token (break glass).
func (s *apiServer) login(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		s.renderLogin(w, http.StatusOK, "")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" && !strings.HasSuffix(o, "://"+r.Host) {
		s.renderLogin(w, http.StatusForbidden, "The sign-in form did not come from this console.")
		return
	}
	user := strings.ToLower(strings.TrimSpace(r.PostForm.Get("username")))
	password := r.PostForm.Get("password")
	addr := remoteHost(r)
	if s.console == nil {
		s.renderLogin(w, http.StatusServiceUnavailable, "Sign-in is not available on this backend; use the API with a bearer token.")
		return
	}
	if wait := s.console.limiter.blocked(user, addr); wait > 0 {
		s.cfg.Metrics.add(metricLoginRefused, 1, "rate_limited")
		s.log.Warn("sign-in refused: too many failures", "user", user, "remote", addr, "retryAfter", wait.Round(time.Second))
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		s.renderLogin(w, http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins; try again in %d minutes.", int(wait.Minutes())+1))
		return
	}
	var breakGlass, ok bool
	var u User
	var err error
	if user == breakGlassUser {
		breakGlass = len(s.token) > 0 && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(password)), s.token) == 1
		ok = breakGlass
	} else if user != "" && password != "" {
		u, ok, err = s.console.checkPassword(r.Context(), user, password)
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if !ok {
		s.console.limiter.fail(user, addr)
		s.cfg.Metrics.add(metricLoginRefused, 1, "bad_credentials")
		s.log.Warn("sign-in refused: wrong user name or password", "user", user, "remote", addr)
		s.renderLogin(w, http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	id, sess, err := s.console.newSession(user, u.Created, breakGlass, addr)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	p := &principal{Name: user, Role: RoleAdmin, Via: viaSession, Remote: addr}
	if !breakGlass {
		p.Role = u.Role
	}
	if err := s.console.Audit(r.Context(), newAudit(s.cfg.Now(), p, "login", "", "")); err != nil {
		s.log.Error("audit entry not stored", "action", "login", "user", user, "err", err)
	}
	s.log.Info("signed in", "user", user, "role", p.Role, "remote", addr, "expires", sess.Expires)
	s.setSessionCookie(w, r, id)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// setSessionCookie gives the browser its session (local or OIDC).
func (s *apiServer) setSessionCookie(w http.ResponseWriter, r *http.Request, id string) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    id,
		Path:     "/",
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
}

// logout ends the session here (not only in the browser).
func (s *apiServer) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(cookieName); err == nil && s.console != nil && len(ck.Value) == 64 {
		if err := s.console.endSession(ck.Value); err != nil {
			s.log.Error("end session", "err", err)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
