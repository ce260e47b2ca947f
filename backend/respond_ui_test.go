package backend

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// TestUIRespondFromAlert: a responder sees the actions that fit the alert,
// confirms one on a page that says what will happen, and the command is
// issued (pending for the alert's agent), audited and shown; an analyst
// sees no button and is refused by the server; the confirmation needs the
// session's CSRF token.
func TestUIRespondFromAlert(t *testing.T) {
	ctx := context.Background()
	c, st, _ := newTestControl(t)
	started := time.Now().Add(-time.Minute)
	a := &api.Alert{Id: "shell-1", DetectionId: "HAR-EXEC-002", Name: "Shell", Severity: api.Severity_SEVERITY_HIGH, Node: "node-a",
		FirstSeen: timestamppb.Now(), LastSeen: timestamppb.Now(), Count: 1,
		Process:   &api.Process{Tgid: 4243, Exe: "/bin/sh", StartTime: timestamppb.New(started)},
		Container: &api.Container{Id: "3f2a9c", Name: "web", PodNamespace: "shop", PodName: "web-1", Cgroup: "/kubepods/pod1/3f2a9c"}}
	hostOnly := &api.Alert{Id: "host-1", DetectionId: "HAR-EXEC-002", Name: "Host", Severity: api.Severity_SEVERITY_LOW, Node: "node-a",
		FirstSeen: timestamppb.Now(), LastSeen: timestamppb.Now(), Count: 1, Process: &api.Process{Tgid: 9, Exe: "/bin/sh"}}
	mustIngest(t, st, "node-a", &api.Batch{AgentId: "node-a", Health: &api.AgentHealth{Node: "node-a"},
		Records: []*api.Record{alertRec(1, a), alertRec(2, hostOnly)}})
	con := NewConsole(st, c, slog.New(slog.DiscardHandler))
	h := NewAPI(st, APIConfig{Token: testToken, Control: c, Console: con}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ts := &testServer{Server: srv, store: st}
	addTestUser(t, st, "rob", RoleResponder, "responder password 1")
	addTestUser(t, st, "ana", RoleAnalyst, "analyst password 12")

	// The analyst: no buttons, and the server refuses both steps.
	ana := signIn(t, ts, "ana", "analyst password 12")
	page := ts.do(t, ana, "GET", "/alerts/shell-1", "", nil)
	if page.code != 200 || strings.Contains(page.body, "/respond") || !strings.Contains(page.body, "may not ask for response actions") {
		t.Errorf("analyst's alert page: %d, buttons shown or no note:\n%.3000s", page.code, page.body)
	}
	anaCSRF := csrfRE.FindStringSubmatch(page.body)
	if r := ts.do(t, ana, "GET", "/alerts/shell-1/respond?action=kill-process-tree", "", nil); r.code != 403 || !strings.Contains(r.body, "needs the role responder") {
		t.Errorf("analyst's confirmation page: %d %.300s, want 403", r.code, r.body)
	}
	if anaCSRF == nil {
		t.Fatal("analyst's page has no CSRF token (triage form)")
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if r := ts.do(t, ana, "POST", "/alerts/shell-1/respond", url.Values{"action": {"kill-process-tree"}, "csrf": {anaCSRF[1]}}.Encode(), form); r.code != 403 {
		t.Errorf("analyst's confirmed command: %d %.300s, want 403", r.code, r.body)
	}

	// The responder: the actions that fit, each leading to a confirmation.
	rob := signIn(t, ts, "rob", "responder password 1")
	page = ts.do(t, rob, "GET", "/alerts/shell-1", "", nil)
	for _, act := range consoleActions {
		if !strings.Contains(page.body, `name="action" value="`+act+`"`) {
			t.Errorf("responder's alert page lacks %s", act)
		}
	}
	if p := ts.do(t, rob, "GET", "/alerts/host-1", "", nil); strings.Contains(p.body, "pause-container") || !strings.Contains(p.body, "No response action fits") {
		t.Errorf("an alert without start time or cgroup offers actions:\n%.3000s", p.body)
	}
	// The incident's timeline: buttons per alert for the responder, none
	// for the analyst; the confirmation names the incident.
	incs, err := st.Incidents(ctx, IncidentQuery{})
	if err != nil || len(incs) == 0 {
		t.Fatalf("incidents: %v %v", incs, err)
	}
	var inc string
	for _, i := range incs {
		if full, err := st.Incident(ctx, i.ID); err == nil && slices.Contains(full.AlertIDs, "shell-1") {
			inc = i.ID
		}
	}
	if inc == "" {
		t.Fatal("no incident holds shell-1")
	}
	if p := ts.do(t, rob, "GET", "/incidents/"+inc, "", nil); !strings.Contains(p.body, `action="/alerts/shell-1/respond"`) ||
		!strings.Contains(p.body, `name="incident" value="`+inc+`"`) {
		t.Errorf("responder's incident page lacks the alert's response buttons:\n%.3000s", p.body)
	}
	if p := ts.do(t, ana, "GET", "/incidents/"+inc, "", nil); p.code != 200 || strings.Contains(p.body, "/respond") {
		t.Errorf("analyst's incident page: %d, buttons shown", p.code)
	}
	if p := ts.do(t, rob, "GET", "/alerts/shell-1/respond?action=pause-container&incident="+inc, "", nil); !strings.Contains(p.body, "freezes every process of container shop/web-1/web") ||
		!strings.Contains(p.body, `href="/incidents/`+inc+`"`) {
		t.Errorf("confirmation from the incident:\n%.3000s", p.body)
	}
	conf := ts.do(t, rob, "GET", "/alerts/shell-1/respond?action=kill-process-tree", "", nil)
	for _, want := range []string{"Confirm: Kill process tree", "The agent on node node-a sends SIGKILL to process 4243 (/bin/sh, started", `id="respond-confirm-button"`} {
		if !strings.Contains(conf.body, want) {
			t.Errorf("confirmation page lacks %q:\n%.3000s", want, conf.body)
		}
	}
	if r := ts.do(t, rob, "GET", "/alerts/host-1/respond?action=pause-container", "", nil); r.code != 400 || !strings.Contains(r.body, "does not fit") {
		t.Errorf("pause for a host alert: %d %.300s, want 400", r.code, r.body)
	}
	m := csrfRE.FindStringSubmatch(conf.body)
	if m == nil {
		t.Fatalf("confirmation page has no CSRF field:\n%.2000s", conf.body)
	}
	if r := ts.do(t, rob, "POST", "/alerts/shell-1/respond", url.Values{"action": {"kill-process-tree"}}.Encode(), form); r.code != 403 {
		t.Errorf("confirmation without CSRF token: %d, want 403", r.code)
	}
	if l, _ := c.Commands(ctx, "", 10); len(l) != 0 {
		t.Fatalf("refused requests issued %d commands", len(l))
	}
	r := ts.do(t, rob, "POST", "/alerts/shell-1/respond", url.Values{"action": {"kill-process-tree"}, "reason": {"web shell"}, "csrf": {m[1]}}.Encode(), form)
	loc := r.header.Get("Location")
	if r.code != 303 || !strings.HasPrefix(loc, "/response/commands/cmd-") {
		t.Fatalf("confirmed command: %d %s %.300s", r.code, loc, r.body)
	}
	cmds, err := c.Commands(ctx, "", 10)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("commands: %v %v", cmds, err)
	}
	cmd := cmds[0]
	if cmd.AgentID != "node-a" || cmd.Action != "kill-process-tree" || cmd.Target.PID != 4243 || cmd.Target.StartTime == nil ||
		!cmd.Target.StartTime.Equal(started) || cmd.RequestedBy != "rob" || cmd.Reason != "web shell" || cmd.AlertID != "shell-1" || cmd.State != CommandPending {
		t.Errorf("issued command: %+v", cmd)
	}
	out := ts.do(t, rob, "GET", loc, "", nil)
	if !regexp.MustCompile(`id="command-state"[^>]*>pending<`).MatchString(out.body) || !strings.Contains(out.body, "not yet") {
		t.Errorf("command page:\n%.3000s", out.body)
	}
	if p := ts.do(t, rob, "GET", "/alerts/shell-1", "", nil); !strings.Contains(p.body, "/response/commands/"+cmd.ID) {
		t.Errorf("alert page does not list its command")
	}
	log, err := con.AuditLog(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range log {
		if e.Action == "response.command" && e.User == "rob" && strings.Contains(e.Detail, cmd.ID) && e.Outcome == "ok" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit entry of rob's command: %+v", log)
	}
}
