package backend

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// EventSearch narrows raw events for the events explorer. Text filters
// are case-sensitive substrings; zero fields do not filter.
type EventSearch struct {
	Until time.Time // event time at or before
	// Pod matches "namespace/pod" (or the container's name or ID).
	Pod string
	// Process matches the executable or the command line.
	Process string
	// PID matches the process or any of its ancestors: a process tree.
	PID uint32
	// File matches any path the event names.
	File string
	// Dest matches a peer "ip:port" or a DNS name.
	Dest string
}

func (q EventSearch) empty() bool {
	return q.Pod == "" && q.Process == "" && q.PID == 0 && q.File == "" && q.Dest == ""
}

// matches applies the filters other than time (the scan checks those).
func (q EventSearch) matches(e *api.Event) bool {
	if q.empty() {
		return true
	}
	if q.Pod != "" {
		c := e.GetContainer()
		if !strings.Contains(c.GetPodNamespace()+"/"+c.GetPodName(), q.Pod) && !strings.Contains(c.GetName(), q.Pod) &&
			!strings.HasPrefix(c.GetId(), q.Pod) {
			return false
		}
	}
	p := e.GetProcess()
	if q.Process != "" && !strings.Contains(p.GetExe(), q.Process) && !strings.Contains(strings.Join(p.GetArgs(), " "), q.Process) {
		return false
	}
	if q.PID != 0 && p.GetTgid() != q.PID {
		found := false
		for _, a := range e.GetAncestry() {
			found = found || a.GetPid() == q.PID
		}
		if !found {
			return false
		}
	}
	if q.File != "" && !containsAny(eventPaths(e), q.File) {
		return false
	}
	if q.Dest != "" && !containsAny(eventPeers(e), q.Dest) {
		return false
	}
	return true
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// eventPaths lists the file paths an event names.
func eventPaths(e *api.Event) []string {
	switch d := e.GetDetail().(type) {
	case *api.Event_Exec:
		return []string{d.Exec.GetFilename(), e.GetProcess().GetExe()}
	case *api.Event_FileOpen:
		return []string{d.FileOpen.GetPath()}
	case *api.Event_FileUnlink:
		return []string{d.FileUnlink.GetPath()}
	case *api.Event_FileRename:
		return []string{d.FileRename.GetOldPath(), d.FileRename.GetNewPath()}
	case *api.Event_Chmod:
		return []string{d.Chmod.GetPath()}
	case *api.Event_Mount:
		return []string{d.Mount.GetSource(), d.Mount.GetTarget()}
	case *api.Event_ModuleLoad:
		return []string{d.ModuleLoad.GetPath()}
	}
	return nil
}

// eventPeers lists the network peers an event names, as "ip:port" (and
// the bare IP) or a DNS name.
func eventPeers(e *api.Event) []string {
	var out []string
	add := func(a *api.SocketAddress) {
		if a.GetIp() != "" {
			out = append(out, addr(a), a.GetIp()+":"+strconv.FormatUint(uint64(a.GetPort()), 10))
		}
	}
	switch d := e.GetDetail().(type) {
	case *api.Event_Connect:
		add(d.Connect.GetDestination())
	case *api.Event_Accept:
		add(d.Accept.GetRemote())
	case *api.Event_Listen:
		add(d.Listen.GetLocal())
	case *api.Event_DnsQuery:
		out = append(out, d.DnsQuery.GetName())
		add(d.DnsQuery.GetServer())
	case *api.Event_Exec:
		for _, s := range d.Exec.GetStdioSockets() {
			add(s.GetRemote())
		}
	}
	return out
}

// eventQueryFrom reads GET /api/v1/events' and the explorer's parameters.
func eventQueryFrom(r *http.Request, now time.Time) (EventQuery, error) {
	p := newQueryParams(r, now, "node", "kind", "since", "until", "pod", "process", "pid", "file", "dest", "limit")
	q := EventQuery{Node: p.str("node"), Kind: p.kind(), Since: p.since(), Limit: p.limit(),
		Search: EventSearch{Until: p.timeAt("until"), Pod: p.str("pod"), Process: p.str("process"), File: p.str("file"), Dest: p.str("dest")}}
	if s := p.str("pid"); s != "" {
		pid, err := strconv.ParseUint(s, 10, 32)
		if err != nil || pid == 0 {
			p.fail("pid", "want a process ID")
		}
		q.Search.PID = uint32(pid)
	}
	return q, p.err
}

type eventsPage struct {
	Title  string
	Error  string
	Kinds  []string
	Form   map[string]string
	Events []*api.Event
	Limit  int
	Now    time.Time
}

// uiEvents is the events explorer: the newest raw events matching the form.
func (s *apiServer) uiEvents(w http.ResponseWriter, r *http.Request) {
	p := eventsPage{Title: "Events", Kinds: api.KindNames(), Form: map[string]string{}, Now: s.cfg.Now()}
	for _, k := range []string{"node", "kind", "since", "until", "pod", "process", "pid", "file", "dest", "limit"} {
		p.Form[k] = r.URL.Query().Get(k)
	}
	q, err := eventQueryFrom(r, s.cfg.Now())
	p.Limit = effectiveLimit(q.Limit)
	code := http.StatusOK
	if err != nil {
		p.Error, code = err.Error(), http.StatusBadRequest
	} else if p.Events, err = s.store.Events(r.Context(), q); err != nil {
		s.log.Error("ui: events", "err", err)
		p.Error, code = "The events could not be read; see the backend's log.", http.StatusInternalServerError
	}
	s.render(w, code, s.ui.events, p)
}
