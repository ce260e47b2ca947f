package backend

import (
	"crypto/rand"
	"crypto/rsa"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/oidctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// oidcRig is a console that signs users in with a real OpenID Provider
// (zitadel/oidc's op, internal/oidctest), both on loopback.
type oidcRig struct {
	ts    *testServer
	op    *oidctest.Provider
	login *OIDCLogin
}

var oidcUsers = []oidctest.User{
	{ID: "u-ana", Username: "ana", Password: "ana-password", Email: "ana@example.test", Groups: []string{"staff", "soc-analysts"}},
	{ID: "u-vic", Username: "vic", Password: "vic-password", Email: "vic@example.test", Groups: []string{"soc-viewers"}},
	{ID: "u-mal", Username: "mal", Password: "mal-password", Email: "mal@example.test", Groups: []string{"marketing"}},
}

// newOIDCRig serves the console with OIDC sign-in; ln, when set, is where
// the provider will listen (the test starts it later), else it starts now.
func newOIDCRig(t *testing.T, opAddr string) *oidcRig {
	t.Helper()
	m := NewMetrics()
	st := openTestStore(t, BadgerConfig{Metrics: m, Now: func() time.Time { return t0.Add(4 * time.Hour) }})
	seedAlerts(t, st)
	srv := httptest.NewUnstartedServer(nil)
	client := oidctest.Client{ID: "harrier-console", Secret: "console-secret", RedirectURL: "http://" + srv.Listener.Addr().String() + oidcCallbackPath}
	rig := &oidcRig{}
	issuer := "http://" + opAddr
	if opAddr == "" {
		rig.op = oidctest.Start(t, client, oidcUsers...)
		issuer = rig.op.Issuer
	}
	secretFile := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(secretFile, []byte(client.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	login, err := newOIDCLogin(OIDCConfig{ProviderName: "Test IdP", Issuer: issuer, ClientID: client.ID, ClientSecretFile: secretFile,
		RedirectURL: client.RedirectURL, Roles: map[string]Role{"soc-analysts": RoleAnalyst, "soc-viewers": RoleViewer, "soc-admins": RoleAdmin}},
		slog.New(slog.DiscardHandler), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	rig.login = login
	srv.Config.Handler = NewAPI(st, APIConfig{Token: testToken, Metrics: m, OIDC: login, Now: func() time.Time { return t0.Add(4 * time.Hour) }}, slog.New(slog.DiscardHandler))
	srv.Start()
	t.Cleanup(srv.Close)
	rig.ts = &testServer{Server: srv, store: st, metrics: m}
	return rig
}

// beginSignIn follows the console's "Sign in with" link to the provider's
// login form, with a fresh browser (cookie jar).
func (rig *oidcRig) beginSignIn(t *testing.T) (*http.Client, *http.Response) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(rig.ts.URL + "/oidc/login")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Request.URL.String(), rig.op.Issuer+"/login/") {
		t.Fatalf("/oidc/login led to %s (%d), not the provider's login form", resp.Request.URL, resp.StatusCode)
	}
	return c, resp
}

// signIn signs user in at the provider and returns the browser and the
// console's answer to the callback.
func (rig *oidcRig) signIn(t *testing.T, user, password string) (*http.Client, response) {
	t.Helper()
	c, page := rig.beginSignIn(t)
	resp, err := rig.op.SignIn(t.Context(), c, page, user, password)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(resp.Request.URL.String(), rig.ts.URL+oidcCallbackPath) {
		t.Fatalf("the provider sent %s to %s (%d), not the console's callback:\n%.1000s", user, resp.Request.URL, resp.StatusCode, b)
	}
	return c, response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestOIDCSignIn: the authorization-code flow with a real provider opens
// a console session whose role comes from the user's groups; an analyst
// changes triage (audited as oidc:<email>), a viewer may not, a user in no
// mapped group is refused, and local sign-in still works beside it.
func TestOIDCSignIn(t *testing.T) {
	rig := newOIDCRig(t, "")
	ts := rig.ts
	if page := ts.do(t, nil, "GET", "/login", "", nil); !strings.Contains(page.body, `href="/oidc/login">Sign in with Test IdP</a>`) || !strings.Contains(page.body, `name="password"`) {
		t.Fatalf("login page lacks the OIDC button or the local form:\n%s", page.body)
	}

	ana, done := rig.signIn(t, "ana", "ana-password")
	if done.code != 200 || !strings.Contains(done.body, "oidc:ana@example.test") || !strings.Contains(done.body, `http-equiv="refresh"`) {
		t.Fatalf("callback: %d\n%.2000s", done.code, done.body)
	}
	page := ts.do(t, ana, "GET", "/alerts/crit-shop", "", nil)
	m := csrfRE.FindStringSubmatch(page.body)
	if page.code != 200 || m == nil {
		t.Fatalf("alert page as ana: %d, no triage form:\n%.2000s", page.code, page.body)
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if !strings.Contains(page.body, `<option value="oidc:ana@example.test">`) {
		t.Errorf("the assignee list lacks the signed-in OIDC user")
	}
	if r := ts.do(t, ana, "POST", "/alerts/crit-shop/triage", "state=in_progress&comment=looking&assignee=oidc%3Aana%40example.test&csrf="+m[1], form); r.code != http.StatusSeeOther {
		t.Fatalf("analyst's triage change: %d %.500s", r.code, r.body)
	}
	if page := ts.do(t, ana, "GET", "/alerts/crit-shop", "", nil); !strings.Contains(page.body, `<dd id="triage-assignee">oidc:ana@example.test</dd>`) {
		t.Errorf("the OIDC user's self-assignment is not shown:\n%.3000s", page.body)
	}
	if r := ts.do(t, ana, "POST", "/api/v1/alerts/crit-shop/triage", `{"assignee":"oidc:nobody@example.test"}`, map[string]string{"X-CSRF-Token": m[1]}); r.code != http.StatusBadRequest || !strings.Contains(r.body, "no such user") {
		t.Errorf("assigned to an OIDC name that is not the signer's: %d %s", r.code, r.body)
	}
	if r := ts.do(t, ana, "POST", "/alerts/crit-shop/triage", "state=resolved", form); r.code != http.StatusForbidden {
		t.Errorf("OIDC session's change without CSRF token: %d, want 403", r.code)
	}
	if r := ts.do(t, ana, "GET", "/api/v1/users", "", nil); r.code != http.StatusForbidden || !strings.Contains(r.body, "oidc:ana@example.test (analyst)") {
		t.Errorf("analyst reading users: %d %s, want 403 naming the user and role", r.code, r.body)
	}

	vic, done := rig.signIn(t, "vic", "vic-password")
	if done.code != 200 {
		t.Fatalf("viewer's callback: %d %.1000s", done.code, done.body)
	}
	page = ts.do(t, vic, "GET", "/", "", nil)
	if page.code != 200 {
		t.Fatalf("viewer's alert list: %d", page.code)
	}
	vpage := ts.do(t, vic, "GET", "/alerts/crit-shop", "", nil)
	csrf := ""
	if m := csrfRE.FindStringSubmatch(vpage.body); m != nil {
		csrf = m[1]
	}
	if r := ts.do(t, vic, "POST", "/api/v1/alerts/crit-shop/triage", `{"state":"resolved"}`, map[string]string{"X-CSRF-Token": csrf}); r.code != http.StatusForbidden || !strings.Contains(r.body, "needs the role analyst") {
		t.Errorf("viewer's triage change: %d %s, want 403", r.code, r.body)
	}

	_, done = rig.signIn(t, "mal", "mal-password")
	if done.code != http.StatusForbidden || !strings.Contains(done.body, "mal@example.test") || !strings.Contains(done.body, "none of the groups") || !strings.Contains(done.body, "&#34;marketing&#34;") {
		t.Errorf("user in no mapped group: %d, want 403 saying so:\n%.2000s", done.code, done.body)
	}

	// Local users sign in as before.
	addTestUser(t, ts.store, "lee", RoleAdmin, "correct horse battery")
	admin := signIn(t, ts, "lee", "correct horse battery")
	audit := ts.do(t, admin, "GET", "/api/v1/audit", "", nil)
	for _, want := range []string{`"user":"oidc:ana@example.test","role":"analyst","via":"session"`, `"action":"triage.update"`, `"action":"login"`, `"user":"oidc:vic@example.test","role":"viewer"`} {
		if !strings.Contains(audit.body, want) {
			t.Errorf("audit log lacks %s:\n%.3000s", want, audit.body)
		}
	}
	if strings.Contains(audit.body, "mal@example.test") {
		t.Errorf("the refused user has an audit entry of a sign-in:\n%.3000s", audit.body)
	}
	metrics := ts.do(t, nil, "GET", "/metrics", "", map[string]string{"Authorization": "Bearer " + testToken})
	if !strings.Contains(metrics.body, `harrier_backend_login_refused_total{reason="oidc_no_role"} 1`) {
		t.Errorf("metrics lack the refusal:\n%s", grepLines(metrics.body, "login_refused"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestOIDCRefusesBadTokens: an ID token signed by another key, for another
// audience, with another nonce or expired is refused, as is a callback
// whose state is not the browser's, a replayed callback and one from a
// browser that began no sign-in. None opens a session.
func TestOIDCRefusesBadTokens(t *testing.T) {
	rig := newOIDCRig(t, "")
	ts := rig.ts
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		tamper oidctest.Tamper
		want   string
	}{
		{"signed by another key", oidctest.Tamper{Key: otherKey}, "failed to verify signature"},
		{"another audience", oidctest.Tamper{Claims: func(c map[string]any) { c["aud"] = []string{"another-client"} }}, "expected audience"},
		{"another nonce", oidctest.Tamper{Claims: func(c map[string]any) { c["nonce"] = "0123456789abcdef" }}, "nonce does not match"},
		{"another issuer", oidctest.Tamper{Claims: func(c map[string]any) { c["iss"] = "http://127.0.0.1:1" }}, "id token issued by a different provider"},
		{"expired", oidctest.Tamper{Claims: func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }}, "token is expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig.op.SetTamper(&tc.tamper)
			defer rig.op.SetTamper(nil)
			c, done := rig.signIn(t, "ana", "ana-password")
			if done.code != http.StatusUnauthorized || !strings.Contains(done.body, tc.want) {
				t.Errorf("callback: %d, want 401 with %q:\n%.2000s", done.code, tc.want, done.body)
			}
			if r := ts.do(t, c, "GET", "/", "", nil); r.code != http.StatusUnauthorized {
				t.Errorf("after a refused sign-in the console answers %d, want 401", r.code)
			}
		})
	}

	// The callback as the provider sends it, not followed.
	c, page := rig.beginSignIn(t)
	stop := *c
	stop.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), ts.URL) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := rig.op.SignIn(t.Context(), &stop, page, "ana", "ana-password")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(callback.String(), ts.URL+oidcCallbackPath) || callback.Query().Get("state") == "" {
		t.Fatalf("the provider's redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	path := callback.RequestURI()
	q := callback.Query()
	q.Set("state", strings.Repeat("a", 32))
	wrongState := callback.Path + "?" + q.Encode()
	if r := ts.do(t, c, "GET", wrongState, "", nil); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "state does not match") {
		t.Errorf("callback with another state: %d, want 401:\n%.1000s", r.code, r.body)
	}
	// The sign-in is spent: the right state now finds nothing either.
	if r := ts.do(t, c, "GET", path, "", nil); r.code != http.StatusBadRequest || !strings.Contains(r.body, "another browser") {
		t.Errorf("callback replayed: %d, want 400:\n%.1000s", r.code, r.body)
	}
	if r := ts.do(t, nil, "GET", path, "", nil); r.code != http.StatusBadRequest {
		t.Errorf("callback from a browser that began no sign-in: %d, want 400", r.code)
	}
	if r := ts.do(t, c, "GET", "/", "", nil); r.code != http.StatusUnauthorized {
		t.Errorf("after refused callbacks the console answers %d, want 401", r.code)
	}
}

// TestOIDCProviderLate: with the provider unreachable the backend serves,
// the login page shows the error beside the button and local users sign
// in; once the provider answers, OIDC sign-in works without a restart.
func TestOIDCProviderLate(t *testing.T) {
	ports := testenv.FreePorts(t, 1)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	rig := newOIDCRig(t, addr)
	ts := rig.ts
	testenv.WaitFor(t, 10*time.Second, "the first discovery fails", func() bool { return rig.login.Status() != nil })
	page := ts.do(t, nil, "GET", "/login", "", nil)
	if !strings.Contains(page.body, "Sign in with Test IdP") || !strings.Contains(page.body, `id="oidc-error"`) || !strings.Contains(page.body, "unreachable") {
		t.Errorf("login page with the provider down:\n%s", page.body)
	}
	if r := ts.do(t, nil, "GET", "/oidc/login", "", nil); r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "not available now") {
		t.Errorf("/oidc/login with the provider down: %d, want 503:\n%.1000s", r.code, r.body)
	}
	addTestUser(t, ts.store, "lee", RoleViewer, "correct horse battery")
	signIn(t, ts, "lee", "correct horse battery")

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rig.op = oidctest.StartOn(t, ln, oidctest.Client{ID: "harrier-console", Secret: "console-secret", RedirectURL: ts.URL + oidcCallbackPath}, oidcUsers...)
	time.Sleep(150 * time.Millisecond) // past the retry interval
	if _, done := rig.signIn(t, "vic", "vic-password"); done.code != 200 {
		t.Errorf("sign-in once the provider answers: %d\n%.1000s", done.code, done.body)
	}
	if rig.login.Status() != nil {
		t.Errorf("status after discovery: %v", rig.login.Status())
	}
}

// TestOIDCConfig: bad settings are errors that name the field; a missing
// secret file fails the start.
func TestOIDCConfig(t *testing.T) {
	good := OIDCConfig{Issuer: "https://idp.example.test/realms/x", ClientID: "harrier", ClientSecretFile: "/nonexistent/secret",
		RedirectURL: "https://harrier.example.test/oidc/callback", Roles: map[string]Role{"soc": RoleAnalyst}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		name   string
		change func(c *OIDCConfig)
		want   string
	}{
		{"no issuer", func(c *OIDCConfig) { c.Issuer = "" }, "oidc.issuer: required"},
		{"plain http issuer", func(c *OIDCConfig) { c.Issuer = "http://idp.example.test" }, "oidc.issuer \"http://idp.example.test\": want https"},
		{"relative issuer", func(c *OIDCConfig) { c.Issuer = "idp" }, "oidc.issuer \"idp\": want an absolute"},
		{"no client ID", func(c *OIDCConfig) { c.ClientID = "" }, "oidc.clientID: required"},
		{"no secret file", func(c *OIDCConfig) { c.ClientSecretFile = "" }, "oidc.clientSecretFile: required"},
		{"redirect elsewhere", func(c *OIDCConfig) { c.RedirectURL = "https://harrier.example.test/cb" }, "oidc.redirectURL \"https://harrier.example.test/cb\": the path must be /oidc/callback"},
		{"no roles", func(c *OIDCConfig) { c.Roles = nil }, "oidc.roles: required"},
		{"unknown role", func(c *OIDCConfig) { c.Roles = map[string]Role{"soc": "root"} }, `oidc.roles["soc"]: role "root"`},
		{"scope with a space", func(c *OIDCConfig) { c.Scopes = []string{"openid email"} }, "oidc.scopes"},
	}
	for _, tc := range tests {
		c := good
		c.Roles = map[string]Role{"soc": RoleAnalyst}
		tc.change(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		cfg := Config{OIDC: &c}
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: the backend's config validates", tc.name)
		}
	}
	if _, err := NewOIDCLogin(good, nil); err == nil || !strings.Contains(err.Error(), "oidc.clientSecretFile") {
		t.Errorf("missing secret file: %v", err)
	}
	// The strict loader refuses unknown fields in the section.
	path := filepath.Join(t.TempDir(), "backend.yaml")
	if err := os.WriteFile(path, []byte("backend:\n  oidc:\n    issuer: https://idp.example.test\n    clientSecret: plain\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "clientSecret") {
		t.Errorf("unknown field clientSecret: %v", err)
	}
}
