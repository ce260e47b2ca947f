package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
)

// An alert's explanation: what the alert page shows beyond the alert's
// own fields, gathered from the alert, its incident, the raw events, the
// response records and the built-in rules. Every string in it comes from
// the agent (attacker-controlled) and is escaped by the template.

// Bounds of what one alert page reads.
const (
	explainSiblingAlerts = 200  // incident alerts searched for children
	explainEvents        = 1000 // newest raw events of the node searched
	explainChildren      = 100  // processes shown under the alert's
	explainActivities    = 6    // things shown per child process
	explainSimilar       = 10
	explainListItems     = 50 // peers, files
)

// Explanation is what the alert page adds to the alert
// (GET /api/v1/alerts/{id}/explanation gives it as JSON).
type Explanation struct {
	Sentence string `json:"sentence"`
	Incident string `json:"incident,omitempty"`
	// Tree is the root of the process tree: the oldest ancestor recorded,
	// down to the alert's process (This) and the processes that followed.
	Tree *ProcNode `json:"tree"`
	// InContainer: the alert's process runs in a container; Boundary says
	// whether the runtime process was among the ancestors.
	InContainer bool `json:"in_container"`
	Boundary    bool `json:"boundary_recorded"`
	// EventsSearched is how many raw events were searched for children.
	EventsSearched int `json:"events_searched"`
	// Pivot: the events explorer's query for this process tree.
	PivotNode  string        `json:"-"`
	PivotPID   uint32        `json:"-"`
	PivotSince string        `json:"-"`
	Payloads   []CmdPayloads `json:"payloads"`
	Peers      []string      `json:"peers"`
	Files      []string      `json:"files"`
	Labels     []string      `json:"labels,omitempty"` // k=v, sorted
	Rule       *RuleView     `json:"rule,omitempty"`
	Evidence   []string      `json:"evidence"` // "2 × exec", by kind
	// Commands are analysts' response commands naming the alert (their
	// signed bytes left out).
	Commands  []CommandRecord `json:"commands,omitempty"`
	Responses []ResponseSeen  `json:"responses,omitempty"`
	Similar   []*api.Alert    `json:"-"`
	// SimilarIDs are Similar's IDs, for the API.
	SimilarIDs []string `json:"similar"`
	// Problems lists what could not be read (the page shows the rest).
	Problems []string `json:"problems,omitempty"`
	// followed are the raw events of the processes below the alert's.
	followed []*api.Event
}

// ProcNode is one process of the tree.
type ProcNode struct {
	PID   uint32    `json:"pid"`
	Exe   string    `json:"exe"`
	Args  string    `json:"cmdline"`
	UID   uint32    `json:"uid"`
	Start time.Time `json:"start_time,omitzero"`
	// Host marks processes outside the container (the runtime and above).
	Host bool `json:"host"`
	// BoundaryHere: the container starts below this node.
	BoundaryHere bool `json:"container_below,omitempty"`
	This         bool `json:"this_alert,omitempty"`
	// AlertID and AlertName: an alert raised on this process.
	AlertID    string   `json:"alert_id,omitempty"`
	AlertName  string   `json:"alert_name,omitempty"`
	Activities []string `json:"activities,omitempty"`
	// Followed: a process below the alert's. The page shows these folded
	// (pid and name) so that the path to the alert reads at a glance;
	// unfolding one shows its command line, what it did and its children.
	Followed bool        `json:"followed,omitempty"`
	Children []*ProcNode `json:"children,omitempty"`
}

// RuleView is the built-in rule behind an alert, as the page shows it.
type RuleView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Source    string `json:"source"`
	Condition string `json:"condition,omitempty"`
	Detector  string `json:"detector,omitempty"`
	Output    string `json:"output,omitempty"`
	Threshold string `json:"threshold,omitempty"`
}

func ruleView(r *analytics.Rule) *RuleView {
	if r == nil {
		return nil
	}
	v := &RuleView{ID: r.ID, Name: r.Name, Source: r.Source, Condition: r.Condition, Detector: r.Detector, Output: r.Output}
	if t := r.Threshold; t != nil {
		v.Threshold = fmt.Sprintf("%d matches within %v", t.Count, t.Window)
	}
	return v
}

// CmdPayloads are the payloads found in one command line.
type CmdPayloads struct {
	Where    string    `json:"where"` // "process 1234"
	Cmdline  string    `json:"cmdline"`
	Payloads []Payload `json:"payloads"`
}

// ResponseSeen is an agent's report of a response to the alert.
type ResponseSeen struct {
	Time time.Time `json:"time"`
	*api.Response
}

type explainer struct {
	store    Store
	control  *ResponseControl
	rules    func() (*analytics.RuleSet, error)
	problems []string
}

func (x *explainer) problem(what string, err error) {
	x.problems = append(x.problems, what+": "+err.Error())
}

func procNodeKey(pid uint32, start time.Time) string {
	return strconv.FormatUint(uint64(pid), 10) + "@" + strconv.FormatInt(start.UnixNano(), 10)
}

// sameProcess: same PID and, when both know it, same start time (PIDs are
// reused).
func sameProcess(pid uint32, start time.Time, pid2 uint32, start2 time.Time) bool {
	return pid == pid2 && (start.IsZero() || start2.IsZero() || start.Equal(start2))
}

func (x *explainer) explain(ctx context.Context, a *api.Alert) *Explanation {
	e := &Explanation{InContainer: a.GetContainer().GetId() != ""}
	if src, ok := x.store.(IncidentSource); ok {
		e.Incident, _ = src.IncidentOf(a.GetId())
	}
	proc := a.GetProcess()
	this := &ProcNode{PID: proc.GetTgid(), Exe: proc.GetExe(), Args: strings.Join(proc.GetArgs(), " "), UID: proc.GetUid(),
		Start: pbTime(proc.GetStartTime()), This: true, AlertID: a.GetId(), AlertName: a.GetName()}
	e.Tree = this
	// Ancestors, nearest first: wrap this in each.
	anc := a.GetAncestry()
	b := containerBoundary(anc)
	e.Boundary = b >= 0
	if b < 0 {
		b = hostHub(anc)
	}
	for i, an := range anc {
		n := &ProcNode{PID: an.GetPid(), Exe: an.GetExe(), Args: strings.Join(an.GetArgs(), " "), UID: an.GetUid(),
			Start: pbTime(an.GetStartTime()), Host: !e.InContainer || (b >= 0 && i >= b), Children: []*ProcNode{e.Tree}}
		n.BoundaryHere = e.InContainer && i == b
		e.Tree = n
	}
	this.Host = !e.InContainer
	first, _ := alertTimes(a)
	e.PivotNode, e.PivotPID, e.PivotSince = a.GetNode(), proc.GetTgid(), first.Add(-time.Minute).UTC().Format(time.RFC3339)
	x.addChildren(ctx, a, this, e)
	e.Payloads = payloadsOf(a, e.Tree)
	e.Peers, e.Files, e.Evidence = evidenceFacts(a.GetEvidence())
	// What the processes that followed did counts too.
	peers, files, _ := evidenceFacts(e.followed)
	for _, p := range peers {
		if len(e.Peers) < explainListItems && !slices.Contains(e.Peers, p) {
			e.Peers = append(e.Peers, p)
		}
	}
	for _, f := range files {
		if len(e.Files) < explainListItems && !slices.Contains(e.Files, f) {
			e.Files = append(e.Files, f)
		}
	}
	for k, v := range a.GetContainer().GetLabels() {
		e.Labels = append(e.Labels, k+"="+v)
	}
	slices.Sort(e.Labels)
	if x.rules != nil {
		if rs, err := x.rules(); err != nil {
			x.problem("built-in rules", err)
		} else {
			e.Rule = ruleView(rs.Rule(a.GetDetectionId()))
		}
	}
	x.responses(ctx, a, e)
	x.similar(ctx, a, e)
	e.Sentence = sentence(a, e)
	e.Problems = x.problems
	return e
}

// addChildren puts under this the processes that descend from it: from
// the other alerts of its incident and from the node's recent raw events.
func (x *explainer) addChildren(ctx context.Context, a *api.Alert, this *ProcNode, e *Explanation) {
	nodes := map[string]*ProcNode{procNodeKey(this.PID, this.Start): this}
	count := 0
	// path lists the descendants from this down to the process itself
	// (ancestry nearest first, cut where this process is).
	place := func(anc []*api.Ancestor, p *api.Process) *ProcNode {
		j := slices.IndexFunc(anc, func(an *api.Ancestor) bool {
			return sameProcess(an.GetPid(), pbTime(an.GetStartTime()), this.PID, this.Start)
		})
		if j < 0 || p == nil {
			return nil
		}
		parent := this
		add := func(pid uint32, exe string, args []string, uid uint32, start time.Time) *ProcNode {
			k := procNodeKey(pid, start)
			n, ok := nodes[k]
			if !ok {
				if count >= explainChildren {
					return nil
				}
				count++
				n = &ProcNode{PID: pid, Exe: exe, Args: strings.Join(args, " "), UID: uid, Start: start, Host: this.Host, Followed: true}
				nodes[k] = n
				parent.Children = append(parent.Children, n)
			}
			return n
		}
		for i := j - 1; i >= 0 && parent != nil; i-- {
			an := anc[i]
			parent = add(an.GetPid(), an.GetExe(), an.GetArgs(), an.GetUid(), pbTime(an.GetStartTime()))
		}
		if parent == nil {
			return nil
		}
		return add(p.GetTgid(), p.GetExe(), p.GetArgs(), p.GetUid(), pbTime(p.GetStartTime()))
	}
	if src, ok := x.store.(IncidentSource); ok && e.Incident != "" {
		if inc, err := src.Incident(ctx, e.Incident); err != nil {
			x.problem("incident", err)
		} else {
			for _, id := range inc.AlertIDs[:min(len(inc.AlertIDs), explainSiblingAlerts)] {
				if id == a.GetId() {
					continue
				}
				o, err := x.store.Alert(ctx, id)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					x.problem("incident alert "+id, err)
					break
				}
				if o.GetNode() != a.GetNode() {
					continue
				}
				if n := place(o.GetAncestry(), o.GetProcess()); n != nil && n.AlertID == "" {
					n.AlertID, n.AlertName = o.GetId(), o.GetName()
				}
			}
		}
	}
	first, _ := alertTimes(a)
	evs, err := x.store.Events(ctx, EventQuery{Node: a.GetNode(), Since: first.Add(-time.Minute), Limit: explainEvents})
	if err != nil {
		x.problem("raw events", err)
	}
	e.EventsSearched = len(evs)
	slices.Reverse(evs) // oldest first: the tree reads in order
	for _, ev := range evs {
		if ev.GetKind() == api.EventKind_EVENT_KIND_EXIT || ev.GetKind() == api.EventKind_EVENT_KIND_FORK {
			continue
		}
		n := place(ev.GetAncestry(), ev.GetProcess())
		if n == nil {
			continue
		}
		e.followed = append(e.followed, ev)
		if act := activity(ev); act != "" && len(n.Activities) < explainActivities && !slices.Contains(n.Activities, act) {
			n.Activities = append(n.Activities, act)
		}
	}
}

// activity says in a few words what an event did.
func activity(ev *api.Event) string {
	switch d := ev.GetDetail().(type) {
	case *api.Event_Exec:
		return "exec " + d.Exec.GetFilename()
	case *api.Event_FileOpen:
		mode := "read"
		if d.FileOpen.GetWrite() {
			mode = "write"
		}
		return "open (" + mode + ") " + d.FileOpen.GetPath()
	case *api.Event_FileUnlink:
		return "delete " + d.FileUnlink.GetPath()
	case *api.Event_FileRename:
		return "rename " + d.FileRename.GetOldPath() + " → " + d.FileRename.GetNewPath()
	case *api.Event_Chmod:
		return fmt.Sprintf("chmod %o %s", d.Chmod.GetMode(), d.Chmod.GetPath())
	case *api.Event_Connect:
		return "connect " + addr(d.Connect.GetDestination())
	case *api.Event_Listen:
		return "listen " + addr(d.Listen.GetLocal())
	case *api.Event_Accept:
		return "accept from " + addr(d.Accept.GetRemote())
	case *api.Event_DnsQuery:
		return "DNS " + d.DnsQuery.GetName()
	}
	return api.EventKind.Name(ev.GetKind())
}

func addr(a *api.SocketAddress) string {
	if a == nil || a.GetIp() == "" {
		return "?"
	}
	return net.JoinHostPort(a.GetIp(), strconv.FormatUint(uint64(a.GetPort()), 10))
}

// evidenceFacts lists the network peers and files the evidence names, and
// counts its events by kind.
func evidenceFacts(evs []*api.Event) (peers, files, kinds []string) {
	addPeer := func(s string) {
		if s != "" && s != "?" && len(peers) < explainListItems && !slices.Contains(peers, s) {
			peers = append(peers, s)
		}
	}
	addFile := func(s string) {
		if s != "" && len(files) < explainListItems && !slices.Contains(files, s) {
			files = append(files, s)
		}
	}
	count := map[string]int{}
	var order []string
	for _, ev := range evs {
		k := api.EventKind.Name(ev.GetKind())
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
		switch d := ev.GetDetail().(type) {
		case *api.Event_Connect:
			addPeer(addr(d.Connect.GetDestination()) + " (connect)")
		case *api.Event_Accept:
			addPeer(addr(d.Accept.GetRemote()) + " (accepted)")
		case *api.Event_Listen:
			addPeer(addr(d.Listen.GetLocal()) + " (listening)")
		case *api.Event_DnsQuery:
			addPeer(d.DnsQuery.GetName() + " (DNS query)")
		case *api.Event_Exec:
			addFile(d.Exec.GetFilename() + " (executed)")
			for _, s := range d.Exec.GetStdioSockets() {
				if s.GetRemote() != nil {
					addPeer(addr(s.GetRemote()) + fmt.Sprintf(" (fd %d of the new program)", s.GetFd()))
				}
			}
			if p := d.Exec.GetLdPreload(); p != "" {
				addFile(p + " (LD_PRELOAD)")
			}
		case *api.Event_FileOpen:
			mode := "read"
			if d.FileOpen.GetWrite() {
				mode = "written"
			}
			addFile(d.FileOpen.GetPath() + " (" + mode + ")")
		case *api.Event_FileUnlink:
			addFile(d.FileUnlink.GetPath() + " (deleted)")
		case *api.Event_FileRename:
			addFile(d.FileRename.GetOldPath() + " → " + d.FileRename.GetNewPath() + " (renamed)")
		case *api.Event_Chmod:
			addFile(d.Chmod.GetPath() + fmt.Sprintf(" (chmod %o)", d.Chmod.GetMode()))
		case *api.Event_Mount:
			addFile(d.Mount.GetSource() + " on " + d.Mount.GetTarget() + " (mounted)")
		case *api.Event_ModuleLoad:
			addFile(d.ModuleLoad.GetPath() + " (kernel module)")
		case *api.Event_MemfdCreate:
			addFile("memfd:" + d.MemfdCreate.GetName() + " (in memory)")
		}
	}
	for _, k := range order {
		kinds = append(kinds, fmt.Sprintf("%d × %s", count[k], k))
	}
	return peers, files, kinds
}

// payloadsOf decodes what is encoded in the command lines of the tree.
func payloadsOf(a *api.Alert, root *ProcNode) []CmdPayloads {
	var out []CmdPayloads
	seen := map[string]bool{}
	var walk func(n *ProcNode)
	walk = func(n *ProcNode) {
		if n.Args != "" && !seen[n.Args] {
			seen[n.Args] = true
			if ps := FindPayloads(n.Args); len(ps) > 0 {
				out = append(out, CmdPayloads{Where: fmt.Sprintf("process %d", n.PID), Cmdline: n.Args, Payloads: ps})
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(root)
	for _, ev := range a.GetEvidence() {
		if fo := ev.GetFileOpen(); fo != nil && !seen[fo.GetPath()] {
			seen[fo.GetPath()] = true
			if ps := FindPayloads(fo.GetPath()); len(ps) > 0 {
				out = append(out, CmdPayloads{Where: "file path", Cmdline: fo.GetPath(), Payloads: ps})
			}
		}
	}
	return out
}

// responses finds the commands analysts issued for the alert and what the
// agent reported doing about it (response events).
func (x *explainer) responses(ctx context.Context, a *api.Alert, e *Explanation) {
	if x.control != nil {
		cmds, err := x.control.Commands(ctx, "", 0)
		if err != nil {
			x.problem("response commands", err)
		}
		for _, c := range cmds {
			if c.AlertID == a.GetId() {
				c.Signed = nil
				e.Commands = append(e.Commands, c)
			}
		}
	}
	first, _ := alertTimes(a)
	evs, err := x.store.Events(ctx, EventQuery{Node: a.GetNode(), Kind: api.EventKind_EVENT_KIND_RESPONSE, Since: first.Add(-time.Minute), Limit: MaxLimit})
	if err != nil {
		x.problem("response events", err)
	}
	for _, ev := range evs {
		if r := ev.GetResponse(); r != nil && r.GetAlertId() == a.GetId() {
			e.Responses = append(e.Responses, ResponseSeen{Time: pbTime(ev.GetTime()), Response: r})
		}
	}
}

// similar lists other alerts of the same detection on the same workload
// or image.
func (x *explainer) similar(ctx context.Context, a *api.Alert, e *Explanation) {
	c := a.GetContainer()
	if c.GetImage() == "" && c.GetWorkloadName() == "" && a.GetNode() == "" {
		return
	}
	cands, err := x.store.Alerts(ctx, AlertQuery{Detection: a.GetDetectionId(), Limit: MaxLimit})
	if err != nil {
		x.problem("similar alerts", err)
		return
	}
	for _, o := range cands {
		if o.GetId() == a.GetId() || len(e.Similar) >= explainSimilar {
			continue
		}
		oc := o.GetContainer()
		same := (c.GetImage() != "" && oc.GetImage() == c.GetImage()) ||
			(c.GetWorkloadName() != "" && oc.GetWorkloadName() == c.GetWorkloadName() && oc.GetPodNamespace() == c.GetPodNamespace()) ||
			(c.GetId() == "" && oc.GetId() == "" && o.GetNode() == a.GetNode() && o.GetProcess().GetExe() == a.GetProcess().GetExe())
		if same {
			e.Similar = append(e.Similar, o)
			e.SimilarIDs = append(e.SimilarIDs, o.GetId())
		}
	}
}

// sentence says what happened in one sentence.
func sentence(a *api.Alert, e *Explanation) string {
	var b strings.Builder
	p := a.GetProcess()
	who := procName(p.GetExe(), p.GetArgs())
	if who == "" {
		who = "a process"
	}
	first, _ := alertTimes(a)
	fmt.Fprintf(&b, "At %s, %s (pid %d, %s)", first.UTC().Format("15:04:05Z on 2006-01-02"), who, p.GetTgid(), uidText(p.GetUid()))
	if len(a.GetAncestry()) > 0 {
		fmt.Fprintf(&b, ", started by %s", procName(a.GetAncestry()[0].GetExe(), a.GetAncestry()[0].GetArgs()))
	}
	c := a.GetContainer()
	switch {
	case c.GetPodName() != "":
		fmt.Fprintf(&b, ", in pod %s/%s", c.GetPodNamespace(), c.GetPodName())
	case c.GetName() != "":
		fmt.Fprintf(&b, ", in container %s", c.GetName())
	case c.GetId() != "":
		fmt.Fprintf(&b, ", in container %s", shortID(c.GetId()))
	default:
		b.WriteString(", on the host")
	}
	if c.GetImage() != "" {
		fmt.Fprintf(&b, " (image %s)", c.GetImage())
	}
	fmt.Fprintf(&b, " of node %s, triggered %q (%s)", a.GetNode(), a.GetName(), api.Severity.Name(a.GetSeverity()))
	if s := a.GetSummary(); s != "" {
		fmt.Fprintf(&b, ": %s", s)
	}
	if a.GetCount() > 1 {
		fmt.Fprintf(&b, "; seen %d times until %s", a.GetCount(), pbTime(a.GetLastSeen()).UTC().Format("15:04:05Z"))
	}
	switch {
	case len(e.Commands)+len(e.Responses) > 0:
		b.WriteString("; a response was taken (below)")
	case len(a.GetMitre()) > 0:
		fmt.Fprintf(&b, "; ATT&CK %s", a.GetMitre()[0].GetTactic())
	}
	b.WriteString(".")
	return b.String()
}

func uidText(uid uint32) string {
	if uid == 0 {
		return "as root"
	}
	return "uid " + strconv.FormatUint(uint64(uid), 10)
}

// hostHub is, when the container runtime is not among the ancestors (a
// runtime that detached, a cache that lost it), the first ancestor that is
// surely the host's: init (host PID 1) or a system daemon. -1: none.
func hostHub(ancestry []*api.Ancestor) int {
	return slices.IndexFunc(ancestry, func(a *api.Ancestor) bool {
		return a.GetPid() == 1 || slices.Contains(hubExes, exeBase(a.GetExe()))
	})
}

// procName names a process as a person would: its executable's base name,
// or for a multi-call binary (busybox, toybox) the name it was run as.
func procName(exe string, args []string) string {
	name := exeBase(exe)
	if (name == "busybox" || name == "toybox" || name == "." || name == "/") && len(args) > 0 && args[0] != "" {
		name = exeBase(args[0])
	}
	if name == "." || name == "/" {
		return ""
	}
	return name
}

// NodeTree is the process tree of an incident's alerts on one node.
type NodeTree struct {
	Node  string      `json:"node"`
	Roots []*ProcNode `json:"roots"`
}

// maxIncidentTreeProcs bounds the processes an incident's tree shows.
const maxIncidentTreeProcs = 300

// incidentTrees merges the ancestry chains of alerts into one tree per
// node: the story of an incident as processes, each alert on its process.
func incidentTrees(alerts []*api.Alert) []NodeTree {
	var out []NodeTree
	byNode := map[string]int{}
	nodes := map[string]*ProcNode{} // node/pid@start
	count := 0
	for _, a := range alerts {
		p := a.GetProcess()
		if p.GetTgid() == 0 {
			continue
		}
		i, ok := byNode[a.GetNode()]
		if !ok {
			i = len(out)
			byNode[a.GetNode()] = i
			out = append(out, NodeTree{Node: a.GetNode()})
		}
		inContainer := a.GetContainer().GetId() != ""
		anc := a.GetAncestry()
		b := containerBoundary(anc)
		if b < 0 {
			b = hostHub(anc)
		}
		var parent *ProcNode
		// Oldest ancestor first; j == -1 is the alert's process.
		for j := len(anc) - 1; j >= -1; j-- {
			var pid, uid uint32
			var exe string
			var args []string
			var start time.Time
			if j >= 0 {
				an := anc[j]
				pid, uid, exe, args, start = an.GetPid(), an.GetUid(), an.GetExe(), an.GetArgs(), pbTime(an.GetStartTime())
			} else {
				pid, uid, exe, args, start = p.GetTgid(), p.GetUid(), p.GetExe(), p.GetArgs(), pbTime(p.GetStartTime())
			}
			k := a.GetNode() + "/" + procNodeKey(pid, start)
			n, ok := nodes[k]
			if !ok {
				if count >= maxIncidentTreeProcs {
					break
				}
				count++
				n = &ProcNode{PID: pid, Exe: exe, Args: strings.Join(args, " "), UID: uid, Start: start,
					Host: !inContainer || (b >= 0 && j >= b), BoundaryHere: inContainer && j == b}
				nodes[k] = n
				if parent == nil {
					out[i].Roots = append(out[i].Roots, n)
				} else {
					parent.Children = append(parent.Children, n)
				}
			}
			if j == -1 && n.AlertID == "" {
				n.AlertID, n.AlertName = a.GetId(), a.GetName()
			}
			parent = n
		}
	}
	return out
}
