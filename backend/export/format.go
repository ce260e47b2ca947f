package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
)

// Product names every format carries.
const (
	productVendor = "Harrier"
	productName   = "Harrier"
)

// encoder turns one alert into the bytes of one record. version is the
// product version written into OCSF metadata and the CEF header.
type encoder func(a *api.Alert, version string) ([]byte, error)

func encoderFor(format string) (encoder, error) {
	switch format {
	case FormatJSON, "":
		return encodeJSON, nil
	case FormatOCSF:
		return EncodeOCSF, nil
	case FormatCEF:
		return func(a *api.Alert, v string) ([]byte, error) { return []byte(EncodeCEF(a, v)), nil }, nil
	case FormatFalco:
		return EncodeFalco, nil
	case FormatECS:
		return EncodeECS, nil
	}
	return nil, fmt.Errorf("format %q: must be %s", format, formatList)
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: false, EmitUnpopulated: false}

// encodeJSON is Harrier JSON: the protojson of the alert, on one line.
func encodeJSON(a *api.Alert, _ string) ([]byte, error) {
	b, err := jsonOpts.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("harrier json: %w", err)
	}
	return compactJSON(b)
}

// compactJSON removes the random spaces protojson may add, so each record
// is one line.
func compactJSON(b []byte) ([]byte, error) {
	var dst bytes.Buffer
	dst.Grow(len(b))
	if err := json.Compact(&dst, b); err != nil {
		return nil, fmt.Errorf("compact json: %w", err)
	}
	return dst.Bytes(), nil
}

// OCSF Detection Finding constants (schema 1.x: class 2004 in category 2,
// Findings; type_uid = class_uid*100 + activity_id).
const (
	ocsfVersion         = "1.3.0"
	ocsfClassUID        = 2004
	ocsfCategoryUID     = 2
	ocsfActivityCreate  = 1
	ocsfActivityUpdate  = 2
	ocsfStatusNew       = 1
	ocsfSeverityUnknown = 0
)

// EncodeOCSF writes the alert as an OCSF 1.x Detection Finding. An alert
// seen more than once is an Update (activity 2) of the finding whose uid is
// the alert ID.
func EncodeOCSF(a *api.Alert, version string) ([]byte, error) {
	activity, activityName := ocsfActivityCreate, "Create"
	if a.GetCount() > 1 {
		activity, activityName = ocsfActivityUpdate, "Update"
	}
	sevID := int(a.GetSeverity()) // api severities 1..5 are OCSF's 1..5
	if sevID < 0 || sevID > 5 {
		sevID = ocsfSeverityUnknown
	}
	first, last := a.GetFirstSeen().AsTime(), a.GetLastSeen().AsTime()
	if a.GetLastSeen() == nil {
		last = first
	}
	f := map[string]any{
		"activity_id":   activity,
		"activity_name": activityName,
		"category_uid":  ocsfCategoryUID,
		"category_name": "Findings",
		"class_uid":     ocsfClassUID,
		"class_name":    "Detection Finding",
		"type_uid":      ocsfClassUID*100 + activity,
		"type_name":     "Detection Finding: " + activityName,
		"severity_id":   sevID,
		"severity":      ocsfSeverityName(sevID),
		"time":          last.UnixMilli(),
		"start_time":    first.UnixMilli(),
		"end_time":      last.UnixMilli(),
		"count":         a.GetCount(),
		"status_id":     ocsfStatusNew,
		"status":        "New",
		"is_alert":      true,
		"message":       firstNonEmpty(a.GetSummary(), a.GetName()),
		"metadata": map[string]any{
			"version":         ocsfVersion,
			"uid":             a.GetId(),
			"correlation_uid": a.GetId(),
			"product": map[string]any{
				"name":        productName,
				"vendor_name": productVendor,
				"version":     version,
			},
			"log_name": "alerts",
		},
		"finding_info": ocsfFindingInfo(a, first, last),
	}
	if r := a.GetRemediation(); r != "" {
		f["remediation"] = map[string]any{"desc": r}
	}
	if dev := ocsfDevice(a); dev != nil {
		f["device"] = dev
	}
	if p := a.GetProcess(); p != nil {
		f["evidences"] = []any{map[string]any{"process": ocsfProcess(p)}}
	}
	if c := a.GetContainer(); c.GetId() != "" || c.GetPodName() != "" {
		f["resources"] = []any{ocsfResource(a)}
	}
	if len(a.GetTags()) > 0 {
		f["unmapped"] = map[string]any{"tags": a.GetTags()}
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("ocsf: %w", err)
	}
	return b, nil
}

func ocsfFindingInfo(a *api.Alert, first, last time.Time) map[string]any {
	fi := map[string]any{
		"uid":             a.GetId(),
		"title":           firstNonEmpty(a.GetName(), a.GetDetectionId()),
		"first_seen_time": first.UnixMilli(),
		"last_seen_time":  last.UnixMilli(),
		"types":           []string{a.GetDetectionId()},
		"analytic": map[string]any{
			"uid":     a.GetDetectionId(),
			"name":    a.GetName(),
			"type_id": 1, // Rule
			"type":    "Rule",
		},
	}
	if d := a.GetDescription(); d != "" {
		fi["desc"] = d
	}
	var attacks []any
	for _, m := range a.GetMitre() {
		at := map[string]any{"technique": map[string]any{"uid": m.GetTechniqueId(), "name": m.GetTechnique()}}
		if m.GetTactic() != "" {
			at["tactic"] = map[string]any{"name": m.GetTactic()}
		}
		attacks = append(attacks, at)
	}
	if len(attacks) > 0 {
		fi["attacks"] = attacks
	}
	return fi
}

func ocsfDevice(a *api.Alert) map[string]any {
	if a.GetNode() == "" {
		return nil
	}
	d := map[string]any{"hostname": a.GetNode(), "name": a.GetNode(), "type_id": 0, "type": "Unknown"}
	if c := a.GetContainer(); c.GetId() != "" {
		d["container"] = ocsfContainer(c)
	}
	return d
}

func ocsfContainer(c *api.Container) map[string]any {
	m := map[string]any{"uid": c.GetId(), "name": c.GetName(), "runtime": c.GetRuntime()}
	if c.GetImage() != "" {
		img := map[string]any{"name": c.GetImage()}
		if c.GetImageDigest() != "" {
			img["uid"] = c.GetImageDigest()
		}
		m["image"] = img
	}
	return m
}

func ocsfProcess(p *api.Process) map[string]any {
	m := map[string]any{
		"pid":      p.GetTgid(),
		"name":     p.GetComm(),
		"cmd_line": strings.Join(p.GetArgs(), " "),
		"user":     map[string]any{"uid": strconv.FormatUint(uint64(p.GetUid()), 10)},
	}
	if p.GetExe() != "" {
		m["file"] = map[string]any{"path": p.GetExe(), "name": baseName(p.GetExe()), "type_id": 1}
	}
	if p.GetPpid() != 0 {
		m["parent_process"] = map[string]any{"pid": p.GetPpid()}
	}
	return m
}

func ocsfResource(a *api.Alert) map[string]any {
	c := a.GetContainer()
	r := map[string]any{"type": "Pod", "uid": c.GetPodUid(), "name": c.GetPodName(), "namespace": c.GetPodNamespace()}
	if c.GetPodName() == "" {
		r = map[string]any{"type": "Container", "uid": c.GetId(), "name": c.GetName()}
	}
	if a.GetCluster() != "" {
		r["group"] = map[string]any{"name": a.GetCluster()}
	}
	return r
}

func ocsfSeverityName(id int) string {
	return [...]string{"Unknown", "Informational", "Low", "Medium", "High", "Critical", "Fatal"}[id]
}

// CEF. Header fields escape '\' and '|' and may not hold line breaks;
// extension values escape '\' and '=' and write CR and LF as \r and \n.
// Other control characters (NUL included) become spaces and invalid UTF-8
// the replacement character, so the output is one line of valid UTF-8.

// EncodeCEF writes the alert as one CEF:0 line (no trailing newline).
func EncodeCEF(a *api.Alert, version string) string {
	var b strings.Builder
	b.WriteString("CEF:0|")
	for _, h := range []string{productVendor, productName, version, a.GetDetectionId(), firstNonEmpty(a.GetName(), a.GetDetectionId())} {
		b.WriteString(cefHeader(h))
		b.WriteByte('|')
	}
	b.WriteString(strconv.Itoa(cefSeverity(a.GetSeverity())))
	b.WriteByte('|')
	first := true
	ext := func(k, v string) {
		if v == "" {
			return
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(cefValue(v))
	}
	p, c := a.GetProcess(), a.GetContainer()
	ext("externalId", a.GetId())
	ext("rt", strconv.FormatInt(a.GetLastSeen().AsTime().UnixMilli(), 10))
	ext("start", strconv.FormatInt(a.GetFirstSeen().AsTime().UnixMilli(), 10))
	ext("cnt", strconv.FormatUint(a.GetCount(), 10))
	ext("dvchost", a.GetNode())
	ext("msg", firstNonEmpty(a.GetSummary(), a.GetDescription()))
	if p != nil {
		ext("dproc", p.GetExe())
		ext("dpid", strconv.FormatUint(uint64(p.GetTgid()), 10))
		ext("duid", strconv.FormatUint(uint64(p.GetUid()), 10))
	}
	// A custom string goes with its label, both left out when empty.
	custom := func(k, label, v string) {
		if v != "" {
			ext(k+"Label", label)
			ext(k, v)
		}
	}
	custom("cs1", "cluster", a.GetCluster())
	custom("cs2", "namespace", c.GetPodNamespace())
	custom("cs3", "pod", c.GetPodName())
	custom("cs4", "container", c.GetId())
	custom("cs5", "image", c.GetImage())
	if p != nil {
		ext("cs6Label", "cmdline")
		ext("cs6", strings.Join(p.GetArgs(), " "))
	}
	if len(a.GetMitre()) > 0 {
		ids := make([]string, 0, len(a.GetMitre()))
		for _, m := range a.GetMitre() {
			ids = append(ids, m.GetTechniqueId())
		}
		ext("flexString1Label", "mitre")
		ext("flexString1", strings.Join(ids, ","))
	}
	return b.String()
}

// cefSeverity maps Harrier's severities onto CEF's 0-10.
func cefSeverity(s api.Severity) int {
	switch s {
	case api.Severity_SEVERITY_INFO:
		return 1
	case api.Severity_SEVERITY_LOW:
		return 3
	case api.Severity_SEVERITY_MEDIUM:
		return 5
	case api.Severity_SEVERITY_HIGH:
		return 8
	case api.Severity_SEVERITY_CRITICAL:
		return 10
	}
	return 0
}

func cefHeader(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\\' || r == '|':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func cefValue(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\\' || r == '=':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
