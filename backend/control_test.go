package backend

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/transport"
)

const testPolicies = `apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - name: p
    mode: audit
    match: {minSeverity: high}
    actions: [kill-process-tree]
`

func newTestControl(t *testing.T) (*ResponseControl, *BadgerStore, *time.Time) {
	t.Helper()
	st := openTestStore(t, BadgerConfig{})
	c := NewResponseControl(st, testCommandSigner(t), slog.New(slog.DiscardHandler))
	now := time.Now()
	c.now = func() time.Time { return now }
	return c, st, &now
}

// testCommandSigner is a serving certificate of a test CA, which signs
// commands as the backend's does.
func testCommandSigner(t *testing.T) func() (*tls.Certificate, error) {
	t.Helper()
	caCert, caKey, err := transport.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return func() (*tls.Certificate, error) { return &pair, nil }
}

func TestResponseControlPolicies(t *testing.T) {
	ctx := context.Background()
	c, _, _ := newTestControl(t)
	var woken []string
	c.SetNotify(func(id string) { woken = append(woken, id) })
	if p, err := c.Policies(ctx); err != nil || p.Version != 0 {
		t.Fatalf("before any: %+v %v", p, err)
	}
	if ctl, err := c.PendingControl(ctx, "a", transport.ControlSent{}); err != nil || ctl.GetResponsePolicies() != nil {
		t.Fatalf("nothing set, yet sent %v (%v)", ctl, err)
	}
	for _, bad := range []string{"kind: Nope\n", "apiVersion: harrier.io/v1\nkind: ResponsePolicies\nextra: 1\n"} {
		if _, err := c.SetPolicies(ctx, []byte(bad), "test"); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetPolicies(%q): %v, want ErrInvalid", bad, err)
		}
	}
	for want := uint64(1); want <= 2; want++ {
		p, err := c.SetPolicies(ctx, []byte(testPolicies), "test")
		if err != nil || p.Version != want || p.Policies != 1 {
			t.Fatalf("SetPolicies: %+v %v, want version %d", p, err, want)
		}
	}
	if len(woken) != 2 || woken[0] != "" {
		t.Errorf("woken %q, want every agent twice", woken)
	}
	ctl, err := c.PendingControl(ctx, "a", transport.ControlSent{})
	if err != nil || ctl.GetResponsePolicies().GetVersion() != 2 || string(ctl.GetResponsePolicies().GetYaml()) != testPolicies {
		t.Fatalf("a new connection is sent %v (%v), want version 2", ctl, err)
	}
	if ctl, _ := c.PendingControl(ctx, "a", transport.ControlSent{Policies: 2}); ctl.GetResponsePolicies() != nil {
		t.Error("version 2 sent again on the connection that delivered it")
	}
	if err := c.ControlAcked(ctx, "a", ctl, &api.ControlAck{ResponsePoliciesVersion: 1, ResponsePoliciesError: "no"}); err != nil {
		t.Fatal(err)
	}
	acs, err := c.AgentControls(ctx)
	if err != nil || acs["a"].PoliciesVersion != 1 || acs["a"].PoliciesError != "no" {
		t.Errorf("agent controls %+v %v", acs, err)
	}
}

func TestResponseControlCommands(t *testing.T) {
	ctx := context.Background()
	c, st, now := newTestControl(t)
	start := now.Add(-time.Minute)
	kill := CommandRequest{AgentID: "a", Action: "kill-process-tree", Target: CommandTarget{PID: 42, StartTime: &start}}
	for _, bad := range []CommandRequest{
		{AgentID: "a", Action: "format-disk"},
		{AgentID: "a", Action: "kill-process-tree", Target: CommandTarget{PID: 42}},
		{AgentID: "a", Action: "pause-container"},
		{AgentID: "", Action: "kill-process-tree", Target: kill.Target},
		{AgentID: "a", Action: "kill-process-tree", Target: kill.Target, ExpiresIn: "30d"},
		{AlertID: "no-such-alert", Action: "kill-process-tree"},
		{AgentID: "a", Action: "kill-process-tree", Target: kill.Target, AllowProtected: []string{"host-init"}},
		{AgentID: "a", Action: "kill-process-tree", Target: kill.Target, AllowProtected: []string{"everything"}},
	} {
		if _, err := c.Issue(ctx, bad, "test"); !errors.Is(err, ErrInvalid) {
			t.Errorf("Issue(%+v): %v, want ErrInvalid", bad, err)
		}
	}
	rec, err := c.Issue(ctx, kill, "test")
	if err != nil || rec.State != CommandPending {
		t.Fatal(rec, err)
	}
	// What the analyst allows travels in the signed command.
	allowed := kill
	allowed.AgentID, allowed.AllowProtected = "c", []string{"runtime"}
	allowedRec, err := c.Issue(ctx, allowed, "test")
	if err != nil || !slices.Equal(allowedRec.AllowProtected, []string{"runtime"}) {
		t.Fatalf("a command allowing runtime: %+v %v", allowedRec, err)
	}
	if ctl, err := c.PendingControl(ctx, "c", transport.ControlSent{}); err != nil || len(ctl.GetCommands()) != 1 {
		t.Fatalf("pending for c: %v %v", ctl, err)
	} else if cmd := new(api.Command); proto.Unmarshal(ctl.GetCommands()[0].GetCommand(), cmd) != nil || !slices.Equal(cmd.GetAllowProtected(), []string{"runtime"}) {
		t.Errorf("the signed command %v: want allow_protected [runtime]", cmd)
	}
	short := kill
	short.ExpiresIn = "1s"
	expiring, err := c.Issue(ctx, short, "test")
	if err != nil {
		t.Fatal(err)
	}
	if ctl, _ := c.PendingControl(ctx, "b", transport.ControlSent{}); len(ctl.GetCommands()) != 0 {
		t.Error("another agent was sent a's commands")
	}
	ctl, err := c.PendingControl(ctx, "a", transport.ControlSent{})
	if err != nil || len(ctl.GetCommands()) != 2 {
		t.Fatalf("pending for a: %v %v, want 2 commands", ctl, err)
	}
	// The agent answers the first; the second expires unanswered.
	*now = now.Add(2 * time.Second)
	ack := &api.ControlAck{Results: []*api.CommandResult{
		{Id: rec.ID, Response: &api.Response{Outcome: "done", Pids: []uint32{42, 43}, LatencyUs: 1500}},
		{Id: "cmd-not-sent"},
	}}
	if err := c.ControlAcked(ctx, "a", ctl, ack); err != nil {
		t.Fatal(err)
	}
	if ctl, _ := c.PendingControl(ctx, "a", transport.ControlSent{}); len(ctl.GetCommands()) != 0 {
		t.Errorf("after the answer and the expiry, still pending: %d", len(ctl.GetCommands()))
	}
	got, err := c.Command(ctx, rec.ID)
	if err != nil || got.State != "done" || len(got.PIDs) != 2 || got.LatencyMS != 1.5 || got.Answered == nil {
		t.Errorf("answered command %+v %v", got, err)
	}
	if got, _ := c.Command(ctx, expiring.ID); got.State != CommandExpired {
		t.Errorf("expiring command state %q, want expired", got.State)
	}
	if list, err := c.Commands(ctx, "a", 10); err != nil || len(list) != 2 {
		t.Errorf("commands of a: %d %v", len(list), err)
	}
	// Each request and each change of state joined the responses' export
	// order, in order, without the signed bytes.
	journal, err := st.RecordsAfter(ctx, export.KindResponses, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, r := range journal {
		states = append(states, r.Response.ID+" "+r.Response.State)
	}
	if want := []string{rec.ID + " pending", allowedRec.ID + " pending", expiring.ID + " pending", rec.ID + " done", expiring.ID + " expired"}; !slices.Equal(states, want) ||
		st.LastSeq(export.KindResponses) != 5 || string(journal[0].Response.Target) != string(mustJSON(t, kill.Target)) {
		t.Errorf("responses in export order %q (last %d, target %s), want %q", states, st.LastSeq(export.KindResponses), journal[0].Response.Target, want)
	}

	// From an alert: the agent that reports its node, the alert's process.
	if _, err := st.Ingest(ctx, "agent-x", &api.Batch{AgentId: "agent-x", Health: &api.AgentHealth{Node: "node-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Ingest(ctx, "agent-x", &api.Batch{AgentId: "agent-x", Records: []*api.Record{{Seq: 1, Class: api.RecordClass_RECORD_CLASS_ALERT,
		Payload: &api.Record_Alert{Alert: mkAlert("al-1")}}}}); err != nil {
		t.Fatal(err)
	}
	a, err := st.Alert(ctx, "al-1")
	if err != nil {
		t.Fatal(err)
	}
	fromAlert, err := c.Issue(ctx, CommandRequest{AlertID: "al-1", Action: "kill-process-tree"}, "test")
	switch {
	case a.GetProcess().GetStartTime() == nil:
		if err == nil || !strings.Contains(err.Error(), "start_time") {
			t.Errorf("alert without a process start: %v", err)
		}
	case err != nil || fromAlert.AgentID != "agent-x" || fromAlert.Target.PID != a.GetProcess().GetTgid():
		t.Errorf("command from alert: %+v %v", fromAlert, err)
	}
}

// TestUIResponse renders the response page from a real store: the policies,
// each agent's applied version, commands and response records, escaped.
func TestUIResponse(t *testing.T) {
	ctx := context.Background()
	c, st, _ := newTestControl(t)
	if _, err := c.SetPolicies(ctx, []byte(testPolicies), "test"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Issue(ctx, CommandRequest{AgentID: "node-a", Action: "kill-process-tree", Reason: "<script>x</script>",
		Target: CommandTarget{PID: 42, StartTime: &start}}, "test"); err != nil {
		t.Fatal(err)
	}
	rec := &api.Record{Seq: 1, Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: &api.Event{
		Node: "node-a", Kind: api.EventKind_EVENT_KIND_RESPONSE, Time: timestamppb.Now(),
		Detail: &api.Event_Response{Response: &api.Response{Policy: "p", Action: "kill-process-tree", Mode: "enforce",
			Outcome: "done", Target: "process <b>42</b>", LatencyUs: 900}}}}}
	if _, err := st.Ingest(ctx, "node-a", &api.Batch{AgentId: "node-a", Records: []*api.Record{rec},
		Health: &api.AgentHealth{ResponsePoliciesSource: "backend", ResponsePoliciesVersion: 0}}); err != nil {
		t.Fatal(err)
	}
	if l, err := c.Commands(ctx, "", 100); len(l) != 1 {
		t.Fatalf("commands before render: %d %v", len(l), err)
	}
	h := NewAPI(st, APIConfig{Token: "tok", Control: c, ResponseToken: "rt"}, nil)
	req := httptest.NewRequest(http.MethodGet, "/response", nil)
	req.Header.Set("Authorization", "Bearer tok")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("GET /response: %d %s", w.Code, body)
	}
	for _, want := range []string{"Version</dt><dd>1", "minSeverity: high", "node-a", "backend version 0", "(not the current one)",
		"kill-process-tree", "pending", "&lt;script&gt;x&lt;/script&gt;", "process &lt;b&gt;42&lt;/b&gt;", "900 µs"} {
		if !strings.Contains(body, want) {
			t.Errorf("response page lacks %q\n%s", want, body)
		}
	}
}

// TestKeyPrefixesDistinct: every part of the store has its own key kind.
func TestKeyPrefixesDistinct(t *testing.T) {
	all := map[string]string{
		"seen": prefixSeen, "gap": prefixGap, "alert": prefixAlert, "event": prefixEvent, "agent": prefixAgent,
		"alert order": prefixAlertSeq, "export": prefixExport, "export journal": prefixJournal, "ring state": keyRingState[:2], "stream position": keyStreamPosition[:2],
		"revoked": prefixRevoked, "enrolled": prefixEnrolled, "bootstrap": prefixBootstrap,
		"pending meta": prefixPendingMeta, "pending chunk": prefixPendingChunk, "cluster": prefixCluster,
		"item": prefixItem, "finding": prefixFinding,
		"policies": prefixPolicies, "command": prefixCommand, "command pending": prefixCommandPending, "agent control": prefixAgentControl,
		"exceptions": prefixExceptions, "user": prefixUser, "session": prefixSession, "triage": prefixTriage, "audit": prefixAudit,
	}
	seen := map[string]string{}
	for name, p := range all {
		if other, dup := seen[p[:1]]; dup {
			t.Errorf("%s and %s share the key kind %q", name, other, p[:1])
		}
		seen[p[:1]] = name
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
