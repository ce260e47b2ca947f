// Package audit turns Kubernetes API server audit events into Harrier
// events (kind EVENT_KIND_AUDIT): an HTTPS webhook the API server posts
// audit.k8s.io/v1 EventLists to, and a tailer for the JSON audit log file of
// a control-plane node.
package audit

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// DefaultMaxObjectBytes bounds the request object kept per event.
const DefaultMaxObjectBytes = 64 << 10

// wireEvent is the part of audit.k8s.io/v1 Event that Harrier reads. The
// format is stable; decoding it here keeps k8s.io/apiserver out of the
// agent.
type wireEvent struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	SourceIPs []string `json:"sourceIPs"`
	UserAgent string   `json:"userAgent"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		APIVersion  string `json:"apiVersion"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int32 `json:"code"`
	} `json:"responseStatus"`
	RequestObject            json.RawMessage   `json:"requestObject"`
	RequestReceivedTimestamp time.Time         `json:"requestReceivedTimestamp"`
	StageTimestamp           time.Time         `json:"stageTimestamp"`
	Annotations              map[string]string `json:"annotations"`
}

type wireList struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Items      []wireEvent `json:"items"`
}

// Decoder converts audit events; its zero value uses the defaults.
type Decoder struct {
	// Node is put on every event (the node that received it).
	Node string
	// MaxObjectBytes bounds Audit.request_object (default
	// DefaultMaxObjectBytes); longer objects are cut and flagged.
	MaxObjectBytes int
}

var errNotAudit = errors.New("not an audit.k8s.io/v1 event")

// DecodeList decodes an audit.k8s.io/v1 EventList (the webhook's body).
func (d Decoder) DecodeList(b []byte) ([]*api.Event, error) {
	var l wireList
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("audit event list: %w", err)
	}
	if l.Kind != "EventList" || !strings.HasPrefix(l.APIVersion, "audit.k8s.io/") {
		return nil, fmt.Errorf("audit event list: kind %q apiVersion %q: %w", l.Kind, l.APIVersion, errNotAudit)
	}
	out := make([]*api.Event, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, d.convert(&l.Items[i]))
	}
	return out, nil
}

// DecodeEvent decodes one audit.k8s.io/v1 Event (a line of the JSON log).
func (d Decoder) DecodeEvent(b []byte) (*api.Event, error) {
	var e wireEvent
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("audit event: %w", err)
	}
	if e.Kind != "Event" || !strings.HasPrefix(e.APIVersion, "audit.k8s.io/") {
		return nil, fmt.Errorf("audit event: kind %q apiVersion %q: %w", e.Kind, e.APIVersion, errNotAudit)
	}
	return d.convert(&e), nil
}

func (d Decoder) convert(e *wireEvent) *api.Event {
	a := &api.Audit{
		AuditId: e.AuditID, Stage: e.Stage, Verb: e.Verb, RequestUri: e.RequestURI,
		User: e.User.Username, Groups: e.User.Groups, UserAgent: e.UserAgent, SourceIps: e.SourceIPs,
		Decision: e.Annotations["authorization.k8s.io/decision"],
	}
	if r := e.ObjectRef; r != nil {
		a.Resource, a.Subresource, a.Namespace, a.Name = r.Resource, r.Subresource, r.Namespace, r.Name
		a.ApiGroup, a.ApiVersion = r.APIGroup, r.APIVersion
	}
	if e.ResponseStatus != nil {
		a.Code = e.ResponseStatus.Code
	}
	if e.ImpersonatedUser != nil {
		a.ImpersonatedUser = e.ImpersonatedUser.Username
	}
	if len(e.RequestObject) > 0 && !bytes.Equal(e.RequestObject, []byte("null")) {
		a.RequestObject, a.ObjectTruncated = d.object(e.RequestObject)
	}
	if !e.RequestReceivedTimestamp.IsZero() {
		a.RequestReceived = timestamppb.New(e.RequestReceivedTimestamp)
	}
	t := e.StageTimestamp
	if t.IsZero() {
		t = e.RequestReceivedTimestamp
	}
	if t.IsZero() {
		t = time.Now()
	}
	return &api.Event{
		Time: timestamppb.New(t), Node: d.Node, Kind: api.EventKind_EVENT_KIND_AUDIT,
		Detail: &api.Event_Audit{Audit: a},
	}
}

// object compacts the request object and cuts it at the bound.
func (d Decoder) object(raw json.RawMessage) (string, bool) {
	max := d.MaxObjectBytes
	if max <= 0 {
		max = DefaultMaxObjectBytes
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		b.Reset()
		b.Write(raw)
	}
	if b.Len() > max {
		return strings.ToValidUTF8(string(b.Bytes()[:max]), ""), true
	}
	return b.String(), false
}

//go:embed policy.yaml
var recommendedPolicy string

// RecommendedPolicy is the audit policy (audit.k8s.io/v1 YAML) the
// control-plane detections are tested with; the Helm chart ships the same.
func RecommendedPolicy() string { return recommendedPolicy }
