package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// Kind is a kind of record an export sends; each kind has its own ingest
// order in the store and its own cursor per destination.
type Kind string

// The record kinds.
const (
	// KindAlerts are detections' alerts (api.Alert).
	KindAlerts Kind = "alerts"
	// KindFindings are posture results (api.Finding) other than image
	// vulnerabilities, sent when a snapshot makes them new or changed.
	KindFindings Kind = "findings"
	// KindVulnerabilities are the image-vulnerable posture findings.
	KindVulnerabilities Kind = "vulnerabilities"
	// KindResponses are response action records: each request and each
	// agent's answer.
	KindResponses Kind = "responses"
	// KindEvents are the raw events the backend stores (its event ring):
	// an export that falls behind the ring loses the oldest, counted.
	KindEvents Kind = "events"
	// KindTriage are analysts' triage of alerts (AlertTriage): the whole
	// triage of an alert again with each change.
	KindTriage Kind = "triage"
)

// Kinds lists every kind, in the order an export reads them.
var Kinds = []Kind{KindAlerts, KindFindings, KindVulnerabilities, KindResponses, KindEvents, KindTriage}

const kindList = "alerts, findings, vulnerabilities, responses, events or triage"

// VulnerabilityCheckID is the posture check whose findings are the
// vulnerabilities kind (backend.VulnCheckID).
const VulnerabilityCheckID = "image-vulnerable"

// KindOfFinding is the kind a posture finding is exported as.
func KindOfFinding(f *api.Finding) Kind {
	if f.GetCheckId() == VulnerabilityCheckID {
		return KindVulnerabilities
	}
	return KindFindings
}

// formatKinds is what each format can carry. Falco's and ECS's shapes are
// alerts; OCSF has no class Harrier fills for response records yet.
// OCSF carries the process events of the events kind (Process Activity);
// the others are skipped, counted (errNotCarried).
var formatKinds = map[string][]Kind{
	FormatJSON:  {KindAlerts, KindFindings, KindVulnerabilities, KindResponses, KindEvents, KindTriage},
	FormatOCSF:  {KindAlerts, KindFindings, KindVulnerabilities, KindEvents},
	FormatCEF:   {KindAlerts, KindFindings, KindVulnerabilities},
	FormatFalco: {KindAlerts},
	FormatECS:   {KindAlerts},
}

// ResponseAction is one response action record as exported: the request
// an analyst or a policy made and, once it came, the agent's answer. The
// same ID is sent again with each change of state.
type ResponseAction struct {
	ID          string          `json:"id"`
	AgentID     string          `json:"agent_id"`
	Action      string          `json:"action"`
	Target      json.RawMessage `json:"target"` // as GET /api/v1/response/commands shows it
	AlertID     string          `json:"alert_id,omitempty"`
	RequestedBy string          `json:"requested_by"`
	Reason      string          `json:"reason,omitempty"`
	Issued      time.Time       `json:"issued"`
	Expires     time.Time       `json:"expires"`
	State       string          `json:"state"`
	Answered    *time.Time      `json:"answered,omitempty"`
	Error       string          `json:"error,omitempty"`
	PIDs        []uint32        `json:"pids,omitempty"`
	TargetText  string          `json:"target_text,omitempty"`
	LatencyMS   float64         `json:"latency_ms,omitempty"`
}

// AlertTriage is an alert's triage: its state, assignee, comments and
// the history of who changed what. The backend stores it in this form and
// exports it whole, with the alert's ID, after each change (kind triage);
// a consumer joins it to the alert by alert_id.
type AlertTriage struct {
	AlertID   string          `json:"alert_id"`
	State     string          `json:"state"`
	Assignee  string          `json:"assignee,omitempty"`
	Updated   time.Time       `json:"updated"`
	UpdatedBy string          `json:"updated_by"`
	Comments  []TriageComment `json:"comments,omitempty"`
	History   []TriageChange  `json:"history,omitempty"`
}

// TriageComment is an analyst's note on an alert.
type TriageComment struct {
	Time time.Time `json:"time"`
	User string    `json:"user"`
	Text string    `json:"text"`
}

// TriageChange is one change of a triage field (state, assignee,
// comment): ID is the edit's, so an edit applied twice is one change.
type TriageChange struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	User  string    `json:"user"`
	Field string    `json:"field"`
	From  string    `json:"from,omitempty"`
	To    string    `json:"to"`
}

// head is a record's header fields in alert form: what sinks put in their
// envelopes (syslog structured data, HEC fields, OTLP attributes, Kafka
// headers, the webhook's event ID header, the _bulk _id) and what filters
// look at. For an alert it is the alert itself.
func (r Record) head() *api.Alert {
	switch {
	case r.Alert != nil:
		return r.Alert
	case r.Finding != nil:
		f := r.Finding
		h := &api.Alert{Id: f.GetId(), DetectionId: f.GetCheckId(), Name: f.GetTitle(), Severity: f.GetSeverity(),
			Description: f.GetDetail(), Remediation: f.GetRemediation(), FirstSeen: f.GetFirstSeen(),
			LastSeen: f.GetLastSeen(), Count: 1, Node: f.GetNode(), Cluster: f.GetCluster(),
			Summary: findingSummary(f)}
		if r.Resolved {
			h.Summary = "Resolved: " + h.Summary
		}
		if o := f.GetObject(); o.GetNamespace() != "" || o.GetKind() == "Pod" {
			h.Container = &api.Container{PodNamespace: o.GetNamespace()}
			if o.GetKind() == "Pod" {
				h.Container.PodName, h.Container.PodUid = o.GetName(), o.GetUid()
			}
		}
		return h
	case r.Event != nil:
		e := r.Event
		return &api.Alert{Id: EventID(r.Seq), DetectionId: "event-" + eventKindName(e.GetKind()),
			Name: "Event " + eventKindName(e.GetKind()), Severity: api.Severity_SEVERITY_INFO, FirstSeen: e.GetTime(),
			LastSeen: e.GetTime(), Count: 1, Node: e.GetNode(), Container: e.GetContainer(), Process: e.GetProcess(),
			Summary: eventKindName(e.GetKind()) + " " + e.GetProcess().GetComm()}
	case r.Triage != nil:
		t := r.Triage
		return &api.Alert{Id: "triage-" + t.AlertID, DetectionId: "triage", Name: "Triage " + t.State,
			Severity: api.Severity_SEVERITY_INFO, FirstSeen: timestamppb.New(t.Updated), LastSeen: timestamppb.New(t.Updated),
			Count: 1, Summary: fmt.Sprintf("alert %s: %s, assignee %s, by %s", t.AlertID, t.State, firstNonEmpty(t.Assignee, "none"), t.UpdatedBy)}
	case r.Response != nil:
		a := r.Response
		at := a.Issued
		if a.Answered != nil {
			at = *a.Answered
		}
		return &api.Alert{Id: a.ID, DetectionId: "response-" + a.Action, Name: "Response action " + a.Action,
			Severity: api.Severity_SEVERITY_INFO, FirstSeen: timestamppb.New(a.Issued), LastSeen: timestamppb.New(at),
			Count: 1, Node: a.AgentID, Summary: fmt.Sprintf("%s %s on %s: %s", a.Action, firstNonEmpty(a.TargetText, string(a.Target)), a.AgentID, a.State)}
	}
	return &api.Alert{}
}

func findingSummary(f *api.Finding) string {
	o := f.GetObject()
	name := o.GetName()
	if o.GetNamespace() != "" {
		name = o.GetNamespace() + "/" + name
	}
	s := f.GetTitle() + ": " + o.GetKind() + " " + name
	if f.GetContainer() != "" {
		s += " container " + f.GetContainer()
	}
	return s
}

// encodeRecord encodes rec in format. Config validation keeps formats to
// the kinds they carry; a record of another kind is an error here.
func encodeRecord(format string, rec Record, version string) ([]byte, error) {
	kind := rec.kind()
	if format == "" {
		format = FormatJSON
	}
	if !slices.Contains(formatKinds[format], kind) {
		return nil, fmt.Errorf("format %s cannot carry %s records", format, kind)
	}
	switch {
	case rec.Alert != nil:
		switch format {
		case FormatJSON:
			return encodeJSON(rec.Alert, version)
		case FormatOCSF:
			return EncodeOCSF(rec.Alert, version)
		case FormatCEF:
			return []byte(EncodeCEF(rec.Alert, version)), nil
		case FormatFalco:
			return EncodeFalco(rec.Alert, version)
		case FormatECS:
			return EncodeECS(rec.Alert, version)
		}
	case rec.Finding != nil:
		switch format {
		case FormatJSON:
			b, err := jsonOpts.Marshal(rec.Finding)
			if err != nil {
				return nil, fmt.Errorf("harrier json: %w", err)
			}
			if b, err = compactJSON(b); err != nil || !rec.Resolved {
				return b, err
			}
			// A resolved finding is its last state with "resolved":true.
			if string(b) == "{}" {
				return []byte(`{"resolved":true}`), nil
			}
			return append([]byte(`{"resolved":true,`), b[1:]...), nil
		case FormatOCSF:
			var resolvedAt time.Time
			if rec.Resolved {
				resolvedAt = rec.Stored
			}
			if kind == KindVulnerabilities {
				return EncodeOCSFVulnerability(rec.Finding, resolvedAt, version)
			}
			return EncodeOCSFCompliance(rec.Finding, resolvedAt, version)
		case FormatCEF:
			return []byte(EncodeCEF(rec.head(), version)), nil
		}
	case rec.Event != nil:
		switch format {
		case FormatJSON:
			b, err := jsonOpts.Marshal(rec.Event)
			if err != nil {
				return nil, fmt.Errorf("harrier json: %w", err)
			}
			return compactJSON(b)
		case FormatOCSF:
			return EncodeOCSFProcessActivity(rec.Event, EventID(rec.Seq), version)
		}
	case rec.Triage != nil:
		b, err := json.Marshal(rec.Triage)
		if err != nil {
			return nil, fmt.Errorf("harrier json: %w", err)
		}
		return b, nil
	case rec.Response != nil:
		b, err := json.Marshal(rec.Response)
		if err != nil {
			return nil, fmt.Errorf("harrier json: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("format %s: empty %s record", format, kind)
}

func (r Record) kind() Kind {
	switch {
	case r.Kind != "":
		return r.Kind
	case r.Finding != nil:
		return KindOfFinding(r.Finding)
	case r.Response != nil:
		return KindResponses
	case r.Triage != nil:
		return KindTriage
	case r.Event != nil:
		return KindEvents
	}
	return KindAlerts
}

// EventID is the ID an exported event carries: its place in the backend's
// event ring, stable while that store lives (resends repeat it).
func EventID(seq uint64) string { return "event-" + strconv.FormatUint(seq, 10) }

func eventKindName(k api.EventKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "EVENT_KIND_"))
}

// errNotCarried is a record the format has no shape for (OCSF: an event
// other than a process event): skipped and counted, not dead-lettered.
var errNotCarried = errors.New("the format does not carry this record")

// OCSF Process Activity (class 1007, category 1 System Activity) and its
// activities.
const (
	ocsfProcessActivityUID = 1007
	ocsfSystemCategoryUID  = 1
)

// EncodeOCSFProcessActivity writes a process event as an OCSF 1.x Process
// Activity: exec and fork are Launch (1) of the new process by its parent,
// exit is Terminate (2) (reflexive: the actor is the process), ptrace is
// Open (3) of the target by the tracer, a credential change is Set User ID
// (5). Other events return errNotCarried.
func EncodeOCSFProcessActivity(e *api.Event, id, version string) ([]byte, error) {
	p := e.GetProcess()
	self := ocsfProcess(p)
	if p.GetStartTime() != nil {
		self["created_time"] = p.GetStartTime().AsTime().UnixMilli()
	}
	if p.GetCwd() != "" {
		self["working_directory"] = p.GetCwd()
	}
	// The parent as the actor of a launch: the nearest ancestor the
	// process cache knew, else its pid alone.
	parent := map[string]any{"pid": p.GetPpid()}
	if anc := e.GetAncestry(); len(anc) > 0 {
		a := anc[0]
		parent = map[string]any{"pid": a.GetPid(), "cmd_line": strings.Join(a.GetArgs(), " "),
			"user": map[string]any{"uid": strconv.FormatUint(uint64(a.GetUid()), 10)}}
		if a.GetExe() != "" {
			parent["file"] = map[string]any{"path": a.GetExe(), "name": baseName(a.GetExe()), "type_id": 1}
			parent["name"] = baseName(a.GetExe())
		}
	}
	var activity int
	var activityName string
	out := map[string]any{}
	switch d := e.GetDetail().(type) {
	case *api.Event_Exec:
		activity, activityName = 1, "Launch"
		out["actor"] = map[string]any{"process": parent}
		out["process"] = self
	case *api.Event_Fork:
		activity, activityName = 1, "Launch"
		child := map[string]any{"pid": d.Fork.GetChildTgid(), "name": p.GetComm(), "parent_process": map[string]any{"pid": p.GetTgid()}}
		if p.GetExe() != "" {
			child["file"] = map[string]any{"path": p.GetExe(), "name": baseName(p.GetExe()), "type_id": 1}
		}
		out["actor"] = map[string]any{"process": self}
		out["process"] = child
		if d.Fork.GetThread() {
			out["unmapped"] = map[string]any{"thread": true}
		}
	case *api.Event_Exit:
		activity, activityName = 2, "Terminate"
		out["actor"] = map[string]any{"process": self}
		out["process"] = self
		out["exit_code"] = d.Exit.GetCode()
		if d.Exit.GetSignal() != 0 {
			out["unmapped"] = map[string]any{"signal": d.Exit.GetSignal(), "core_dumped": d.Exit.GetCoreDumped()}
		}
	case *api.Event_Ptrace:
		activity, activityName = 3, "Open"
		out["actor"] = map[string]any{"process": self}
		out["process"] = map[string]any{"pid": d.Ptrace.GetTargetPid()}
		out["unmapped"] = map[string]any{"ptrace_request": d.Ptrace.GetRequest(), "result": d.Ptrace.GetResult()}
	case *api.Event_CredentialChange:
		activity, activityName = 5, "Set User ID"
		out["actor"] = map[string]any{"process": self}
		out["process"] = self
		out["unmapped"] = map[string]any{"syscall": d.CredentialChange.GetSyscall(), "uid": d.CredentialChange.GetUid(),
			"euid": d.CredentialChange.GetEuid(), "gid": d.CredentialChange.GetGid(), "egid": d.CredentialChange.GetEgid()}
	default:
		return nil, errNotCarried
	}
	device := map[string]any{"hostname": e.GetNode(), "name": e.GetNode(), "type_id": 0, "type": "Unknown"}
	if c := e.GetContainer(); c.GetId() != "" {
		device["container"] = ocsfContainer(c)
	}
	for k, v := range map[string]any{
		"activity_id":   activity,
		"activity_name": activityName,
		"category_uid":  ocsfSystemCategoryUID,
		"category_name": "System Activity",
		"class_uid":     ocsfProcessActivityUID,
		"class_name":    "Process Activity",
		"type_uid":      ocsfProcessActivityUID*100 + activity,
		"type_name":     "Process Activity: " + activityName,
		"severity_id":   1,
		"severity":      "Informational",
		"time":          e.GetTime().AsTime().UnixMilli(),
		"device":        device,
		"metadata": map[string]any{
			"version":  ocsfVersion,
			"uid":      id,
			"product":  map[string]any{"name": productName, "vendor_name": productVendor, "version": version},
			"log_name": "events",
		},
	} {
		out[k] = v
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("ocsf: %w", err)
	}
	return b, nil
}

// OCSF Compliance Finding (2003) and Vulnerability Finding (2002), both in
// category 2, Findings, extending the finding base class like 2004.
const (
	ocsfComplianceClassUID    = 2003
	ocsfVulnerabilityClassUID = 2002
	ocsfComplianceFail        = 3
	ocsfCompliancePass        = 1
	ocsfActivityClose         = 3
	ocsfStatusResolved        = 4
)

// ocsfFindingBase fills what every Findings class shares from a posture
// finding: a finding first seen at its last evaluation is a Create, one
// seen before an Update, one resolved (resolvedAt set: the snapshot that
// no longer had it was stored then) a Close with status Resolved.
func ocsfFindingBase(f *api.Finding, resolvedAt time.Time, classUID int, className, logName, version string) map[string]any {
	activity, activityName := ocsfActivityCreate, "Create"
	first, last := f.GetFirstSeen().AsTime(), f.GetLastSeen().AsTime()
	if f.GetLastSeen() == nil {
		last = first
	}
	if f.GetFirstSeen() != nil && last.After(first) {
		activity, activityName = ocsfActivityUpdate, "Update"
	}
	at, statusID, status := last, ocsfStatusNew, "New"
	if !resolvedAt.IsZero() {
		activity, activityName = ocsfActivityClose, "Close"
		at, statusID, status = resolvedAt, ocsfStatusResolved, "Resolved"
	}
	sevID := int(f.GetSeverity())
	if sevID < 0 || sevID > 5 {
		sevID = ocsfSeverityUnknown
	}
	fi := map[string]any{
		"uid":             f.GetId(),
		"title":           firstNonEmpty(f.GetTitle(), f.GetCheckId()),
		"first_seen_time": first.UnixMilli(),
		"last_seen_time":  last.UnixMilli(),
		"types":           []string{f.GetCheckId()},
		"analytic":        map[string]any{"uid": f.GetCheckId(), "name": f.GetTitle(), "type_id": 1, "type": "Rule"},
	}
	if d := f.GetDetail(); d != "" {
		fi["desc"] = d
	}
	out := map[string]any{
		"activity_id":   activity,
		"activity_name": activityName,
		"category_uid":  ocsfCategoryUID,
		"category_name": "Findings",
		"class_uid":     classUID,
		"class_name":    className,
		"type_uid":      classUID*100 + activity,
		"type_name":     className + ": " + activityName,
		"severity_id":   sevID,
		"severity":      ocsfSeverityName(sevID),
		"time":          at.UnixMilli(),
		"start_time":    first.UnixMilli(),
		"end_time":      last.UnixMilli(),
		"status_id":     statusID,
		"status":        status,
		"message":       findingSummary(f),
		"metadata": map[string]any{
			"version":  ocsfVersion,
			"uid":      f.GetId(),
			"product":  map[string]any{"name": productName, "vendor_name": productVendor, "version": version},
			"log_name": logName,
		},
		"finding_info": fi,
	}
	if id := f.GetSnapshotId(); id != "" {
		// The snapshot that produced this evaluation.
		out["metadata"].(map[string]any)["correlation_uid"] = id
	}
	if r := f.GetRemediation(); r != "" {
		out["remediation"] = map[string]any{"desc": r}
	}
	if n := f.GetNode(); n != "" {
		out["device"] = map[string]any{"hostname": n, "name": n, "type_id": 0, "type": "Unknown"}
	}
	if o := f.GetObject(); o.GetKind() != "" || o.GetName() != "" {
		res := map[string]any{"type": o.GetKind(), "name": o.GetName()}
		if o.GetUid() != "" {
			res["uid"] = o.GetUid()
		}
		if o.GetNamespace() != "" {
			res["namespace"] = o.GetNamespace()
		}
		if f.GetCluster() != "" {
			res["group"] = map[string]any{"name": f.GetCluster()}
		}
		if f.GetContainer() != "" {
			res["labels"] = []string{"container=" + f.GetContainer()}
		}
		out["resources"] = []any{res}
	}
	return out
}

// EncodeOCSFCompliance writes a posture finding as an OCSF 1.x Compliance
// Finding (class 2003): the failed control with the standards it maps to;
// with resolvedAt set, the control passing again (a Close).
func EncodeOCSFCompliance(f *api.Finding, resolvedAt time.Time, version string) ([]byte, error) {
	out := ocsfFindingBase(f, resolvedAt, ocsfComplianceClassUID, "Compliance Finding", "posture", version)
	// standards is required: a check without a mapped standard names the
	// Harrier check catalogue.
	standards := f.GetStandards()
	if len(standards) == 0 {
		standards = []string{"Harrier posture checks"}
	}
	c := map[string]any{
		"standards": standards,
		"control":   f.GetCheckId(),
		"status_id": ocsfComplianceFail, // Harrier stores failed controls only
		"status":    "Fail",
	}
	if !resolvedAt.IsZero() {
		c["status_id"], c["status"] = ocsfCompliancePass, "Pass"
	}
	if f.GetDetail() != "" {
		c["status_detail"] = f.GetDetail()
	}
	if f.GetCategory() != "" {
		c["requirements"] = []string{f.GetCategory()}
	}
	out["compliance"] = c
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("ocsf: %w", err)
	}
	return b, nil
}

// vulnIDRE finds the vulnerability IDs the image-vulnerable check lists in
// its detail ("CVE-2024-1234 in openssl 3.0.1; GHSA-..."): the finding
// keeps the worst five.
var vulnIDRE = regexp.MustCompile(`\b(?:CVE-\d{4}-\d{4,}|GHSA(?:-[0-9a-z]{4}){3})\b`)

// EncodeOCSFVulnerability writes an image-vulnerable finding as an OCSF
// 1.x Vulnerability Finding (class 2002): one vulnerabilities[] entry per
// vulnerability ID in the finding (its worst ones), with cve.uid, which the
// schema requires (at least one of cve or cwe). With resolvedAt set the
// image is no longer vulnerable or no longer runs (a Close).
func EncodeOCSFVulnerability(f *api.Finding, resolvedAt time.Time, version string) ([]byte, error) {
	out := ocsfFindingBase(f, resolvedAt, ocsfVulnerabilityClassUID, "Vulnerability Finding", "vulnerabilities", version)
	ids := slices.Compact(vulnIDRE.FindAllString(f.GetDetail(), -1))
	if len(ids) == 0 {
		return nil, fmt.Errorf("ocsf vulnerability finding %s: no CVE or GHSA ID in its detail", f.GetId())
	}
	vulns := make([]any, 0, len(ids))
	for _, id := range ids {
		v := map[string]any{
			"cve":      map[string]any{"uid": id},
			"title":    id,
			"severity": ocsfSeverityName(int(f.GetSeverity())),
		}
		if f.GetContainer() != "" {
			v["desc"] = id + " in image " + f.GetContainer()
		}
		if r := f.GetRemediation(); r != "" {
			v["remediation"] = map[string]any{"desc": r}
		}
		vulns = append(vulns, v)
	}
	out["vulnerabilities"] = vulns
	if f.GetContainer() != "" {
		unmapped := map[string]any{"image": f.GetContainer()}
		if len(f.GetStandards()) > 0 {
			unmapped["standards"] = f.GetStandards()
		}
		out["unmapped"] = unmapped
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("ocsf: %w", err)
	}
	return b, nil
}
