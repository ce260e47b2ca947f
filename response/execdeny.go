package response

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
)

// Why the kernel reported an exec (exec_hit.reason).
const (
	reasonListed = 0
	reasonDrift  = 1
	reasonName   = 2
)

// maxDenyName is the longest name the kernel compares (its key is 32
// bytes, NUL included).
const maxDenyName = 31

// ExecDeny is a list of executables killed at exec, before their first
// instruction (enforce), or only reported (audit): listed paths, or drift
// binaries.
type ExecDeny struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// Paths are absolute paths of executables; each is identified by its
	// file system and inode when the agent loads the list, so a copy
	// elsewhere is another file, and a replaced file needs a reload.
	Paths []string `json:"paths,omitempty"`
	// Names are executables' file names (xmrig, masscan): an exec is a
	// hit when the executable's file has one of them, or, for names of at
	// most 15 bytes, when the name execve was given (the process's comm,
	// e.g. through a link) is one, wherever the file is: in a container's
	// image, copied in, or on the host.
	Names []string `json:"names,omitempty"`
	// Drift denies every executable in a container's writable (overlayfs
	// upper) layer: written in, or copied up to, its root file system
	// after the container started. Without Namespaces, PodLabels or
	// Images, in every container.
	Drift bool `json:"drift,omitempty"`
	// Namespaces, PodLabels and Images (path.Match globs) scope Drift to
	// the containers they match, as a policy's match does.
	Namespaces []string          `json:"namespaces,omitempty"`
	PodLabels  map[string]string `json:"podLabels,omitempty"`
	Images     []string          `json:"images,omitempty"`
}

// scoped says whether a drift entry names the containers it covers.
func (d ExecDeny) scoped() bool {
	return len(d.Namespaces) > 0 || len(d.PodLabels) > 0 || len(d.Images) > 0
}

// covers says whether the drift entry d covers container c.
func (d ExecDeny) covers(c *api.Container) bool {
	m := Match{Namespaces: d.Namespaces, PodLabels: d.PodLabels, Images: d.Images, Where: WhereContainer}
	return m.matches(&api.Alert{Container: c})
}

func (d ExecDeny) validate() error {
	var errs []error
	if d.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if d.Mode != ModeAudit && d.Mode != ModeEnforce {
		errs = append(errs, fmt.Errorf("mode %q: want %s or %s", d.Mode, ModeAudit, ModeEnforce))
	}
	switch {
	case d.Drift && (len(d.Paths) > 0 || len(d.Names) > 0):
		errs = append(errs, errors.New("drift with paths or names: one entry is one or the other"))
	case !d.Drift && len(d.Paths) == 0 && len(d.Names) == 0:
		errs = append(errs, errors.New("no paths or names (and not drift)"))
	case !d.Drift && d.scoped():
		errs = append(errs, errors.New("namespaces, podLabels and images scope drift only"))
	}
	for _, n := range d.Names {
		switch {
		case n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00"):
			errs = append(errs, fmt.Errorf("name %q: want a file name (no /)", n))
		case len(n) > maxDenyName:
			errs = append(errs, fmt.Errorf("name %q: longer than the %d bytes the kernel compares", n, maxDenyName))
		}
	}
	for _, g := range d.Images {
		if _, err := path.Match(g, ""); err != nil {
			errs = append(errs, fmt.Errorf("image glob %q: %w", g, err))
		}
	}
	for _, p := range d.Paths {
		if !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("path %q: must be absolute", p))
		}
	}
	return errors.Join(errs...)
}

// ExecHit is one denied executable's exec, as the kernel reported it.
type ExecHit struct {
	List, Path, Mode string
	// Drift is true for an executable of a container's writable layer;
	// Path is then the path the process gave execve.
	Drift bool
	// Name is the listed name that matched (Path is then the path the
	// process gave execve).
	Name      string
	TGID      uint32
	StartTime time.Time
	// SignalTime is when the kernel sent the signal (or would have): less
	// StartTime, the time from the process's fork to its kill.
	SignalTime time.Time
	// CgroupID is the process's cgroup (v2 id); Container is the container
	// the agent saw in it, if any.
	CgroupID  uint64
	Container *api.Container
	// Killed is true when the kernel sent SIGKILL; Err says why it could
	// not.
	Killed bool
	Err    error
}

// ExecGuard holds the loaded kill-at-exec program.
type ExecGuard struct {
	coll    *ebpf.Collection
	link    link.Link
	hits    *ringbuf.Reader
	entries []execEntry
	// Attach is the attach point used: tp_btf or raw_tp.
	Attach   string
	bootTime time.Time
	// v2 is the unified hierarchy's mount point, to find containers'
	// cgroup ids; drift lists the drift entries scoped to containers.
	v2    string
	drift []driftEntry

	mu sync.Mutex
	// containers are the containers seen, by cgroup id, for records and
	// to scope drift; cgroups maps their cgroup paths to ids.
	containers map[uint64]*api.Container
	cgroups    map[string]uint64
}

type execEntry struct {
	list, path, name, mode string
	drift                  bool
}

type driftEntry struct {
	index int // into entries
	deny  ExecDeny
}

// maxContainers bounds the containers the guard remembers (as the
// kernel's drift_cgroups map does); past it, gone ones are forgotten first.
const maxContainers = 16384

// StartExecGuard resolves every path of lists to its (device, inode), loads
// the program with them in its map, and attaches it to sched_process_exec
// (tp_btf, else raw_tp). A path that does not exist is an error in skipped
// and costs only that path.
func StartExecGuard(lists []ExecDeny, bootTime time.Time) (g *ExecGuard, skipped []error, err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, nil, fmt.Errorf("raise memlock rlimit: %w", err)
	}
	g = &ExecGuard{bootTime: bootTime, containers: map[uint64]*api.Container{}, cgroups: map[string]uint64{}}
	type keyed struct {
		key execdenyExecKey
		act execdenyExecAction
	}
	type named struct {
		key execdenyNameKey
		act execdenyExecAction
	}
	var (
		keys  []keyed
		names []named
		all   execdenyDriftAllAction
	)
	for _, l := range lists {
		if l.Drift {
			act := execdenyExecAction{Entry: uint32(len(g.entries)), Kill: killFlag(l.Mode)}
			g.entries = append(g.entries, execEntry{list: l.Name, mode: l.Mode, drift: true})
			switch {
			case l.scoped():
				g.drift = append(g.drift, driftEntry{index: int(act.Entry), deny: l})
			// The first enforcing entry for all containers wins, else the
			// first auditing one, as for policies.
			case all.AllSet == 0 || (all.Act.Kill == 0 && act.Kill == 1):
				all = execdenyDriftAllAction{Act: act, AllSet: 1}
			}
			continue
		}
		for _, n := range l.Names {
			var k execdenyNameKey
			for i := 0; i < len(n) && i < maxDenyName; i++ {
				k.Name[i] = int8(n[i])
			}
			names = append(names, named{k, execdenyExecAction{Entry: uint32(len(g.entries)), Kill: killFlag(l.Mode)}})
			g.entries = append(g.entries, execEntry{list: l.Name, name: n, mode: l.Mode})
		}
		for _, p := range l.Paths {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				skipped = append(skipped, fmt.Errorf("execDeny %q: %s: %w", l.Name, p, err))
				continue
			}
			// The kernel's dev_t, as in super_block.s_dev.
			dev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
			keys = append(keys, keyed{execdenyExecKey{Dev: dev, Ino: st.Ino}, execdenyExecAction{Entry: uint32(len(g.entries)), Kill: killFlag(l.Mode)}})
			g.entries = append(g.entries, execEntry{list: l.Name, path: p, mode: l.Mode})
		}
	}
	if len(g.drift) > 0 {
		if g.v2, err = UnifiedMount(); err != nil {
			return nil, skipped, fmt.Errorf("drift scoped to containers: %w", err)
		}
	}
	spec, err := loadExecdeny()
	if err != nil {
		return nil, skipped, fmt.Errorf("parse embedded BPF object: %w", err)
	}
	var tried []string
	for _, variant := range []struct{ kind, prog, drop string }{
		{"tp_btf", "tp_btf_exec_deny", "raw_tp_exec_deny"},
		{"raw_tp", "raw_tp_exec_deny", "tp_btf_exec_deny"},
	} {
		s := spec.Copy()
		delete(s.Programs, variant.drop)
		if len(names) > 0 {
			v, ok := s.Variables["have_names"]
			if !ok {
				return nil, skipped, errors.New("BPF object lacks have_names")
			}
			if err := v.Set(uint32(1)); err != nil {
				return nil, skipped, fmt.Errorf("have_names: %w", err)
			}
		}
		coll, err := ebpf.NewCollection(s)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", variant.kind, err))
			continue
		}
		deny, hitsMap, prog := coll.Maps["exec_deny"], coll.Maps["exec_hits"], coll.Programs[variant.prog]
		for _, k := range keys {
			if err := deny.Put(k.key, k.act); err != nil {
				coll.Close()
				return nil, skipped, fmt.Errorf("exec deny map: %w", err)
			}
		}
		for _, n := range names {
			// The first entry naming a file wins, as for paths.
			if err := coll.Maps["exec_deny_names"].Update(n.key, n.act, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
				coll.Close()
				return nil, skipped, fmt.Errorf("exec deny names map: %w", err)
			}
		}
		if err := coll.Maps["drift_all"].Put(uint32(0), all); err != nil {
			coll.Close()
			return nil, skipped, fmt.Errorf("drift map: %w", err)
		}
		var lk link.Link
		if variant.kind == "tp_btf" {
			lk, err = link.AttachTracing(link.TracingOptions{Program: prog})
		} else {
			lk, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: prog})
		}
		if err != nil {
			coll.Close()
			tried = append(tried, fmt.Sprintf("%s: %v", variant.kind, err))
			continue
		}
		hits, err := ringbuf.NewReader(hitsMap)
		if err != nil {
			lk.Close()
			coll.Close()
			return nil, skipped, fmt.Errorf("exec hits ring buffer: %w", err)
		}
		g.coll, g.link, g.hits, g.Attach = coll, lk, hits, variant.kind
		return g, skipped, nil
	}
	return nil, skipped, fmt.Errorf("kill at exec cannot attach to sched_process_exec: %s", strings.Join(tried, "; "))
}

func killFlag(mode string) uint32 {
	if mode == ModeEnforce {
		return 1
	}
	return 0
}

// Entries is how many executables (or drift entries) are denied.
func (g *ExecGuard) Entries() int { return len(g.entries) }

// WatchesContainers says whether the guard wants ObserveContainer: it has
// drift entries.
func (g *ExecGuard) WatchesContainers() bool {
	for _, e := range g.entries {
		if e.drift {
			return true
		}
	}
	return false
}

// ObserveContainer tells the guard of a container an event came from: the
// drift entries scoped to containers that cover it start covering its
// cgroup (the first enforcing one wins, else the first auditing one), and
// its drift hits name it. A drift binary run before the agent has seen
// any event of its container is not covered by a scoped entry.
func (g *ExecGuard) ObserveContainer(c *api.Container) error {
	if c.GetId() == "" || c.GetCgroup() == "" || !g.WatchesContainers() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.cgroups[c.GetCgroup()]; ok {
		return nil
	}
	v2 := g.v2
	if v2 == "" {
		var err error
		if v2, err = UnifiedMount(); err != nil {
			return err
		}
		g.v2 = v2
	}
	if len(g.cgroups) >= maxContainers {
		g.forgetGone()
	}
	if len(g.cgroups) >= maxContainers {
		return fmt.Errorf("container %s: already %d containers watched", c.GetId(), maxContainers)
	}
	dir, err := containerCgroup(v2, c.GetCgroup())
	var st unix.Stat_t
	if err == nil {
		err = unix.Stat(dir, &st)
	}
	if err != nil {
		// Once per container, not once per event: id 0 marks it tried.
		g.cgroups[c.GetCgroup()] = 0
		return fmt.Errorf("container %s cgroup: %w", c.GetId(), err)
	}
	// A cgroup v2 directory's inode number is its cgroup id, which
	// bpf_get_current_cgroup_id returns.
	id := st.Ino
	g.containers[id], g.cgroups[c.GetCgroup()] = c, id
	var act *execdenyExecAction
	for _, d := range g.drift {
		if !d.deny.covers(c) {
			continue
		}
		if act == nil || (act.Kill == 0 && killFlag(d.deny.Mode) == 1) {
			act = &execdenyExecAction{Entry: uint32(d.index), Kill: killFlag(d.deny.Mode)}
		}
	}
	if act == nil {
		return nil
	}
	if err := g.coll.Maps["drift_cgroups"].Put(id, *act); err != nil {
		return fmt.Errorf("container %s: drift map: %w", c.GetId(), err)
	}
	return nil
}

// forgetGone drops the containers whose cgroup is gone; g.mu is held.
func (g *ExecGuard) forgetGone() {
	for p, id := range g.cgroups {
		if _, err := os.Stat(filepath.Join(g.v2, filepath.Clean("/"+p))); id == 0 || errors.Is(err, os.ErrNotExist) {
			delete(g.cgroups, p)
			if id != 0 {
				delete(g.containers, id)
				_ = g.coll.Maps["drift_cgroups"].Delete(id)
			}
		}
	}
}

// container is the container seen in cgroup id, or nil.
func (g *ExecGuard) container(id uint64) *api.Container {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.containers[id]
}

// Run reports every hit to hit until ctx is done.
func (g *ExecGuard) Run(ctx context.Context, hit func(ExecHit), log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { g.hits.Close() })
	defer stop()
	for {
		rec, err := g.hits.Read()
		if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("exec hits: %w", err)
		}
		var h execdenyExecHit
		if len(rec.RawSample) < binary.Size(h) {
			log.Warn("exec hit record too short", "bytes", len(rec.RawSample))
			continue
		}
		if _, err := binary.Decode(rec.RawSample, binary.LittleEndian, &h); err != nil {
			log.Warn("exec hit record", "error", err)
			continue
		}
		if int(h.Entry) >= len(g.entries) {
			continue
		}
		e := g.entries[h.Entry]
		out := ExecHit{List: e.list, Path: e.path, Mode: e.mode, TGID: h.Tgid, Drift: h.Reason == reasonDrift,
			StartTime: g.bootTime.Add(time.Duration(h.StartBoottime)), Killed: h.Kill == 1 && h.SignalResult == 0,
			SignalTime: g.bootTime.Add(time.Duration(h.HitBoottime)), CgroupID: h.CgroupId, Container: g.container(h.CgroupId)}
		if out.Drift || h.Reason == reasonName {
			out.Path = cString(h.Filename[:])
		}
		if h.Reason == reasonName {
			out.Name = e.name
		}
		if h.Kill == 1 && h.SignalResult != 0 {
			out.Err = fmt.Errorf("bpf_send_signal: %w", unix.Errno(-h.SignalResult))
		}
		hit(out)
	}
}

// Close detaches the program.
func (g *ExecGuard) Close() error {
	err := errors.Join(g.hits.Close(), g.link.Close())
	g.coll.Close()
	return err
}

// cString is the NUL-terminated string in b.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
