package api

import (
	"encoding/json"
	"strings"
	"testing"
)

// Every kind's name is its enum name, so a kind added to event.proto without
// a name here fails.
func TestKindNamesFollowTheEnum(t *testing.T) {
	if got, want := len(EventKinds()), len(EventKind_name)-1; got != want {
		t.Fatalf("EventKinds has %d kinds, the enum %d", got, want)
	}
	for _, k := range EventKinds() {
		if want := strings.ToLower(strings.TrimPrefix(k.String(), "EVENT_KIND_")); k.Name() != want {
			t.Errorf("%v: name %q, want %q", k, k.Name(), want)
		}
	}
	for _, s := range Severities() {
		if want := strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_")); s.Name() != want {
			t.Errorf("%v: name %q, want %q", s, s.Name(), want)
		}
	}
	if got, want := len(Severities()), len(Severity_name)-1; got != want {
		t.Fatalf("Severities has %d, the enum %d", got, want)
	}
}

func TestKindText(t *testing.T) {
	tests := []struct {
		in   string
		want EventKind
	}{
		{"exec", EventKind_EVENT_KIND_EXEC},
		{"file_open", EventKind_EVENT_KIND_FILE_OPEN},
		{"open", EventKind_EVENT_KIND_FILE_OPEN}, // rule files' short name
		{"FILE_OPEN", EventKind_EVENT_KIND_FILE_OPEN},
		{" Connect ", EventKind_EVENT_KIND_CONNECT}, // flag lists split on commas keep spaces
		{"EVENT_KIND_DNS_QUERY", EventKind_EVENT_KIND_DNS_QUERY},
		{"event_kind_dns_query", EventKind_EVENT_KIND_DNS_QUERY},
		{"dns", EventKind_EVENT_KIND_DNS_QUERY},
		{"namespace", EventKind_EVENT_KIND_NAMESPACE_CHANGE},
		{"memfd", EventKind_EVENT_KIND_MEMFD_CREATE},
		{"credential", EventKind_EVENT_KIND_CREDENTIAL_CHANGE},
		{"unlink", EventKind_EVENT_KIND_FILE_UNLINK},
		{"rename", EventKind_EVENT_KIND_FILE_RENAME},
		{"audit", EventKind_EVENT_KIND_AUDIT},
		{"admission", EventKind_EVENT_KIND_ADMISSION},
	}
	for _, tt := range tests {
		got, err := ParseKind(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		var k EventKind
		if err := k.UnmarshalText([]byte(tt.in)); err != nil || k != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.in, k, err, tt.want)
		}
	}
	// Every kind round-trips through its name and its short name.
	for _, k := range EventKinds() {
		b, err := k.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{string(b), k.ShortName()} {
			if got, err := ParseKind(s); err != nil || got != k {
				t.Errorf("%v: ParseKind(%q) = %v, %v", k, s, got, err)
			}
		}
	}
	if got := EventKind_EVENT_KIND_FILE_OPEN.ShortName(); got != "open" {
		t.Errorf("file_open's short name %q, want open", got)
	}
	if got := EventKind_EVENT_KIND_EXEC.ShortName(); got != "exec" {
		t.Errorf("exec's short name %q, want exec", got)
	}
	if got := EventKind(99).Name(); got != "99" {
		t.Errorf("a kind from a newer peer is named %q, want its number", got)
	}
}

func TestKindTextErrors(t *testing.T) {
	for _, in := range []string{"", "unspecified", "EVENT_KIND_UNSPECIFIED", "opn", "4", "file-open"} {
		_, err := ParseKind(in)
		if err == nil {
			t.Errorf("ParseKind(%q) accepted", in)
			continue
		}
		// The error names the value and what would have been accepted.
		if msg := err.Error(); !strings.Contains(msg, `"`+in+`"`) || !strings.Contains(msg, "exec, exit, fork, file_open") ||
			!strings.Contains(msg, "audit") {
			t.Errorf("ParseKind(%q): error %q does not name the value and the kinds", in, msg)
		}
		var k EventKind
		if err := k.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", in)
		}
	}
}

func TestParseKinds(t *testing.T) {
	got, err := ParseKinds([]string{"exec", " open", "", "file_open", "DNS_QUERY"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[EventKind]bool{EventKind_EVENT_KIND_EXEC: true, EventKind_EVENT_KIND_FILE_OPEN: true, EventKind_EVENT_KIND_DNS_QUERY: true}
	if len(got) != len(want) {
		t.Errorf("ParseKinds = %v, want %v", got, want)
	}
	for k := range want {
		if !got[k] {
			t.Errorf("ParseKinds lacks %v", k)
		}
	}
	if got, err := ParseKinds(nil); err != nil || len(got) != 0 {
		t.Errorf("ParseKinds(nil) = %v, %v", got, err)
	}
	if _, err := ParseKinds([]string{"exec", "bogus"}); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
		t.Errorf("ParseKinds with an unknown name: %v", err)
	}
}

func TestSeverityText(t *testing.T) {
	tests := []struct {
		in   string
		want Severity
	}{
		{"info", Severity_SEVERITY_INFO},
		{"informational", Severity_SEVERITY_INFO},
		{"low", Severity_SEVERITY_LOW},
		{"Medium", Severity_SEVERITY_MEDIUM},
		{"HIGH", Severity_SEVERITY_HIGH},
		{"SEVERITY_HIGH", Severity_SEVERITY_HIGH},
		{"severity_critical", Severity_SEVERITY_CRITICAL},
		{" critical", Severity_SEVERITY_CRITICAL},
	}
	for _, tt := range tests {
		got, err := ParseSeverity(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSeverity(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		var s Severity
		if err := s.UnmarshalText([]byte(tt.in)); err != nil || s != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.in, s, err, tt.want)
		}
	}
	for _, s := range Severities() {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ParseSeverity(string(b)); err != nil || got != s {
			t.Errorf("%v: ParseSeverity(%q) = %v, %v", s, b, got, err)
		}
	}
	if got := Severity_SEVERITY_UNSPECIFIED.Name(); got != "unknown" {
		t.Errorf("the zero severity is named %q, want unknown", got)
	}
	if got := SeverityNames(); strings.Join(got, ",") != "info,low,medium,high,critical" {
		t.Errorf("SeverityNames = %v", got)
	}
}

func TestSeverityTextErrors(t *testing.T) {
	for _, in := range []string{"", "unknown", "unspecified", "SEVERITY_UNSPECIFIED", "hgh", "4", "warning"} {
		_, err := ParseSeverity(in)
		if err == nil {
			t.Errorf("ParseSeverity(%q) accepted", in)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, `"`+in+`"`) || !strings.Contains(msg, "info, low, medium, high, critical") {
			t.Errorf("ParseSeverity(%q): error %q does not name the value and the severities", in, msg)
		}
		var s Severity
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", in)
		}
	}
}

// Plain JSON shows names: a struct or map holding these types encodes them
// as text and decodes them back.
func TestNamesInJSON(t *testing.T) {
	type doc struct {
		Kind     EventKind         `json:"kind"`
		Severity Severity          `json:"severity"`
		Counts   map[EventKind]int `json:"counts"`
	}
	in := doc{Kind: EventKind_EVENT_KIND_FILE_OPEN, Severity: Severity_SEVERITY_HIGH,
		Counts: map[EventKind]int{EventKind_EVENT_KIND_EXEC: 2}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"kind":"file_open","severity":"high","counts":{"exec":2}}`; string(b) != want {
		t.Fatalf("json = %s, want %s", b, want)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Kind != in.Kind || out.Severity != in.Severity || out.Counts[EventKind_EVENT_KIND_EXEC] != 2 {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}
	if err := json.Unmarshal([]byte(`{"severity":"loud"}`), &out); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("unknown severity in JSON: %v", err)
	}
}
