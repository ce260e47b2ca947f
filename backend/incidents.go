package backend

import (
	"cmp"
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// An incident is an attack story: the alerts that share a container, pod or
// workload, or a process tree, within IncidentWindow of each other. The
// index is kept in memory and updated after every ingest commit (so every
// store that materialises alerts through Ingest, replicas included, has
// it); it is rebuilt from the stored alerts when the store opens. Incidents
// are derived data: nothing about them is stored.

// defaultIncidentWindow is how far apart in time two alerts may be and still
// be linked by what they share.
const defaultIncidentWindow = 30 * time.Minute

// Incident is one attack story as the API shows it.
type Incident struct {
	ID string `json:"id"`
	// Title names the detections and where they happened.
	Title     string       `json:"title"`
	Severity  api.Severity `json:"severity"`
	Score     int          `json:"score"`
	FirstSeen time.Time    `json:"first_seen"`
	LastSeen  time.Time    `json:"last_seen"`
	// Alerts counts distinct alerts; Events sums their repeat counts.
	Alerts     int      `json:"alerts"`
	Events     uint64   `json:"events"`
	Detections []string `json:"detections"`
	// Tactics are in ATT&CK's kill-chain order.
	Tactics  []string `json:"tactics"`
	Clusters []string `json:"clusters,omitempty"`
	Nodes    []string `json:"nodes"`
	Pods     []string `json:"pods,omitempty"`
	Images   []string `json:"images,omitempty"`
	// AlertIDs is the timeline: first seen first (Incident only, not the list).
	AlertIDs []string `json:"alert_ids,omitempty"`
}

// IncidentQuery selects incidents. Zero fields do not filter.
type IncidentQuery struct {
	Severity api.Severity // minimum
	Node     string
	Since    time.Time // last seen at or after
	Limit    int       // 0: DefaultLimit
}

// IncidentSource is what the API needs for incidents; BadgerStore has it.
type IncidentSource interface {
	// Incidents lists incidents matching q, highest score first.
	Incidents(ctx context.Context, q IncidentQuery) ([]Incident, error)
	// Incident returns one incident with its timeline (an error wrapping
	// ErrNotFound for an unknown ID).
	Incident(ctx context.Context, id string) (Incident, error)
	// IncidentOf names the incident an alert belongs to.
	IncidentOf(alertID string) (string, bool)
}

var _ IncidentSource = (*BadgerStore)(nil)

// tacticOrder is ATT&CK Enterprise's kill-chain order of tactics.
var tacticOrder = []string{"Reconnaissance", "Resource Development", "Initial Access", "Execution", "Persistence",
	"Privilege Escalation", "Defense Evasion", "Credential Access", "Discovery", "Lateral Movement", "Collection",
	"Command and Control", "Exfiltration", "Impact"}

func tacticRank(t string) int {
	if i := slices.Index(tacticOrder, t); i >= 0 {
		return i
	}
	return len(tacticOrder)
}

func sortTactics(ts []string) {
	slices.SortFunc(ts, func(a, b string) int {
		return cmp.Or(cmp.Compare(tacticRank(a), tacticRank(b)), strings.Compare(a, b))
	})
}

// severityWeight scores one detection of an incident: a critical counts
// for more than several lows.
func severityWeight(s api.Severity) int {
	switch s {
	case api.Severity_SEVERITY_CRITICAL:
		return 40
	case api.Severity_SEVERITY_HIGH:
		return 20
	case api.Severity_SEVERITY_MEDIUM:
		return 8
	case api.Severity_SEVERITY_LOW:
		return 3
	}
	return 1
}

// alertHead is what the index keeps of each alert: enough to filter and
// order the alert list and to build incidents, without reading Badger.
type alertHead struct {
	id                           string
	detection, cluster, node, ns string // interned
	// workload is where the alert happened: ns/workload, ns/pod or the
	// host's node (interned), for the overview's top workloads.
	workload string
	// mitre are "tactic\x00technique ID\x00technique" (interned), for the
	// overview's ATT&CK matrix.
	mitre       []string
	sev         api.Severity
	first, last int64 // unix ns: a third of a time.Time
	count       uint64
	incident    *incident
}

// incident is the index's working form of an Incident.
type incident struct {
	id          string
	first, last time.Time
	alerts      []*alertHead
	// Small sets (a story has a few of each) as slices: 20 000 incidents
	// with six maps each would weigh more than their alerts.
	detections []detectionSeverity
	tactics    []string
	clusters   []string
	nodes      []string
	pods       []string
	images     []string
	// containers outside pods, by name (or short ID)
	containers []string
	// links are the link keys created for this incident (some may have
	// been pruned or taken over by a merge).
	links []string
}

type detectionSeverity struct {
	detection string
	sev       api.Severity
}

// addUniq adds v to the set *set.
func addUniq(set *[]string, v string) {
	if !slices.Contains(*set, v) {
		*set = append(*set, v)
	}
}

func (inc *incident) addDetection(d string, sev api.Severity) {
	for i := range inc.detections {
		if inc.detections[i].detection == d {
			inc.detections[i].sev = max(inc.detections[i].sev, sev)
			return
		}
	}
	inc.detections = append(inc.detections, detectionSeverity{d, sev})
}

type linkRef struct {
	incident    string
	first, last time.Time
}

// incidentIndex groups alerts into incidents and indexes alert heads.
type incidentIndex struct {
	window time.Duration

	mu        sync.RWMutex
	alerts    map[string]*alertHead
	incidents map[string]*incident
	// merged maps an incident merged into another to the one that absorbed
	// it, so links to it keep working.
	merged map[string]string
	links  map[string]linkRef
	// strs interns the few distinct detections, nodes, clusters and
	// namespaces so 100 000 heads do not hold 100 000 copies.
	strs map[string]string
	// newest is the latest alert time seen; links older than
	// newest-window can no longer join anything and are pruned.
	newest     time.Time
	pruneAbove int
}

func newIncidentIndex(window time.Duration) *incidentIndex {
	if window <= 0 {
		window = defaultIncidentWindow
	}
	return &incidentIndex{window: window, alerts: map[string]*alertHead{}, incidents: map[string]*incident{},
		merged: map[string]string{}, links: map[string]linkRef{}, strs: map[string]string{}, pruneAbove: 4096}
}

func (x *incidentIndex) intern(s string) string {
	if v, ok := x.strs[s]; ok {
		return v
	}
	x.strs[s] = s
	return s
}

// runtimeExes are container runtime processes: a container's processes
// descend from one, and what is above it is the host's.
var runtimeExes = []string{"runc", "crun", "conmon", "containerd-shim", "containerd-shim-runc-v1",
	"containerd-shim-runc-v2", "docker-containerd-shim", "youki", "runsc", "runsc-sandbox"}

// hubExes are long-lived processes that are the ancestors of unrelated
// work; sharing one does not link two alerts.
var hubExes = []string{"systemd", "init", "containerd", "dockerd", "crio", "kubelet", "harrier", "sshd", "cron", "crond",
	"supervisord", "tini", "dumb-init"}

func exeBase(exe string) string {
	return filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
}

// containerBoundary is the index in ancestry (nearest parent first) of the
// first container runtime process: ancestors before it run in the
// container, it and those after it on the host. -1: no runtime process
// is among the ancestors (a host process, or a chain the cache cut short).
func containerBoundary(ancestry []*api.Ancestor) int {
	for i, a := range ancestry {
		if slices.Contains(runtimeExes, exeBase(a.GetExe())) {
			return i
		}
	}
	return -1
}

func procKey(node string, pid uint32, start time.Time) string {
	return "x:" + node + "/" + strconv.FormatUint(uint64(pid), 10) + "@" + strconv.FormatInt(start.UnixNano(), 10)
}

// pbTime is t as a time.Time, zero for nil (AsTime would say 1970).
func pbTime(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// alertLinks lists what a links on: its container, pod and workload, its
// own process and its ancestors below the container runtime (or, on the
// host, those that are not hubs).
func alertLinks(a *api.Alert) []string {
	var keys []string
	c := a.GetContainer()
	if c.GetId() != "" {
		keys = append(keys, "c:"+a.GetNode()+"/"+c.GetId())
	}
	switch {
	case c.GetPodUid() != "":
		keys = append(keys, "p:"+a.GetCluster()+"/"+c.GetPodUid())
	case c.GetPodName() != "":
		keys = append(keys, "p:"+a.GetCluster()+"/"+c.GetPodNamespace()+"/"+c.GetPodName())
	}
	if c.GetWorkloadName() != "" {
		keys = append(keys, "w:"+a.GetCluster()+"/"+c.GetPodNamespace()+"/"+c.GetWorkloadKind()+"/"+c.GetWorkloadName())
	}
	if p := a.GetProcess(); p.GetTgid() != 0 {
		keys = append(keys, procKey(a.GetNode(), p.GetTgid(), pbTime(p.GetStartTime())))
	}
	anc := a.GetAncestry()
	if b := containerBoundary(anc); b >= 0 {
		anc = anc[:b]
	}
	for _, an := range anc {
		if an.GetPid() <= 1 || slices.Contains(hubExes, exeBase(an.GetExe())) {
			continue
		}
		keys = append(keys, procKey(a.GetNode(), an.GetPid(), pbTime(an.GetStartTime())))
	}
	return keys
}

func incidentID(alertID string) string {
	sum := sha256.Sum256([]byte("harrier-incident\x00" + alertID))
	return "inc-" + hex.EncodeToString(sum[:8])
}

func alertTimes(a *api.Alert) (first, last time.Time) {
	first, last = pbTime(a.GetFirstSeen()), pbTime(a.GetLastSeen())
	if first.IsZero() {
		first = last
	}
	if last.Before(first) {
		last = first
	}
	return first, last
}

// add files a (new or a repeat of a stored alert) under its incident,
// making one or merging those it links.
func (x *incidentIndex) add(a *api.Alert) {
	x.mu.Lock()
	defer x.mu.Unlock()
	first, last := alertTimes(a)
	h := x.alerts[a.GetId()]
	if h == nil {
		c := a.GetContainer()
		h = &alertHead{id: a.GetId(), detection: x.intern(a.GetDetectionId()), cluster: x.intern(a.GetCluster()),
			node: x.intern(a.GetNode()), ns: x.intern(c.GetPodNamespace())}
		x.alerts[h.id] = h
		switch {
		case c.GetWorkloadName() != "":
			h.workload = x.intern(c.GetPodNamespace() + "/" + c.GetWorkloadName())
		case c.GetPodName() != "":
			h.workload = x.intern(c.GetPodNamespace() + "/" + c.GetPodName())
		case c.GetName() != "":
			h.workload = x.intern("container " + c.GetName() + " on " + a.GetNode())
		default:
			h.workload = x.intern("host " + a.GetNode())
		}
		for _, m := range a.GetMitre() {
			h.mitre = append(h.mitre, x.intern(m.GetTactic()+"\x00"+m.GetTechniqueId()+"\x00"+m.GetTechnique()))
		}
	}
	h.sev, h.first, h.last, h.count = a.GetSeverity(), first.UnixNano(), last.UnixNano(), a.GetCount()

	keys := alertLinks(a)
	var join []string
	if h.incident != nil {
		join = append(join, h.incident.id)
	}
	for _, k := range keys {
		l, ok := x.links[k]
		if ok && !first.Before(l.first.Add(-x.window)) && !first.After(l.last.Add(x.window)) {
			if id := x.resolve(l.incident); !slices.Contains(join, id) {
				join = append(join, id)
			}
		}
	}
	var inc *incident
	switch len(join) {
	case 0:
		inc = &incident{id: incidentID(a.GetId()), first: first, last: last}
		x.incidents[inc.id] = inc
	default:
		inc = x.incidents[join[0]]
		for _, id := range join[1:] {
			inc = x.merge(inc, x.incidents[id])
		}
	}
	if h.incident == nil {
		inc.alerts = append(inc.alerts, h)
	}
	h.incident = inc
	inc.first, inc.last = minTime(inc.first, first), maxTime(inc.last, last)
	inc.addDetection(h.detection, a.GetSeverity())
	for _, m := range a.GetMitre() {
		if m.GetTactic() != "" {
			addUniq(&inc.tactics, x.intern(m.GetTactic()))
		}
	}
	if h.cluster != "" {
		addUniq(&inc.clusters, h.cluster)
	}
	addUniq(&inc.nodes, h.node)
	c := a.GetContainer()
	if c.GetPodName() != "" {
		addUniq(&inc.pods, c.GetPodNamespace()+"/"+c.GetPodName())
	}
	if c.GetImage() != "" {
		addUniq(&inc.images, c.GetImage())
	}
	if c.GetPodName() == "" && c.GetId() != "" {
		addUniq(&inc.containers, cmp.Or(c.GetName(), shortID(c.GetId())))
	}
	for _, k := range keys {
		l, ok := x.links[k]
		if !ok || x.resolve(l.incident) != inc.id {
			if !ok || l.last.Before(first.Add(-x.window)) {
				l = linkRef{first: first, last: last}
			}
			l.incident = inc.id
			inc.links = append(inc.links, k)
		}
		l.first, l.last = minTime(l.first, first), maxTime(l.last, last)
		x.links[k] = l
	}
	x.newest = maxTime(x.newest, last)
	if len(x.links) > x.pruneAbove {
		x.prune()
	}
}

// merge moves the smaller incident into the larger, keeping the ID of the
// one seen first.
func (x *incidentIndex) merge(a, b *incident) *incident {
	if a == b || b == nil {
		return a
	}
	keep, gone := a, b
	if b.first.Before(a.first) || (b.first.Equal(a.first) && b.id < a.id) {
		keep, gone = b, a
	}
	for _, h := range gone.alerts {
		h.incident = keep
	}
	keep.alerts = append(keep.alerts, gone.alerts...)
	keep.first, keep.last = minTime(keep.first, gone.first), maxTime(keep.last, gone.last)
	for _, d := range gone.detections {
		keep.addDetection(d.detection, d.sev)
	}
	for _, set := range []struct{ into, from *[]string }{{&keep.tactics, &gone.tactics}, {&keep.clusters, &gone.clusters},
		{&keep.nodes, &gone.nodes}, {&keep.pods, &gone.pods}, {&keep.images, &gone.images},
		{&keep.containers, &gone.containers}} {
		for _, v := range *set.from {
			addUniq(set.into, v)
		}
	}
	for _, k := range gone.links {
		if l, ok := x.links[k]; ok && l.incident == gone.id {
			l.incident = keep.id
			x.links[k] = l
			keep.links = append(keep.links, k)
		}
	}
	delete(x.incidents, gone.id)
	x.merged[gone.id] = keep.id
	return keep
}

// resolve follows merges to the incident that holds id now.
func (x *incidentIndex) resolve(id string) string {
	for {
		next, ok := x.merged[id]
		if !ok {
			return id
		}
		id = next
	}
}

// prune drops links that can no longer join anything (older than the
// newest alert by more than the window) and forgets them in their
// incidents' lists.
func (x *incidentIndex) prune() {
	cut := x.newest.Add(-x.window)
	for k, l := range x.links {
		if l.last.Before(cut) {
			delete(x.links, k)
		}
	}
	for _, inc := range x.incidents {
		inc.links = slices.DeleteFunc(inc.links, func(k string) bool {
			l, ok := x.links[k]
			return !ok || l.incident != inc.id
		})
		if cap(inc.links) > 2*len(inc.links)+4 { // most incidents end with none
			inc.links = slices.Clone(inc.links)
		}
	}
	x.pruneAbove = max(4096, 2*len(x.links))
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func sortedCopy(set []string) []string {
	out := slices.Clone(set)
	slices.Sort(out)
	return out
}

// view renders inc; timeline adds the alert IDs in first-seen order.
func (inc *incident) view(timeline bool) Incident {
	v := Incident{ID: inc.id, FirstSeen: inc.first, LastSeen: inc.last, Alerts: len(inc.alerts),
		Tactics: sortedCopy(inc.tactics), Clusters: sortedCopy(inc.clusters), Nodes: sortedCopy(inc.nodes),
		Pods: sortedCopy(inc.pods), Images: sortedCopy(inc.images)}
	sortTactics(v.Tactics)
	for _, h := range inc.alerts {
		v.Events += max(h.count, 1)
	}
	v.Severity, v.Score = inc.rank()
	ds := slices.Clone(inc.detections)
	// Detections most severe first, the title naming the worst.
	slices.SortFunc(ds, func(a, b detectionSeverity) int {
		return cmp.Or(cmp.Compare(b.sev, a.sev), strings.Compare(a.detection, b.detection))
	})
	for _, d := range ds {
		v.Detections = append(v.Detections, d.detection)
	}
	where := strings.Join(v.Nodes, ", ")
	switch {
	case len(v.Pods) > 0:
		where = strings.Join(v.Pods, ", ")
	case len(inc.containers) > 0:
		where = "container " + strings.Join(sortedCopy(inc.containers), ", ") + " on " + where
	}
	if len(where) > 80 {
		where = clip(where, 80)
	}
	names := v.Detections
	if len(names) > 3 {
		names = append(slices.Clip(names[:3]), fmt.Sprintf("%d more", len(v.Detections)-3))
	}
	v.Title = strings.Join(names, ", ") + " on " + where
	if timeline {
		hs := slices.Clone(inc.alerts)
		slices.SortFunc(hs, func(a, b *alertHead) int {
			return cmp.Or(cmp.Compare(a.first, b.first), strings.Compare(a.id, b.id))
		})
		for _, h := range hs {
			v.AlertIDs = append(v.AlertIDs, h.id)
		}
	}
	return v
}

// rank is an incident's severity (its worst detection's) and score: the
// detections' weights, plus more for a story that spans tactics or nodes,
// which is further along than one alert repeated.
func (inc *incident) rank() (api.Severity, int) {
	var sev api.Severity
	score := 10*max(len(inc.tactics)-1, 0) + 15*max(len(inc.nodes)-1, 0)
	for _, d := range inc.detections {
		sev = max(sev, d.sev)
		score += severityWeight(d.sev)
	}
	return sev, score
}

func (x *incidentIndex) list(q IncidentQuery) []Incident {
	x.mu.RLock()
	defer x.mu.RUnlock()
	type ranked struct {
		inc   *incident
		score int
	}
	var hits []ranked
	for _, inc := range x.incidents {
		sev, score := inc.rank()
		if sev < q.Severity || (!q.Since.IsZero() && inc.last.Before(q.Since)) {
			continue
		}
		if q.Node != "" && !slices.Contains(inc.nodes, q.Node) {
			continue
		}
		hits = append(hits, ranked{inc, score})
	}
	slices.SortFunc(hits, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(b.score, a.score), b.inc.last.Compare(a.inc.last), strings.Compare(a.inc.id, b.inc.id))
	})
	hits = hits[:min(len(hits), effectiveLimit(q.Limit))]
	out := make([]Incident, 0, len(hits))
	for _, h := range hits {
		out = append(out, h.inc.view(false))
	}
	return out
}

func (x *incidentIndex) get(id string) (Incident, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	inc, ok := x.incidents[x.resolve(id)]
	if !ok {
		return Incident{}, false
	}
	return inc.view(true), true
}

func (x *incidentIndex) incidentOf(alertID string) (string, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	h, ok := x.alerts[alertID]
	if !ok {
		return "", false
	}
	return h.incident.id, true
}

// query returns the IDs of the alerts matching q, most recently seen first,
// at most q's limit. It keeps the best limit heads in a heap rather than
// sorting every match: the unfiltered list of 100 000 alerts is one pass.
func (x *incidentIndex) query(q AlertQuery) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	l := effectiveLimit(q.Limit)
	top := &headHeap{}
	for _, h := range x.alerts {
		if !headMatches(h, q) {
			continue
		}
		if top.Len() < l {
			heap.Push(top, h)
		} else if newerHead(h, (*top)[0]) {
			(*top)[0] = h
			heap.Fix(top, 0)
		}
	}
	hs := []*alertHead(*top)
	slices.SortFunc(hs, func(a, b *alertHead) int {
		if newerHead(a, b) {
			return -1
		}
		return 1
	})
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = h.id
	}
	return ids
}

// newerHead orders the alert list: last seen, newest first, then ID.
func newerHead(a, b *alertHead) bool {
	if c := cmp.Compare(a.last, b.last); c != 0 {
		return c > 0
	}
	return a.id < b.id
}

// headHeap is a min-heap by newerHead: its root is the one to drop first.
type headHeap []*alertHead

func (h headHeap) Len() int           { return len(h) }
func (h headHeap) Less(i, j int) bool { return newerHead(h[j], h[i]) }
func (h headHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *headHeap) Push(v any)        { *h = append(*h, v.(*alertHead)) }
func (h *headHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

// headMatches is the one definition of AlertQuery's filters.
func headMatches(h *alertHead, q AlertQuery) bool {
	return (q.Detection == "" || h.detection == q.Detection) && h.sev >= q.Severity &&
		(q.Cluster == "" || h.cluster == q.Cluster) && (q.Node == "" || h.node == q.Node) &&
		(q.Namespace == "" || h.ns == q.Namespace) && (q.Since.IsZero() || h.last >= q.Since.UnixNano())
}

// loadIncidents fills the index from the stored alerts, in first-seen
// order (the order they would have arrived in). A first pass keeps only
// each alert's first-seen time and ID, the second decodes one alert at a
// time, so opening a store of 100 000 alerts never holds them all.
func (s *BadgerStore) loadIncidents(ctx context.Context) error {
	type ref struct {
		first int64
		id    string
	}
	var refs []ref
	err := s.db.View(func(txn *badger.Txn) error {
		a := &api.Alert{}
		for item := range badgerkv.Prefix(txn, key(prefixAlert)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			proto.Reset(a)
			if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, a) }); err != nil {
				return fmt.Errorf("alert %q: %w", item.Key(), err)
			}
			first, _ := alertTimes(a)
			refs = append(refs, ref{first.UnixNano(), a.GetId()})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load incidents: %w", err)
	}
	slices.SortFunc(refs, func(a, b ref) int { return cmp.Or(cmp.Compare(a.first, b.first), strings.Compare(a.id, b.id)) })
	err = s.db.View(func(txn *badger.Txn) error {
		for _, r := range refs {
			if err := ctx.Err(); err != nil {
				return err
			}
			a, err := getProto[api.Alert](txn, key(prefixAlert, r.id))
			if err != nil {
				return fmt.Errorf("alert %q: %w", r.id, err)
			}
			s.incidents.add(a)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load incidents: %w", err)
	}
	return nil
}

// Incidents lists incidents, highest score first.
func (s *BadgerStore) Incidents(ctx context.Context, q IncidentQuery) ([]Incident, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.incidents.list(q), nil
}

// Incident returns one incident with its timeline.
func (s *BadgerStore) Incident(ctx context.Context, id string) (Incident, error) {
	if err := ctx.Err(); err != nil {
		return Incident{}, err
	}
	inc, ok := s.incidents.get(id)
	if !ok {
		return Incident{}, fmt.Errorf("incident %q: %w", id, ErrNotFound)
	}
	return inc, nil
}

// IncidentOf names the incident alertID belongs to.
func (s *BadgerStore) IncidentOf(alertID string) (string, bool) {
	return s.incidents.incidentOf(alertID)
}
