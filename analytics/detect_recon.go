package analytics

import (
	"slices"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// reconBurst: one process starting many different discovery commands
// (whoami, id, uname, ifconfig, ps, ...) within seconds. Each command alone
// is everyday; a script an intruder drops runs them back to back, a person
// at a prompt does not, and one parent ties them together whether they
// come from a script, a loop or a payload.
type reconBurst struct {
	tools      map[string]bool
	installers map[string]bool
	window     time.Duration
	threshold  int
	runs       map[pipeKey]*reconRun
}

// reconRun is one parent's discovery commands in the current window.
type reconRun struct {
	start    time.Time
	names    []string
	evidence []*api.Event
}

const (
	reconWindow    = 10 * time.Second
	reconThreshold = 5
	maxReconRuns   = 4096
)

func (*reconBurst) kinds() []api.EventKind { return []api.EventKind{api.EventKind_EVENT_KIND_EXEC} }

func (d *reconBurst) observe(c *evalContext, now time.Time) []*api.Event {
	name := c.procNameValue()
	if !d.tools[name] {
		return nil
	}
	// Package maintainer scripts look users and the system up as they go.
	if d.installers[name] || slices.ContainsFunc(c.ancestorNameList(), func(n string) bool { return d.installers[n] }) {
		return nil
	}
	key := pipeKey{container: c.ev.GetContainer().GetId(), ppid: c.ev.GetProcess().GetPpid()}
	r := d.runs[key]
	if r == nil || now.Sub(r.start) > d.window {
		if r == nil && len(d.runs) >= maxReconRuns {
			clear(d.runs)
		}
		r = &reconRun{start: now}
		d.runs[key] = r
	}
	if slices.Contains(r.names, name) {
		return nil
	}
	r.names = append(r.names, name)
	r.evidence = append(r.evidence, c.ev)
	if len(r.names) != d.threshold {
		return nil
	}
	return slices.Clone(r.evidence)
}
