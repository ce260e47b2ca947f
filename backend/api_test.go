package backend

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

const testToken = "0123456789abcdef0123456789abcdef"

type testServer struct {
	*httptest.Server
	store   *BadgerStore
	metrics *Metrics
}

// newTestServer serves the API on 127.0.0.1 on a port httptest picks.
func newTestServer(t *testing.T) *testServer {
	t.Helper()
	m := NewMetrics()
	s := openTestStore(t, BadgerConfig{Metrics: m, Now: func() time.Time { return t0.Add(4 * time.Hour) }})
	seedAlerts(t, s)
	mustIngest(t, s, "agent-a", &api.Batch{
		Health: &api.AgentHealth{Version: "0.1.0", Node: "node-1"},
		Gaps:   []*api.Gap{{Class: api.RecordClass_RECORD_CLASS_EVENT, FirstSeq: 100, LastSeq: 101, Count: 2}},
		Records: []*api.Record{
			eventRec(10, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0)),
			eventRec(11, mkEvent("node-2", api.EventKind_EVENT_KIND_CONNECT, t0.Add(time.Hour))),
		},
	})
	h := NewAPI(s, APIConfig{Token: testToken, Metrics: m, Now: func() time.Time { return t0.Add(4 * time.Hour) }}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testServer{Server: srv, store: s, metrics: m}
}

type response struct {
	code   int
	header http.Header
	body   string
}

func (ts *testServer) get(t *testing.T, path string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (ts *testServer) authGet(t *testing.T, path string) response {
	t.Helper()
	return ts.get(t, path, map[string]string{"Authorization": "Bearer " + testToken})
}

func TestAPIAuth(t *testing.T) {
	ts := newTestServer(t)
	bearer := map[string]string{"Authorization": "Bearer " + testToken}
	tests := []struct {
		name     string
		path     string
		hdr      map[string]string
		wantCode int
		wantBody string
	}{
		{"livez open", "/livez", nil, 200, `"ok"`},
		{"readyz open", "/readyz", nil, 200, `"ready"`},
		{"api without token", "/api/v1/alerts", nil, 401, `{"error":"missing or invalid bearer token"}`},
		{"api wrong token", "/api/v1/alerts", map[string]string{"Authorization": "Bearer nope"}, 401, `"error"`},
		{"api token with wrong scheme", "/api/v1/alerts", map[string]string{"Authorization": "Basic " + testToken}, 401, `"error"`},
		{"api good token", "/api/v1/alerts", bearer, 200, `{"alerts":[`},
		{"api forged cookie", "/api/v1/alerts", map[string]string{"Cookie": cookieName + "=" + testToken}, 401, `"error"`},
		{"metrics without token", "/metrics", nil, 401, `"error"`},
		{"metrics with token", "/metrics", bearer, 200, "harrier_backend_batches_total"},
		{"ui without token shows login", "/", nil, 401, `action="/login"`},
		{"ui detail without token shows login", "/alerts/crit-shop", nil, 401, `action="/login"`},
		{"login page", "/login?token=" + testToken, nil, 200, `name="password"`},
		{"unknown path", "/nope", bearer, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.get(t, tc.path, tc.hdr)
			if r.code != tc.wantCode || !strings.Contains(r.body, tc.wantBody) {
				t.Errorf("%s: %d %q, want %d containing %q", tc.path, r.code, r.body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

// TestLoginCookie: both ways to sign in (a user's password, and the
// break-glass API token) give an HttpOnly, SameSite=Strict session cookie
// that is neither credential and works for the UI and the API.
func TestLoginCookie(t *testing.T) {
	ts := newTestServer(t)
	addTestUser(t, ts.store, "ana", RoleAnalyst, "correct horse battery")
	tests := []struct {
		name, user, password string
	}{
		{"user and password", "ana", "correct horse battery"},
		{"break glass with the API token", "api-token", testToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			jar, _ := cookiejar.New(nil)
			c := &http.Client{Jar: jar}
			resp, err := c.PostForm(ts.URL+"/login", url.Values{"username": {tc.user}, "password": {tc.password}}) // follows the redirect to /
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), "<h1>Alerts</h1>") {
				t.Fatalf("after login: %d %.200s", resp.StatusCode, body)
			}
			var set *http.Cookie
			for _, ck := range resp.Request.Response.Cookies() {
				if ck.Name == cookieName {
					set = ck
				}
			}
			if set == nil || !set.HttpOnly || set.SameSite != http.SameSiteStrictMode || set.Value == testToken || strings.Contains(set.Value, tc.password) {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict and not the credential", set)
			}
			resp, err = c.Get(ts.URL + "/api/v1/agents")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("API with cookie: %d", resp.StatusCode)
			}
			// Signing out ends the session at the server: the old cookie
			// no longer works even when a client keeps it.
			resp, err = c.Get(ts.URL + "/logout")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/agents", nil)
			req.AddCookie(set)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("API with the cookie after logout: %d, want 401", resp.StatusCode)
			}
		})
	}
}

func TestAPIAlertFilters(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"crit-shop", "host-medium", "low-other", "high-shop"}},
		{"?severity=high", []string{"crit-shop", "high-shop"}},
		{"?severity=SEVERITY_CRITICAL", []string{"crit-shop"}},
		{"?severity=Critical", []string{"crit-shop"}},
		{"?detection=HAR-EXEC-002", []string{"crit-shop"}},
		{"?cluster=lab", []string{"low-other"}},
		{"?node=node-1&namespace=shop", []string{"crit-shop", "high-shop"}},
		{"?since=3h", []string{"crit-shop", "host-medium", "low-other"}}, // now is t0+4h; low-other is at exactly t0+1h
		{"?since=" + url.QueryEscape(t0.Add(90*time.Minute).Format(time.RFC3339)), []string{"crit-shop", "host-medium"}},
		{"?limit=2", []string{"crit-shop", "host-medium"}},
		{"?severity=&node=", []string{"crit-shop", "host-medium", "low-other", "high-shop"}}, // empty form fields
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			r := ts.authGet(t, "/api/v1/alerts"+tc.query)
			if r.code != 200 {
				t.Fatalf("%d %s", r.code, r.body)
			}
			var body struct {
				Alerts []struct {
					ID string `json:"id"`
				} `json:"alerts"`
			}
			if err := json.Unmarshal([]byte(r.body), &body); err != nil {
				t.Fatalf("%v: %s", err, r.body)
			}
			var ids []string
			for _, a := range body.Alerts {
				ids = append(ids, a.ID)
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("got %v, want %v", ids, tc.want)
			}
		})
	}
}

func TestAPIBadParams(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct{ path, param string }{
		{"/api/v1/alerts?severity=urgent", "severity"},
		{"/api/v1/alerts?since=yesterday", "since"},
		{"/api/v1/alerts?since=-1h", "since"},
		{"/api/v1/alerts?limit=0", "limit"},
		{"/api/v1/alerts?limit=abc", "limit"},
		{"/api/v1/alerts?limit=100000", "limit"},
		{"/api/v1/alerts?sevrity=high", "sevrity"},
		{"/api/v1/alerts?node=a&node=b", "node"},
		{"/api/v1/events?kind=teleport", "kind"},
		{"/api/v1/events?limit=-3", "limit"},
		{"/api/v1/agents?x=1", "x"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := ts.authGet(t, tc.path)
			var body struct{ Error string }
			if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.code != 400 {
				t.Fatalf("%d %q, want 400 JSON", r.code, r.body)
			}
			if !strings.Contains(body.Error, `"`+tc.param+`"`) {
				t.Errorf("error %q does not name %q", body.Error, tc.param)
			}
		})
	}
}

func TestAPIAlertByID(t *testing.T) {
	ts := newTestServer(t)
	r := ts.authGet(t, "/api/v1/alerts/unknown-id")
	if r.code != 404 || !strings.Contains(r.body, `"error"`) {
		t.Errorf("unknown id: %d %s", r.code, r.body)
	}
	r = ts.authGet(t, "/api/v1/alerts/crit-shop")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v", r.code, r.header)
	}
	var body struct {
		Alert map[string]any `json:"alert"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatal(err)
	}
	// protojson with proto names: snake_case fields, enum names, RFC 3339 times.
	for k, want := range map[string]any{"id": "crit-shop", "detection_id": "HAR-EXEC-002", "severity": "SEVERITY_CRITICAL",
		"last_seen": "2026-11-22T19:00:00Z", "count": "1"} {
		if body.Alert[k] != want {
			t.Errorf("alert[%q] = %v, want %v", k, body.Alert[k], want)
		}
	}
	if c, _ := body.Alert["container"].(map[string]any); c["pod_namespace"] != "shop" {
		t.Errorf("container = %v", body.Alert["container"])
	}
}

func TestAPIAgentsAndEvents(t *testing.T) {
	ts := newTestServer(t)
	r := ts.authGet(t, "/api/v1/agents")
	var agents struct {
		Agents []struct {
			AgentID  string            `json:"agent_id"`
			LastSeen time.Time         `json:"last_seen"`
			Records  uint64            `json:"records"`
			Gaps     map[string]uint64 `json:"gaps"`
			Health   map[string]any    `json:"health"`
		} `json:"agents"`
	}
	if err := json.Unmarshal([]byte(r.body), &agents); err != nil || r.code != 200 {
		t.Fatalf("%d %s %v", r.code, r.body, err)
	}
	if len(agents.Agents) != 1 {
		t.Fatalf("agents: %s", r.body)
	}
	a := agents.Agents[0]
	if a.AgentID != "agent-a" || a.Records != 6 || a.Gaps["event"] != 2 || a.Health["version"] != "0.1.0" || !a.LastSeen.Equal(t0.Add(4*time.Hour)) {
		t.Errorf("agent: %+v", a)
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"node-2", "node-1"}},
		{"?kind=exec", []string{"node-1"}},
		{"?kind=EVENT_KIND_CONNECT", []string{"node-2"}},
		{"?kind=Connect", []string{"node-2"}},
		{"?node=node-1", []string{"node-1"}},
		{"?since=3h30m", []string{"node-2"}},
		{"?since=2h", []string{}},
		{"?limit=1", []string{"node-2"}},
	}
	for _, tc := range tests {
		t.Run("events"+tc.query, func(t *testing.T) {
			r := ts.authGet(t, "/api/v1/events"+tc.query)
			var body struct {
				Events []struct {
					Node string `json:"node"`
				} `json:"events"`
			}
			if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.code != 200 || body.Events == nil {
				t.Fatalf("%d %s %v", r.code, r.body, err)
			}
			got := []string{}
			for _, e := range body.Events {
				got = append(got, e.Node)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	ts := newTestServer(t)
	ts.authGet(t, "/api/v1/alerts")
	ts.authGet(t, "/api/v1/alerts/nope")
	ts.get(t, "/api/v1/alerts", nil)
	r := ts.authGet(t, "/metrics")
	if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("%d %v", r.code, r.header)
	}
	wantMetricLines(t, r.body,
		"harrier_backend_batches_total 2",
		`harrier_backend_records_total{class="alert"} 4`,
		`harrier_backend_records_total{class="event"} 2`,
		"harrier_backend_duplicate_records_total 0",
		"harrier_backend_alerts_stored_total 4",
		`harrier_backend_gap_records_total{class="event"} 2`,
		`harrier_backend_api_requests_total{code="200",path="/api/v1/alerts"} 1`,
		`harrier_backend_api_requests_total{code="401",path="/api/v1/alerts"} 1`,
		`harrier_backend_api_requests_total{code="404",path="/api/v1/alerts/{id}"} 1`,
		`harrier_backend_ingest_duration_seconds_bucket{le="+Inf"} 2`,
		"harrier_backend_ingest_duration_seconds_count 2",
		"# TYPE harrier_backend_ingest_duration_seconds histogram",
	)
}

func TestUIRendersAlerts(t *testing.T) {
	ts := newTestServer(t)
	hostile := "<script>alert(1)</script>"
	mustIngest(t, ts.store, "agent-evil", &api.Batch{Records: []*api.Record{alertRec(1, mkAlert("evil", func(a *api.Alert) {
		a.Severity, a.LastSeen = api.Severity_SEVERITY_CRITICAL, timestamppb.New(t0.Add(5*time.Hour))
		a.Name = `Shell in "web" <b>`
		a.Process.Args = []string{"sh", "-c", hostile}
		a.Process.Exe = "/tmp/" + hostile
		a.Container.PodName = `"><img src=x onerror=alert(2)>`
		a.Description = hostile
		a.Ancestry = []*api.Ancestor{{Pid: 1, Exe: "/usr/bin/" + hostile, Args: []string{hostile}}}
		a.Evidence = []*api.Event{{Node: "node-1", Kind: api.EventKind_EVENT_KIND_EXEC, Process: &api.Process{Args: []string{hostile}}}}
		a.Mitre = []*api.Mitre{{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Unix Shell"}}
		a.Remediation = "Remove the workload."
	}))}})
	bearer := map[string]string{"Authorization": "Bearer " + testToken}

	tests := []struct {
		name     string
		path     string
		wantCode int
		want     []string
	}{
		{"list", "/", 200, []string{`class="sev sev-critical"`, `href="/alerts/evil"`, "sensitive-files", "node-1", "shop / web-1",
			"/usr/bin/cat", "cat /etc/shadow", "2026-11-22 16:00:00Z", "&lt;script&gt;alert(1)&lt;/script&gt;",
			"&#34;&gt;&lt;img src=x onerror=alert(2)&gt;"}},
		{"filtered", "/?severity=critical&namespace=shop", 200, []string{`href="/alerts/crit-shop"`, `<option value="critical" selected>`}},
		{"bad filter", "/?severity=urgent", 400, []string{`class="error"`, "severity"}},
		{"detail", "/alerts/evil", 200, []string{"T1059.004", "Unix Shell", "Remove the workload.", "Process tree",
			"&lt;script&gt;alert(1)&lt;/script&gt;", "Evidence (1 events)", `Shell in &#34;web&#34; &lt;b&gt;`}},
		{"detail unknown", "/alerts/nope", 404, []string{"No alert with that ID."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.get(t, tc.path, bearer)
			if r.code != tc.wantCode {
				t.Fatalf("%d, want %d: %.300s", r.code, tc.wantCode, r.body)
			}
			if !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(r.header.Get("Content-Security-Policy"), "default-src 'none'") {
				t.Errorf("headers %v", r.header)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, bad := range []string{"<script>", "<img", "<b>"} {
				if strings.Contains(r.body, bad) {
					t.Errorf("page contains unescaped %q", bad)
				}
			}
		})
	}
	if r := ts.get(t, "/?severity=critical", bearer); strings.Contains(r.body, "high-shop") {
		t.Error("severity filter not applied in UI")
	}
}

func TestEnsureToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tok, err := EnsureToken(dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 64 || strings.Trim(tok, "0123456789abcdef") != "" {
		t.Errorf("token %q: want 64 hex characters", tok)
	}
	path := filepath.Join(dir, "api-token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := EnsureToken(dir, "", nil)
	if err != nil || again != tok {
		t.Errorf("second call: %q %v, want the same token", again, err)
	}
	// World access is removed; group access (a Secret volume's 0440 for the
	// pod's fsGroup, the packages' group harrier) is how the file is shared.
	for _, m := range []struct{ set, want os.FileMode }{{0o644, 0o640}, {0o604, 0o600}, {0o440, 0o440}, {0o600, 0o600}} {
		if err := os.Chmod(path, m.set); err != nil {
			t.Fatal(err)
		}
		if _, err := EnsureToken(dir, "", nil); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != m.want {
			t.Errorf("mode %v after reuse: %v, want %v", m.set, fi.Mode().Perm(), m.want)
		}
	}
	if got, err := EnsureToken(dir, " configured-token-value ", nil); err != nil || got != "configured-token-value" {
		t.Errorf("configured: %q %v", got, err)
	}
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureToken(dir, "", nil); err == nil {
		t.Error("empty token file accepted")
	}
}

func TestEnsureTokenLogsPathNotToken(t *testing.T) {
	var logs strings.Builder
	dir := t.TempDir()
	tok, err := EnsureToken(dir, "", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), tok) || !strings.Contains(logs.String(), filepath.Join(dir, "api-token")) {
		t.Errorf("log: %s", logs.String())
	}
}

func TestReadyzFailsWhenStoreClosed(t *testing.T) {
	ts := newTestServer(t)
	if err := ts.store.Close(); err != nil {
		t.Fatal(err)
	}
	if r := ts.get(t, "/readyz", nil); r.code != 503 || !strings.Contains(r.body, `"error"`) {
		t.Errorf("readyz on closed store: %d %s", r.code, r.body)
	}
	if r := ts.get(t, "/livez", nil); r.code != 200 {
		t.Errorf("livez: %d", r.code)
	}
}
