// Package auditgen makes the Kubernetes audit-event stream of the budget
// benchmark: audit.k8s.io/v1 EventLists as an API server's webhook backend
// batches them, posted over HTTPS with a bearer token to the agent's audit
// receiver (kube.audit.webhookAddr).
//
// The benign mix is what a quiet cluster's API server logs most: kubelets
// getting their pods and renewing their node leases, controllers and the
// scheduler listing and watching pods, applications reading config maps.
// None of it matches a shipped detection. The marker is a ClusterRoleBinding
// to cluster-admin, which the cluster-admin-binding detection fires on.
package auditgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/kube/audit"
)

// MarkerDetection is the detection the marker event fires.
const MarkerDetection = "cluster-admin-binding"

// MarkerUser is the user the marker event names.
const MarkerUser = "bench-intruder"

// Event is the part of audit.k8s.io/v1 Event the generator fills.
type Event struct {
	APIVersion               string            `json:"apiVersion"`
	Kind                     string            `json:"kind"`
	Level                    string            `json:"level"`
	AuditID                  string            `json:"auditID"`
	Stage                    string            `json:"stage"`
	RequestURI               string            `json:"requestURI"`
	Verb                     string            `json:"verb"`
	User                     User              `json:"user"`
	SourceIPs                []string          `json:"sourceIPs"`
	UserAgent                string            `json:"userAgent"`
	ObjectRef                *ObjectRef        `json:"objectRef,omitempty"`
	ResponseStatus           Status            `json:"responseStatus"`
	RequestObject            json.RawMessage   `json:"requestObject,omitempty"`
	RequestReceivedTimestamp string            `json:"requestReceivedTimestamp"`
	StageTimestamp           string            `json:"stageTimestamp"`
	Annotations              map[string]string `json:"annotations,omitempty"`
}

// User is an audit event's user.
type User struct {
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
}

// ObjectRef is an audit event's object reference.
type ObjectRef struct {
	Resource   string `json:"resource,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	APIGroup   string `json:"apiGroup,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
}

// Status is an audit event's response status.
type Status struct {
	Code int `json:"code"`
}

type eventList struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	Items      []Event `json:"items"`
}

// EncodeList encodes events as one audit.k8s.io/v1 EventList.
func EncodeList(events []Event) ([]byte, error) {
	b, err := json.Marshal(eventList{APIVersion: "audit.k8s.io/v1", Kind: "EventList", Items: events})
	if err != nil {
		return nil, fmt.Errorf("encode audit event list: %w", err)
	}
	return b, nil
}

// microTime is the API server's MicroTime format.
func microTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") }

// Generator makes the benign events, cycling through a fixed mix over
// Nodes nodes and Apps application service accounts.
type Generator struct {
	Nodes int // default 20
	Apps  int // default 10
	n     uint64
}

// Next returns the next benign event, stamped at now.
func (g *Generator) Next(now time.Time) Event {
	nodes, apps := 20, 10
	if g.Nodes > 0 {
		nodes = g.Nodes
	}
	if g.Apps > 0 {
		apps = g.Apps
	}
	i := g.n
	g.n++
	node := fmt.Sprintf("node-%02d", i%uint64(nodes))
	app := fmt.Sprintf("app-%02d", i%uint64(apps))
	kubelet := User{Username: "system:node:" + node, Groups: []string{"system:nodes", "system:authenticated"}}
	ev := Event{
		APIVersion: "audit.k8s.io/v1", Kind: "Event", Level: "Metadata",
		AuditID: fmt.Sprintf("bench-%016x", i), Stage: "ResponseComplete",
		SourceIPs: []string{"10.0.0." + fmt.Sprint(1+i%uint64(nodes))}, ResponseStatus: Status{Code: 200},
		RequestReceivedTimestamp: microTime(now.Add(-2 * time.Millisecond)), StageTimestamp: microTime(now),
		Annotations: map[string]string{"authorization.k8s.io/decision": "allow"},
	}
	// The mix, in tenths: 3 kubelet pod gets, 3 lease renewals, 2 pod
	// lists/watches by the control plane, 2 config map reads by apps.
	switch i % 10 {
	case 0, 1, 2:
		ns, pod := "default", fmt.Sprintf("web-%d", i%50)
		ev.Verb, ev.User, ev.UserAgent = "get", kubelet, "kubelet/v1.33.0 (linux/amd64) kubernetes/abcdef0"
		ev.RequestURI = "/api/v1/namespaces/" + ns + "/pods/" + pod
		ev.ObjectRef = &ObjectRef{Resource: "pods", Namespace: ns, Name: pod, APIVersion: "v1"}
	case 3, 4, 5:
		ev.Verb, ev.User, ev.UserAgent = "update", kubelet, "kubelet/v1.33.0 (linux/amd64) kubernetes/abcdef0"
		ev.RequestURI = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/" + node
		ev.ObjectRef = &ObjectRef{Resource: "leases", Namespace: "kube-node-lease", Name: node, APIGroup: "coordination.k8s.io", APIVersion: "v1"}
	case 6:
		ev.Verb, ev.User, ev.UserAgent = "list", User{Username: "system:kube-controller-manager", Groups: []string{"system:authenticated"}},
			"kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/abcdef0/shared-informers"
		ev.RequestURI = "/api/v1/pods?limit=500&resourceVersion=0"
		ev.ObjectRef = &ObjectRef{Resource: "pods", APIVersion: "v1"}
	case 7:
		ev.Verb, ev.User, ev.UserAgent = "watch", User{Username: "system:kube-scheduler", Groups: []string{"system:authenticated"}},
			"kube-scheduler/v1.33.0 (linux/amd64) kubernetes/abcdef0/scheduler"
		ev.RequestURI = "/api/v1/pods?allowWatchBookmarks=true&watch=true"
		ev.ObjectRef = &ObjectRef{Resource: "pods", APIVersion: "v1"}
	default:
		ev.Verb = "get"
		ev.User = User{Username: "system:serviceaccount:default:" + app,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"}}
		ev.UserAgent = app + "/v1.0 (linux/amd64) kubernetes/abcdef0"
		ev.RequestURI = "/api/v1/namespaces/default/configmaps/" + app + "-config"
		ev.ObjectRef = &ObjectRef{Resource: "configmaps", Namespace: "default", Name: app + "-config", APIVersion: "v1"}
	}
	return ev
}

// Marker returns the attack marker: user MarkerUser creates the
// ClusterRoleBinding name to cluster-admin, which MarkerDetection fires on.
// Distinct names make distinct alerts (the name is part of an audit
// alert's de-duplication key).
func Marker(name string, now time.Time) Event {
	obj := fmt.Sprintf(`{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":%q},`+
		`"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},`+
		`"subjects":[{"kind":"ServiceAccount","name":"default","namespace":"default"}]}`, name)
	return Event{
		APIVersion: "audit.k8s.io/v1", Kind: "Event", Level: "RequestResponse",
		AuditID: "marker-" + name, Stage: "ResponseComplete", Verb: "create",
		RequestURI: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
		User:       User{Username: MarkerUser, Groups: []string{"system:authenticated"}},
		SourceIPs:  []string{"203.0.113.7"}, UserAgent: "kubectl/v1.33.0 (linux/amd64) kubernetes/abcdef0",
		ObjectRef:      &ObjectRef{Resource: "clusterrolebindings", Name: name, APIGroup: "rbac.authorization.k8s.io", APIVersion: "v1"},
		ResponseStatus: Status{Code: 201}, RequestObject: json.RawMessage(obj),
		RequestReceivedTimestamp: microTime(now.Add(-3 * time.Millisecond)), StageTimestamp: microTime(now),
		Annotations: map[string]string{"authorization.k8s.io/decision": "allow"},
	}
}

// BatchSize is the events per POST at rate events/s: the API server's
// webhook batches hold up to 400 events and are sent at most 10 times a
// second by default, so a batch is rate/10 events, at least 50.
func BatchSize(rate float64) int { return int(min(400, max(50, rate/10))) }

// Poster posts EventLists to an audit webhook on 127.0.0.1.
type Poster struct {
	url    string
	token  string
	client *http.Client
}

// NewPoster returns a poster for https://addr/ (addr must be on
// 127.0.0.1) that trusts the CA in caFile and sends the token in tokenFile.
func NewPoster(addr, caFile, tokenFile string) (*Poster, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Addr() != netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
		return nil, fmt.Errorf("audit webhook address %q: must be 127.0.0.1:PORT", addr)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("audit webhook CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("audit webhook CA %s: no PEM certificate", caFile)
	}
	// The receiver's own reader: the same trimming and empty-file error.
	tok, err := (&audit.TokenFile{Path: tokenFile}).Load()
	if err != nil {
		return nil, err
	}
	token := string(tok)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 4}
	return &Poster{url: (&url.URL{Scheme: "https", Host: addr, Path: "/"}).String(), token: token,
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// Post sends events as one EventList and fails unless the receiver
// answers 200.
func (p *Poster) Post(ctx context.Context, events []Event) error {
	body, err := EncodeList(events)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("audit post: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("audit post: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("audit post of %d events: %s: %s", len(events), resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// Close releases the poster's connections.
func (p *Poster) Close() { p.client.CloseIdleConnections() }

// Batcher collects events into batches of Size and posts a batch when it
// is full or its first event waited MaxWait, as the API server's webhook
// backend does.
type Batcher struct {
	Poster  *Poster
	Size    int
	MaxWait time.Duration
	pending []Event
	first   time.Time
	Posts   int
	Events  int
}

// Add queues ev and posts the batch when it is due.
func (b *Batcher) Add(ctx context.Context, ev Event) error {
	if len(b.pending) == 0 {
		b.first = time.Now()
	}
	b.pending = append(b.pending, ev)
	if len(b.pending) >= max(b.Size, 1) || time.Since(b.first) >= b.MaxWait {
		return b.Flush(ctx)
	}
	return nil
}

// Flush posts what is pending.
func (b *Batcher) Flush(ctx context.Context) error {
	if len(b.pending) == 0 {
		return nil
	}
	err := b.Poster.Post(ctx, b.pending)
	if err == nil {
		b.Posts++
		b.Events += len(b.pending)
	}
	b.pending = b.pending[:0]
	return err
}
