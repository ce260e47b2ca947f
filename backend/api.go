package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/export"
)

// APIConfig configures the HTTP API and web UI.
type APIConfig struct {
	// Token is the bearer token every request except /livez and /readyz must
	// carry (see EnsureToken). Empty is refused by NewAPI's handler: there is
	// no unauthenticated mode.
	Token string
	// Metrics is served on /metrics and counts API requests; pass the one
	// given to the store. Nil: the API makes its own (requests only).
	Metrics *Metrics
	// Now is the clock for "since=1h" (tests set it).
	Now func() time.Time
	// Ready, when set, is asked by /readyz once the store answers: an error
	// makes it answer 503 with the error (the all-in-one is not ready until
	// its agent's sensor is attached).
	Ready func() error
	// Exports answers GET /api/v1/exports and its dead letters; nil: no
	// exports configured.
	Exports *export.Manager
	// Identity serves Enrollment, renewal, bootstrap tokens and
	// revocation; nil answers those routes 503.
	Identity *Identity
	// Control serves the response policies and commands; nil answers those
	// routes 503. ResponseToken is the credential that may change them.
	Control       *ResponseControl
	ResponseToken string
	// Console holds users, sessions, triage and the audit log; nil: made
	// on the store when it is a *BadgerStore (else only the tokens sign in).
	Console *Console
	// OIDC, when set, offers "Sign in with <provider>" beside the local
	// form (oidc.go).
	OIDC *OIDCLogin
}

// cookieName carries a browser's credential after GET/POST /login.
const cookieName = "harrier_session"

type apiServer struct {
	store   Store
	cfg     APIConfig
	log     *slog.Logger
	token   []byte
	console *Console
	ui      *ui
}

// NewAPI returns the handler for the JSON API, health endpoints, metrics and
// web UI. Routes:
//
//	GET /livez, GET /readyz                      no auth
//	GET, POST /login, GET /logout                user name and password (session.go)
//	GET /oidc/login, /oidc/callback              the site's identity provider (oidc.go)
//	GET /metrics
//	GET /api/v1/alerts, /api/v1/alerts/{id}, /api/v1/agents, /api/v1/events
//	GET /api/v1/inventory, /api/v1/findings, /api/v1/findings/{id}
//	GET /api/v1/alerts/{id}/explanation, /api/v1/incidents, /api/v1/incidents/{id}
//	GET /api/v1/exports, /api/v1/exports/{name}/dead-letters
//	POST /api/v1/enroll                          credential in the body
//	POST /api/v1/renew                           agent client certificate
//	POST /api/v1/tokens, POST /api/v1/agents/{id}/revoke, /unrevoke
//	GET, PUT /api/v1/response/policies; POST, GET /api/v1/response/commands[/{id}]
//	GET, POST /api/v1/alerts/{id}/triage; /api/v1/users...; GET /api/v1/audit (console_api.go)
//	GET /, GET /alerts/{id}, /findings, /inventory   web UI
//	GET /incidents, /incidents/{id}, /agents, /overview, /events
func NewAPI(store Store, cfg APIConfig, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if bs, ok := store.(*BadgerStore); ok && cfg.Console == nil {
		cfg.Console = NewConsole(bs, cfg.Control, log)
	}
	s := &apiServer{
		store:   store,
		cfg:     cfg,
		log:     log,
		token:   []byte(cfg.Token),
		console: cfg.Console,
		ui:      newUI(),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /login", s.login)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("GET /logout", s.logout)
	mux.HandleFunc("GET /oidc/login", s.oidcStart)
	mux.HandleFunc("GET "+oidcCallbackPath, s.oidcCallback)
	// Every other route names the least role it needs (session.go): viewers
	// read, analysts triage, responders act, admins manage.
	view := func(h http.HandlerFunc) http.Handler { return s.allow(RoleViewer, h) }
	admin := func(action string, h http.Handler) http.Handler { return s.allow(RoleAdmin, s.audited(action, h)) }
	mux.Handle("GET /metrics", s.allow(RoleViewer, cfg.Metrics))
	mux.Handle("GET /api/v1/alerts", view(s.listAlerts))
	mux.Handle("GET /api/v1/alerts/{id}", view(s.getAlert))
	mux.Handle("GET /api/v1/agents", view(s.listAgents))
	mux.Handle("GET /api/v1/events", view(s.listEvents))
	mux.Handle("GET /api/v1/inventory", view(s.listInventory))
	mux.Handle("GET /api/v1/findings", view(s.listFindings))
	mux.Handle("GET /api/v1/findings/{id}", view(s.getFinding))
	mux.Handle("GET /api/v1/exports", view(s.listExports))
	mux.Handle("GET /api/v1/exports/{name}/dead-letters", view(s.listDeadLetters))
	mux.Handle("GET /api/v1/alerts/{id}/explanation", view(s.getAlertExplanation))
	mux.Handle("GET /api/v1/incidents", view(s.listIncidents))
	mux.Handle("GET /api/v1/incidents/{id}", view(s.getIncident))
	mux.Handle("POST /api/v1/enroll", s.withIdentity(s.enroll))
	mux.Handle("POST /api/v1/renew", s.withIdentity(s.renew))
	mux.Handle("POST /api/v1/tokens", admin("bootstrap-token.create", s.withIdentity(s.createToken)))
	mux.Handle("POST /api/v1/agents/{id}/revoke", admin("agent.revoke", s.withIdentity(s.revoke)))
	mux.Handle("POST /api/v1/agents/{id}/unrevoke", admin("agent.unrevoke", s.withIdentity(s.unrevoke)))
	s.routeResponse(mux)
	s.routeConsole(mux)
	mux.Handle("GET /{$}", s.allowUI(RoleViewer, http.HandlerFunc(s.uiAlerts)))
	mux.Handle("GET /alerts/{id}", s.allowUI(RoleViewer, http.HandlerFunc(s.uiAlert)))
	mux.Handle("GET /findings", s.allowUI(RoleViewer, http.HandlerFunc(s.uiFindings)))
	mux.Handle("GET /inventory", s.allowUI(RoleViewer, http.HandlerFunc(s.uiInventory)))
	mux.Handle("GET /response", s.allowUI(RoleViewer, http.HandlerFunc(s.uiResponse)))
	mux.Handle("GET /exports", s.allowUI(RoleViewer, http.HandlerFunc(s.uiExports)))
	mux.Handle("GET /incidents", s.allowUI(RoleViewer, http.HandlerFunc(s.uiIncidents)))
	mux.Handle("GET /incidents/{id}", s.allowUI(RoleViewer, http.HandlerFunc(s.uiIncident)))
	mux.Handle("GET /agents", s.allowUI(RoleViewer, http.HandlerFunc(s.uiAgents)))
	mux.Handle("GET /overview", s.allowUI(RoleViewer, http.HandlerFunc(s.uiOverview)))
	mux.Handle("GET /events", s.allowUI(RoleViewer, http.HandlerFunc(s.uiEvents)))
	s.routeRespondUI(mux)
	s.routeUsersUI(mux)
	s.routeExceptions(mux)
	return s.countRequests(mux)
}

// countRequests labels by the matched route pattern, never the raw path, so
// scanners cannot blow up the number of series.
func (s *apiServer) countRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		path := "other"
		if r.Pattern != "" {
			_, p, _ := strings.Cut(r.Pattern, " ")
			path = p
		}
		s.cfg.Metrics.add(metricAPIRequests, 1, path, strconv.Itoa(rec.code))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// pinger is implemented by stores with a cheaper readiness check than a
// query.
type pinger interface {
	Ping(ctx context.Context) error
}

func (s *apiServer) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var err error
	if p, ok := s.store.(pinger); ok {
		err = p.Ping(ctx)
	} else {
		_, err = s.store.Agents(ctx)
	}
	if err != nil {
		s.log.Warn("store not ready", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store not ready")
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// paramError names the query parameter that was wrong.
type paramError struct {
	param, msg string
}

func (e *paramError) Error() string { return fmt.Sprintf("parameter %q: %s", e.param, e.msg) }

// queryParams reads a query string, refusing parameters it does not know
// so that a typo ("sevrity=high") is an error, not a silently wider result.
type queryParams struct {
	v   url.Values
	now time.Time
	err error
}

func newQueryParams(r *http.Request, now time.Time, known ...string) *queryParams {
	q := &queryParams{v: r.URL.Query(), now: now}
	for k := range q.v {
		ok := false
		for _, kn := range known {
			ok = ok || k == kn
		}
		if !ok {
			q.fail(k, "unknown parameter")
		}
	}
	for k, vs := range q.v {
		if len(vs) > 1 {
			q.fail(k, "given more than once")
		}
	}
	return q
}

func (q *queryParams) fail(param, msg string) {
	if q.err == nil {
		q.err = &paramError{param: param, msg: msg}
	}
}

func (q *queryParams) str(name string) string { return strings.TrimSpace(q.v.Get(name)) }

func (q *queryParams) limit() int {
	s := q.str("limit")
	if s == "" {
		return DefaultLimit
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxLimit {
		q.fail("limit", fmt.Sprintf("want an integer from 1 to %d", MaxLimit))
	}
	return n
}

// since accepts RFC 3339 or a positive duration back from now ("1h", "30m").
func (q *queryParams) since() time.Time { return q.timeAt("since") }

// timeAt reads the time parameter name as since does.
func (q *queryParams) timeAt(name string) time.Time {
	s := q.str(name)
	if s == "" {
		return time.Time{}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return q.now.Add(-d)
	}
	q.fail(name, "want an RFC 3339 time (2006-01-02T15:04:05Z) or a duration (1h, 30m)")
	return time.Time{}
}

func (q *queryParams) severity() api.Severity {
	s := q.str("severity")
	if s == "" {
		return api.Severity_SEVERITY_UNSPECIFIED
	}
	sev, err := api.ParseSeverity(s)
	if err != nil {
		q.fail("severity", "want one of "+strings.Join(api.SeverityNames(), ", "))
	}
	return sev
}

func (q *queryParams) kind() api.EventKind {
	s := q.str("kind")
	if s == "" {
		return api.EventKind_EVENT_KIND_UNSPECIFIED
	}
	k, err := api.ParseKind(s)
	if err != nil {
		q.fail("kind", "want one of "+strings.Join(api.KindNames(), ", "))
	}
	return k
}

func alertQueryFrom(r *http.Request, now time.Time) (AlertQuery, error) {
	p := newQueryParams(r, now, "detection", "severity", "cluster", "node", "namespace", "since", "limit")
	q := AlertQuery{
		Detection: p.str("detection"),
		Severity:  p.severity(),
		Cluster:   p.str("cluster"),
		Node:      p.str("node"),
		Namespace: p.str("namespace"),
		Since:     p.since(),
		Limit:     p.limit(),
	}
	return q, p.err
}

func (s *apiServer) listAlerts(w http.ResponseWriter, r *http.Request) {
	q, err := alertQueryFrom(r, s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	alerts, err := s.store.Alerts(r.Context(), q)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeProtoList(w, "alerts", alerts)
}

func (s *apiServer) getAlert(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.Alert(r.Context(), r.PathValue("id"))
	s.writeProtoOne(w, r, "alert", a, err)
}

// writeProtoOne answers a request for one object: {"<name>": m}, 404 when
// err wraps ErrNotFound, 500 for another error.
func (s *apiServer) writeProtoOne(w http.ResponseWriter, r *http.Request, name string, m proto.Message, err error) {
	if errors.Is(err, ErrNotFound) {
		writeError(w, http.StatusNotFound, name+" not found")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	b, err := protoJSON.Marshal(m)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeRaw(w, http.StatusOK, append(append([]byte(`{"`+name+`":`), b...), '}'))
}

func (s *apiServer) listEvents(w http.ResponseWriter, r *http.Request) {
	q, err := eventQueryFrom(r, s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	events, err := s.store.Events(r.Context(), q)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeProtoList(w, "events", events)
}

// agentJSON is the API's view of AgentInfo.
type agentJSON struct {
	AgentID   string            `json:"agent_id"`
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
	Records   uint64            `json:"records"`
	Gaps      map[string]uint64 `json:"gaps"`
	Health    json.RawMessage   `json:"health"`
	// UsualGapSeconds is the agent's usual time between uploads; Offline:
	// silent for longer than offlineAfter of it (console_pages.go).
	UsualGapSeconds float64 `json:"usual_gap_seconds,omitempty"`
	Offline         bool    `json:"offline"`
	// Revoked agents are refused; RevokedAt says since when.
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Enrollment is how the agent got its certificate from the backend
	// (absent for certificates made by hand).
	Enrollment *Enrollment `json:"enrollment,omitempty"`
	// ResponseControl is what the agent last answered on the control
	// channel: the response policies version it applies, or why it refused
	// the one sent.
	ResponseControl *AgentControl `json:"response_control,omitempty"`
	// Versions is the rules, exceptions and policies the agent runs, and
	// whether it is behind the backend's (agent_versions.go).
	Versions AgentVersions `json:"versions"`
}

func (s *apiServer) listAgents(w http.ResponseWriter, r *http.Request) {
	if p := newQueryParams(r, s.cfg.Now()); p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	agents, err := s.store.Agents(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	var controls map[string]AgentControl
	if s.cfg.Control != nil {
		if controls, err = s.cfg.Control.AgentControls(r.Context()); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	versions, err := s.agentVersions(r.Context(), agents, controls)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := make([]agentJSON, 0, len(agents))
	for _, a := range agents {
		aj := agentJSON{AgentID: a.ID, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, Records: a.Records,
			Gaps: map[string]uint64{}, Health: json.RawMessage("null"), UsualGapSeconds: a.UsualGap.Seconds(),
			Offline: s.cfg.Now().Sub(a.LastSeen) > offlineAfter(a.UsualGap), Versions: versions[a.ID]}
		if ac, ok := controls[a.ID]; ok {
			aj.ResponseControl = &ac
		}
		for c, n := range a.Gaps {
			aj.Gaps[className(c)] += n
		}
		if a.Health != nil {
			b, err := protoJSON.Marshal(a.Health)
			if err != nil {
				s.internalError(w, r, err)
				return
			}
			aj.Health = b
		}
		out = append(out, aj)
	}
	if id := s.cfg.Identity; id != nil {
		if out, err = s.addIdentity(r, id, out); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": out})
}

// addIdentity marks revoked and enrolled agents, and lists those that have
// not uploaded yet, so that a revoked or freshly enrolled agent shows.
func (s *apiServer) addIdentity(r *http.Request, id *Identity, out []agentJSON) ([]agentJSON, error) {
	enrolled, err := id.Enrolled(r.Context())
	if err != nil {
		return nil, err
	}
	revoked := id.Revoked()
	known := map[string]int{}
	for i, a := range out {
		known[a.AgentID] = i
	}
	extra := map[string]bool{}
	for _, m := range []map[string]bool{keysOf(enrolled), keysOf(revoked)} {
		for k := range m {
			if _, ok := known[k]; !ok {
				extra[k] = true
			}
		}
	}
	for _, k := range sortedKeys(extra) {
		known[k] = len(out)
		out = append(out, agentJSON{AgentID: k, Gaps: map[string]uint64{}, Health: json.RawMessage("null")})
	}
	for k, i := range known {
		if at, ok := revoked[k]; ok {
			out[i].Revoked, out[i].RevokedAt = true, &at
		}
		if e, ok := enrolled[k]; ok {
			out[i].Enrollment = &e
		}
	}
	return out, nil
}

func keysOf[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func (s *apiServer) internalError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	s.log.Error("api request failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

// protoJSON is stateless configuration, safe to share.
var protoJSON = protojson.MarshalOptions{UseProtoNames: true}

// writeProtoList writes {"<name>":[...]} with each element through protojson,
// which is the only correct JSON form of the api messages.
func writeProtoList[M proto.Message](w http.ResponseWriter, name string, items []M) {
	var buf bytes.Buffer
	buf.WriteString(`{"` + name + `":[`)
	for i, m := range items {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := protoJSON.Marshal(m)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "internal error")
			return
		}
		buf.Write(b)
	}
	buf.WriteString("]}")
	writeRaw(w, http.StatusOK, buf.Bytes())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	writeRaw(w, code, b)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeRaw(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
