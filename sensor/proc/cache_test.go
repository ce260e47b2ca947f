package proc

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
)

const ms = uint64(1e6)

func tgids(chain []Entry) []uint32 {
	out := make([]uint32, len(chain))
	for i, e := range chain {
		out[i] = e.Tgid
	}
	return out
}

func mustGet(t *testing.T, c *Cache, tgid uint32) Entry {
	t.Helper()
	e, ok := c.Get(tgid)
	if !ok {
		t.Fatalf("Get(%d): not found", tgid)
	}
	return e
}

func TestExecForkExit(t *testing.T) {
	c := New(Config{})
	c.Exec(Entry{
		Tgid: 100, Ppid: 1, Uid: 1000, Gid: 1000, Euid: 1000, Egid: 1000, StartBootNs: 10 * ms,
		Comm: "bash", Exe: "/usr/bin/bash", Cwd: "/home/u", Args: []string{"bash", "-l"},
		Cgroup: "/user.slice", CgroupID: 7,
	})

	c.Fork(100, 200, 20*ms)
	child := mustGet(t, c, 200)
	if child.Ppid != 100 || child.StartBootNs != 20*ms || child.Exe != "/usr/bin/bash" || child.Comm != "bash" ||
		!slices.Equal(child.Args, []string{"bash", "-l"}) || child.Cwd != "/home/u" || child.Cgroup != "/user.slice" ||
		child.CgroupID != 7 || child.Uid != 1000 || child.Exited {
		t.Fatalf("forked child = %+v", child)
	}
	child.Args[0] = "scribbled" // Get returns a copy the caller owns.
	if e := mustGet(t, c, 100); e.Args[0] != "bash" {
		t.Fatalf("mutating a Get result changed the cache: %q", e.Args)
	}

	// Exec replaces the image; fields the event lacks keep their values.
	c.Exec(Entry{Tgid: 200, Comm: "sudo", Exe: "/usr/bin/sudo", Args: []string{"sudo", "id"}, Uid: 1000, Euid: 0,
		ExeOrigin: ExeOrigin{OverlayUpper: true}})
	child = mustGet(t, c, 200)
	if child.Ppid != 100 || child.StartBootNs != 20*ms || child.Exe != "/usr/bin/sudo" || child.Comm != "sudo" ||
		!slices.Equal(child.Args, []string{"sudo", "id"}) || child.Cwd != "/home/u" || child.Cgroup != "/user.slice" ||
		child.CgroupID != 7 || child.Euid != 0 || !child.ExeOrigin.OverlayUpper {
		t.Fatalf("after exec = %+v", child)
	}

	c.Exit(200)
	c.Exit(200) // duplicate exits are harmless
	child = mustGet(t, c, 200)
	if !child.Exited {
		t.Fatal("exited process not marked Exited")
	}
	// A late exec event for the same process updates it but keeps it exited.
	c.Exec(Entry{Tgid: 200, StartBootNs: 20 * ms, Exe: "/usr/bin/id"})
	if e := mustGet(t, c, 200); !e.Exited || e.Exe != "/usr/bin/id" {
		t.Fatalf("late exec = %+v", e)
	}

	c.Fork(999, 300, 30*ms) // unknown parent
	if e := mustGet(t, c, 300); e.Ppid != 999 || e.Exe != "" {
		t.Fatalf("child of unknown parent = %+v", e)
	}
	c.Fork(300, 300, 30*ms) // a thread, not a process: ignored

	if _, ok := c.Get(12345); ok {
		t.Fatal("Get of unknown tgid succeeded")
	}
	got := c.Stats()
	want := Stats{Inserts: 3, Exits: 1, Misses: 2, Live: 2, Exited: 1}
	if got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if c.Len() != 3 {
		t.Fatalf("Len = %d, want 3", c.Len())
	}
}

func TestArgsCapped(t *testing.T) {
	c := New(Config{MaxArgBytes: 16})
	c.Exec(Entry{Tgid: 1, Args: []string{"python3", "-c", "print('hello')"}})
	e := mustGet(t, c, 1)
	if !e.ArgsTruncated || !slices.Equal(e.Args, []string{"python3", "-c", "prin"}) {
		t.Fatalf("args = %q truncated=%v", e.Args, e.ArgsTruncated)
	}
	// Truncation the kernel already did is preserved.
	c.Exec(Entry{Tgid: 2, Args: []string{"a"}, ArgsTruncated: true})
	if e := mustGet(t, c, 2); !e.ArgsTruncated {
		t.Fatal("caller's ArgsTruncated lost")
	}
}

func TestPidReuse(t *testing.T) {
	parent := Entry{Tgid: 10, StartBootNs: 1 * ms, Exe: "/bin/parent", Args: []string{"parent"}}
	old := Entry{Tgid: 50, Ppid: 10, StartBootNs: 100 * ms, Exe: "/bin/old", Cwd: "/old", Args: []string{"old"}}
	tests := []struct {
		name       string
		oldExited  bool
		event      func(c *Cache)
		wantExe    string
		wantCwd    string
		wantReused uint64
		wantExited bool
	}{
		{
			name:       "exec, different start, old live (missed exit)",
			event:      func(c *Cache) { c.Exec(Entry{Tgid: 50, Ppid: 10, StartBootNs: 900 * ms, Exe: "/bin/new"}) },
			wantExe:    "/bin/new",
			wantReused: 1,
		},
		{
			name:       "exec, different start, old exited",
			oldExited:  true,
			event:      func(c *Cache) { c.Exec(Entry{Tgid: 50, Ppid: 10, StartBootNs: 900 * ms, Exe: "/bin/new"}) },
			wantExe:    "/bin/new",
			wantReused: 1,
		},
		{
			name:    "exec, same start",
			event:   func(c *Cache) { c.Exec(Entry{Tgid: 50, StartBootNs: 100 * ms, Exe: "/bin/new"}) },
			wantExe: "/bin/new",
			wantCwd: "/old",
		},
		{
			// Seeded times are truncated to 10ms ticks; events are exact.
			name:    "exec, same start tick",
			event:   func(c *Cache) { c.Exec(Entry{Tgid: 50, StartBootNs: 100*ms + 7*ms, Exe: "/bin/new"}) },
			wantExe: "/bin/new",
			wantCwd: "/old",
		},
		{
			name:       "fork, different start, old live",
			event:      func(c *Cache) { c.Fork(10, 50, 900*ms) },
			wantExe:    "/bin/parent",
			wantReused: 1,
		},
		{
			name:       "fork, different start, old exited",
			oldExited:  true,
			event:      func(c *Cache) { c.Fork(10, 50, 900*ms) },
			wantExe:    "/bin/parent",
			wantReused: 1,
		},
		{
			// The child's exec overtook its fork event; keep the fresher exec.
			name:    "fork, same start",
			event:   func(c *Cache) { c.Fork(10, 50, 100*ms) },
			wantExe: "/bin/old",
			wantCwd: "/old",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{})
			c.Exec(parent)
			c.Exec(old)
			if tt.oldExited {
				c.Exit(50)
			}
			tt.event(c)
			e := mustGet(t, c, 50)
			if e.Exe != tt.wantExe || e.Cwd != tt.wantCwd || e.Exited != tt.wantExited || e.Ppid != 10 {
				t.Errorf("entry = %+v, want exe %q cwd %q exited %v", e, tt.wantExe, tt.wantCwd, tt.wantExited)
			}
			if s := c.Stats(); s.Reused != tt.wantReused || s.Live+s.Exited != c.Len() || c.Len() != 2 {
				t.Errorf("stats = %+v, len %d; want Reused %d, len 2", s, c.Len(), tt.wantReused)
			}
		})
	}
}

func TestLRUEviction(t *testing.T) {
	c := New(Config{MaxEntries: 3, ExitedKeep: -1})
	for pid := uint32(1); pid <= 3; pid++ {
		c.Exec(Entry{Tgid: pid, StartBootNs: uint64(pid) * ms})
	}
	mustGet(t, c, 1) // 2 is now least recently seen
	c.Exec(Entry{Tgid: 4, StartBootNs: 4 * ms})
	if _, ok := c.Get(2); ok {
		t.Fatal("least recently seen entry 2 was not evicted")
	}
	for _, pid := range []uint32{1, 3, 4} {
		mustGet(t, c, pid)
	}
	// Forking refreshes the parent too.
	c.Fork(1, 5, 5*ms) // evicts 3
	if _, ok := c.Get(3); ok {
		t.Fatal("entry 3 was not evicted")
	}
	// ExitedKeep < 0 keeps no exited entries.
	c.Exit(5)
	if _, ok := c.Get(5); ok {
		t.Fatal("exited entry kept with ExitedKeep < 0")
	}
	if s := c.Stats(); s.Evictions != 2 || s.ExitedDropped != 1 || s.Live != 2 || s.Exited != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestExitedKeep(t *testing.T) {
	c := New(Config{MaxEntries: 100, ExitedKeep: 3})
	c.Exec(Entry{Tgid: 1, Exe: "/sbin/init"})
	c.Fork(1, 10, 10*ms)
	c.Exec(Entry{Tgid: 10, Exe: "/usr/sbin/sshd"})
	c.Fork(10, 11, 11*ms) // outlives its parent
	c.Exit(10)
	if got := tgids(c.Ancestry(11, 5)); !slices.Equal(got, []uint32{10, 1}) {
		t.Fatalf("orphan ancestry = %v, want [10 1]", got)
	}
	// Exits age out oldest first; only the newest three stay.
	for pid := uint32(20); pid < 25; pid++ {
		c.Fork(1, pid, uint64(pid)*ms)
		c.Exit(pid)
	}
	for pid, want := range map[uint32]bool{10: false, 20: false, 21: false, 22: true, 23: true, 24: true, 11: true, 1: true} {
		if _, ok := c.Get(pid); ok != want {
			t.Errorf("Get(%d) found = %v, want %v", pid, ok, want)
		}
	}
	if s := c.Stats(); s.Exited != 3 || s.ExitedDropped != 3 || s.Exits != 6 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestAncestry(t *testing.T) {
	c := New(Config{})
	// init(1) → bash(100) → python(200) → sh(300)
	c.Exec(Entry{Tgid: 1, Ppid: 0, StartBootNs: 1 * ms, Exe: "/sbin/init", Args: []string{"/sbin/init"}})
	c.Exec(Entry{Tgid: 100, Ppid: 1, StartBootNs: 100 * ms, Exe: "/usr/bin/bash", Args: []string{"bash"}})
	c.Exec(Entry{Tgid: 200, Ppid: 100, StartBootNs: 200 * ms, Exe: "/usr/bin/python3", Args: []string{"python3", "x.py"}})
	c.Exec(Entry{Tgid: 300, Ppid: 200, StartBootNs: 300 * ms, Exe: "/bin/sh", Args: []string{"sh", "-c", "id"}})
	// Cycle a(400) → b(401) → a, as stale entries after pid reuse can form.
	c.Exec(Entry{Tgid: 400, Ppid: 401})
	c.Exec(Entry{Tgid: 401, Ppid: 400})
	c.Exec(Entry{Tgid: 402, Ppid: 401})
	// Self-parented entry.
	c.Exec(Entry{Tgid: 500, Ppid: 500})
	// 600's cached parent 601 started after it: pid 601 was reused.
	c.Exec(Entry{Tgid: 601, Ppid: 1, StartBootNs: 900 * ms})
	c.Exec(Entry{Tgid: 600, Ppid: 601, StartBootNs: 500 * ms})
	// 700's parent is unknown beyond 701.
	c.Exec(Entry{Tgid: 701, Ppid: 9999})
	c.Exec(Entry{Tgid: 700, Ppid: 701})

	tests := []struct {
		name  string
		tgid  uint32
		depth int
		want  []uint32
	}{
		{"full chain nearest first", 300, 10, []uint32{200, 100, 1}},
		{"depth limit", 300, 2, []uint32{200, 100}},
		{"depth one", 300, 1, []uint32{200}},
		{"zero depth", 300, 0, nil},
		{"init has none", 1, 10, nil},
		{"unknown process", 4242, 10, nil},
		{"cycle a→b→a", 400, 10, []uint32{401}},
		{"into a cycle", 402, 10, []uint32{401, 400}},
		{"self parent", 500, 10, nil},
		{"reused parent pid", 600, 10, nil},
		{"unknown grandparent", 700, 10, []uint32{701}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Ancestry(tt.tgid, tt.depth)
			if !slices.Equal(tgids(got), tt.want) {
				t.Fatalf("Ancestry(%d, %d) = %v, want %v", tt.tgid, tt.depth, tgids(got), tt.want)
			}
		})
	}

	chain := c.Ancestry(300, 10)
	if !slices.Equal(chain[0].Args, []string{"python3", "x.py"}) || chain[1].Exe != "/usr/bin/bash" {
		t.Fatalf("chain details = %+v", chain)
	}
}

// churnArgs returns a distinct ~200-byte argv, as the decoder would hand over.
func churnArgs(i int) []string {
	return []string{"/usr/bin/python3", "-m", "worker", "--job", fmt.Sprintf("%08d", i), "--config", "/etc/worker/" + strings.Repeat("c", 120) + ".yaml"}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func TestBoundedUnderChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("churn test in -short mode")
	}
	cfg := Config{MaxEntries: 10000, ExitedKeep: DefaultExitedKeep, MaxArgBytes: DefaultMaxArgBytes}
	const (
		cycles = 50000
		pidMax = 1 << 22 // default on 64-bit hosts; no wrap, so the exited set stays full
		shell  = 1
	)
	if n := len(strings.Join(churnArgs(0), " ")); n < 180 || n > 220 {
		t.Fatalf("churn args are %d bytes, want ~200", n)
	}
	before := heapInUse()
	c := New(cfg)
	c.Exec(Entry{Tgid: shell, Exe: "/bin/bash", Args: []string{"bash"}})
	limit := cfg.MaxEntries + cfg.ExitedKeep
	start := uint64(1e9)
	pid := uint32(1000)
	next := func() uint32 {
		pid++
		if pid >= pidMax {
			pid = 1000
		}
		start += 100_000 // 0.1ms apart
		return pid
	}

	// Phase 1: well-behaved processes.
	for i := range cycles {
		p := next()
		c.Fork(shell, p, start)
		c.Exec(Entry{Tgid: p, Ppid: shell, StartBootNs: start, Comm: "python3", Exe: "/usr/bin/python3", Cwd: "/srv/worker", Args: churnArgs(i)})
		c.Exit(p)
		if n := c.Len(); n > limit {
			t.Fatalf("phase 1 cycle %d: Len %d > %d", i, n, limit)
		}
	}
	if s := c.Stats(); s.Live != 1 || s.Exited != cfg.ExitedKeep {
		t.Fatalf("after phase 1: stats = %+v", s)
	}
	// Phase 2: exits lost (ring overflow), plain forks then fork+exec.
	for i := range cycles {
		p := next()
		c.Fork(shell, p, start)
		if i%2 == 1 {
			c.Exec(Entry{Tgid: p, Ppid: shell, StartBootNs: start, Exe: "/usr/bin/python3", Args: churnArgs(i)})
		}
		if n := c.Len(); n > limit {
			t.Fatalf("phase 2 cycle %d: Len %d > %d", i, n, limit)
		}
	}
	// The busy parent is refreshed by every fork and so survives.
	mustGet(t, c, shell)

	used := int64(heapInUse()) - int64(before)
	// Per entry: the slab node, ~2 words of map slot plus load-factor slack,
	// a full argv budget, and a few short strings.
	perEntry := int64(unsafe.Sizeof(node{})) + 64 + int64(cfg.MaxArgBytes) + 128
	bound := min(int64(limit)*perEntry, 32<<20)
	s := c.Stats()
	t.Logf("heap in use %.1f MiB (bound %.1f MiB) for %d entries; %d B/entry; stats %+v",
		float64(used)/(1<<20), float64(bound)/(1<<20), c.Len(), used/int64(c.Len()), s)
	if used > bound {
		t.Errorf("heap in use grew by %d bytes, bound %d", used, bound)
	}
	if s.Live != cfg.MaxEntries || s.Exited != cfg.ExitedKeep || s.Evictions != cycles+1-uint64(cfg.MaxEntries) {
		t.Errorf("stats = %+v", s)
	}
	runtime.KeepAlive(c)
}

func TestConcurrentUse(t *testing.T) {
	c := New(Config{MaxEntries: 256, ExitedKeep: 64})
	c.Exec(Entry{Tgid: 1, Exe: "/sbin/init"})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		defer close(stop)
		for i := range 20000 {
			p := uint32(2 + i%1000)
			c.Fork(uint32(2+(i+999)%1000), p, uint64(i+1)*ms)
			c.Exec(Entry{Tgid: p, StartBootNs: uint64(i+1) * ms, Args: []string{"x", "y"}})
			if i%3 == 0 {
				c.Exit(p)
			}
		}
	})
	for r := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := uint32(2 + (i*7+r)%1000)
				if e, ok := c.Get(p); ok && e.Tgid != p {
					t.Errorf("Get(%d) returned tgid %d", p, e.Tgid)
					return
				}
				if len(c.Ancestry(p, 5)) > 5 {
					t.Error("ancestry deeper than asked")
					return
				}
				_ = c.Stats()
			}
		})
	}
	wg.Wait()
	if n := c.Len(); n > 256+64 {
		t.Fatalf("Len %d > bound", n)
	}
}

func BenchmarkExecExit(b *testing.B) {
	c := New(Config{MaxEntries: 10000})
	c.Exec(Entry{Tgid: 1, Exe: "/bin/bash", Args: []string{"bash"}})
	args := churnArgs(0)
	b.ReportAllocs()
	for i := range b.N {
		p := uint32(1000 + i%30000)
		start := uint64(i+1) * 1000
		c.Fork(1, p, start)
		c.Exec(Entry{Tgid: p, Ppid: 1, StartBootNs: start, Comm: "python3", Exe: "/usr/bin/python3", Args: args})
		c.Exit(p)
	}
}

func BenchmarkAncestry(b *testing.B) {
	c := New(Config{})
	// Depth-5 chain above the leaf: 1 ← 10 ← 11 ← 12 ← 13 ← 14 ← leaf 15.
	c.Exec(Entry{Tgid: 1, Exe: "/sbin/init", Args: []string{"/sbin/init"}})
	for p := uint32(10); p <= 15; p++ {
		parent := p - 1
		if p == 10 {
			parent = 1
		}
		c.Exec(Entry{Tgid: p, Ppid: parent, StartBootNs: uint64(p) * ms, Exe: "/usr/bin/bash", Args: []string{"bash", "-c", "make all"}})
	}
	if n := len(c.Ancestry(15, 5)); n != 5 {
		b.Fatalf("depth %d, want 5", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Ancestry(15, 5)
	}
}

// TestAncestorChain holds AncestorChain to Ancestry converted, and checks
// that a process's message is shared until a field it carries changes.
func TestAncestorChain(t *testing.T) {
	boot := time.Unix(1_700_000_000, 0)
	setup := func() *Cache {
		c := New(Config{})
		c.Exec(Entry{Tgid: 1, Exe: "/sbin/init", Args: []string{"/sbin/init"}})
		c.Exec(Entry{Tgid: 10, Ppid: 1, StartBootNs: 10 * ms, Exe: "/bin/bash", Args: []string{"bash"}})
		c.Fork(10, 20, 20*ms)
		c.Fork(10, 21, 21*ms)
		return c
	}
	tests := []struct {
		name string
		// change runs between the first chain of pid 20 and the second.
		change func(c *Cache)
		// shared: whether the parent's (pid 10) message is the same.
		shared bool
	}{
		{"unchanged", func(*Cache) {}, true},
		{"sibling's exec", func(c *Cache) {
			c.Exec(Entry{Tgid: 21, Ppid: 10, StartBootNs: 21 * ms, Exe: "/bin/true", Args: []string{"true"}})
		}, true},
		{"parent's exit", func(c *Cache) { c.Exit(10) }, true},
		{"parent's exec", func(c *Cache) {
			c.Exec(Entry{Tgid: 10, StartBootNs: 10 * ms, Exe: "/usr/bin/make", Args: []string{"make", "all"}})
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := setup()
			first := c.AncestorChain(20, 8, boot)
			tt.change(c)
			got := c.AncestorChain(20, 8, boot)
			want := ToAncestry(c.Ancestry(20, 8), boot)
			if len(got) != 2 || len(want) != 2 {
				t.Fatalf("chain %v, want 2 links like %v", got, want)
			}
			for i := range want {
				if !proto.Equal(got[i], want[i]) {
					t.Errorf("link %d = %v, want %v", i, got[i], want[i])
				}
			}
			if shared := first[0] == got[0]; shared != tt.shared {
				t.Errorf("parent's message shared = %v, want %v", shared, tt.shared)
			}
			if first[1] != got[1] {
				t.Error("init's message rebuilt")
			}
			if sib := c.AncestorChain(21, 8, boot); sib[0] != got[0] {
				t.Error("siblings do not share their parent's message")
			}
		})
	}
	if c := setup(); c.AncestorChain(20, 0, boot) != nil || c.AncestorChain(99, 8, boot) != nil {
		t.Error("no chain expected for depth 0 or an unknown process")
	}
}
