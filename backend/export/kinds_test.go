package export

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// The OCSF schema's required attributes (github.com/ocsf/ocsf-schema):
// the base event and the finding class (events/findings/finding.json)
// require what ocsfRequired lists; compliance_finding.json adds
// compliance, whose object (objects/compliance.json) requires standards;
// vulnerability_finding.json adds vulnerabilities, each of which
// (objects/vulnerability.json) needs at least one of cve and cwe, and cve
// (objects/cve.json) requires uid.
var (
	ocsfComplianceRequired    = append(append([]string{}, ocsfRequired...), "compliance", "compliance.standards")
	ocsfVulnerabilityRequired = append(append([]string{}, ocsfRequired...), "vulnerabilities")
	// events/system/system.json requires actor and device,
	// process_activity.json process; the base event the rest.
	ocsfProcessActivityRequired = []string{
		"activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time",
		"metadata", "metadata.product", "metadata.version", "actor", "actor.process", "device", "process",
	}
)

func samplePostureFinding() *api.Finding {
	first := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	return &api.Finding{Id: "prod/pss-privileged/Deployment/shop/web/web", CheckId: "pss-privileged",
		Title: "Privileged container", Severity: api.Severity_SEVERITY_HIGH, Category: "pod-security",
		Object:    &api.ObjectRef{ApiVersion: "apps/v1", Kind: "Deployment", Namespace: "shop", Name: "web", Uid: "uid-9"},
		Container: "web", Detail: "securityContext.privileged: true", Remediation: "Drop privileged.",
		Standards: []string{"PSS baseline", "CIS 5.2.1"}, Cluster: "prod", Node: "node-a",
		FirstSeen: timestamppb.New(first), LastSeen: timestamppb.New(first.Add(time.Hour)), SnapshotId: "snap-7"}
}

func sampleVulnFinding() *api.Finding {
	at := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	return &api.Finding{Id: "prod/image-vulnerable/Deployment/shop/web/nginx:1.27", CheckId: VulnerabilityCheckID,
		Title: "Image with known vulnerabilities", Severity: api.Severity_SEVERITY_CRITICAL, Category: "images",
		Object:    &api.ObjectRef{Kind: "Deployment", Namespace: "shop", Name: "web"},
		Container: "nginx:1.27", Detail: "nginx:1.27: 1 critical, 2 high (CVE-2024-6387 in openssh 9.2; GHSA-abcd-efgh-ijkl in pkg 1.0; CVE-2023-44487 in nghttp2 1.52); report trivy.json",
		Remediation: "Update.", Cluster: "prod", Node: "node-a", FirstSeen: timestamppb.New(at), LastSeen: timestamppb.New(at)}
}

func checkOCSF(t *testing.T, b []byte, required []string, want map[string]any) map[string]any {
	t.Helper()
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	for _, attr := range required {
		if v, ok := lookup(f, attr); !ok || v == nil || v == "" {
			t.Errorf("required attribute %s missing", attr)
		}
	}
	for path, w := range want {
		if v, ok := lookup(f, path); !ok || v != w {
			t.Errorf("%s = %v (%T), want %v", path, v, v, w)
		}
	}
	return f
}

func TestOCSFComplianceFinding(t *testing.T) {
	f := samplePostureFinding()
	b, err := EncodeOCSFCompliance(f, time.Time{}, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	last := float64(f.GetLastSeen().AsTime().UnixMilli())
	out := checkOCSF(t, b, ocsfComplianceRequired, map[string]any{
		"class_uid": 2003.0, "class_name": "Compliance Finding", "category_uid": 2.0, "category_name": "Findings",
		"activity_id": 2.0, "activity_name": "Update", "type_uid": 200302.0, // first seen an hour before: an update
		"severity_id": 4.0, "severity": "High", "time": last, "end_time": last,
		"start_time": float64(f.GetFirstSeen().AsTime().UnixMilli()), "status_id": 1.0,
		"message":          "Privileged container: Deployment shop/web container web",
		"metadata.version": "1.3.0", "metadata.uid": f.GetId(), "metadata.product.name": "Harrier",
		"metadata.product.vendor_name": "Harrier", "metadata.product.version": "1.2.3", "metadata.correlation_uid": "snap-7",
		"finding_info.uid": f.GetId(), "finding_info.title": "Privileged container", "finding_info.desc": f.GetDetail(),
		"finding_info.analytic.uid": "pss-privileged", "compliance.control": "pss-privileged", "compliance.status_id": 3.0,
		"compliance.status": "Fail", "compliance.status_detail": f.GetDetail(), "remediation.desc": "Drop privileged.",
		"device.hostname": "node-a",
	})
	std, _ := lookup(out, "compliance.standards")
	if l, ok := std.([]any); !ok || len(l) != 2 || l[0] != "PSS baseline" || l[1] != "CIS 5.2.1" {
		t.Errorf("compliance.standards = %v", std)
	}
	res, _ := lookup(out, "resources")
	if l, ok := res.([]any); !ok || len(l) != 1 || l[0].(map[string]any)["name"] != "web" || l[0].(map[string]any)["namespace"] != "shop" ||
		l[0].(map[string]any)["type"] != "Deployment" || l[0].(map[string]any)["uid"] != "uid-9" {
		t.Errorf("resources = %v", res)
	}
	// A finding without a mapped standard still has the required list; a
	// finding evaluated the first time is a Create.
	f.Standards, f.LastSeen = nil, f.FirstSeen
	b, _ = EncodeOCSFCompliance(f, time.Time{}, "1.2.3")
	checkOCSF(t, b, ocsfComplianceRequired, map[string]any{"activity_id": 1.0, "type_uid": 200301.0})
	// Resolved: the control passes again; a Close at the time the snapshot
	// without it was stored, status Resolved.
	resolved := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	b, _ = encodeRecord(FormatOCSF, Record{Finding: f, Resolved: true, Stored: resolved}, "1.2.3")
	checkOCSF(t, b, ocsfComplianceRequired, map[string]any{"activity_id": 3.0, "activity_name": "Close", "type_uid": 200303.0,
		"status_id": 4.0, "status": "Resolved", "compliance.status_id": 1.0, "compliance.status": "Pass",
		"time": float64(resolved.UnixMilli())})
	b, _ = encodeRecord(FormatJSON, Record{Finding: f, Resolved: true, Stored: resolved}, "1.2.3")
	var j map[string]any
	if err := json.Unmarshal(b, &j); err != nil || j["resolved"] != true || j["id"] != f.GetId() {
		t.Errorf("resolved finding as Harrier JSON: %s %v", b, err)
	}
	b, _ = encodeRecord(FormatOCSF, Record{Finding: sampleVulnFinding(), Resolved: true, Stored: resolved}, "1.2.3")
	checkOCSF(t, b, ocsfVulnerabilityRequired, map[string]any{"class_uid": 2002.0, "activity_id": 3.0, "type_uid": 200203.0, "status_id": 4.0})
}

func TestOCSFVulnerabilityFinding(t *testing.T) {
	f := sampleVulnFinding()
	b, err := EncodeOCSFVulnerability(f, time.Time{}, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	out := checkOCSF(t, b, ocsfVulnerabilityRequired, map[string]any{
		"class_uid": 2002.0, "class_name": "Vulnerability Finding", "category_uid": 2.0, "activity_id": 1.0,
		"type_uid": 200201.0, "severity_id": 5.0, "severity": "Critical", "finding_info.uid": f.GetId(),
		"finding_info.analytic.uid": VulnerabilityCheckID, "metadata.product.name": "Harrier", "metadata.version": "1.3.0",
		"unmapped.image": "nginx:1.27",
	})
	vs, _ := lookup(out, "vulnerabilities")
	l, ok := vs.([]any)
	if !ok || len(l) != 3 {
		t.Fatalf("vulnerabilities = %v", vs)
	}
	for i, id := range []string{"CVE-2024-6387", "GHSA-abcd-efgh-ijkl", "CVE-2023-44487"} {
		v := l[i].(map[string]any)
		// objects/vulnerability.json: at least one of cve, cwe; cve.uid required.
		if cve, _ := v["cve"].(map[string]any); cve == nil || cve["uid"] != id {
			t.Errorf("vulnerabilities[%d].cve = %v, want uid %s", i, v["cve"], id)
		}
	}
	f.Detail = "nothing listed"
	if _, err := EncodeOCSFVulnerability(f, time.Time{}, "1"); err == nil || !strings.Contains(err.Error(), "no CVE or GHSA ID") {
		t.Errorf("a vulnerability finding without IDs: %v", err)
	}
}

// TestExportKinds sends alerts, posture findings, vulnerabilities and
// response records to one file, each kind through its own cursor, and
// checks the cursors survive a restart.
func TestExportKinds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	src := &memSource{}
	for i := range 5 {
		src.add(alertN(i))
	}
	pf := samplePostureFinding()
	src.addRecord(Record{Kind: KindFindings, Finding: pf})
	low := samplePostureFinding()
	low.Id, low.Severity = "low-one", api.Severity_SEVERITY_LOW
	src.addRecord(Record{Kind: KindFindings, Finding: low})
	src.addRecord(Record{Kind: KindVulnerabilities, Finding: sampleVulnFinding()})
	src.addRecord(Record{Kind: KindResponses, Response: &ResponseAction{ID: "cmd-1", AgentID: "node-a", Action: "kill-process",
		Target: json.RawMessage(`{"pid":42}`), RequestedBy: "analyst", Issued: time.Now().UTC(), State: "pending"}})
	kv := newMemKV()
	cfg := Config{Name: "all", Type: TypeFile, File: &FileConfig{Path: path},
		Filter: Filter{Kinds: []Kind{KindAlerts, KindFindings, KindVulnerabilities, KindResponses}, MinSeverity: "medium"}}
	m, err := New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].LagRecords == 0 && m.Status()[0].Sent > 0 })
	st := m.Status()[0]
	if len(st.Kinds) != 4 || st.Kinds[0].Cursor != 5 || st.Kinds[1].Cursor != 2 || st.Kinds[2].Cursor != 1 || st.Kinds[3].Cursor != 1 {
		t.Fatalf("kinds = %+v", st.Kinds)
	}
	if st.Sent != 5+1+1+1 || st.Skipped != 1 { // the low finding is filtered out
		t.Errorf("sent %d skipped %d", st.Sent, st.Skipped)
	}
	lines := readLines(t, path)
	if len(lines) != 8 {
		t.Fatalf("%d lines", len(lines))
	}
	var gotFinding api.Finding
	if err := protojson.Unmarshal([]byte(lines[5]), &gotFinding); err != nil || gotFinding.GetId() != pf.GetId() || gotFinding.GetDetail() != pf.GetDetail() {
		t.Errorf("finding line %s: %v", lines[5], err)
	}
	var resp ResponseAction
	if err := json.Unmarshal([]byte(lines[7]), &resp); err != nil || resp.ID != "cmd-1" || string(resp.Target) != `{"pid":42}` {
		t.Errorf("response line %s: %v", lines[7], err)
	}
	// More of one kind after a restart: only the new record is sent.
	src.addRecord(Record{Kind: KindResponses, Response: &ResponseAction{ID: "cmd-1", AgentID: "node-a", Action: "kill-process", State: "done"}})
	m, err = New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Kinds[3].Cursor == 2 })
	if lines := readLines(t, path); len(lines) != 9 || !strings.Contains(lines[8], `"state":"done"`) {
		t.Errorf("after restart: %d lines, last %q", len(lines), lines[len(lines)-1])
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestExportKindsConfig(t *testing.T) {
	for _, c := range []struct {
		format string
		kinds  []Kind
		want   string // "" valid
	}{
		{FormatJSON, []Kind{KindAlerts, KindFindings, KindVulnerabilities, KindResponses}, ""},
		{FormatOCSF, []Kind{KindFindings, KindVulnerabilities}, ""},
		{FormatCEF, []Kind{KindFindings}, ""},
		{FormatOCSF, []Kind{KindResponses}, "format ocsf cannot carry responses records"},
		{FormatFalco, []Kind{KindFindings}, "format falco cannot carry findings records (it carries alerts"},
		{FormatECS, []Kind{KindVulnerabilities}, "format ecs cannot carry vulnerabilities"},
		{FormatJSON, []Kind{KindEvents}, ""},
		{FormatOCSF, []Kind{KindEvents}, ""},
		{FormatFalco, []Kind{KindEvents}, "format falco cannot carry events records"},
		{FormatCEF, []Kind{KindEvents, KindResponses}, "format cef cannot carry events records"},
		{FormatJSON, []Kind{"audit"}, `"audit": must be alerts, findings`},
		{FormatJSON, []Kind{KindAlerts, KindAlerts}, "alerts is listed twice"},
	} {
		cfg := Config{Name: "x", Type: TypeFile, Format: c.format, File: &FileConfig{Path: "/tmp/x"}, Filter: Filter{Kinds: c.kinds}}
		err := cfg.Validate()
		if c.want == "" && err != nil {
			t.Errorf("%s %v: %v", c.format, c.kinds, err)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s %v: %v, want %q", c.format, c.kinds, err, c.want)
		}
	}
}

// FuzzEncodeFindings feeds hostile contents (newlines, NUL, '|', '=',
// invalid UTF-8, 64 KiB) to every field the finding encoders write: each
// OCSF output is one line of JSON with the finding's ID intact, each CEF
// record one line.
func FuzzEncodeFindings(f *testing.F) {
	for _, s := range hostileSeeds() {
		f.Add(s)
	}
	f.Add("CVE-2024-6387 in x|y=z\n\x00")
	f.Fuzz(func(t *testing.T, s string) {
		fd := samplePostureFinding()
		fd.Id, fd.CheckId, fd.Title, fd.Object.Namespace, fd.Object.Name, fd.Container = s, s, s, s, s, s
		fd.Detail, fd.Remediation, fd.Standards, fd.Cluster, fd.Node = s+" CVE-2024-6387", s, []string{s}, s, s
		for _, fn := range []func(*api.Finding, time.Time, string) ([]byte, error){EncodeOCSFCompliance, EncodeOCSFVulnerability} {
			b, err := fn(fd, time.Time{}, s)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil || strings.ContainsAny(string(b), "\n\r") {
				t.Fatalf("not one JSON line: %v", err)
			}
			if v, _ := lookup(m, "finding_info.uid"); v != string([]rune(s)) { // encoding/json: one U+FFFD per invalid byte
				t.Fatalf("finding_info.uid %q", v)
			}
		}
		for _, kind := range []Kind{KindFindings, KindVulnerabilities} {
			b, err := encodeRecord(FormatCEF, Record{Kind: kind, Finding: fd}, "v")
			if err != nil {
				t.Fatal(err)
			}
			if strings.ContainsAny(string(b), "\n\r\x00") {
				t.Fatalf("CEF not one line: %q", b)
			}
		}
	})
}

func sampleEvent() *api.Event {
	return &api.Event{Seq: 9, Time: timestamppb.New(time.Date(2026, 12, 6, 5, 31, 0, 0, time.UTC)), Node: "node-a",
		Kind: api.EventKind_EVENT_KIND_EXEC,
		Process: &api.Process{Pid: 4242, Tgid: 4242, Ppid: 4200, Uid: 33, Comm: "sh", Exe: "/bin/sh", Args: []string{"sh", "-c", "id"},
			Cwd: "/srv", StartTime: timestamppb.New(time.Date(2026, 12, 6, 5, 30, 59, 0, time.UTC))},
		Ancestry:  []*api.Ancestor{{Pid: 4200, Exe: "/usr/sbin/nginx", Args: []string{"nginx: worker"}, Uid: 33}},
		Container: &api.Container{Runtime: "containerd", Id: "0123abcd", Name: "web", Image: "nginx:1.27", PodName: "web-0", PodNamespace: "shop"},
		Detail:    &api.Event_Exec{Exec: &api.Exec{Filename: "/bin/sh"}}}
}

func TestOCSFProcessActivity(t *testing.T) {
	e := sampleEvent()
	b, err := EncodeOCSFProcessActivity(e, EventID(77), "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	checkOCSF(t, b, ocsfProcessActivityRequired, map[string]any{
		"class_uid": 1007.0, "class_name": "Process Activity", "category_uid": 1.0, "category_name": "System Activity",
		"activity_id": 1.0, "activity_name": "Launch", "type_uid": 100701.0, "severity_id": 1.0,
		"time": float64(e.GetTime().AsTime().UnixMilli()), "metadata.uid": "event-77", "metadata.version": "1.3.0",
		"metadata.product.name": "Harrier", "metadata.product.version": "1.2.3",
		"process.pid": 4242.0, "process.name": "sh", "process.cmd_line": "sh -c id", "process.file.path": "/bin/sh",
		"process.user.uid": "33", "process.parent_process.pid": 4200.0, "process.working_directory": "/srv",
		"process.created_time": float64(e.GetProcess().GetStartTime().AsTime().UnixMilli()),
		"actor.process.pid":    4200.0, "actor.process.file.path": "/usr/sbin/nginx", "actor.process.cmd_line": "nginx: worker",
		"device.hostname": "node-a", "device.container.uid": "0123abcd", "device.container.image.name": "nginx:1.27",
	})
	for _, c := range []struct {
		name   string
		detail any
		want   map[string]any
	}{
		{"exit", &api.Event_Exit{Exit: &api.Exit{Code: 3}}, map[string]any{"activity_id": 2.0, "type_uid": 100702.0, "exit_code": 3.0, "actor.process.pid": 4242.0}},
		{"fork", &api.Event_Fork{Fork: &api.Fork{ChildPid: 4250, ChildTgid: 4250}}, map[string]any{"activity_id": 1.0, "process.pid": 4250.0, "process.parent_process.pid": 4242.0, "actor.process.pid": 4242.0}},
		{"ptrace", &api.Event_Ptrace{Ptrace: &api.Ptrace{Request: 16, TargetPid: 1}}, map[string]any{"activity_id": 3.0, "activity_name": "Open", "process.pid": 1.0, "actor.process.pid": 4242.0}},
		{"setuid", &api.Event_CredentialChange{CredentialChange: &api.CredentialChange{Syscall: "setuid", Uid: 0}}, map[string]any{"activity_id": 5.0, "activity_name": "Set User ID", "unmapped.syscall": "setuid"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := sampleEvent()
			switch d := c.detail.(type) {
			case *api.Event_Exit:
				e.Detail = d
			case *api.Event_Fork:
				e.Detail = d
			case *api.Event_Ptrace:
				e.Detail = d
			case *api.Event_CredentialChange:
				e.Detail = d
			}
			b, err := EncodeOCSFProcessActivity(e, "event-1", "v")
			if err != nil {
				t.Fatal(err)
			}
			checkOCSF(t, b, ocsfProcessActivityRequired, c.want)
		})
	}
	// A file event is no process activity: not carried (skipped, counted).
	e.Detail = &api.Event_FileOpen{FileOpen: &api.FileOpen{Path: "/etc/shadow"}}
	if _, err := encodeRecord(FormatOCSF, Record{Seq: 1, Event: e}, "v"); !errors.Is(err, errNotCarried) {
		t.Errorf("file open as OCSF: %v, want errNotCarried", err)
	}
	if b, err := encodeRecord(FormatJSON, Record{Seq: 1, Event: e}, "v"); err != nil || !strings.Contains(string(b), `"path":"/etc/shadow"`) {
		t.Errorf("file open as Harrier JSON: %s %v", b, err)
	}
}

// TestExportEventsLostAndSkipped: a gap in the events' order (the ring
// dropped them) is counted as lost; events OCSF has no class for are
// skipped and counted.
func TestExportEventsLostAndSkipped(t *testing.T) {
	src := &memSource{}
	for i := range 10 {
		e := sampleEvent()
		if i%2 == 1 {
			e.Detail = &api.Event_FileOpen{FileOpen: &api.FileOpen{Path: "/tmp/x"}}
		}
		src.addRecord(Record{Kind: KindEvents, Event: e})
	}
	path := filepath.Join(t.TempDir(), "ev.jsonl")
	cfg := Config{Name: "ev", Type: TypeFile, Format: FormatOCSF, File: &FileConfig{Path: path}, BatchSize: 3,
		Filter: Filter{Kinds: []Kind{KindEvents}, MinSeverity: "critical"}} // severity does not apply to events
	kv := newMemKV()
	m, err := New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Cursor == 10 })
	if st := m.Status()[0]; st.Sent != 5 || st.Skipped != 5 || st.Lost != 0 {
		t.Errorf("sent %d skipped %d lost %d, want 5 5 0", st.Sent, st.Skipped, st.Lost)
	}
	// The ring drops records 11-14 before the export reads them.
	src.mu.Lock()
	for i := range 10 {
		e := sampleEvent()
		src.recs[KindEvents] = append(src.recs[KindEvents], Record{Seq: uint64(11 + i), Kind: KindEvents, Stored: time.Now(), Event: e})
	}
	src.recs[KindEvents] = append(src.recs[KindEvents][:10], src.recs[KindEvents][14:]...)
	src.mu.Unlock()
	m, err = New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Cursor == 20 })
	if st := m.Status()[0]; st.Sent != 6 || st.Lost != 4 {
		t.Errorf("after the gap: sent %d lost %d, want 6 4", st.Sent, st.Lost)
	}
	if lines := readLines(t, path); len(lines) != 11 {
		t.Errorf("%d lines, want 11", len(lines))
	}
}

// FuzzEncodeEvents feeds hostile contents to the event encoders (OCSF
// Process Activity, Harrier JSON): one line of JSON each, the command line
// intact.
func FuzzEncodeEvents(f *testing.F) {
	for _, s := range hostileSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := sampleEvent()
		e.Node, e.Process.Comm, e.Process.Exe, e.Process.Args, e.Process.Cwd = s, s, s, []string{s, s}, s
		e.Ancestry[0].Exe, e.Ancestry[0].Args = s, []string{s}
		e.Container.Id, e.Container.Image, e.Container.PodNamespace = s, s, s
		for _, format := range []string{FormatOCSF, FormatJSON} {
			b, err := encodeRecord(format, Record{Seq: 1, Event: e}, s)
			if err != nil && format == FormatJSON && !utf8.ValidString(s) {
				continue // protojson refuses invalid UTF-8 (a stored event cannot hold it: proto3 strings are checked on decode)
			}
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil || strings.ContainsAny(string(b), "\n\r") {
				t.Fatalf("%s: not one JSON line: %v", format, err)
			}
			if format == FormatOCSF {
				if v, _ := lookup(m, "process.cmd_line"); v != string([]rune(s+" "+s)) {
					t.Fatalf("process.cmd_line %q", v)
				}
			}
		}
	})
}

// TestExportTriageKind: the triage kind goes out whole as JSON (its alert
// by alert_id), a later change of the same alert again; formats without
// a shape for it refuse it in the config.
func TestExportTriageKind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "triage.jsonl")
	src := &memSource{}
	at := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	tr := AlertTriage{AlertID: "alert-1", State: "in_progress", Assignee: "ana", Updated: at, UpdatedBy: "ana",
		Comments: []TriageComment{{Time: at, User: "ana", Text: "looking <b>"}},
		History:  []TriageChange{{ID: "e1/state", Time: at, User: "ana", Field: "state", From: "new", To: "in_progress"}}}
	src.addRecord(Record{Kind: KindTriage, Triage: &tr})
	done := tr
	done.State = "resolved"
	src.addRecord(Record{Kind: KindTriage, Triage: &done})
	cfg := Config{Name: "triage", Type: TypeFile, File: &FileConfig{Path: path}, Filter: Filter{Kinds: []Kind{KindTriage}, MinSeverity: "critical"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := New([]Config{cfg}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Sent == 2 })
	lines := readLines(t, path)
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	var got AlertTriage
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil || got.AlertID != "alert-1" || got.Comments[0].Text != "looking <b>" || got.History[0].To != "in_progress" {
		t.Errorf("first line %s: %v", lines[0], err)
	}
	if !strings.Contains(lines[1], `"state":"resolved"`) {
		t.Errorf("second line %s", lines[1])
	}
	bad := Config{Name: "t", Type: TypeFile, Format: FormatCEF, File: &FileConfig{Path: path}, Filter: Filter{Kinds: []Kind{KindTriage}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "cannot carry triage") {
		t.Errorf("cef with triage: %v", err)
	}
}
