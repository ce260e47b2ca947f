package backend

import (
	"embed"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
)

//go:embed ui/*.html
var uiFiles embed.FS

// ui holds the parsed pages. html/template escapes every value by context;
// alerts carry attacker-controlled strings (argv, paths, pod names), so
// nothing here may be marked template.HTML.
type ui struct {
	alerts, alert, login *template.Template
	signedIn             *template.Template
	findings, inventory  *template.Template
	response, exports    *template.Template
	audit                *template.Template
	// The investigation pages (investigate.go, incidents_api.go).
	incidents, incident, agents, overview, events *template.Template
	// Responding from the console (respond_ui.go).
	respondConfirm, command *template.Template
	exceptions              *template.Template
	users                   *template.Template
	// rules are the built-in rules, loaded on first use, to show the rule
	// behind an alert.
	rules func() (*analytics.RuleSet, error)
}

func newUI() *ui {
	funcs := template.FuncMap{
		"sev":        api.Severity.Name,
		"ts":         fmtTime,
		"tsTime":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"args":       func(a []string) string { return strings.Join(a, " ") },
		"shortID":    shortID,
		"pathEscape": url.PathEscape,
		"kind":       api.EventKind.Name,
		"eventJSON":  eventJSON,
		"clip":       clip,
	}
	for name, f := range consoleFuncs() {
		funcs[name] = f
	}
	parse := func(pages ...string) *template.Template {
		files := []string{"ui/layout.html", "ui/triage.html"}
		for _, p := range pages {
			files = append(files, "ui/"+p)
		}
		// Parse errors are programming errors caught by every UI test.
		return template.Must(template.New("layout.html").Funcs(funcs).ParseFS(uiFiles, files...))
	}
	return &ui{alerts: parse("alerts.html"), alert: parse("alert.html", "alert_explain.html", "respond.html", "exception_form.html"), login: parse("login.html"), signedIn: parse("signed_in.html"),
		findings: parse("findings.html"), inventory: parse("inventory.html"), response: parse("response.html"),
		exports: parse("exports.html"), audit: parse("audit.html"), incidents: parse("incidents.html"), incident: parse("incident.html", "alert_explain.html", "respond.html"),
		respondConfirm: parse("respond_confirm.html"), command: parse("command.html"), exceptions: parse("exceptions.html"), users: parse("users.html"),
		agents: parse("agents.html"), overview: parse("overview.html"), events: parse("events.html"),
		rules: sync.OnceValues(func() (*analytics.RuleSet, error) { return analytics.LoadRules() })}
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "—"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
}

// clip cuts s to at most n bytes (on a rune boundary), marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func eventJSON(e *api.Event) string {
	b, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true, Indent: "  "}.Marshal(e)
	if err != nil {
		return "(cannot show event: " + err.Error() + ")"
	}
	return string(b)
}

type alertsPage struct {
	Title      string
	Alerts     []*api.Alert
	Error      string
	Severities []string
	Severity   string
	Detection  string
	Node       string
	Namespace  string
	Limit      int
	Now        string
}

type alertPage struct {
	Title string
	Alert *api.Alert
	// Triage is the alert's triage and its form (triage.html).
	Triage *triageView
	// X explains the alert (explain.go).
	X *Explanation
	// Respond is the response actions and the alert's commands.
	Respond *respondView
	// Exception is the "don't alert on this again" form.
	Exception *exceptionForm
}

type loginPage struct {
	Title string
	Error string
	// OIDC is the identity provider's button; nil: not configured.
	OIDC *oidcButton
}

func (s *apiServer) uiAlerts(w http.ResponseWriter, r *http.Request) {
	p := alertsPage{
		Title:      "Alerts",
		Severities: api.SeverityNames(),
		Now:        s.cfg.Now().UTC().Format("2006-01-02 15:04:05Z"),
	}
	q, err := alertQueryFrom(r, s.cfg.Now())
	p.Severity, p.Detection, p.Node, p.Namespace = r.URL.Query().Get("severity"), q.Detection, q.Node, q.Namespace
	p.Limit = effectiveLimit(q.Limit)
	code := http.StatusOK
	if err != nil {
		p.Error, code = err.Error(), http.StatusBadRequest
	} else if p.Alerts, err = s.store.Alerts(r.Context(), q); err != nil {
		s.log.Error("ui: list alerts", "err", err)
		p.Error, code = "The alerts could not be read; see the backend's log.", http.StatusInternalServerError
	}
	s.render(w, code, s.ui.alerts, p)
}

func (s *apiServer) uiAlert(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.Alert(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNotFound):
		s.render(w, http.StatusNotFound, s.ui.alerts, alertsPage{Title: "Not found", Error: "No alert with that ID."})
		return
	case err != nil:
		s.log.Error("ui: get alert", "err", err)
		s.render(w, http.StatusInternalServerError, s.ui.alerts, alertsPage{Title: "Error", Error: "The alert could not be read; see the backend's log."})
		return
	}
	x := &explainer{store: s.store, control: s.cfg.Control, rules: s.ui.rules}
	s.render(w, http.StatusOK, s.ui.alert, alertPage{Title: a.GetName(), Alert: a, Triage: s.triageFor(r, a.GetId()), X: x.explain(r.Context(), a),
		Respond: s.respondFor(r, a), Exception: s.exceptionFormFor(r, a)})
}

func (s *apiServer) renderLogin(w http.ResponseWriter, code int, msg string) {
	s.render(w, code, s.ui.login, loginPage{Title: "Sign in", Error: msg, OIDC: s.oidcButton()})
}

func (s *apiServer) render(w http.ResponseWriter, code int, t *template.Template, data any) {
	var buf strings.Builder
	if err := t.Execute(&buf, data); err != nil {
		s.log.Error("ui: render", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// No scripts at all; inline CSS only. A hostile string that somehow
	// escaped the template still could not run.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer browsers send "Origin:
	// null" on form posts, which the CSRF check (session.go) refuses.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(buf.String()))
}
