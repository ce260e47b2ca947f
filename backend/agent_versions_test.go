package backend

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// TestAgentVersions: the agents API and page show each agent's rules,
// exceptions and policies versions from its heartbeat, mark one behind the
// backend's exceptions or policies (not one on its own policy file), and
// one whose rules differ from most agents'.
func TestAgentVersions(t *testing.T) {
	ctx := context.Background()
	c, st, _ := newTestControl(t)
	if _, err := c.SetPolicies(ctx, []byte(testPolicies), "test"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.AddException(ctx, ExceptionRequest{Scope: "cluster", Cluster: "edge", Process: "/usr/bin/backup", ExpiresIn: "1h"}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	pol, _ := c.Policies(ctx)
	set, _ := c.Exceptions(ctx)
	hb := func(id, rules string, exc uint64, source string, pv uint64) {
		mustIngest(t, st, id, &api.Batch{Health: &api.AgentHealth{Version: "1.0.0", Node: id, RulesVersion: rules, RulesLoaded: 57,
			ExceptionsVersion: exc, ResponsePoliciesSource: source, ResponsePoliciesVersion: pv}})
	}
	hb("node-a", "aaaaaaaaaaaaaaaa", set.Version, "backend", pol.Version)
	hb("node-b", "aaaaaaaaaaaaaaaa", set.Version-1, "backend", pol.Version)
	hb("node-c", "cccccccccccccccc", set.Version, "backend", pol.Version-1)
	hb("node-d", "aaaaaaaaaaaaaaaa", set.Version, "file", 9)
	hb("node-e", "cccccccccccccccc", set.Version, "backend", 0)

	now := time.Now()
	srv := httptest.NewServer(NewAPI(st, APIConfig{Token: testToken, Control: c, Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	ts := &testServer{Server: srv, store: st}
	r := ts.authGet(t, "/api/v1/agents")
	var out struct {
		Agents []agentJSON `json:"agents"`
	}
	if r.code != 200 || json.Unmarshal([]byte(r.body), &out) != nil {
		t.Fatalf("%d %s", r.code, r.body)
	}
	got := map[string]AgentVersions{}
	for _, a := range out.Agents {
		got[a.AgentID] = a.Versions
	}
	want := map[string]struct{ excBehind, polBehind, rulesDiffer bool }{
		"node-a": {}, "node-b": {excBehind: true}, "node-c": {polBehind: true, rulesDiffer: true},
		"node-d": {}, "node-e": {polBehind: true, rulesDiffer: true},
	}
	for id, w := range want {
		v := got[id]
		if v.ExceptionsBehind != w.excBehind || v.PoliciesBehind != w.polBehind || v.RulesDiffer != w.rulesDiffer ||
			v.ExceptionsCurrent != set.Version || v.PoliciesCurrent != pol.Version || v.RulesLoaded != 57 {
			t.Errorf("%s: %+v, want %+v", id, v, w)
		}
		if w.rulesDiffer && v.RulesCommon != "aaaaaaaaaaaaaaaa" {
			t.Errorf("%s: the common rules version %q", id, v.RulesCommon)
		}
	}
	page := wantHTML(t, ts, "/agents", "3 behind", "aaaaaaaaaaaaaaaa", "differs from most agents",
		"behind: current v2", "response: file v9")
	if n := strings.Count(page, `class="error behind"`); n != 3 {
		t.Errorf("%d behind marks on the page, want 3", n)
	}
}
