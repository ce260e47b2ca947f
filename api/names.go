package api

import (
	"fmt"
	"strconv"
	"strings"
)

// Event kinds and severities as text: in configs, CLI flags, API query
// parameters, counters, rule files and plain JSON. Protobuf and protojson
// keep using the enum values and their EVENT_KIND_/SEVERITY_ names.
//
// A kind's name is its enum name, lower case and without the prefix
// (EVENT_KIND_FILE_OPEN: file_open). Some kinds also have a short name, the
// one rule files have always used (open); parsing accepts both, in any case,
// with or without the enum prefix, so every spelling that worked before
// still does.

// kindText is each kind's name and, where it differs, its short name.
func kindText(k EventKind) (name, short string) {
	switch k {
	case EventKind_EVENT_KIND_EXEC:
		return "exec", ""
	case EventKind_EVENT_KIND_EXIT:
		return "exit", ""
	case EventKind_EVENT_KIND_FORK:
		return "fork", ""
	case EventKind_EVENT_KIND_FILE_OPEN:
		return "file_open", "open"
	case EventKind_EVENT_KIND_FILE_UNLINK:
		return "file_unlink", "unlink"
	case EventKind_EVENT_KIND_FILE_RENAME:
		return "file_rename", "rename"
	case EventKind_EVENT_KIND_CONNECT:
		return "connect", ""
	case EventKind_EVENT_KIND_LISTEN:
		return "listen", ""
	case EventKind_EVENT_KIND_ACCEPT:
		return "accept", ""
	case EventKind_EVENT_KIND_PTRACE:
		return "ptrace", ""
	case EventKind_EVENT_KIND_MODULE_LOAD:
		return "module_load", ""
	case EventKind_EVENT_KIND_NAMESPACE_CHANGE:
		return "namespace_change", "namespace"
	case EventKind_EVENT_KIND_MEMFD_CREATE:
		return "memfd_create", "memfd"
	case EventKind_EVENT_KIND_CREDENTIAL_CHANGE:
		return "credential_change", "credential"
	case EventKind_EVENT_KIND_MOUNT:
		return "mount", ""
	case EventKind_EVENT_KIND_CHMOD:
		return "chmod", ""
	case EventKind_EVENT_KIND_SIGNAL:
		return "signal", ""
	case EventKind_EVENT_KIND_DNS_QUERY:
		return "dns_query", "dns"
	case EventKind_EVENT_KIND_AUDIT:
		return "audit", ""
	case EventKind_EVENT_KIND_ADMISSION:
		return "admission", ""
	case EventKind_EVENT_KIND_RESPONSE:
		return "response", ""
	case EventKind_EVENT_KIND_EXE_CONTENT:
		return "exe_content", ""
	case EventKind_EVENT_KIND_UNSPECIFIED:
		return "unspecified", ""
	}
	// A kind from a newer peer: its number, as protojson would print it.
	return strconv.Itoa(int(k)), ""
}

// Name is the kind's name: "exec", "file_open", ...
func (k EventKind) Name() string {
	name, _ := kindText(k)
	return name
}

// ShortName is the rule language's name for the kind ("open" for file_open):
// the value of the kind field in rule conditions and of Falco's evt.type. It
// is Name where the kind has no shorter one.
func (k EventKind) ShortName() string {
	name, short := kindText(k)
	if short != "" {
		return short
	}
	return name
}

// EventKinds lists every kind, in enum order, without UNSPECIFIED.
func EventKinds() []EventKind {
	kinds := make([]EventKind, 0, len(EventKind_name)-1)
	for v := range int32(len(EventKind_name)) {
		if k := EventKind(v); k != EventKind_EVENT_KIND_UNSPECIFIED {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// KindNames lists every kind's name, in enum order, for help and errors.
func KindNames() []string {
	var names []string
	for _, k := range EventKinds() {
		names = append(names, k.Name())
	}
	return names
}

// ParseKind reads a kind's name or short name, in any case, with or without
// the EVENT_KIND_ prefix.
func ParseKind(s string) (EventKind, error) {
	want := strings.ToLower(strings.TrimSpace(s))
	want = strings.TrimPrefix(want, "event_kind_")
	for _, k := range EventKinds() {
		if name, short := kindText(k); want == name || (short != "" && want == short) {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown event kind %q (want one of %s)", s, strings.Join(KindNames(), ", "))
}

// ParseKinds reads a list of kind names (a flag or config value) into a set.
// Empty names are skipped, so an empty list selects nothing.
func ParseKinds(names []string) (map[EventKind]bool, error) {
	kinds := map[EventKind]bool{}
	for _, n := range names {
		if strings.TrimSpace(n) == "" {
			continue
		}
		k, err := ParseKind(n)
		if err != nil {
			return nil, err
		}
		kinds[k] = true
	}
	return kinds, nil
}

// MarshalText writes the kind's name, so plain JSON, YAML and slog show
// "file_open" rather than a number.
func (k EventKind) MarshalText() ([]byte, error) { return []byte(k.Name()), nil }

// UnmarshalText reads what ParseKind reads.
func (k *EventKind) UnmarshalText(b []byte) error { return parseInto(k, ParseKind, b) }

// Severity names, lowest first. "unknown" is the zero value's name: shown for
// a severity that was never set, never accepted as input.
func severityText(s Severity) string {
	switch s {
	case Severity_SEVERITY_INFO:
		return "info"
	case Severity_SEVERITY_LOW:
		return "low"
	case Severity_SEVERITY_MEDIUM:
		return "medium"
	case Severity_SEVERITY_HIGH:
		return "high"
	case Severity_SEVERITY_CRITICAL:
		return "critical"
	case Severity_SEVERITY_UNSPECIFIED:
		return "unknown"
	}
	return strconv.Itoa(int(s))
}

// Name is the severity's name: "info", "low", "medium", "high", "critical".
func (s Severity) Name() string { return severityText(s) }

// Severities lists every severity, lowest first, without UNSPECIFIED.
func Severities() []Severity {
	return []Severity{Severity_SEVERITY_INFO, Severity_SEVERITY_LOW, Severity_SEVERITY_MEDIUM,
		Severity_SEVERITY_HIGH, Severity_SEVERITY_CRITICAL}
}

// SeverityNames lists every severity's name, lowest first.
func SeverityNames() []string {
	var names []string
	for _, s := range Severities() {
		names = append(names, s.Name())
	}
	return names
}

// ParseSeverity reads a severity's name in any case, with or without the
// SEVERITY_ prefix; "informational" is info.
func ParseSeverity(s string) (Severity, error) {
	want := strings.ToLower(strings.TrimSpace(s))
	want = strings.TrimPrefix(want, "severity_")
	if want == "informational" {
		return Severity_SEVERITY_INFO, nil
	}
	for _, sev := range Severities() {
		if want == sev.Name() {
			return sev, nil
		}
	}
	return 0, fmt.Errorf("unknown severity %q (want one of %s)", s, strings.Join(SeverityNames(), ", "))
}

// FalcoPriority is the severity as one of Falco's priorities, for the
// Falco-compatible outputs (harrier events --alerts, the exports' falco
// format); an unset severity is Debug.
func (s Severity) FalcoPriority() string {
	switch s {
	case Severity_SEVERITY_CRITICAL:
		return "Critical"
	case Severity_SEVERITY_HIGH:
		return "Error"
	case Severity_SEVERITY_MEDIUM:
		return "Warning"
	case Severity_SEVERITY_LOW:
		return "Notice"
	case Severity_SEVERITY_INFO:
		return "Informational"
	}
	return "Debug"
}

// MarshalText writes the severity's name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.Name()), nil }

// UnmarshalText reads what ParseSeverity reads.
func (s *Severity) UnmarshalText(b []byte) error { return parseInto(s, ParseSeverity, b) }

// parseInto sets *dst from text, leaving it as it was on an error.
func parseInto[T any](dst *T, parse func(string) (T, error), b []byte) error {
	v, err := parse(string(b))
	if err != nil {
		return err
	}
	*dst = v
	return nil
}
