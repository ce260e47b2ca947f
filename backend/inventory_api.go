package backend

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Filter values are checked against what Kubernetes allows, so a typo or a
// pasted URL fragment is a 400 that says what is wrong, not an empty list.

func (q *queryParams) kubeKind(name string) string {
	s := q.str(name)
	if s != "" && !isKind(s) {
		q.fail(name, "want an object kind such as Deployment or pod (letters and digits, starting with a letter)")
	}
	return s
}

func (q *queryParams) dnsLabel(name string) string {
	s := q.str(name)
	if s != "" && !isDNSName(s, 63, false) {
		q.fail(name, "want a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)")
	}
	return s
}

func (q *queryParams) nodeName(name string) string {
	s := q.str(name)
	if s != "" && !isDNSName(s, 253, true) {
		q.fail(name, "want a node name (lower-case letters, digits, '-' and '.', at most 253)")
	}
	return s
}

// text accepts any printable text up to max bytes.
func (q *queryParams) text(name string, limit int) string {
	s := q.str(name)
	if len(s) > limit || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		q.fail(name, "want printable text of at most "+strconv.Itoa(limit)+" bytes")
	}
	return s
}

// ident accepts check IDs and categories: letters, digits and . _ : / -.
func (q *queryParams) ident(name string) string {
	s := q.str(name)
	ok := len(s) <= 128 && !strings.ContainsFunc(s, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && !strings.ContainsRune("._:/-", r)
	})
	if !ok {
		q.fail(name, "want an identifier such as pss-privileged (letters, digits, '.', '_', ':', '/', '-'; at most 128)")
	}
	return s
}

func (q *queryParams) boolean(name string) bool {
	s := q.str(name)
	if s == "" {
		return false
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		q.fail(name, "want true or false")
	}
	return b
}

func isKind(s string) bool {
	if len(s) > 63 || s[0] < 'A' || (s[0] > 'Z' && s[0] < 'a') || s[0] > 'z' {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9')
	})
}

// isDNSName checks an RFC 1123 label (dots false) or subdomain (dots true).
func isDNSName(s string, limit int, dots bool) bool {
	if len(s) > limit {
		return false
	}
	alnum := func(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && (!dots || c != '.') {
			return false
		}
	}
	return true
}

func inventoryQueryFrom(r *http.Request, now time.Time) (InventoryQuery, error) {
	p := newQueryParams(r, now, "cluster", "kind", "namespace", "name", "node", "image", "workloads", "limit")
	q := InventoryQuery{
		Cluster:   p.text("cluster", maxClusterNameLen),
		Kind:      p.kubeKind("kind"),
		Namespace: p.dnsLabel("namespace"),
		Name:      p.text("name", 253),
		Node:      p.nodeName("node"),
		Image:     p.text("image", 512),
		Workloads: p.boolean("workloads"),
		Limit:     p.limit(),
	}
	return q, p.err
}

func findingQueryFrom(r *http.Request, now time.Time) (FindingQuery, error) {
	p := newQueryParams(r, now, "cluster", "check", "severity", "namespace", "kind", "category", "limit")
	q := FindingQuery{
		Cluster:   p.text("cluster", maxClusterNameLen),
		Check:     p.ident("check"),
		Severity:  p.severity(),
		Namespace: p.dnsLabel("namespace"),
		Kind:      p.kubeKind("kind"),
		Category:  p.ident("category"),
		Limit:     p.limit(),
	}
	return q, p.err
}

// snapshotJSON is the API's view of SnapshotInfo.
type snapshotJSON struct {
	Cluster            string         `json:"cluster"`
	SnapshotID         string         `json:"snapshot_id"`
	Time               time.Time      `json:"time"`
	Node               string         `json:"node"`
	Completed          time.Time      `json:"completed"`
	Items              int            `json:"items"`
	Findings           int            `json:"findings"`
	Kinds              map[string]int `json:"kinds"`
	FindingsBySeverity map[string]int `json:"findings_by_severity"`
}

func snapshotToJSON(si SnapshotInfo) snapshotJSON {
	sj := snapshotJSON{Cluster: si.Cluster, SnapshotID: si.SnapshotID, Time: si.Time, Node: si.Node, Completed: si.Completed,
		Items: si.Items, Findings: si.Findings, Kinds: si.Kinds, FindingsBySeverity: map[string]int{}}
	if sj.Kinds == nil {
		sj.Kinds = map[string]int{}
	}
	for sev, n := range si.Severities {
		sj.FindingsBySeverity[sev.Name()] += n
	}
	return sj
}

// inventoryEntryJSON pairs an item (protojson) with its cluster, which the
// item itself does not carry.
type inventoryEntryJSON struct {
	Cluster string          `json:"cluster"`
	Item    json.RawMessage `json:"item"`
}

func (s *apiServer) listInventory(w http.ResponseWriter, r *http.Request) {
	q, err := inventoryQueryFrom(r, s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	snaps, err := s.store.Snapshots(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	entries, err := s.store.Inventory(r.Context(), q)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := struct {
		Snapshots []snapshotJSON       `json:"snapshots"`
		Items     []inventoryEntryJSON `json:"items"`
	}{Snapshots: []snapshotJSON{}, Items: make([]inventoryEntryJSON, 0, len(entries))}
	for _, si := range snaps {
		if q.Cluster == "" || si.Cluster == q.Cluster {
			out.Snapshots = append(out.Snapshots, snapshotToJSON(si))
		}
	}
	for _, e := range entries {
		b, err := protoJSON.Marshal(e.Item)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		out.Items = append(out.Items, inventoryEntryJSON{Cluster: e.Cluster, Item: b})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *apiServer) listFindings(w http.ResponseWriter, r *http.Request) {
	q, err := findingQueryFrom(r, s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	fs, err := s.store.Findings(r.Context(), q)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeProtoList(w, "findings", fs)
}

func (s *apiServer) getFinding(w http.ResponseWriter, r *http.Request) {
	f, err := s.store.Finding(r.Context(), r.PathValue("id"))
	s.writeProtoOne(w, r, "finding", f, err)
}

// UI pages.

type findingsPage struct {
	Title      string
	Findings   []*findingRow
	Error      string
	Severities []string
	Severity   string
	Cluster    string
	Clusters   []string
	Limit      int
	Now        string
}

// findingRow is a finding as the findings page shows it.
type findingRow struct {
	Severity    string
	Check       string
	Title       string
	Cluster     string
	Object      string
	Container   string
	Detail      string
	Remediation string
	LastSeen    string
}

type inventoryPage struct {
	Title     string
	Error     string
	Snapshots []SnapshotInfo
	KindRows  []kindRow
	Workloads []InventoryEntry
	Cluster   string
	Clusters  []string
	Namespace string
	Image     string
	Limit     int
	Now       string
}

// kindRow is one line of the counts table: a kind and its count per
// cluster, in the order of inventoryPage.Snapshots.
type kindRow struct {
	Kind   string
	Counts []int
}

func objectName(kind, ns, name string) string {
	if ns == "" {
		return kind + " " + name
	}
	return kind + " " + ns + "/" + name
}

func clusterNames(snaps []SnapshotInfo) []string {
	out := make([]string, 0, len(snaps))
	for _, si := range snaps {
		out = append(out, si.Cluster)
	}
	return out
}

func (s *apiServer) uiFindings(w http.ResponseWriter, r *http.Request) {
	p := findingsPage{
		Title:      "Findings",
		Severities: api.SeverityNames(),
		Now:        s.cfg.Now().UTC().Format("2006-01-02 15:04:05Z"),
	}
	q, err := findingQueryFrom(r, s.cfg.Now())
	p.Severity, p.Cluster, p.Limit = r.URL.Query().Get("severity"), q.Cluster, effectiveLimit(q.Limit)
	code := http.StatusOK
	if err != nil {
		p.Error, code = err.Error(), http.StatusBadRequest
	} else if fs, err := s.store.Findings(r.Context(), q); err != nil {
		s.log.Error("ui: list findings", "err", err)
		p.Error, code = "The findings could not be read; see the backend's log.", http.StatusInternalServerError
	} else {
		for _, f := range fs {
			o := f.GetObject()
			p.Findings = append(p.Findings, &findingRow{
				Severity: f.GetSeverity().Name(), Check: f.GetCheckId(), Title: f.GetTitle(), Cluster: f.GetCluster(),
				Object: objectName(o.GetKind(), o.GetNamespace(), o.GetName()), Container: f.GetContainer(),
				Detail: f.GetDetail(), Remediation: f.GetRemediation(), LastSeen: fmtTime(f.GetLastSeen()),
			})
		}
	}
	if snaps, err := s.store.Snapshots(r.Context()); err == nil {
		p.Clusters = clusterNames(snaps)
	}
	s.render(w, code, s.ui.findings, p)
}

func (s *apiServer) uiInventory(w http.ResponseWriter, r *http.Request) {
	p := inventoryPage{Title: "Inventory", Now: s.cfg.Now().UTC().Format("2006-01-02 15:04:05Z")}
	q, err := inventoryQueryFrom(r, s.cfg.Now())
	q.Workloads = true
	p.Cluster, p.Namespace, p.Image, p.Limit = q.Cluster, q.Namespace, q.Image, effectiveLimit(q.Limit)
	code := http.StatusOK
	snaps, serr := s.store.Snapshots(r.Context())
	switch {
	case err != nil:
		p.Error, code = err.Error(), http.StatusBadRequest
	case serr != nil:
		s.log.Error("ui: list snapshots", "err", serr)
		p.Error, code = "The inventory could not be read; see the backend's log.", http.StatusInternalServerError
	default:
		if p.Workloads, err = s.store.Inventory(r.Context(), q); err != nil {
			s.log.Error("ui: list inventory", "err", err)
			p.Error, code = "The inventory could not be read; see the backend's log.", http.StatusInternalServerError
		}
	}
	p.Clusters = clusterNames(snaps)
	for _, si := range snaps {
		if q.Cluster == "" || si.Cluster == q.Cluster {
			p.Snapshots = append(p.Snapshots, si)
		}
	}
	kinds := map[string]bool{}
	for _, si := range p.Snapshots {
		for k := range si.Kinds {
			kinds[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		row := kindRow{Kind: k}
		for _, si := range p.Snapshots {
			row.Counts = append(row.Counts, si.Kinds[k])
		}
		p.KindRows = append(p.KindRows, row)
	}
	s.render(w, code, s.ui.inventory, p)
}
