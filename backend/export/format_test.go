package export

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

func sampleAlert() *api.Alert {
	t0 := time.Date(2026, 12, 6, 5, 30, 0, 123456000, time.UTC)
	return &api.Alert{
		Id: "node-a-42", DetectionId: "sensitive-files", Name: "Sensitive file opened", Severity: api.Severity_SEVERITY_HIGH,
		Mitre:       []*api.Mitre{{Tactic: "Credential Access", TechniqueId: "T1552.001", Technique: "Credentials In Files"}},
		Description: "A process read /etc/shadow.", Remediation: "Find out why the process reads it.",
		FirstSeen: timestamppb.New(t0), LastSeen: timestamppb.New(t0.Add(time.Minute)), Count: 3,
		Node: "node-a", Cluster: "prod",
		Container: &api.Container{Runtime: "containerd", Id: "0123abcd", Name: "web", Image: "nginx:1.27", PodName: "web-0", PodNamespace: "shop", PodUid: "uid-1"},
		Process:   &api.Process{Tgid: 4242, Ppid: 1, Uid: 0, Comm: "cat", Exe: "/usr/bin/cat", Args: []string{"cat", "/etc/shadow"}},
		Summary:   "cat read /etc/shadow in shop/web-0",
	}
}

// hostileAlert fills every text field an encoder writes with s.
func hostileAlert(s string) *api.Alert {
	a := sampleAlert()
	a.Id, a.DetectionId, a.Name, a.Summary, a.Description = s, s, s, s, s
	a.Node, a.Cluster = s, s
	a.Container.PodNamespace, a.Container.PodName, a.Container.Id, a.Container.Image = s, s, s, s
	a.Process.Exe, a.Process.Args = s, []string{s, s}
	a.Mitre[0].TechniqueId = s
	return a
}

// The required attributes of an OCSF 1.x Detection Finding (class 2004),
// written from the public schema (github.com/ocsf/ocsf-schema):
// base_event and the classification/occurrence traits require activity_id,
// category_uid, class_uid, type_uid, severity_id, time and metadata;
// metadata requires product and version; finding requires finding_info,
// whose uid is required. detection_finding adds no required attribute of
// its own (evidences, resources, is_alert and confidence_id are
// recommended). The test also checks the recommended ones Harrier fills.
var ocsfRequired = []string{
	"activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time",
	"metadata", "metadata.product", "metadata.version",
	"finding_info", "finding_info.uid",
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func TestOCSFDetectionFinding(t *testing.T) {
	a := sampleAlert()
	b, err := EncodeOCSF(a, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for _, attr := range ocsfRequired {
		if v, ok := lookup(f, attr); !ok || v == nil || v == "" {
			t.Errorf("required attribute %s missing", attr)
		}
	}
	last := a.GetLastSeen().AsTime().UnixMilli()
	for _, c := range []struct {
		path string
		want any
	}{
		{"class_uid", 2004.0},
		{"class_name", "Detection Finding"},
		{"category_uid", 2.0},
		{"category_name", "Findings"},
		{"activity_id", 2.0}, // count 3: an update of the finding
		{"activity_name", "Update"},
		{"type_uid", 200402.0},
		{"severity_id", 4.0},
		{"severity", "High"},
		{"time", float64(last)},
		{"end_time", float64(last)},
		{"start_time", float64(a.GetFirstSeen().AsTime().UnixMilli())},
		{"status_id", 1.0},
		{"is_alert", true},
		{"message", a.GetSummary()},
		{"metadata.version", "1.3.0"},
		{"metadata.uid", a.GetId()},
		{"metadata.product.name", "Harrier"},
		{"metadata.product.vendor_name", "Harrier"},
		{"metadata.product.version", "1.2.3"},
		{"finding_info.uid", a.GetId()},
		{"finding_info.title", a.GetName()},
		{"finding_info.desc", a.GetDescription()},
		{"finding_info.analytic.uid", a.GetDetectionId()},
		{"device.hostname", "node-a"},
		{"device.container.uid", "0123abcd"},
		{"device.container.image.name", "nginx:1.27"},
		{"remediation.desc", a.GetRemediation()},
	} {
		v, ok := lookup(f, c.path)
		if !ok || v != c.want {
			t.Errorf("%s = %v (%T), want %v", c.path, v, v, c.want)
		}
	}
	attacks, _ := lookup(f, "finding_info.attacks")
	if l, ok := attacks.([]any); !ok || len(l) != 1 || l[0].(map[string]any)["technique"].(map[string]any)["uid"] != "T1552.001" {
		t.Errorf("finding_info.attacks = %v", attacks)
	}
	ev, _ := lookup(f, "evidences")
	if l, ok := ev.([]any); !ok || len(l) != 1 || l[0].(map[string]any)["process"].(map[string]any)["cmd_line"] != "cat /etc/shadow" {
		t.Errorf("evidences = %v", ev)
	}
	res, _ := lookup(f, "resources")
	if l, ok := res.([]any); !ok || len(l) != 1 || l[0].(map[string]any)["namespace"] != "shop" {
		t.Errorf("resources = %v", res)
	}
	// A first sighting is a Create.
	a.Count = 1
	b, _ = EncodeOCSF(a, "v")
	_ = json.Unmarshal(b, &f)
	if f["activity_id"] != 1.0 || f["type_uid"] != 200401.0 {
		t.Errorf("first sighting: activity %v type %v", f["activity_id"], f["type_uid"])
	}
}

func TestHarrierJSONRoundTrips(t *testing.T) {
	a := sampleAlert()
	b, err := encodeJSON(a, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(string(b), "\n\r") {
		t.Errorf("not one line: %s", b)
	}
	var back api.Alert
	if err := protojson.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(a, &back) {
		t.Errorf("round trip differs:\n%v\n%v", a, &back)
	}
}

func TestCEFEscaping(t *testing.T) {
	for _, c := range []struct{ name, in, header, value string }{
		{"plain", "abc", "abc", "abc"},
		{"pipe", "a|b", `a\|b`, "a|b"},
		{"backslash", `a\b`, `a\\b`, `a\\b`},
		{"equals", "a=b", "a=b", `a\=b`},
		{"newlines", "a\nb\rc", "a b c", `a\nb\rc`},
		{"nul and controls", "a\x00b\x1bc\x7f", "a b c ", "a b c "},
		{"invalid utf8", "a\xffb", "a\uFFFDb", "a\uFFFDb"},
		{"unicode", "日本|=", `日本\|=`, `日本|\=`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := cefHeader(c.in); got != c.header {
				t.Errorf("header %q, want %q", got, c.header)
			}
			if got := cefValue(c.in); got != c.value {
				t.Errorf("value %q, want %q", got, c.value)
			}
		})
	}
	got := EncodeCEF(sampleAlert(), "1.0")
	want := `CEF:0|Harrier|Harrier|1.0|sensitive-files|Sensitive file opened|8|externalId=node-a-42 rt=1796535060123 start=1796535000123 cnt=3 dvchost=node-a msg=cat read /etc/shadow in shop/web-0 dproc=/usr/bin/cat dpid=4242 duid=0 cs1Label=cluster cs1=prod cs2Label=namespace cs2=shop cs3Label=pod cs3=web-0 cs4Label=container cs4=0123abcd cs5Label=image cs5=nginx:1.27 cs6Label=cmdline cs6=cat /etc/shadow flexString1Label=mitre flexString1=T1552.001`
	if got != want {
		t.Errorf("CEF:\n got %s\nwant %s", got, want)
	}
}

// parseCEF splits a CEF line back into its 7 header fields and extension
// pairs, undoing the escapes, or fails.
func parseCEF(s string) ([]string, map[string][]string, error) {
	if strings.ContainsAny(s, "\n\r\x00") || !utf8.ValidString(s) {
		return nil, nil, fmt.Errorf("not one line of UTF-8: %q", s)
	}
	var header []string
	var cur strings.Builder
	i := 0
	for ; i < len(s) && len(header) < 7; i++ {
		switch s[i] {
		case '\\':
			if i+1 >= len(s) || (s[i+1] != '\\' && s[i+1] != '|') {
				return nil, nil, fmt.Errorf("bad header escape at %d", i)
			}
			cur.WriteByte(s[i+1])
			i++
		case '|':
			header = append(header, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if len(header) != 7 {
		return nil, nil, fmt.Errorf("%d header fields", len(header))
	}
	ext := s[i:]
	// Unescaped '=' only follows a key; a key starts after the last space
	// before it.
	var eqs []int
	for j := 0; j < len(ext); j++ {
		if ext[j] == '\\' {
			j++
			continue
		}
		if ext[j] == '=' {
			eqs = append(eqs, j)
		}
	}
	out := map[string][]string{}
	for n, eq := range eqs {
		start := strings.LastIndexByte(ext[:eq], ' ') + 1
		key := ext[start:eq]
		end := len(ext)
		if n+1 < len(eqs) {
			end = strings.LastIndexByte(ext[:eqs[n+1]], ' ')
		}
		v, err := unescapeCEFValue(ext[eq+1 : end])
		if err != nil {
			return nil, nil, err
		}
		out[key] = append(out[key], v)
	}
	return header, out, nil
}

func unescapeCEFValue(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("dangling backslash in %q", s)
		}
		i++
		switch s[i] {
		case '\\', '=':
			b.WriteByte(s[i])
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", fmt.Errorf("bad escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

// sanitized is what a text field becomes once encoded and decoded: valid
// UTF-8, control characters other than CR and LF as spaces.
func sanitized(s string, keepCRLF bool) string {
	return strings.Map(func(r rune) rune {
		if (r == '\n' || r == '\r') && keepCRLF {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

func checkCEF(t *testing.T, s string) {
	a := hostileAlert(s)
	line := EncodeCEF(a, "v|1")
	header, ext, err := parseCEF(line)
	if err != nil {
		t.Fatalf("%v\n%q", err, line)
	}
	wantHeader := []string{"CEF:0", "Harrier", "Harrier", "v|1", sanitized(s, false), sanitized(firstNonEmpty(s, s), false), "8"}
	if s == "" {
		wantHeader[5] = ""
	}
	for i := range wantHeader {
		if header[i] != wantHeader[i] {
			t.Fatalf("header field %d = %q, want %q\n%q", i, header[i], wantHeader[i], line)
		}
	}
	if s == "" {
		return
	}
	for _, k := range []string{"externalId", "dvchost", "msg", "cs1", "cs2", "cs3", "cs4", "cs5", "dproc"} {
		if got := ext[k]; len(got) != 1 || got[0] != sanitized(s, true) {
			t.Fatalf("%s = %q, want %q\n%q", k, got, sanitized(s, true), line)
		}
	}
	if got := ext["cs6"]; len(got) != 1 || got[0] != sanitized(s+" "+s, true) {
		t.Fatalf("cs6 = %q", got)
	}
}

func hostileSeeds() []string {
	return []string{"", "plain", "a|b=c\\d", "line\nbreak\r\n", "nul\x00byte", "]\"\\", "a =b", "x\\", "=", "|", "\xff\xfe",
		strings.Repeat("A", 64<<10), strings.Repeat("=|\\\n", 1000)}
}

func FuzzEncodeCEF(f *testing.F) {
	for _, s := range hostileSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkCEF(t, s) })
}

func TestCEFHostile(t *testing.T) {
	for _, s := range hostileSeeds() {
		checkCEF(t, s)
	}
}

// parseRFC5424 checks one message's grammar (RFC 5424 section 6) and
// returns its SD-PARAMs (unescaped) and MSG.
func parseRFC5424(b []byte) (map[string]string, []byte, error) {
	s := string(b)
	if !strings.HasPrefix(s, "<") {
		return nil, nil, fmt.Errorf("no PRI")
	}
	end := strings.IndexByte(s, '>')
	if end < 2 || end > 4 {
		return nil, nil, fmt.Errorf("bad PRI")
	}
	if pri, err := strconv.Atoi(s[1:end]); err != nil || pri < 0 || pri > 191 {
		return nil, nil, fmt.Errorf("bad PRI %q", s[1:end])
	}
	rest := s[end+1:]
	fields := strings.SplitN(rest, " ", 7)
	if len(fields) != 7 || fields[0] != "1" {
		return nil, nil, fmt.Errorf("header: %q", rest[:min(len(rest), 200)])
	}
	if _, err := time.Parse(time.RFC3339Nano, fields[1]); err != nil && fields[1] != "-" {
		return nil, nil, fmt.Errorf("timestamp %q", fields[1])
	}
	for i, max := range []int{0, 0, maxHostname, maxAppName, 128, maxMsgID} {
		if i < 2 {
			continue
		}
		if !printASCII(fields[i], max) || fields[i] == "" {
			return nil, nil, fmt.Errorf("header field %d %q", i, fields[i])
		}
	}
	sd := fields[6]
	if !strings.HasPrefix(sd, "["+sdID) {
		return nil, nil, fmt.Errorf("SD %q", sd[:min(len(sd), 100)])
	}
	i := len(sdID) + 1
	params := map[string]string{}
	for {
		if i >= len(sd) {
			return nil, nil, fmt.Errorf("unterminated SD")
		}
		if sd[i] == ']' {
			i++
			break
		}
		if sd[i] != ' ' {
			return nil, nil, fmt.Errorf("SD: want space at %d", i)
		}
		i++
		eq := strings.Index(sd[i:], `="`)
		if eq < 1 || eq > 32 {
			return nil, nil, fmt.Errorf("SD param name")
		}
		name := sd[i : i+eq]
		if strings.ContainsAny(name, "= ]\"") || !printASCII(name, 32) {
			return nil, nil, fmt.Errorf("SD param name %q", name)
		}
		i += eq + 2
		var v strings.Builder
		for ; ; i++ {
			if i >= len(sd) {
				return nil, nil, fmt.Errorf("unterminated param value")
			}
			c := sd[i]
			if c == '\\' && i+1 < len(sd) && strings.IndexByte(`"\]`, sd[i+1]) >= 0 {
				v.WriteByte(sd[i+1])
				i++
				continue
			}
			if c == '"' {
				i++
				break
			}
			if c == ']' {
				return nil, nil, fmt.Errorf("unescaped ] in value")
			}
			v.WriteByte(c)
		}
		if !utf8.ValidString(v.String()) {
			return nil, nil, fmt.Errorf("param value not UTF-8")
		}
		params[name] = v.String()
	}
	if i >= len(sd) || sd[i] != ' ' {
		return nil, nil, fmt.Errorf("no space before MSG")
	}
	return params, []byte(sd[i+1:]), nil
}

func checkRFC5424(t *testing.T, s string, body []byte) {
	a := hostileAlert(s)
	msg := AppendRFC5424(nil, syslogHeader{facility: 13, hostname: "backend", appName: "harrier"}, a, body)
	params, gotBody, err := parseRFC5424(msg)
	if err != nil {
		t.Fatalf("%v\n%q", err, msg[:min(len(msg), 500)])
	}
	if string(gotBody) != string(body) {
		t.Fatalf("MSG changed")
	}
	want := strings.ToValidUTF8(s, "\uFFFD")
	if s != "" && (params["id"] != want || params["namespace"] != want) {
		t.Fatalf("SD params %q, want id and namespace %q", params, want)
	}
	framed := appendOctetCounted(nil, msg)
	sp := strings.IndexByte(string(framed), ' ')
	if n, err := strconv.Atoi(string(framed[:sp])); err != nil || n != len(msg) || string(framed[sp+1:]) != string(msg) {
		t.Fatalf("octet counting frame %q", framed[:min(len(framed), 40)])
	}
}

func FuzzEncodeRFC5424(f *testing.F) {
	for _, s := range hostileSeeds() {
		f.Add(s, []byte(s))
	}
	f.Fuzz(func(t *testing.T, s string, body []byte) { checkRFC5424(t, s, body) })
}

func TestRFC5424(t *testing.T) {
	for _, s := range hostileSeeds() {
		checkRFC5424(t, s, []byte("CEF:0|x"))
	}
	a := sampleAlert()
	got := string(AppendRFC5424(nil, syslogHeader{facility: 13, hostname: "b", appName: "harrier"}, a, []byte("hello")))
	want := `<107>1 2026-12-06T05:31:00.123456Z node-a harrier - sensitive-files [harrier@32473 id="node-a-42" detection="sensitive-files" severity="high" cluster="prod" namespace="shop"] hello`
	if got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}

func FuzzEncodeOCSF(f *testing.F) {
	for _, s := range hostileSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := EncodeOCSF(hostileAlert(s), s)
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
	})
}
