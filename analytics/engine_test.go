package analytics

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

func TestBuiltinRulesCompile(t *testing.T) {
	e := newTestEngine(t, Config{})
	if s := e.Stats(); s.RulesLoaded < 30 || s.RuleErrors != 0 {
		t.Fatalf("rules loaded %d, errors %d", s.RulesLoaded, s.RuleErrors)
	}
	// Every detection of the node table is present.
	for _, id := range []string{"web-shell", "network-scan", "sa-token-access", "k8s-api-from-container", "cloud-metadata",
		"sensitive-files", "secret-recon", "cpu-optimization", "ld-preload", "miner-download", "drift-binary", "mining",
		"download-exec", "reverse-shell", "base64-exec", "user-added", "history-cleared", "new-namespace",
		"kubelet-kubeconfig", "ssh-keys", "attack-tool", "fileless", "kernel-module", "ptrace-injection", "sensor-tamper",
		"ioc-domain", "db-spawns-shell", "test-alert", "anomalous-process", "anomalous-egress",
		// Control plane (Kubernetes audit events).
		"privileged-container", "sensitive-mount", "exposed-dashboard", "exposed-service", "high-priv-role",
		"cluster-admin-binding", "kube-system-container", "events-deleted", "admission-webhook", "coredns-modified",
		"sa-suspicious-op", "sa-anomalous-op", "pentest-tool", "mining-image", "exec-into-pod", "exec-into-system-pod", "anonymous-access",
		"anomalous-pod-deployment", "anomalous-secret-access", "sa-permission-anomaly"} {
		r := e.Rule(id)
		if r == nil {
			t.Errorf("detection %s missing", id)
			continue
		}
		if r.Name == "" || r.Description == "" || r.Remediation == "" || r.Severity == api.Severity_SEVERITY_UNSPECIFIED {
			t.Errorf("detection %s lacks name, description, remediation or severity", id)
		}
		if id != "test-alert" && (len(r.Mitre) == 0 || r.Mitre[0].GetTechniqueId() == "") {
			t.Errorf("detection %s has no MITRE technique", id)
		}
	}
}

func writeRules(t testing.TB, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRuleFileErrors(t *testing.T) {
	tests := []struct {
		name, text string
		wantLine   int
		wantMsg    string
	}{
		{"yaml syntax", "rules:\n  - id: x\n    name: [unclosed\n", 0, "not valid YAML"},
		{"unknown field", "rules:\n  - id: x\n    name: X\n    severity: high\n    kinds: [exec]\n    conditon: kind == \"exec\"\n", 2, `unknown field "conditon"`},
		{"bad severity", "rules:\n  - id: x\n    name: X\n    severity: severe\n    kinds: [exec]\n    condition: 'true'\n", 2, "severity"},
		{"bad kind", "rules:\n  - id: x\n    name: X\n    severity: low\n    kinds: [exek]\n    condition: 'true'\n", 2, `kinds: unknown event kind "exek" (want one of exec,`},
		{"no kinds", "rules:\n  - id: x\n    name: X\n    severity: low\n    condition: 'true'\n", 2, "kinds is required"},
		{"patch of nothing", "rules:\n  - id: nope\n    enabled: false\n", 2, "no rule with this id"},
		{"empty exception", "rules:\n  - id: web-shell\n    exceptions: [{name: all}]\n", 2, "sets no field"},
		{"reserved list", "lists:\n  - name: proc\n    items: [a]\n", 2, "reserved"},
		{"append to nothing", "lists:\n  - name: mine\n    items: [a]\n    append: true\n", 2, "does not exist"},
		{"unknown section", "rulez: []\n", 1, `unknown section "rulez"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeRules(t, tc.text)
			rs, err := LoadRules(p)
			if err == nil {
				t.Fatal("no error")
			}
			var re *RuleError
			if !errors.As(err, &re) || re.File != p || (tc.wantLine != 0 && re.Line != tc.wantLine) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q (line %d), want %s:%d %q", err, re.Line, p, tc.wantLine, tc.wantMsg)
			}
			// The built-in rules keep running.
			if rs.Rule("web-shell") == nil || rs.Rule("sensitive-files") == nil {
				t.Fatal("built-in rules lost after a bad file")
			}
		})
	}
}

func TestRuleCompileErrorsKeepTheRest(t *testing.T) {
	p := writeRules(t, `
rules:
  - id: broken-cel
    name: Broken
    severity: low
    kinds: [exec]
    condition: proc.name ==
  - id: wrong-field
    name: Wrong field
    severity: low
    kinds: [exec]
    condition: proc.nmae == "x"
  - id: not-bool
    name: Not bool
    severity: low
    kinds: [exec]
    condition: proc.name
  - id: good
    name: Good
    severity: low
    kinds: [exec]
    condition: proc.name == "good-tool"
`)
	rs, err := LoadRules(p)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(Config{}, rs, Options{})
	if e == nil {
		t.Fatal(err)
	}
	msg := err.Error()
	for _, want := range []string{p + ":3: rule \"broken-cel\"", p + ":8: rule \"wrong-field\"", "undeclared reference", p + ":13: rule \"not-bool\"", "boolean"} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors %q lack %q", msg, want)
		}
	}
	if ids, _ := run(e, execEv("/usr/bin/good-tool", []string{"good-tool"})); !slices.Contains(ids, "good") {
		t.Fatalf("good rule did not run: %v", ids)
	}
}

func TestOperatorRulesListsMacrosPatches(t *testing.T) {
	p := writeRules(t, `
lists:
  - name: shells
    items: [fancysh]
    append: true
  - name: my_tools
    items: [evil-tool, "quote\"d"]
macros:
  - name: in_ops_ns
    condition: pod.namespace == "ops"
rules:
  - id: my-tool
    name: My tool ran
    severity: medium
    kinds: [exec]
    # "my_tools" in the string must not be expanded; the name outside is.
    condition: proc.name in my_tools && proc.cmdline != "my_tools" && !in_ops_ns
    output: "{proc.name} ran in {container.id}"
    mitre: [{tactic: Execution, technique_id: T1059}]
  - id: db-spawns-shell
    severity: low
  - id: test-alert
    enabled: false
  - id: sensitive-files
    exceptions:
      - processes: [/opt/backup/bin/*]
        paths: [/etc/shadow]
`)
	e := newTestEngine(t, Config{}, p)
	ids, alerts := run(e,
		execEv("/usr/bin/evil-tool", []string{"evil-tool"}, inContainer("c1")),
		execEv("/usr/bin/evil-tool", []string{"evil-tool"}, func(ev *api.Event) { ev.Container = &api.Container{Id: "c2", PodNamespace: "ops"} }),
		execEv("/bin/fancysh", []string{"fancysh"}, parents("/usr/sbin/mysqld")),
		execEv("/bin/sh", []string{"sh", "-c", "echo HARRIER-TEST-ALERT"}),
		openEv("/opt/backup/bin/dump", "/etc/shadow", false),
		openEv("/opt/backup/bin/dump", "/etc/gshadow", false),
	)
	want := []string{"my-tool", "db-spawns-shell", "sensitive-files"}
	if !slices.Equal(ids, want) {
		t.Fatalf("alerts %v, want %v", ids, want)
	}
	if alerts[0].GetSummary() != "evil-tool ran in c1" || alerts[0].GetSeverity() != api.Severity_SEVERITY_MEDIUM {
		t.Errorf("my-tool alert: %q %v", alerts[0].GetSummary(), alerts[0].GetSeverity())
	}
	if alerts[1].GetSeverity() != api.Severity_SEVERITY_LOW {
		t.Errorf("severity override not applied: %v", alerts[1].GetSeverity())
	}
	if got := alerts[2].GetEvidence()[0].GetFileOpen().GetPath(); got != "/etc/gshadow" {
		t.Errorf("exception let through %s", got)
	}
	if e.Stats().Excepted != 1 {
		t.Errorf("excepted = %d, want 1", e.Stats().Excepted)
	}
}

func TestDedupUpdatesAndWindows(t *testing.T) {
	e := newTestEngine(t, Config{DedupWindow: confval.Duration(time.Minute), UpdateInterval: confval.Duration(10 * time.Second), MaxEvidence: 3})
	var got []*api.Alert
	emit := func(a *api.Alert) { got = append(got, a) }
	cat := func(d time.Duration) *api.Event {
		return openEv("/bin/cat", "/etc/shadow", false, at(d), inContainer("c1"), parents("/bin/sh", "/usr/sbin/sshd"))
	}
	for i := 0; i < 5; i++ {
		e.Process(cat(time.Duration(i)*time.Second), emit)
	}
	if len(got) != 1 || got[0].GetCount() != 1 {
		t.Fatalf("want one new alert with count 1, got %d", len(got))
	}
	first := got[0]
	e.Tick(t0.Add(20*time.Second), emit)
	if len(got) != 2 {
		t.Fatalf("want an update after the interval, got %d alerts", len(got))
	}
	upd := got[1]
	if upd.GetId() != first.GetId() || upd.GetCount() != 5 || !upd.GetLastSeen().AsTime().Equal(t0.Add(4*time.Second)) ||
		!upd.GetFirstSeen().AsTime().Equal(t0) || len(upd.GetEvidence()) != 3 {
		t.Fatalf("update: id same %v count %d last %v evidence %d", upd.GetId() == first.GetId(), upd.GetCount(), upd.GetLastSeen().AsTime(), len(upd.GetEvidence()))
	}
	e.Tick(t0.Add(25*time.Second), emit)
	if len(got) != 2 {
		t.Fatal("update sent without new repeats")
	}
	// A different lineage is a different alert; after the window, a new one.
	e.Process(openEv("/bin/cat", "/etc/shadow", false, at(30*time.Second), inContainer("c1"), parents("/usr/bin/python3")), emit)
	e.Process(cat(2*time.Minute), emit)
	if len(got) != 4 || got[2].GetId() == first.GetId() || got[3].GetId() == first.GetId() || got[3].GetCount() != 1 {
		t.Fatalf("want two new alerts, got %d", len(got))
	}
	if s := e.Stats(); s.Deduplicated != 4 || s.Alerts != 3 || s.Updates != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRateLimitCountsSuppressed(t *testing.T) {
	e := newTestEngine(t, Config{RateLimitPerMinute: 3})
	var evs []*api.Event
	for i := 0; i < 10; i++ { // ten lineages in one container: ten distinct alerts
		evs = append(evs, openEv("/bin/cat", "/etc/shadow", false, inContainer("noisy"), parents("/bin/p"+itoa(i)), at(time.Duration(i)*time.Millisecond)))
	}
	ids, _ := run(e, evs...)
	if len(ids) != 3 || e.Stats().Suppressed["sensitive-files"] != 7 {
		t.Fatalf("alerts %d, suppressed %v", len(ids), e.Stats().Suppressed)
	}
	// Another container is not starved by the noisy one.
	if ids, _ = run(e, openEv("/bin/cat", "/etc/shadow", false, inContainer("quiet"), at(10*time.Millisecond))); len(ids) != 1 {
		t.Fatal("the noisy container used up another container's alerts")
	}
	// Tokens come back with time.
	ids, _ = run(e, openEv("/bin/cat", "/etc/shadow", false, inContainer("noisy"), parents("/bin/late"), at(time.Minute)))
	if len(ids) != 1 {
		t.Fatal("no alert after the rate window")
	}
}

// TestGuardsAgreeWithCEL checks the native guards against plain CEL: for
// every built-in rule and every event of the replay corpus, guard+program
// must answer exactly what the CEL program alone answers.
func TestGuardsAgreeWithCEL(t *testing.T) {
	rs, err := LoadRules()
	if err != nil {
		t.Fatal(err)
	}
	fields := newFields()
	env, err := newCELEnv(fields)
	if err != nil {
		t.Fatal(err)
	}
	corpus := replayCorpus()
	exactRules := 0
	for _, r := range rs.Rules {
		if r.Condition == "" {
			continue
		}
		cr, err := compileRule(env, rs, fields, r)
		if err != nil {
			t.Fatalf("%s: %v", r.ID, err)
		}
		if cr.program == nil {
			exactRules++
		}
		text, _ := rs.expand(r.Condition)
		checked, iss := env.Compile(text)
		if iss.Err() != nil {
			t.Fatal(iss.Err())
		}
		plain, err := env.Program(checked)
		if err != nil {
			t.Fatal(err)
		}
		c := &evalContext{fields: fields, supervisors: map[uint32]bool{}}
		for i, ev := range corpus {
			c.reset(ev, ev.GetKind().ShortName())
			got, err := cr.matches(c)
			if err != nil {
				t.Fatalf("%s event %d: %v", r.ID, i, err)
			}
			c.reset(ev, ev.GetKind().ShortName())
			v, _, err := plain.Eval(c)
			if err != nil {
				t.Fatalf("%s event %d: plain CEL: %v", r.ID, i, err)
			}
			if want := v == types.True; got != want {
				t.Errorf("%s on event %d (%s %s): guarded %v, CEL %v", r.ID, i, ev.GetKind(), ev.GetProcess().GetArgs(), got, want)
			}
		}
	}
	t.Logf("%d rules answered natively without CEL", exactRules)
}

// replayCorpus is every event of the replay tests.
func replayCorpus() []*api.Event {
	evs := benchMix()
	for _, tc := range replayCases() {
		evs = append(evs, tc.events...)
	}
	return evs
}

func TestBaselineLearnsThenAlertsAndPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baselines.json")
	cfg := Config{Baseline: BaselineConfig{Path: path, LearningPeriod: confval.Duration(time.Hour)}}
	wl := func(ev *api.Event) { ev.Container = &api.Container{Id: "pod-1", Image: "shop/web:1.2"} }
	e := newTestEngine(t, cfg)
	ids, _ := run(e,
		execEv("/usr/sbin/nginx", []string{"nginx"}, wl),
		connectEv("/usr/sbin/nginx", "10.0.0.5", 5432, 0, wl, at(time.Minute)),
	)
	if slices.Contains(ids, "anomalous-process") || slices.Contains(ids, "anomalous-egress") {
		t.Fatalf("alerted while learning: %v", ids)
	}
	if err := e.Close(func(*api.Alert) {}); err != nil {
		t.Fatal(err)
	}
	// Restart: the baseline is read back, the learning period is over.
	e2 := newTestEngine(t, cfg)
	other := func(ev *api.Event) { ev.Container = &api.Container{Id: "pod-2", Image: "shop/web:1.2"} }
	ids, _ = run(e2,
		execEv("/usr/sbin/nginx", []string{"nginx"}, other, at(2*time.Hour)),
		connectEv("/usr/sbin/nginx", "10.0.0.9", 5432, 0, other, at(2*time.Hour)),
		execEv("/tmp/xmr", []string{"xmr"}, other, at(2*time.Hour)),
		connectEv("/tmp/xmr", "203.0.113.9", 14444, 0, other, at(2*time.Hour)),
	)
	if !slices.Contains(ids, "anomalous-process") || !slices.Contains(ids, "anomalous-egress") {
		t.Fatalf("want both anomalies after learning, got %v", ids)
	}
	n := 0
	for _, id := range ids {
		if strings.HasPrefix(id, "anomalous-") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("known executable or destination class alerted: %v", ids)
	}
}

func TestBaselineCorruptFileMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "baselines.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newTestEngine(t, Config{Baseline: BaselineConfig{Path: path}})
	if e == nil {
		t.Fatal("engine not built")
	}
	matches, _ := filepath.Glob(path + ".corrupt-*")
	if len(matches) != 1 {
		t.Fatalf("corrupt file not moved aside: %v", matches)
	}
}

func TestBaselineBounded(t *testing.T) {
	s, err := openBaselines(BaselineConfig{MaxWorkloads: 2, MaxEntries: 3, LearningPeriod: confval.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		s.observe([]byte("w"+itoa(i%4)), []byte("/bin/x"+itoa(i)), false, t0)
	}
	if len(s.workloads) != 2 || s.Untracked == 0 {
		t.Fatalf("workloads %d untracked %d", len(s.workloads), s.Untracked)
	}
	for k, w := range s.workloads {
		if len(w.Exes) > 3 {
			t.Fatalf("%s holds %d entries", k, len(w.Exes))
		}
	}
}

func TestRedaction(t *testing.T) {
	r := newRedactor()
	tests := []struct {
		in, want []string
	}{
		{[]string{"mysql", "--password=hunter2", "-h", "db"}, []string{"mysql", "--password=***", "-h", "db"}},
		{[]string{"app", "--token", "abc123", "--verbose"}, []string{"app", "--token", "***", "--verbose"}},
		{[]string{"curl", "-H", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"}, []string{"curl", "-H", "Authorization: Bearer ***"}},
		{[]string{"git", "clone", "https://bob:s3cret@git.example/x.git"}, []string{"git", "clone", "https://bob:***@git.example/x.git"}},
		{[]string{"env", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"}, []string{"env", "AWS_SECRET_ACCESS_KEY=***", "AWS_ACCESS_KEY_ID=***"}},
		{[]string{"aws", "s3", "ls", "--profile", "AKIAIOSFODNN7EXAMPLE"}, []string{"aws", "s3", "ls", "--profile", "***"}},
		{[]string{"ls", "-l", "/etc/keys"}, []string{"ls", "-l", "/etc/keys"}},
	}
	for _, tc := range tests {
		got, _ := r.redactArgs(tc.in)
		if !slices.Equal(got, tc.want) {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Copy-on-write: the shared process block is not modified.
	shared := &api.Process{Exe: "/usr/bin/mysql", Args: []string{"mysql", "-h", "db", "password=x"}}
	ev1 := &api.Event{Kind: api.EventKind_EVENT_KIND_EXEC, Process: shared}
	ev2 := &api.Event{Kind: api.EventKind_EVENT_KIND_EXIT, Process: shared}
	if !r.redactEvent(ev1) || !r.redactEvent(ev2) {
		t.Fatal("not redacted")
	}
	if shared.Args[3] != "password=x" || ev1.Process.Args[3] != "password=***" || ev1.Process != ev2.Process {
		t.Fatalf("shared %q, ev1 %q", shared.Args, ev1.Process.Args)
	}
}

func TestAlertCarriesContext(t *testing.T) {
	e := newTestEngine(t, Config{Cluster: "edge-1"})
	ev := openEv("/bin/cat", "/etc/shadow", false, inContainer("c1"), parents("/bin/sh", "/usr/sbin/nginx"))
	ev.Container.PodName, ev.Container.PodNamespace, ev.Container.WorkloadName = "web-0", "shop", "web"
	_, alerts := run(e, ev)
	if len(alerts) == 0 {
		t.Fatal("no alert")
	}
	a := alerts[0]
	if a.GetNode() != "node-a" || a.GetCluster() != "edge-1" || a.GetContainer().GetPodNamespace() != "shop" ||
		a.GetProcess().GetExe() != "/bin/cat" || len(a.GetAncestry()) != 2 || len(a.GetEvidence()) != 1 ||
		a.GetMitre()[0].GetTechniqueId() != "T1552.001" || a.GetRemediation() == "" || a.GetId() == "" {
		t.Fatalf("alert lacks context: %v", a)
	}
	// Reproducible from its evidence: replaying the evidence raises it again.
	ids, _ := run(newTestEngine(t, Config{}), a.GetEvidence()...)
	if !slices.Contains(ids, a.GetDetectionId()) {
		t.Fatal("evidence does not reproduce the alert")
	}
	f := ToFalco(a)
	if f.Rule != a.GetName() || f.Priority != "Error" || f.Hostname != "node-a" || f.OutputFields["fd.name"] != "/etc/shadow" ||
		f.OutputFields["k8s.ns.name"] != "shop" || !slices.Contains(f.Tags, "T1552.001") || !strings.Contains(f.Output, "cat opened /etc/shadow") {
		t.Fatalf("falco shape: %+v", f)
	}
}

func TestThresholdRule(t *testing.T) {
	p := writeRules(t, `
rules:
  - id: shadow-hammering
    name: Repeated failed reads of password hashes
    severity: medium
    kinds: [open]
    condition: file.path == "/etc/shadow" && failed
    threshold: {count: 5, window: 10s, by: [container.id]}
`)
	e := newTestEngine(t, Config{}, p)
	var evs []*api.Event
	for i := 0; i < 4; i++ { // four in one container, then a pause past the window
		evs = append(evs, openFail("/usr/bin/python3", "/etc/shadow", -13, inContainer("a"), at(time.Duration(i)*time.Second)))
	}
	for i := 0; i < 5; i++ { // five within the window
		evs = append(evs, openFail("/usr/bin/python3", "/etc/shadow", -13, inContainer("a"), at(time.Minute+time.Duration(i)*time.Second)))
		evs = append(evs, openFail("/usr/bin/python3", "/etc/shadow", -13, inContainer("b"), at(time.Minute+time.Duration(i)*time.Second)))
	}
	_, alerts := run(e, evs...)
	var got []*api.Alert
	for _, a := range alerts {
		if a.GetDetectionId() == "shadow-hammering" {
			got = append(got, a)
		}
	}
	if len(got) != 2 || len(got[0].GetEvidence()) != 5 || got[0].GetContainer().GetId() == got[1].GetContainer().GetId() {
		t.Fatalf("want one alert per container with 5 evidence events, got %d", len(got))
	}
	if _, err := LoadRules(writeRules(t, "rules:\n  - {id: x, name: X, severity: low, kinds: [open], condition: failed, threshold: {count: 1, window: 1s}}\n")); err == nil {
		t.Fatal("threshold count 1 accepted")
	}
}

func TestBaselineKnowsBusyboxApplets(t *testing.T) {
	e := newTestEngine(t, Config{Baseline: BaselineConfig{LearningPeriod: confval.Duration(time.Minute)}})
	ids, _ := run(e,
		execEv("/bin/busybox", []string{"httpd", "-f"}, inContainer("c1")),
		execEv("/bin/busybox", []string{"nc", "10.0.0.1", "80"}, inContainer("c1"), at(2*time.Minute)),
		execEv("/bin/busybox", []string{"httpd", "-f"}, inContainer("c1"), at(3*time.Minute)),
	)
	n := 0
	for _, id := range ids {
		if id == "anomalous-process" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("want one anomalous-process for the new applet, got %v", ids)
	}
}

func TestBaselineHostService(t *testing.T) {
	e := newTestEngine(t, Config{Baseline: BaselineConfig{LearningPeriod: confval.Duration(time.Minute)}})
	svc := func(cg string) evOpt { return func(ev *api.Event) { ev.Process.Cgroup = cg } }
	ids, _ := run(e,
		execEv("/usr/sbin/nginx", []string{"nginx"}, svc("/system.slice/nginx.service")),
		execEv("/usr/bin/curl", []string{"curl"}, svc("/system.slice/nginx.service"), at(2*time.Minute)),
		execEv("/usr/bin/curl", []string{"curl"}, svc("/user.slice/user-0.slice/session-4.scope"), at(2*time.Minute)),
	)
	if !slices.Equal(ids, []string{"anomalous-process"}) {
		t.Fatalf("want one anomaly, in the service only; got %v", ids)
	}
	if got := hostService(execEv("/bin/x", nil, svc("/system.slice/cron.service/sub"))); got != "cron.service" {
		t.Fatalf("hostService = %q", got)
	}
}

func TestDedupTellsBusyboxAppletsApart(t *testing.T) {
	e := newTestEngine(t, Config{})
	ids, _ := run(e,
		execEv("/bin/busybox", []string{"modprobe", "msr", "allow_writes=on"}, inContainer("c1"), parents("/bin/busybox")),
		execEv("/bin/busybox", []string{"sh", "-c", "echo 1 > /sys/module/msr/parameters/allow_writes"}, inContainer("c1"), parents("/bin/busybox")),
		execEv("/bin/busybox", []string{"modprobe", "msr", "allow_writes=on"}, inContainer("c1"), parents("/bin/busybox"), at(time.Second)),
	)
	n := 0
	for _, id := range ids {
		if id == "cpu-optimization" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("want two cpu-optimization alerts (modprobe, sh) and the repeat folded, got %v", ids)
	}
}

// TestNameIndex pins what the exec index derives from a condition: only a
// test every match must pass restricts the names, and the restriction is
// never stricter than the condition.
func TestNameIndex(t *testing.T) {
	fields := newFields()
	env, err := newCELEnv(fields)
	if err != nil {
		t.Fatal(err)
	}
	rs := newRuleSet()
	for _, tc := range []struct {
		cond, kind string
		want       string // "any", or the admitted names then prefixes
	}{
		{`proc.name in ["a", "b"] && proc.cmdline.contains("x")`, "exec", "a b"},
		{`proc.cmdline.contains("x") && proc.name == "a"`, "exec", "a"},
		{`proc.name == "a" || proc.cmdline.contains("x")`, "exec", "any"},
		{`!(proc.name in ["a"])`, "exec", "any"},
		{`proc.name == "a" || proc.name.startsWithAny(["py", "pe"])`, "exec", "a py* pe*"},
		{`(kind == "exec" && proc.name == "a") || (kind == "open" && file.path == "/x")`, "exec", "a"},
		{`(kind == "exec" && proc.name == "a") || (kind == "open" && file.path == "/x")`, "open", "any"},
		{`kind != "exec" && proc.name == "a"`, "exec", ""},
		{`in_container && (proc.name == "a" || (proc.name in ["b"] && failed))`, "exec", "a b"},
	} {
		k, err := api.ParseKind(tc.kind)
		if err != nil {
			t.Fatal(err)
		}
		cr, err := compileRule(env, rs, fields, &Rule{ID: "t", Kinds: []api.EventKind{k}, Condition: tc.cond})
		if err != nil {
			t.Fatalf("%s: %v", tc.cond, err)
		}
		req := cr.names[k]
		got := "any"
		if !req.any {
			var parts []string
			for n := range req.names {
				parts = append(parts, n)
			}
			slices.Sort(parts)
			for _, p := range req.prefixes {
				parts = append(parts, p+"*")
			}
			got = strings.Join(parts, " ")
		}
		if got != tc.want {
			t.Errorf("%s (%s): names %q, want %q", tc.cond, tc.kind, got, tc.want)
		}
	}
}

// TestBigramScreenNeverHidesASubstring: the screen may say "maybe" for an
// absent literal, never "absent" for a present one.
func TestBigramScreenNeverHidesASubstring(t *testing.T) {
	for _, s := range []string{"", "a", "gcc -O2 -c file.c", "curl --socks5 10.0.0.1:1080 http://x", "\xff\xfe\x00é—★ LD_PRELOAD=/tmp/x.so"} {
		var set bigramSet
		set.fill(s)
		for i := 0; i <= len(s); i++ {
			for j := i; j <= len(s); j++ {
				if !set.hasAll(bigramsOf(s[i:j])) {
					t.Fatalf("%q: screen hides %q", s, s[i:j])
				}
			}
		}
	}
	var set bigramSet
	set.fill("gcc -O2 -c file.c")
	if set.hasAll(bigramsOf("stratum+tcp://")) {
		t.Error("screen lets an absent literal through: it filters nothing")
	}
}
