package backend

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

var testAdmin = &principal{Name: "test-admin", Role: RoleAdmin, Via: viaAPIToken}

// addTestUser makes a user in st and returns an API token of theirs.
func addTestUser(t *testing.T, st *BadgerStore, name string, role Role, password string) string {
	t.Helper()
	c := NewConsole(st, nil, nil)
	if _, err := c.AddUser(context.Background(), testAdmin, name, role, password); err != nil {
		t.Fatal(err)
	}
	_, tok, err := c.NewUserToken(context.Background(), testAdmin, name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do sends method path with body and headers; no redirects followed.
func (ts *testServer) do(t *testing.T, c *http.Client, method, path, body string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if c == nil {
		c = &http.Client{}
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestRoles: each role may do what its routes allow and is refused the
// rest (403 naming the role needed); the API token is an admin but may not
// act on agents, the response token may use the response routes only.
func TestRoles(t *testing.T) {
	ts := newTestServer(t)
	tokens := map[string]string{"api-token": testToken}
	for _, r := range Roles {
		tokens[string(r)] = addTestUser(t, ts.store, "u-"+string(r), r, "")
	}
	triage := `{"state":"in_progress","comment":"looking"}`
	tests := []struct {
		who, method, path, body string
		want                    int
	}{
		{"viewer", "GET", "/api/v1/alerts", "", 200},
		{"viewer", "GET", "/api/v1/alerts/crit-shop/triage", "", 200},
		{"viewer", "POST", "/api/v1/alerts/crit-shop/triage", triage, 403},
		{"viewer", "GET", "/api/v1/users", "", 403},
		{"viewer", "GET", "/audit", "", 403},
		{"analyst", "POST", "/api/v1/alerts/crit-shop/triage", triage, 200},
		{"analyst", "POST", "/api/v1/alerts/nope/triage", triage, 404},
		{"analyst", "POST", "/api/v1/alerts/crit-shop/triage", `{"state":"closed"}`, 400},
		{"analyst", "POST", "/api/v1/alerts/crit-shop/triage", `{"state":"new","extra":1}`, 400},
		{"analyst", "POST", "/api/v1/tokens", `{}`, 403},
		{"responder", "GET", "/api/v1/audit", "", 403},
		{"responder", "POST", "/api/v1/agents/x/revoke", "", 403},
		{"admin", "GET", "/api/v1/users", "", 200},
		{"admin", "GET", "/api/v1/audit", "", 200},
		{"admin", "GET", "/audit", "", 200},
		{"api-token", "POST", "/api/v1/users", `{"name":"bob","role":"viewer"}`, 201},
		{"api-token", "POST", "/api/v1/users", `{"name":"bob","role":"viewer"}`, 409},
		{"api-token", "POST", "/api/v1/users", `{"name":"Bad Name","role":"viewer"}`, 400},
		{"api-token", "POST", "/api/v1/users", `{"name":"carl","role":"root"}`, 400},
		{"api-token", "POST", "/api/v1/users", `{"name":"carl","role":"viewer","password":"short"}`, 400},
		{"api-token", "DELETE", "/api/v1/users/bob", "", 200},
		{"api-token", "DELETE", "/api/v1/users/bob", "", 404},
	}
	for _, tc := range tests {
		r := ts.do(t, nil, tc.method, tc.path, tc.body, map[string]string{"Authorization": "Bearer " + tokens[tc.who]})
		if r.code != tc.want {
			t.Errorf("%s %s %s: %d %s, want %d", tc.who, tc.method, tc.path, r.code, r.body, tc.want)
		}
		if r.code == 403 && strings.HasPrefix(tc.path, "/api/") && !strings.Contains(r.body, "needs the role") {
			t.Errorf("%s %s %s: refusal %s does not say the role needed", tc.who, tc.method, tc.path, r.body)
		}
	}
	// The triage the analyst set, with the history naming them.
	r := ts.do(t, nil, "GET", "/api/v1/alerts/crit-shop/triage", "", map[string]string{"Authorization": "Bearer " + tokens["viewer"]})
	var got struct{ Triage Triage }
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Triage.State != TriageInProgress || len(got.Triage.Comments) != 1 || got.Triage.Comments[0].User != "u-analyst" ||
		len(got.Triage.History) != 2 || got.Triage.History[0].Field != "state" || got.Triage.History[0].From != "new" {
		t.Errorf("triage after the analyst's change: %+v", got.Triage)
	}
}

// TestPermittedResponseRoutes: who may use the response routes.
func TestPermittedResponseRoutes(t *testing.T) {
	tests := []struct {
		p    principal
		need Role
		want bool
	}{
		{principal{Role: RoleResponder, Via: viaResponseToken}, RoleAdmin, true},     // policies: its old meaning
		{principal{Role: RoleResponder, Via: viaResponseToken}, RoleResponder, true}, // commands
		{principal{Role: RoleAdmin, Via: viaAPIToken}, RoleResponder, false},         // the API token asks for no action
		{principal{Role: RoleAdmin, Via: viaAPIToken}, RoleViewer, true},             // but reads them
		{principal{Role: RoleResponder, Via: viaUserToken}, RoleResponder, true},     // a responder acts
		{principal{Role: RoleResponder, Via: viaSession}, RoleAdmin, false},          // but changes no policy
		{principal{Role: RoleAnalyst, Via: viaSession}, RoleResponder, false},        // an analyst does not act
		{principal{Role: RoleAdmin, Via: viaSession}, RoleAdmin, true},               // an admin changes policies
	}
	for _, tc := range tests {
		if got := permitted(&tc.p, tc.need, true); got != tc.want {
			t.Errorf("%s by %s needing %s: %v, want %v", tc.p.Role, tc.p.Via, tc.need, got, tc.want)
		}
	}
	if permitted(&principal{Role: RoleResponder, Via: viaResponseToken}, RoleViewer, false) {
		t.Error("the response token reads alerts")
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

// signIn posts the login form and returns the client with its session.
func signIn(t *testing.T, ts *testServer, user, password string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	r := ts.do(t, c, "POST", "/login", url.Values{"username": {user}, "password": {password}}.Encode(),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if r.code != http.StatusSeeOther {
		t.Fatalf("sign in as %s: %d %.300s", user, r.code, r.body)
	}
	return c
}

// TestSessionCSRF: a session's change needs its CSRF token (form field or
// header) and, when the browser names one, this server's origin; a bearer
// token needs none.
func TestSessionCSRF(t *testing.T) {
	ts := newTestServer(t)
	addTestUser(t, ts.store, "ana", RoleAnalyst, "correct horse battery")
	c := signIn(t, ts, "ana", "correct horse battery")
	page := ts.do(t, c, "GET", "/alerts/crit-shop", "", nil)
	m := csrfRE.FindStringSubmatch(page.body)
	if page.code != 200 || m == nil {
		t.Fatalf("alert page: %d, no CSRF field in the triage form:\n%.2000s", page.code, page.body)
	}
	csrf := m[1]
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options"} {
		if page.header.Get(h) == "" {
			t.Errorf("alert page lacks %s", h)
		}
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP %q: want frame-ancestors 'none' and no script source", csp)
	}
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name, path, body string
		hdr              map[string]string
		want             int
	}{
		{"form without token", "/alerts/crit-shop/triage", "state=resolved", map[string]string{"Content-Type": form}, 403},
		{"form with a wrong token", "/alerts/crit-shop/triage", "state=resolved&csrf=" + strings.Repeat("0", 64), map[string]string{"Content-Type": form}, 403},
		{"form from another origin", "/alerts/crit-shop/triage", "state=resolved&csrf=" + csrf, map[string]string{"Content-Type": form, "Origin": "http://evil.example"}, 403},
		{"form with the token", "/alerts/crit-shop/triage", "state=resolved&comment=done&csrf=" + csrf, map[string]string{"Content-Type": form}, 303},
		{"API without header", "/api/v1/alerts/crit-shop/triage", `{"comment":"x"}`, nil, 403},
		{"API with header", "/api/v1/alerts/crit-shop/triage", `{"comment":"x"}`, map[string]string{"X-CSRF-Token": csrf}, 200},
	}
	for _, tc := range tests {
		if r := ts.do(t, c, "POST", tc.path, tc.body, tc.hdr); r.code != tc.want {
			t.Errorf("%s: %d %.300s, want %d", tc.name, r.code, r.body, tc.want)
		}
	}
	page = ts.do(t, c, "GET", "/alerts/crit-shop", "", nil)
	if !strings.Contains(page.body, `<dd id="triage-state">resolved</dd>`) || !strings.Contains(page.body, "done") {
		t.Errorf("alert page after the form: no resolved state or comment:\n%.3000s", page.body)
	}
}

// TestLoginRateLimit: five wrong passwords lock the user name out for a
// while, even with the right one; twenty from one address lock that
// address out for every name; refusals are counted.
func TestLoginRateLimit(t *testing.T) {
	ts := newTestServer(t)
	addTestUser(t, ts.store, "ana", RoleAnalyst, "correct horse battery")
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	login := func(user, pw string) int {
		return ts.do(t, nil, "POST", "/login", url.Values{"username": {user}, "password": {pw}}.Encode(), form).code
	}
	for i := range maxFailuresPerUser {
		if code := login("ana", "wrong password "+string(rune('a'+i))); code != 401 {
			t.Fatalf("wrong password %d: %d", i, code)
		}
	}
	if code := login("ana", "correct horse battery"); code != http.StatusTooManyRequests {
		t.Errorf("right password after %d failures: %d, want 429", maxFailuresPerUser, code)
	}
	// The address has 5 failures: 15 more names fail, the last 5 are
	// refused before their password is even checked.
	for i := range maxFailuresPerAddr {
		login("spray-"+string(rune('a'+i)), "whatever password")
	}
	addTestUser(t, ts.store, "ben", RoleViewer, "another good password")
	if code := login("ben", "another good password"); code != http.StatusTooManyRequests {
		t.Errorf("another user from a sprayed address: %d, want 429", code)
	}
	m := ts.authGet(t, "/metrics").body
	for _, want := range []string{`harrier_backend_login_refused_total{reason="rate_limited"} 7`, `harrier_backend_login_refused_total{reason="bad_credentials"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestTriageExportAndAudit: a triage change is in the export journal
// (kind triage) whole, and in the audit log with its user; applying the
// same replicated change again changes nothing.
func TestTriageExportAndAudit(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, BadgerConfig{})
	seedAlerts(t, st)
	c := NewConsole(st, nil, nil)
	if _, err := c.AddUser(ctx, testAdmin, "ana", RoleAnalyst, ""); err != nil {
		t.Fatal(err)
	}
	ana := &principal{Name: "ana", Role: RoleAnalyst, Via: viaUserToken}
	assignee := "ana"
	if _, err := c.SetTriage(ctx, ana, "crit-shop", TriageRequest{State: TriageFalsePositive, Assignee: &assignee, Comment: "test pod <b>"}); err != nil {
		t.Fatal(err)
	}
	nobody := "nobody-here"
	if _, err := c.SetTriage(ctx, ana, "crit-shop", TriageRequest{Assignee: &nobody}); err == nil {
		t.Error("assigned to a user that does not exist")
	}
	recs, err := st.RecordsAfter(ctx, export.KindTriage, 0, 10)
	if err != nil || len(recs) != 1 || recs[0].Triage == nil {
		t.Fatalf("triage journal: %v %+v", err, recs)
	}
	tr := recs[0].Triage
	if tr.AlertID != "crit-shop" || tr.State != TriageFalsePositive || tr.Assignee != "ana" || len(tr.History) != 3 || tr.Comments[0].Text != "test pod <b>" {
		t.Errorf("exported triage: %+v", tr)
	}
	// The stream may deliver a change twice (a replica restarting between
	// applying and recording its position): it is one change.
	edit := TriageEdit{ID: tr.History[0].ID[:strings.IndexByte(tr.History[0].ID, '/')], AlertID: "crit-shop", State: TriageFalsePositive, Comment: "test pod <b>"}
	if err := c.apply(consoleChange{Triage: &edit}); err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Triage(ctx, "crit-shop"); len(again.Comments) != 1 || st.LastSeq(export.KindTriage) != 1 {
		t.Errorf("the same edit applied twice: %d comments, journal at %d", len(again.Comments), st.LastSeq(export.KindTriage))
	}
	log, err := c.AuditLog(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range log {
		actions = append(actions, e.Action+" by "+e.User)
	}
	if got := strings.Join(actions, ", "); got != "triage.update by ana, user.add by test-admin" {
		t.Errorf("audit log, newest first: %s", got)
	}
}

// TestConsoleAcrossReplicas: two replicated backends over real
// nats-servers share users, triage and the audit log: a change made at
// one is the other's.
func TestConsoleAcrossReplicas(t *testing.T) {
	nodes := natstest.Cluster(t)
	cfg := replicate.Config{Servers: natstest.URLs(nodes), Replicas: 3}
	signer := testCommandSigner(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	replica := func(name string) (*Console, *BadgerStore) {
		st := openTestStore(t, BadgerConfig{})
		log := slog.New(slog.DiscardHandler)
		c := NewResponseControl(st, signer, log)
		con := NewConsole(st, c, log)
		rc := cfg
		rc.ReplicaName = name
		id, err := NewIdentity(st, IdentityConfig{}, log)
		if err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, time.Minute, "replica "+name+" joins the cluster's stream", func() bool {
			set, err := startReplica(rc, st, c, id, log)
			if err != nil {
				return false
			}
			t.Cleanup(func() { _ = set.close() })
			wg.Go(func() { _ = set.records.Run(ctx) })
			wg.Go(func() { _ = set.events.Run(ctx) })
			return true
		})
		return con, st
	}
	a, stA := replica("a")
	b, _ := replica("b")
	seedAlerts(t, stA)
	testenv.WaitFor(t, time.Minute, "user added at replica a", func() bool {
		_, err := a.AddUser(ctx, testAdmin, "ana", RoleAnalyst, "correct horse battery")
		return err == nil
	})
	testenv.WaitFor(t, 10*time.Second, "replica b has a's user", func() bool {
		_, ok, err := b.checkPassword(ctx, "ana", "correct horse battery")
		return err == nil && ok
	})
	ana := &principal{Name: "ana", Role: RoleAnalyst, Via: viaSession}
	if _, err := a.SetTriage(ctx, ana, "crit-shop", TriageRequest{State: TriageInProgress, Comment: "on it"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "replica b has a's triage and its audit entry", func() bool {
		tr, err := b.Triage(ctx, "crit-shop")
		if err != nil || tr.State != TriageInProgress || len(tr.Comments) != 1 || tr.Comments[0].User != "ana" {
			return false
		}
		log, err := b.AuditLog(ctx, 10)
		return err == nil && len(log) == 2 && log[0].Action == "triage.update" && log[0].User == "ana"
	})
}

// FuzzApplyControlChange: a change from the cluster's stream, however
// malformed, is applied or refused with an error, never a panic, and a
// triage it applied reads back.
func FuzzApplyControlChange(f *testing.F) {
	for _, s := range []string{
		`{"console":{"triage":{"id":"e1","alert_id":"a1","user":"ana","state":"resolved","comment":"x"},"audit":{"id":"1-aa","action":"triage.update"}}}`,
		`{"console":{"user":{"name":"ana","role":"analyst","password_hash":"$2a$10$x"}}}`,
		`{"console":{"remove_user":"ana"}}`,
		`{"console":{}}`,
		`{"console":{"triage":{"alert_id":"","assignee":""}}}`,
		`{"policies":null,"console":{"audit":{"id":""}}}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	st, err := OpenBadgerStoreConfig(BadgerConfig{Dir: f.TempDir()}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	rc := NewResponseControl(st, nil, slog.New(slog.DiscardHandler))
	con := NewConsole(st, rc, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := rc.ApplyControl(context.Background(), 1, b); err != nil {
			return
		}
		var ch controlChange
		if json.Unmarshal(b, &ch) == nil && ch.Console != nil && ch.Console.Triage != nil {
			if _, err := con.Triage(context.Background(), ch.Console.Triage.AlertID); err != nil {
				t.Errorf("applied triage does not read back: %v", err)
			}
		}
	})
}

// TestSessionEndsWithUser: a session stops when its user is removed, and
// does not come back for a new user of the same name.
func TestSessionEndsWithUser(t *testing.T) {
	ts := newTestServer(t)
	addTestUser(t, ts.store, "ana", RoleAnalyst, "correct horse battery")
	c := signIn(t, ts, "ana", "correct horse battery")
	if r := ts.do(t, c, "GET", "/api/v1/me", "", nil); r.code != 200 || !strings.Contains(r.body, `"user":"ana"`) {
		t.Fatalf("me: %d %s", r.code, r.body)
	}
	con := NewConsole(ts.store, nil, nil)
	if err := con.RemoveUser(context.Background(), testAdmin, "ana"); err != nil {
		t.Fatal(err)
	}
	if r := ts.do(t, c, "GET", "/api/v1/me", "", nil); r.code != 401 {
		t.Errorf("removed user's session: %d", r.code)
	}
	addTestUser(t, ts.store, "ana", RoleAdmin, "another good password")
	if r := ts.do(t, c, "GET", "/api/v1/me", "", nil); r.code != 401 {
		t.Errorf("old session for a new user of the same name: %d %s", r.code, r.body)
	}
}
