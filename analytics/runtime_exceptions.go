package analytics

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// RuntimeException suppresses matches like a rule's Exception, but comes
// at run time (from the backend: an analyst's "don't alert on this again
// when …" made from an alert) and replaces the previous set without a
// restart. Every field it sets must match; it ends at Expires.
type RuntimeException struct {
	ID string `json:"id"`
	// Detection limits it to one rule or detector ID; "" covers every one.
	Detection string `json:"detection,omitempty"`
	// Cluster limits it to the engine of that cluster (Config.Cluster);
	// "" applies everywhere.
	Cluster string `json:"cluster,omitempty"`
	// Namespaces, Workloads (the pod's owner, e.g. a Deployment's name),
	// Images, Processes (exe path or name) and Paths (the event's file)
	// are globs as an Exception's; Commands are globs over the whole
	// command line in which * also matches "/"; Destinations match the
	// remote address as "ip", "ip:port" or a CIDR ("10.0.0.0/8").
	Namespaces   []string `json:"namespaces,omitempty"`
	Workloads    []string `json:"workloads,omitempty"`
	Images       []string `json:"images,omitempty"`
	Processes    []string `json:"processes,omitempty"`
	Commands     []string `json:"commands,omitempty"`
	Destinations []string `json:"destinations,omitempty"`
	Paths        []string `json:"paths,omitempty"`
	// Expires is when it stops applying; the zero time never.
	Expires time.Time `json:"expires,omitzero"`
}

// Validate refuses an exception that would silence everything it is
// scoped to by setting no field, and bad patterns.
func (x RuntimeException) Validate() error {
	if len(x.Namespaces)+len(x.Workloads)+len(x.Images)+len(x.Processes)+len(x.Commands)+len(x.Destinations)+len(x.Paths) == 0 {
		return errors.New("sets no field (namespace, workload, image, process, command, destination, path), so it would silence every match")
	}
	for _, d := range x.Destinations {
		if strings.Contains(d, "/") {
			if _, _, err := net.ParseCIDR(d); err != nil {
				return fmt.Errorf("destination %q: %w", d, err)
			}
		}
	}
	return nil
}

// runtimeExceptions is one version of the set, replaced whole.
type runtimeExceptions struct {
	version uint64
	list    []RuntimeException
}

// SetRuntimeExceptions replaces the runtime exception set with version's
// list, at once (the next event is judged by it). It is safe to call from
// another goroutine than the one that runs Process. An invalid exception
// refuses the whole version: the previous one stays.
func (e *Engine) SetRuntimeExceptions(version uint64, list []RuntimeException) error {
	for i, x := range list {
		if err := x.Validate(); err != nil {
			return fmt.Errorf("runtime exception %d (%s): %w", i, x.ID, err)
		}
	}
	e.runtime.Store(&runtimeExceptions{version: version, list: append([]RuntimeException(nil), list...)})
	return nil
}

// RuntimeExceptionsVersion is the version of the set applied now (0: none).
func (e *Engine) RuntimeExceptionsVersion() uint64 {
	if rx := e.runtime.Load(); rx != nil {
		return rx.version
	}
	return 0
}

// runtimeExcepted reports whether a runtime exception in force at the
// event's time covers rule id's match on ev.
func (e *Engine) runtimeExcepted(id string, ev *api.Event, at time.Time) bool {
	rx := e.runtime.Load()
	if rx == nil {
		return false
	}
	for i := range rx.list {
		x := &rx.list[i]
		if x.Detection != "" && x.Detection != id || x.Cluster != "" && x.Cluster != e.cfg.Cluster ||
			!x.Expires.IsZero() && !at.Before(x.Expires) {
			continue
		}
		if x.covers(ev) {
			return true
		}
	}
	return false
}

func (x *RuntimeException) covers(ev *api.Event) bool {
	c, p := ev.GetContainer(), ev.GetProcess()
	return matchAny(x.Namespaces, eventNamespace(ev)) &&
		matchAny(x.Workloads, c.GetWorkloadName()) &&
		matchAny(x.Images, c.GetImage()) &&
		(matchAny(x.Processes, p.GetExe()) || matchAny(x.Processes, procName(p))) &&
		matchCommand(x.Commands, strings.Join(p.GetArgs(), " ")) &&
		matchDestination(x.Destinations, remote(ev)) &&
		matchAny(x.Paths, filePath(ev))
}

// matchCommand: an empty list matches anything; else one glob (* any run
// of characters, "/" included; ? one character) matches the whole line.
func matchCommand(patterns []string, line string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if wildcard(p, line) {
			return true
		}
	}
	return false
}

// wildcard matches s against p's * and ? (iteratively, with one
// backtrack point: linear in practice, no exponential blow-up).
func wildcard(p, s string) bool {
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi, si = pi+1, si+1
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi, mark = star+1, mark+1
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// matchDestination: an empty list matches anything; else the event's
// remote address equals an "ip" or "ip:port", or lies in a CIDR.
func matchDestination(patterns []string, addr *api.SocketAddress) bool {
	if len(patterns) == 0 {
		return true
	}
	if addr.GetIp() == "" {
		return false
	}
	ip := net.ParseIP(addr.GetIp())
	hostPort := net.JoinHostPort(addr.GetIp(), strconv.Itoa(int(addr.GetPort())))
	for _, d := range patterns {
		switch {
		case d == addr.GetIp() || d == hostPort:
			return true
		case strings.Contains(d, "/"):
			if _, n, err := net.ParseCIDR(d); err == nil && ip != nil && n.Contains(ip) {
				return true
			}
		}
	}
	return false
}
