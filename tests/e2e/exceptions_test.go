package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestExceptionFromAlert: a real agent raises an alert at a real backend;
// an exception is made at the backend from that alert; the agent is sent
// the new version over the control channel and acknowledges it; the next
// identical behaviour does not alert while a different one still does;
// deleting the exception brings the alert back.
func TestExceptionFromAlert(t *testing.T) {
	testenv.RequireRoot(t)
	e := writeEdgeNode(t, "edge-exc")
	// A short deduplication window: a repeat a second later is a new alert
	// unless an exception covers it.
	f, err := os.OpenFile(e.agentCfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("analytics:\n  dedupWindow: 1s\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	startRestartable(t, e.bin, "backend", "-c", e.backendCfg)
	agent := startRestartable(t, e.bin, "agent", "-c", e.agentCfg)
	waitReadyz(t, "http://"+e.agentMetrics+"/readyz")
	base := "http://" + e.api

	marker := func(tag string) {
		t.Helper()
		if out, err := exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT "+tag+" >/dev/null").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	tagged := func(tag string) func(*api.Alert) bool {
		return func(a *api.Alert) bool { return strings.Contains(a.GetSummary(), tag) }
	}
	marker("e2e-exc")
	first := waitAlert(t, base, "t", "test-alert", tagged("e2e-exc"))

	// The exception as the alert page prefills it: this detection, the
	// alert's process and command line, everywhere (a host process has no
	// namespace).
	req, _ := json.Marshal(map[string]string{"alert_id": first.GetId(), "detection": first.GetDetectionId(), "scope": "cluster",
		"process": first.GetProcess().GetExe(), "command": strings.Join(first.GetProcess().GetArgs(), " "), "expires_in": "1h", "reason": "e2e"})
	var made struct {
		Exception struct {
			ID      string `json:"id"`
			Version uint64 `json:"version"`
		} `json:"exception"`
		Error string `json:"error"`
	}
	if code := send(t, http.MethodPost, base+"/api/v1/exceptions", "t", string(req), &made); code != http.StatusCreated {
		t.Fatalf("POST exception: %d %s", code, made.Error)
	}
	asked := time.Now()
	applied := func() (uint64, string) {
		var out struct {
			Agents map[string]struct {
				Version uint64 `json:"exceptions_version"`
				Error   string `json:"exceptions_error"`
			} `json:"agents"`
		}
		getJSON(t, base+"/api/v1/exceptions", "t", &out)
		return out.Agents["edge-exc"].Version, out.Agents["edge-exc"].Error
	}
	testenv.WaitFor(t, 20*time.Second, "the agent acknowledges the exceptions version", func() bool {
		v, _ := applied()
		return v == made.Exception.Version
	})
	t.Logf("exception %s (version %d) applied by the agent %s after it was made", made.Exception.ID, made.Exception.Version, time.Since(asked).Round(time.Millisecond))
	if _, msg := applied(); msg != "" {
		t.Errorf("agent's exceptions error: %s", msg)
	}

	// Past the deduplication window: the identical behaviour, then a
	// different one. The agent handles them in order, so once the
	// different one's alert is here the identical one was judged.
	time.Sleep(1500 * time.Millisecond)
	marker("e2e-exc")
	marker("e2e-other")
	waitAlert(t, base, "t", "test-alert", tagged("e2e-other"))
	count := func(tag string) (alerts int, total uint64) {
		var resp struct {
			Alerts []json.RawMessage `json:"alerts"`
		}
		getJSON(t, base+"/api/v1/alerts?detection=test-alert&limit=1000", "t", &resp)
		for _, raw := range resp.Alerts {
			var a struct {
				Summary string `json:"summary"`
				Count   string `json:"count"`
			}
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(a.Summary, tag) {
				alerts++
				var n uint64
				fmt.Sscan(a.Count, &n)
				if n == 0 {
					n = 1
				}
				total += n
			}
		}
		return alerts, total
	}
	if n, total := count("e2e-exc"); n != 1 || total != 1 {
		t.Errorf("the excepted behaviour: %d alerts seen %d times, want the first alone", n, total)
	}

	// The agent's heartbeat carries what it applies: the agents API shows
	// it current.
	v := waitVersions(t, base, "edge-exc", "the agent's heartbeat reports the exceptions version", func(v agentVersions) bool {
		return v.Exceptions == made.Exception.Version
	})
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(v.Rules) || v.RulesLoaded < 30 || v.ExceptionsBehind || v.ExceptionsCurrent != made.Exception.Version {
		t.Errorf("agent's versions: %+v, want a 16-hex rules version of the built-in rules and exceptions current", v)
	}

	// Deleted while the agent is down: it is behind until it is back.
	agent.stop(t)
	if code := send(t, http.MethodDelete, base+"/api/v1/exceptions/"+made.Exception.ID, "t", "", nil); code != http.StatusOK {
		t.Fatalf("DELETE exception: %d", code)
	}
	waitVersions(t, base, "edge-exc", "the agents API marks the stopped agent behind", func(v agentVersions) bool {
		return v.ExceptionsBehind && v.Exceptions == made.Exception.Version && v.ExceptionsCurrent == made.Exception.Version+1
	})
	page := getPage(t, base+"/agents")
	if want := fmt.Sprintf("behind: current v%d", made.Exception.Version+1); !strings.Contains(page, want) || !strings.Contains(page, "1 behind") {
		t.Errorf("the agents page does not mark the agent behind (%q):\n%s", want, page)
	}
	agent.start(t)
	waitReadyz(t, "http://"+e.agentMetrics+"/readyz")
	testenv.WaitFor(t, 20*time.Second, "the agent applies the deletion", func() bool {
		v, _ := applied()
		return v == made.Exception.Version+1
	})
	waitVersions(t, base, "edge-exc", "the restarted agent reports the current version", func(v agentVersions) bool {
		return !v.ExceptionsBehind && v.Exceptions == made.Exception.Version+1
	})
	time.Sleep(1500 * time.Millisecond)
	marker("e2e-exc")
	testenv.WaitFor(t, 15*time.Second, "the behaviour alerts again", func() bool { n, _ := count("e2e-exc"); return n == 2 })
}

// TestRespondFromConsole: a responder signed in to the console kills an
// alert's process from the alert: the confirmation page, its form (with
// the session's CSRF token), and the command's page showing the real
// agent's outcome once reloaded.
func TestRespondFromConsole(t *testing.T) {
	testenv.RequireRoot(t)
	e := writeEdgeNode(t, "edge-respond")
	startRestartable(t, e.bin, "backend", "-c", e.backendCfg)
	startRestartable(t, e.bin, "agent", "-c", e.agentCfg)
	waitReadyz(t, "http://"+e.agentMetrics+"/readyz")
	base := "http://" + e.api
	var added struct {
		Error string `json:"error"`
	}
	if code := send(t, http.MethodPost, base+"/api/v1/users", "t", `{"name":"rob","role":"responder","password":"responder password 1"}`, &added); code != http.StatusCreated {
		t.Fatalf("add user: %d %s", code, added.Error)
	}
	tree := exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT e2e-respond >/dev/null; exec sleep 3000")
	if err := tree.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- tree.Wait() }()
	t.Cleanup(func() { _ = tree.Process.Kill() })
	alert := waitAlert(t, base, "t", "test-alert", func(a *api.Alert) bool {
		return strings.Contains(a.GetSummary(), "e2e-respond") && a.GetProcess().GetTgid() == uint32(tree.Process.Pid)
	})

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	page := func(method, path string, form url.Values) (int, string, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), string(b)
	}
	if code, _, body := page(http.MethodPost, "/login", url.Values{"username": {"rob"}, "password": {"responder password 1"}}); code != http.StatusSeeOther {
		t.Fatalf("sign in: %d %.300s", code, body)
	}
	code, _, confirm := page(http.MethodGet, "/alerts/"+url.PathEscape(alert.GetId())+"/respond?action=kill-process-tree", nil)
	if code != http.StatusOK || !strings.Contains(confirm, fmt.Sprintf("sends SIGKILL to process %d", tree.Process.Pid)) {
		t.Fatalf("confirmation page: %d\n%.2000s", code, confirm)
	}
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(confirm)
	if m == nil {
		t.Fatal("no CSRF token on the confirmation page")
	}
	asked := time.Now()
	code, loc, body := page(http.MethodPost, "/alerts/"+url.PathEscape(alert.GetId())+"/respond", url.Values{"csrf": {m[1]}, "action": {"kill-process-tree"}, "reason": {"e2e"}})
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/response/commands/cmd-") {
		t.Fatalf("confirm: %d %s %.500s", code, loc, body)
	}
	killedBySIGKILL(t, ended)
	state := regexp.MustCompile(`id="command-state"[^>]*>([a-z]+)<`)
	var shown string
	testenv.WaitFor(t, 20*time.Second, "the command's page shows the agent's answer", func() bool {
		_, _, shown = page(http.MethodGet, loc, nil)
		s := state.FindStringSubmatch(shown)
		return s != nil && s[1] != "pending"
	})
	t.Logf("command answered and shown %s after the confirmation", time.Since(asked).Round(time.Millisecond))
	if s := state.FindStringSubmatch(shown); s[1] != "done" || !strings.Contains(shown, strconv.Itoa(tree.Process.Pid)+" ") || !strings.Contains(shown, "ms (request to action") {
		t.Errorf("command page after the answer:\n%.3000s", shown)
	}
}

// agentVersions is an agent's "versions" in GET /api/v1/agents.
type agentVersions struct {
	Rules             string `json:"rules"`
	RulesLoaded       uint32 `json:"rules_loaded"`
	Exceptions        uint64 `json:"exceptions"`
	ExceptionsCurrent uint64 `json:"exceptions_current"`
	ExceptionsBehind  bool   `json:"exceptions_behind"`
	PoliciesBehind    bool   `json:"policies_behind"`
}

// waitVersions waits until agentID's versions satisfy ok and returns them.
func waitVersions(t *testing.T, base, agentID, what string, ok func(agentVersions) bool) agentVersions {
	t.Helper()
	var v agentVersions
	testenv.WaitFor(t, 30*time.Second, what, func() bool {
		var out struct {
			Agents []struct {
				AgentID  string        `json:"agent_id"`
				Versions agentVersions `json:"versions"`
			} `json:"agents"`
		}
		getJSON(t, base+"/api/v1/agents", "t", &out)
		for _, a := range out.Agents {
			if a.AgentID == agentID {
				v = a.Versions
				return ok(v)
			}
		}
		return false
	})
	return v
}

// getPage reads a console page with the API token (bearer).
func getPage(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %.500s", url, resp.StatusCode, b)
	}
	return string(b)
}
