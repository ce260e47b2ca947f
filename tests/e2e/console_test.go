package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/browsertest"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestConsoleFullStack: the console in a real browser over the whole
// stack — `harrier run` with the real sensor, users made with `harrier
// backend users add`, the web-shell attack of `harrier simulate --local`.
// An analyst finds the incident, opens its alert, unfolds a process of the
// recorded tree, reads the URL-encoded payload decoded, triages, and makes
// an exception from the alert that keeps the next run of the attack from
// alerting on that detection while another scenario still alerts; a
// responder kills a live process from its alert and sees the agent's
// answer; a viewer is refused a state change.
func TestConsoleFullStack(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	b := browsertest.Start(t, 4*time.Minute)
	bin := buildHarrier(t)
	base, token := startRun(t, bin, t.TempDir(), "metricsAddr: \"off\"\n")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	passwords := map[string]string{"ana": "analyst password 1", "rob": "responder password 1", "vic": "viewer password 12"}
	for name, role := range map[string]string{"ana": "analyst", "rob": "responder", "vic": "viewer"} {
		pw := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pw, []byte(passwords[name]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "backend", "users", "add", name, "--role", role, "--password-file", pw,
			"--api", base, "--token-file", tokenFile).CombinedOutput(); err != nil {
			t.Fatalf("users add %s: %v %s", name, err, out)
		}
	}

	rep, err := simulateLocal(t, bin, base, token, "webshell")
	if err != nil {
		t.Fatal(err)
	}
	victim := rep.Scenarios[0].Container
	// The alert whose explanation holds the injected command: the CGI
	// shell, under which busybox httpd -d URL-decoded the parameter.
	alerts := alertsOf(t, base, token, "web-shell", victim)
	var shell *api.Alert
	var payload struct{ raw, decoded string }
	var follower uint32 // the process that decoded it, below the shell
	for _, a := range alerts {
		var ex struct {
			Explanation struct {
				Incident string `json:"incident"`
				Payloads []struct {
					Where    string `json:"where"`
					Payloads []struct {
						Raw     string `json:"raw"`
						Decoded string `json:"decoded"`
					} `json:"payloads"`
				} `json:"payloads"`
			} `json:"explanation"`
		}
		getJSON(t, base+"/api/v1/alerts/"+a.GetId()+"/explanation", token, &ex)
		for _, p := range ex.Explanation.Payloads {
			pid, err := strconv.ParseUint(strings.TrimPrefix(p.Where, "process "), 10, 32)
			if err == nil && uint32(pid) != a.GetProcess().GetTgid() && len(p.Payloads) > 0 {
				shell, follower = a, uint32(pid)
				payload.raw, payload.decoded = p.Payloads[0].Raw, p.Payloads[0].Decoded
			}
		}
	}
	if shell == nil {
		t.Fatalf("no web-shell alert of %s explains a payload of a process that followed it (%d alerts)", victim, len(alerts))
	}
	incident := incidentOfAlert(t, base, token, shell.GetId())

	signIn := func(user string) {
		t.Helper()
		b.SignIn(t, base, user, passwords[user])
		if h1 := b.Text(t, "main h1"); h1 != "Alerts" {
			t.Fatalf("after signing in as %s: page %q", user, h1)
		}
	}
	start := time.Now()
	signIn("ana")

	// The incident list, then the incident, then the alert.
	incLink := `a[href="/incidents/` + incident + `"]`
	b.Do(t, "find the incident in the list", chromedp.Navigate(base+"/incidents"), chromedp.WaitVisible(chromedp.CSS(incLink)),
		chromedp.Click(chromedp.CSS(incLink)), chromedp.WaitVisible(chromedp.CSS(`a[href="/alerts/`+shell.GetId()+`"]`)))
	for _, a := range alerts {
		if n, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[int](`document.querySelectorAll('main a[href="/alerts/`+a.GetId()+`"]').length`)); n == 0 {
			t.Errorf("incident page lacks alert %s", a.GetId())
		}
	}
	b.Screenshot(t, "console-incident.png")
	b.Do(t, "open the alert", chromedp.Click(chromedp.CSS(`main a[href="/alerts/`+shell.GetId()+`"]`)), chromedp.WaitVisible(chromedp.ID("triage")))

	// The tree: the path to the alert is open, what followed is folded;
	// unfolding the process that decoded the request shows its command
	// line.
	proc := "#proc-" + strconv.FormatUint(uint64(follower), 10)
	visible := func(sel string) bool {
		t.Helper()
		v, err := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](`document.querySelector("`+sel+`").checkVisibility()`))
		if err != nil {
			t.Fatalf("visibility of %s: %v", sel, err)
		}
		return v
	}
	if visible(proc+" > div.mono") || !visible("#proc-"+strconv.FormatUint(uint64(shell.GetProcess().GetTgid()), 10)+" > summary.this") {
		t.Errorf("tree before unfolding: the follower's command line shown %v, want folded below the open alert's process", visible(proc+" > div.mono"))
	}
	b.Do(t, "unfold the process that followed", chromedp.Click(chromedp.CSS(proc+" > summary")), chromedp.WaitVisible(chromedp.CSS(proc+" > div.mono")))
	if got := b.Text(t, proc+" > div.mono"); !strings.Contains(got, payload.raw) {
		t.Errorf("unfolded process %s shows %q, want the command line with %q", proc, got, payload.raw)
	}
	if tree := b.Text(t, "details.proc"); !strings.Contains(tree, "container boundary") || !strings.Contains(tree, "httpd") {
		t.Errorf("tree lacks the container boundary or the web server:\n%s", tree)
	}
	decoded := b.Text(t, ".decoded")
	if !strings.Contains(decoded, payload.raw) || !strings.Contains(decoded, payload.decoded) || !strings.Contains(payload.decoded, "ls -la /www") {
		t.Errorf("decoded payload shown %q, want %q beside %q", decoded, payload.decoded, payload.raw)
	}
	b.Do(t, "scroll to the tree", chromedp.ScrollIntoView(chromedp.CSS(proc)))
	b.Screenshot(t, "console-alert-tree.png")

	// Triage.
	b.Do(t, "set state and comment", chromedp.SetValue(chromedp.ID("triage-state-select"), "in_progress"),
		chromedp.SendKeys(chromedp.ID("triage-comment"), "Injected through the ping page."),
		chromedp.Click(chromedp.ID("triage-save")), chromedp.WaitVisible(chromedp.CSS("#triage .comment")))
	b.Do(t, "reload the alert", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("triage")))
	if st, tr := b.Text(t, "#triage-state"), b.Text(t, "#triage"); st != "in_progress" || !strings.Contains(tr, "Injected through the ping page.") {
		t.Errorf("after reload: state %q, triage:\n%s", st, tr)
	}

	// An exception from the alert: this detection, busybox (every applet
	// of the victim), any command line.
	b.Do(t, "see the exception form (open while the alert has none)", chromedp.WaitVisible(chromedp.ID("exc-save")))
	if got, _ := chromedp.Run(b.Ctx, chromedp.Value(chromedp.ID("exc-process"))); got != shell.GetProcess().GetExe() {
		t.Errorf("exception form's process %q, want %q prefilled", got, shell.GetProcess().GetExe())
	}
	b.Do(t, "save the exception", chromedp.Clear(chromedp.ID("exc-command")), chromedp.SendKeys(chromedp.ID("exc-reason"), "e2e: the simulator"),
		chromedp.Click(chromedp.ID("exc-save")), chromedp.WaitVisible(chromedp.ID("exceptions")))
	testenv.WaitFor(t, 20*time.Second, "the exceptions page shows the agent has the exception", func() bool {
		if err := chromedp.Do(b.Ctx, chromedp.Navigate(base+"/exceptions"), chromedp.WaitVisible(chromedp.ID("exceptions"))); err != nil {
			return false
		}
		have, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS("#exceptions .exc-agents")))
		return err == nil && strings.Contains(have, "✓")
	})
	// The same attack again, with another scenario beside it: its
	// web-shell alerts are excepted, the threat-intel one still comes.
	rep2, err := simulateLocal(t, bin, base, token, "webshell,threat-intel")
	if err == nil {
		t.Errorf("the web-shell scenario passed with the exception in place: %+v", rep2)
	}
	for _, s := range rep2.Scenarios {
		if s.Name == "threat-intel" {
			waitAlert(t, base, token, "ioc-domain", func(a *api.Alert) bool { return a.GetContainer().GetId() == s.Container })
		}
	}
	for _, s := range rep2.Scenarios {
		if got := alertsOf(t, base, token, "web-shell", s.Container); len(got) != 0 {
			t.Errorf("%s ran again with the exception in place: %d web-shell alerts", s.Name, len(got))
		}
	}

	// A responder kills a live process from its alert and sees the
	// agent's answer on the command's page, which reloads itself.
	tree := exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT e2e-console >/dev/null; exec sleep 3000")
	if err := tree.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- tree.Wait() }()
	t.Cleanup(func() { _ = tree.Process.Kill() })
	live := waitAlert(t, base, token, "test-alert", func(a *api.Alert) bool {
		return strings.Contains(a.GetSummary(), "e2e-console") && a.GetProcess().GetTgid() == uint32(tree.Process.Pid)
	})
	signIn("rob")
	b.Do(t, "ask to kill the process tree", chromedp.Navigate(base+"/alerts/"+url.PathEscape(live.GetId())),
		chromedp.WaitVisible(chromedp.CSS("#respond button.respond-kill-process-tree")),
		chromedp.Click(chromedp.CSS("#respond button.respond-kill-process-tree")), chromedp.WaitVisible(chromedp.ID("respond-confirm-button")),
		chromedp.SendKeys(chromedp.ID("respond-reason"), "e2e"), chromedp.Click(chromedp.ID("respond-confirm-button")),
		chromedp.WaitVisible(chromedp.ID("command-state")))
	killedBySIGKILL(t, ended)
	var state string
	testenv.WaitFor(t, 20*time.Second, "the command's page shows the agent's answer", func() bool {
		state, _ = chromedp.Run(b.Ctx, chromedp.Text(chromedp.ID("command-state")))
		return state != "" && state != "pending"
	})
	if pids := b.Text(t, "#command dd.mono"); state != "done" || !strings.Contains(b.Text(t, "#command"), strconv.Itoa(tree.Process.Pid)+" ") {
		t.Errorf("command page: state %q, %s\n%s", state, pids, b.Text(t, "#command"))
	}

	// A viewer: no triage form, and a forced post is refused.
	signIn("vic")
	b.Do(t, "open the alert as viewer", chromedp.Navigate(base+"/alerts/"+shell.GetId()), chromedp.WaitVisible(chromedp.ID("triage")))
	if !strings.Contains(b.Text(t, "#triage"), "may read the triage but not change it") {
		t.Errorf("viewer's triage part:\n%s", b.Text(t, "#triage"))
	}
	b.Do(t, "post a state change as viewer", chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.createElement("form"); f.method = "post"; f.action = "/alerts/`+shell.GetId()+`/triage";
		const i = document.createElement("input"); i.name = "state"; i.value = "resolved"; f.appendChild(i);
		document.body.appendChild(f); f.submit(); })()`), chromedp.WaitVisible(chromedp.CSS(".error")))
	if refusal := b.Text(t, ".error"); !strings.Contains(refusal, "needs the role analyst") {
		t.Errorf("viewer's post: %q", refusal)
	}
	var got struct {
		Triage struct {
			State string `json:"state"`
		} `json:"triage"`
	}
	getJSON(t, base+"/api/v1/alerts/"+shell.GetId()+"/triage", token, &got)
	if got.Triage.State != "in_progress" {
		t.Errorf("after the viewer's post the state is %q", got.Triage.State)
	}

	// The break-glass admin sees the users the CLI made on the users
	// page; the real incident and alert pages name every form control.
	b.Do(t, "sign in as the API token", chromedp.Navigate(base+"/logout"), chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), "api-token"), chromedp.SendKeys(chromedp.ID("password"), token),
		chromedp.Click(chromedp.ID("signin")), chromedp.WaitNotPresent(chromedp.ID("signin")),
		chromedp.Navigate(base+"/users"), chromedp.WaitVisible(chromedp.ID("users")))
	for name, role := range map[string]string{"ana": "analyst", "rob": "responder", "vic": "viewer"} {
		if got := b.Text(t, "#user-"+name+" .user-role"); got != role {
			t.Errorf("users page: %s is %q, want %s", name, got, role)
		}
	}
	for _, path := range []string{"/incidents/" + incident, "/alerts/" + shell.GetId(), "/alerts/" + live.GetId()} {
		b.Do(t, "open "+path, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
		if bad := b.Unlabelled(t); len(bad) > 0 {
			t.Errorf("%s: form controls without an accessible name: %q", path, bad)
		}
	}
	t.Logf("browser steps took %v", time.Since(start).Round(time.Millisecond))
}

// alertsOf lists the backend's alerts of a detection in a container.
func alertsOf(t *testing.T, base, token, detection, container string) []*api.Alert {
	t.Helper()
	var list struct {
		Alerts []json.RawMessage `json:"alerts"`
	}
	if code := getJSON(t, base+"/api/v1/alerts?limit=1000&detection="+detection, token, &list); code != http.StatusOK {
		t.Fatalf("alerts: %d", code)
	}
	var out []*api.Alert
	for _, raw := range list.Alerts {
		a := &api.Alert{}
		if err := protojson.Unmarshal(raw, a); err != nil {
			t.Fatal(err)
		}
		if a.GetContainer().GetId() == container {
			out = append(out, a)
		}
	}
	return out
}

// incidentOfAlert is the incident the backend put an alert in.
func incidentOfAlert(t *testing.T, base, token, alertID string) string {
	t.Helper()
	var ex struct {
		Explanation struct {
			Incident string `json:"incident"`
		} `json:"explanation"`
	}
	getJSON(t, base+"/api/v1/alerts/"+alertID+"/explanation", token, &ex)
	if ex.Explanation.Incident == "" {
		t.Fatalf("alert %s is in no incident", alertID)
	}
	return ex.Explanation.Incident
}
