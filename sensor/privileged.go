package sensor

import (
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/harrier-sec/harrier/sensor/proc"
)

// privilegedContainers remembers which containers run privileged: those in
// which a program other than the runtime's own ran with every capability in
// its bounding set. Docker's --privileged, a Kubernetes privileged container
// and capabilities: add: [ALL] all give that; a default container keeps 14.
// Once seen a container stays privileged: its processes share one bounding
// set that can only shrink, and the runtime cannot widen it afterwards.
type privilegedContainers struct {
	// all is every capability a container can be given here: the host
	// init's bounding set (a runtime cannot grant more), else every
	// capability this kernel knows.
	all uint64
	max int

	mu  sync.Mutex
	ids map[string]struct{}
}

// defaultCapLastCap is CAP_CHECKPOINT_RESTORE (Linux 5.9 to at least 6.18),
// used when /proc/sys/kernel/cap_last_cap cannot be read.
const defaultCapLastCap = 40

func newPrivilegedContainers(max int) *privilegedContainers {
	last := defaultCapLastCap
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			last = n
		}
	}
	all := capMask(last)
	// A host may run everything with a reduced set (this project's VMs
	// lack CAP_SYS_RESOURCE): a privileged container then has what init has.
	if b, err := os.ReadFile("/proc/1/status"); err == nil {
		if _, bounding := proc.StatusCaps(string(b)); bounding != 0 {
			all &= bounding
		}
	}
	return &privilegedContainers{all: all, max: max, ids: make(map[string]struct{})}
}

// capMask has bits 0..last set.
func capMask(last int) uint64 {
	if last >= 63 {
		return ^uint64(0)
	}
	return 1<<(uint(last)+1) - 1
}

// observe notes a process of container id, whose comm is now comm; it
// reports whether this made the container privileged (so cached views must
// be rebuilt).
func (p *privilegedContainers) observe(id string, e *proc.Entry, comm string) bool {
	if id == "" || e.CapBounding&p.all != p.all || runtimeProcess(e, comm) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.ids[id]; ok {
		return false
	}
	if len(p.ids) >= p.max {
		// Forgetting is safe: the next full-set process marks it again.
		clear(p.ids)
	}
	p.ids[id] = struct{}{}
	return true
}

func (p *privilegedContainers) has(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.ids[id]
	return ok
}

// runtimeProcess reports the container runtime's own processes, which run
// in the container's cgroup with the runtime's full capabilities before
// they drop them and execute the container's program: runc init (runc
// re-executes itself, from a memfd copy or /proc/self/exe, and names its
// stages runc:[0:PARENT], runc:[1:CHILD], runc:[2:INIT]), crun, youki.
// Its clones may be known only by the comm they inherited.
func runtimeProcess(e *proc.Entry, comm string) bool {
	for _, name := range []string{path.Base(e.Exe), e.Comm, comm} {
		switch name {
		case "runc", "crun", "youki", "runsc":
			return true
		}
	}
	return strings.HasPrefix(e.Comm, "runc:") || strings.HasPrefix(comm, "runc:") || strings.Contains(e.Exe, "memfd:runc")
}
