package proc

import (
	"slices"
	"sync"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Defaults used for zero Config fields.
const (
	DefaultMaxEntries  = 32768
	DefaultMaxArgBytes = 1024
	DefaultExitedKeep  = 4096
)

// Config sizes a Cache. Zero values select the defaults.
type Config struct {
	// MaxEntries bounds the live (not exited) processes kept. Beyond it the
	// least recently seen live entry is evicted: on a healthy sensor that is
	// a process whose exit event was lost.
	MaxEntries int
	// MaxArgBytes bounds the argv bytes kept per entry, counting one NUL
	// terminator per argument as /proc/PID/cmdline does.
	MaxArgBytes int
	// ExitedKeep is how many exited processes stay resolvable, for events
	// still queued behind the exit and for the ancestry of orphans. Negative
	// keeps none.
	ExitedKeep int
}

// Stats are cumulative counters plus the current table sizes.
type Stats struct {
	Inserts       uint64 // new entries (Exec, Fork, Seed)
	Evictions     uint64 // live entries dropped because MaxEntries was reached
	Exits         uint64 // processes marked exited
	ExitedDropped uint64 // exited entries aged out of the recently-exited set
	Reused        uint64 // entries replaced because a new process took the tgid
	Misses        uint64 // Get, Ancestry or Fork-parent lookups of unknown tgids
	Seeded        uint64 // entries inserted by Seed

	SeedPermissionDenied uint64 // processes Seed could not fully read for lack of permission
	SeedFailed           uint64 // processes Seed skipped because of malformed files or I/O errors

	Live   int
	Exited int
}

// Cache maps tgids to processes, bounded in both entries and bytes.
//
// Policy: live processes sit on an LRU list, refreshed whenever they are
// looked up, fork, exec or appear as someone's ancestor; past MaxEntries the
// least recently seen is evicted. Exit moves a process to a FIFO of recently
// exited ones, capped at ExitedKeep, so it stays resolvable for late events
// and for its surviving children's ancestry; the oldest exited entry is
// dropped first. The table therefore never holds more than
// MaxEntries+ExitedKeep entries, each with at most MaxArgBytes of argv.
//
// A new Exec or Fork for a tgid whose cached start time differs is a new
// process reusing the pid, and replaces the old entry whether or not its
// exit was seen.
//
// All methods are safe for concurrent use.
type Cache struct {
	maxEntries  int
	maxArgBytes int
	exitedKeep  int

	mu sync.Mutex
	// Entries live in a slab indexed by int32 instead of one heap object
	// each: fewer allocations, less for the GC to scan, and freed slots are
	// reused through a free list threaded through next.
	nodes    []node
	freeHead int32
	byTgid   map[uint32]int32
	live     list
	exited   list
	stats    Stats
}

type node struct {
	e    Entry  // e.Args is always nil here; argv is packed in args
	args string // see packArgs
	// anc is the entry as an ancestor, built by AncestorChain on first use
	// and dropped whenever a field it holds changes.
	anc  *api.Ancestor
	prev int32
	next int32
}

// list is a doubly linked list of slab indexes; -1 terminates.
type list struct {
	head, tail int32
	n          int
}

// New returns an empty cache sized by cfg.
func New(cfg Config) *Cache {
	c := &Cache{
		maxEntries:  cfg.MaxEntries,
		maxArgBytes: cfg.MaxArgBytes,
		exitedKeep:  cfg.ExitedKeep,
		freeHead:    -1,
		byTgid:      make(map[uint32]int32),
		live:        list{head: -1, tail: -1},
		exited:      list{head: -1, tail: -1},
	}
	if c.maxEntries <= 0 {
		c.maxEntries = DefaultMaxEntries
	}
	if c.maxArgBytes <= 0 {
		c.maxArgBytes = DefaultMaxArgBytes
	}
	switch {
	case c.exitedKeep == 0:
		c.exitedKeep = DefaultExitedKeep
	case c.exitedKeep < 0:
		c.exitedKeep = 0
	}
	return c
}

// Exec records that e.Tgid executed a new image. If the cache already holds
// the same process (same tgid and start time), its exe, argv, comm, creds
// and exe origin are replaced, while Ppid, StartBootNs, Cwd, Cgroup and
// CgroupID are kept when e leaves them zero, since an exec event need not
// carry them. Otherwise e becomes a new entry. e.Args is copied (capped at
// MaxArgBytes, setting ArgsTruncated), so the caller may reuse its buffers;
// arguments must not contain NUL bytes, as in execve. Without StartBootNs a
// reused pid cannot be told apart from the same process.
func (c *Cache) Exec(e Entry) {
	args, truncated := packArgs(e.Args, c.maxArgBytes)
	e.Args = nil
	e.ArgsTruncated = e.ArgsTruncated || truncated
	e.Exited = false

	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.byTgid[e.Tgid]; ok {
		n := &c.nodes[i]
		if sameStart(n.e.StartBootNs, e.StartBootNs) {
			old := &n.e
			if e.Ppid == 0 {
				e.Ppid = old.Ppid
			}
			if e.StartBootNs == 0 {
				e.StartBootNs = old.StartBootNs
			}
			if e.Cwd == "" {
				e.Cwd = old.Cwd
			}
			if e.Cgroup == "" {
				e.Cgroup = old.Cgroup
			}
			if e.CgroupID == 0 {
				e.CgroupID = old.CgroupID
			}
			// A late exec event after the exit keeps the entry exited.
			e.Exited = old.Exited
			n.e, n.args, n.anc = e, args, nil
			c.touch(i)
			return
		}
		c.drop(i)
		c.stats.Reused++
	}
	c.insert(e, args)
}

// Fork records that parentTgid created the thread group childTgid. The child
// inherits the parent's exe, argv, comm, cwd, cgroup and creds, because it
// runs the parent's image until it execs. An unknown parent yields a child
// with only its ids and start time. Thread creation (same thread group) must
// not be reported as Fork; a Fork with childTgid == parentTgid is ignored.
func (c *Cache) Fork(parentTgid, childTgid uint32, startBootNs uint64) {
	if parentTgid == childTgid {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()

	var child Entry
	var args string
	if pi, ok := c.byTgid[parentTgid]; ok {
		child, args = c.nodes[pi].e, c.nodes[pi].args
		c.touch(pi)
	} else {
		c.stats.Misses++
	}
	child.Tgid = childTgid
	child.Ppid = parentTgid
	child.StartBootNs = startBootNs
	child.Exited = false

	if ci, ok := c.byTgid[childTgid]; ok {
		n := &c.nodes[ci]
		if sameStart(n.e.StartBootNs, startBootNs) {
			// A duplicate fork, or the child's exec arrived first: what we
			// hold is at least as fresh as the parent's image.
			if n.e.Ppid == 0 {
				n.e.Ppid = parentTgid
			}
			if n.e.StartBootNs == 0 {
				n.e.StartBootNs = startBootNs
				n.anc = nil
			}
			c.touch(ci)
			return
		}
		c.drop(ci)
		c.stats.Reused++
	}
	c.insert(child, args)
}

// Exit marks tgid exited and moves it to the recently-exited set, where it
// stays resolvable until ExitedKeep later exits push it out.
func (c *Cache) Exit(tgid uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.byTgid[tgid]
	if !ok || c.nodes[i].e.Exited {
		return
	}
	c.unlink(&c.live, i)
	c.nodes[i].e.Exited = true
	c.pushFront(&c.exited, i)
	c.stats.Exits++
	for c.exited.n > c.exitedKeep {
		c.drop(c.exited.tail)
		c.stats.ExitedDropped++
	}
}

// Get returns a copy of tgid's entry; its Args slice is freshly allocated.
func (c *Cache) Get(tgid uint32) (Entry, bool) {
	c.mu.Lock()
	i, ok := c.byTgid[tgid]
	if !ok {
		c.stats.Misses++
		c.mu.Unlock()
		return Entry{}, false
	}
	c.touch(i)
	e, args := c.nodes[i].e, c.nodes[i].args
	c.mu.Unlock()
	e.Args = unpackArgs(args)
	return e, true
}

// Ancestry returns up to maxDepth parents of tgid, nearest first, or nil if
// tgid is unknown or maxDepth <= 0. The walk stops at a parent id of 0 (so
// init, pid 1, is the last link), at an unknown parent, at a cycle, and at a
// "parent" that started after its child: a reused pid, not the real parent.
func (c *Cache) Ancestry(tgid uint32, maxDepth int) []Entry {
	if maxDepth <= 0 {
		return nil
	}
	// Argv is unpacked after unlocking; collect the packed forms on the
	// stack for the usual shallow chains.
	var packedBuf [8]string
	packed := packedBuf[:0]
	var chain []Entry

	c.mu.Lock()
	c.walk(tgid, maxDepth, func(p *node) {
		if chain == nil {
			chain = make([]Entry, 0, min(maxDepth, 8))
		}
		chain = append(chain, p.e)
		packed = append(packed, p.args)
	})
	c.mu.Unlock()

	// One backing array for every ancestor's argv; each entry gets a
	// capacity-limited window so appends cannot spill into a neighbour.
	total := 0
	for _, p := range packed {
		total += argCount(p)
	}
	buf := make([]string, total)
	for j, p := range packed {
		n := argCount(p)
		chain[j].Args = unpackInto(buf[:n:n], p)
		buf = buf[n:]
	}
	return chain
}

// AncestorChain is Ancestry as the api.Ancestors of an event. Each process's
// message is built once per image (an exec or a new start time rebuilds it)
// and shared by the events of all its descendants, which must treat it as
// read-only: a storm of short-lived children then costs one slice per child
// instead of a message per ancestor, and consumers can cache per-message work
// (the analytics' redaction of argv) by pointer. bootTime is as for
// ToProcess and must be the same on every call.
func (c *Cache) AncestorChain(tgid uint32, maxDepth int, bootTime time.Time) []*api.Ancestor {
	if maxDepth <= 0 {
		return nil
	}
	var out []*api.Ancestor
	c.mu.Lock()
	defer c.mu.Unlock()
	c.walk(tgid, maxDepth, func(p *node) {
		if p.anc == nil {
			e := p.e
			e.Args = unpackArgs(p.args)
			p.anc = e.ToAncestor(bootTime)
		}
		if out == nil {
			out = make([]*api.Ancestor, 0, min(maxDepth, 8))
		}
		out = append(out, p.anc)
	})
	return out
}

// walk calls visit with each parent of tgid, nearest first, up to maxDepth
// (see Ancestry for where it stops), refreshing each on the LRU list. The
// caller holds c.mu.
func (c *Cache) walk(tgid uint32, maxDepth int, visit func(*node)) {
	i, ok := c.byTgid[tgid]
	if !ok {
		c.stats.Misses++
		return
	}
	var seenBuf [8]uint32
	seen := seenBuf[:0]
	childStart, ppid := c.nodes[i].e.StartBootNs, c.nodes[i].e.Ppid
	for len(seen) < maxDepth && ppid != 0 && ppid != tgid {
		pi, ok := c.byTgid[ppid]
		if !ok {
			break
		}
		p := &c.nodes[pi]
		// A linear scan beats a set for chains this short; pid reuse can
		// make cycles.
		if startedAfter(p.e.StartBootNs, childStart) || slices.Contains(seen, ppid) {
			break
		}
		c.touch(pi)
		seen = append(seen, ppid)
		visit(p)
		if p.e.StartBootNs != 0 {
			childStart = p.e.StartBootNs
		}
		ppid = p.e.Ppid
	}
}

// Len returns the number of entries, live and recently exited.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live.n + c.exited.n
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Live, s.Exited = c.live.n, c.exited.n
	return s
}

// insert adds e as a new live entry; the tgid must not be present.
func (c *Cache) insert(e Entry, args string) {
	i := c.alloc()
	c.nodes[i] = node{e: e, args: args, prev: -1, next: -1}
	c.byTgid[e.Tgid] = i
	c.pushFront(&c.live, i)
	c.stats.Inserts++
	for c.live.n > c.maxEntries {
		c.drop(c.live.tail)
		c.stats.Evictions++
	}
}

// drop removes entry i from its list and the index and frees its slot.
func (c *Cache) drop(i int32) {
	n := &c.nodes[i]
	if n.e.Exited {
		c.unlink(&c.exited, i)
	} else {
		c.unlink(&c.live, i)
	}
	delete(c.byTgid, n.e.Tgid)
	// Clear so the slot holds no strings alive while free.
	*n = node{prev: -1, next: c.freeHead}
	c.freeHead = i
}

func (c *Cache) alloc() int32 {
	if i := c.freeHead; i >= 0 {
		c.freeHead = c.nodes[i].next
		return i
	}
	c.nodes = append(c.nodes, node{})
	return int32(len(c.nodes) - 1)
}

// touch marks a live entry most recently seen; exited entries keep their
// FIFO position so they age out in exit order.
func (c *Cache) touch(i int32) {
	if c.nodes[i].e.Exited || c.live.head == i {
		return
	}
	c.unlink(&c.live, i)
	c.pushFront(&c.live, i)
}

func (c *Cache) pushFront(l *list, i int32) {
	n := &c.nodes[i]
	n.prev, n.next = -1, l.head
	if l.head >= 0 {
		c.nodes[l.head].prev = i
	} else {
		l.tail = i
	}
	l.head = i
	l.n++
}

func (c *Cache) unlink(l *list, i int32) {
	n := &c.nodes[i]
	if n.prev >= 0 {
		c.nodes[n.prev].next = n.next
	} else {
		l.head = n.next
	}
	if n.next >= 0 {
		c.nodes[n.next].prev = n.prev
	} else {
		l.tail = n.prev
	}
	n.prev, n.next = -1, -1
	l.n--
}
