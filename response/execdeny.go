package response

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// reasonHashCheck asks user space to hash the file: nothing was done.
	reasonHashCheck = 3
	// reasonHash is a file whose listed hash user space found before.
	reasonHash = 4
)

// maxHashedBytes bounds the executables hashed for sha256 lists; a larger
// one is not hashed (counted, logged).
const maxHashedBytes = 256 << 20

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
	// SHA256 are executables' content hashes (hex). The agent hashes each
	// executable the first time it runs (again after it changes): a listed
	// one is killed then, within milliseconds of its exec, and every later
	// exec of that file dies before its first instruction, as a listed
	// path's does.
	SHA256 []string `json:"sha256,omitempty"`
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
	case d.Drift && (len(d.Paths) > 0 || len(d.Names) > 0 || len(d.SHA256) > 0):
		errs = append(errs, errors.New("drift with paths, names or sha256: one entry is one or the other"))
	case !d.Drift && len(d.Paths) == 0 && len(d.Names) == 0 && len(d.SHA256) == 0:
		errs = append(errs, errors.New("no paths, names or sha256 (and not drift)"))
	case !d.Drift && d.scoped():
		errs = append(errs, errors.New("namespaces, podLabels and images scope drift only"))
	}
	for _, h := range d.SHA256 {
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			errs = append(errs, fmt.Errorf("sha256 %q: want 64 hex digits", h))
		}
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
	Name string
	// SHA256 is the listed hash that matched: the file was hashed after
	// this, its first exec, and the process killed then (FirstRun).
	SHA256    string
	FirstRun  bool
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

	// hashes maps the listed sha256 sums to their entries; hashChecks
	// queues the kernel's requests to hash a file (HashStats counts).
	hashes     map[[sha256.Size]byte]int
	hashChecks chan execdenyExecHit
	hashStats  *HashStats
}

// HashStats counts the files hashed for sha256 lists.
type HashStats struct {
	Hashed, Matched atomic.Uint64
	// Skipped: the process was gone, the file changed, or it was larger
	// than maxHashedBytes; Dropped: the queue was full.
	Skipped, Dropped atomic.Uint64
}

type execEntry struct {
	list, path, name, hash, mode string
	drift                        bool
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
	g = &ExecGuard{bootTime: bootTime, containers: map[uint64]*api.Container{}, cgroups: map[string]uint64{},
		hashes: map[[sha256.Size]byte]int{}, hashStats: &HashStats{}}
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
		for _, h := range l.SHA256 {
			var sum [sha256.Size]byte
			if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
				return nil, skipped, fmt.Errorf("execDeny %q: sha256 %q: %w", l.Name, h, err)
			}
			if _, dup := g.hashes[sum]; !dup { // the first entry listing a hash wins
				g.hashes[sum] = len(g.entries)
				g.entries = append(g.entries, execEntry{list: l.Name, hash: h, mode: l.Mode})
			}
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
		for name, set := range map[string]bool{"have_names": len(names) > 0, "have_hashes": len(g.hashes) > 0} {
			v, ok := s.Variables[name]
			if !ok {
				return nil, skipped, fmt.Errorf("BPF object lacks %s", name)
			}
			if err := v.Set(uint32(map[bool]int{false: 0, true: 1}[set])); err != nil {
				return nil, skipped, fmt.Errorf("%s: %w", name, err)
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
		if len(g.hashes) > 0 {
			g.hashChecks = make(chan execdenyExecHit, 256)
		}
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
	if g.hashChecks != nil {
		var hashing sync.WaitGroup
		defer hashing.Wait()
		defer close(g.hashChecks)
		hashing.Go(func() {
			for h := range g.hashChecks {
				g.checkHash(h, hit, log)
			}
		})
	}
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
		if h.Reason == reasonHashCheck {
			if g.hashChecks == nil {
				continue
			}
			// Never block the kernel's ring on hashing: a file dropped
			// here is reported again at its next exec.
			select {
			case g.hashChecks <- h:
			default:
				g.hashStats.Dropped.Add(1)
			}
			continue
		}
		if int(h.Entry) >= len(g.entries) {
			continue
		}
		e := g.entries[h.Entry]
		out := ExecHit{List: e.list, Path: e.path, Mode: e.mode, TGID: h.Tgid, Drift: h.Reason == reasonDrift,
			StartTime: g.bootTime.Add(time.Duration(h.StartBoottime)), Killed: h.Kill == 1 && h.SignalResult == 0,
			SignalTime: g.bootTime.Add(time.Duration(h.HitBoottime)), CgroupID: h.CgroupId, Container: g.container(h.CgroupId)}
		if out.Drift || h.Reason == reasonName || h.Reason == reasonHash {
			out.Path = cString(h.Filename[:])
		}
		switch h.Reason {
		case reasonName:
			out.Name = e.name
		case reasonHash:
			out.SHA256 = e.hash
		}
		if h.Kill == 1 && h.SignalResult != 0 {
			out.Err = fmt.Errorf("bpf_send_signal: %w", unix.Errno(-h.SignalResult))
		}
		hit(out)
	}
}

// HashStats is what hashing for the sha256 lists did.
func (g *ExecGuard) HashStats() *HashStats { return g.hashStats }

// UseHashStats makes the guard count into s (the responder's, which
// outlives a guard). Call it before Run.
func (g *ExecGuard) UseHashStats(s *HashStats) { g.hashStats = s }

// checkHash hashes the file the kernel reported an exec of, through the
// process's own /proc/PID/exe (the exact file it runs, wherever its mount
// namespace has it). A listed hash: the file goes into the kernel's deny
// map (its next exec dies before its first instruction) and, under
// enforce, this process and its descendants are killed now. Otherwise the
// file is marked checked, with the change time it was hashed at.
func (g *ExecGuard) checkHash(h execdenyExecHit, hit func(ExecHit), log *slog.Logger) {
	key := execdenyExecKey{Dev: h.Dev, Ino: h.Ino}
	target := Target{PID: int(h.Tgid), StartTime: g.bootTime.Add(time.Duration(h.StartBoottime))}
	sum, err := hashExe(target, h.Ctime)
	exited := false
	if errors.Is(err, ErrNotTarget) {
		// Gone before its check (a short-lived tool): its file, if the
		// path says where it is.
		if s, perr := hashPath(cString(h.Filename[:]), h); perr == nil {
			sum, err, exited = s, nil, true
		}
	}
	if err != nil {
		g.hashStats.Skipped.Add(1)
		log.Debug("exec hash check skipped", "pid", h.Tgid, "exe", cString(h.Filename[:]), "error", err)
		return
	}
	g.hashStats.Hashed.Add(1)
	entry, listed := g.hashes[sum]
	if !listed {
		if err := g.coll.Maps["hash_checked"].Put(key, h.Ctime); err != nil {
			log.Warn("exec hash check: mark checked", "error", err)
		}
		return
	}
	g.hashStats.Matched.Add(1)
	e := g.entries[entry]
	verdict := execdenyHashVerdict{Ctime: h.Ctime, Act: execdenyExecAction{Entry: uint32(entry), Kill: killFlag(e.mode)}}
	if err := g.coll.Maps["hash_denied"].Put(key, verdict); err != nil {
		log.Warn("exec hash check: deny the file", "error", err)
	}
	out := ExecHit{List: e.list, Path: cString(h.Filename[:]), Mode: e.mode, SHA256: e.hash, FirstRun: true, TGID: h.Tgid,
		StartTime: target.StartTime, CgroupID: h.CgroupId, Container: g.container(h.CgroupId)}
	switch {
	case exited:
		out.Err = fmt.Errorf("%w: it exited before its hash was checked", ErrNotTarget)
	case e.mode == ModeEnforce:
		_, err := KillProcessTree("", target)
		out.Killed, out.Err = err == nil, err
	}
	out.SignalTime = time.Now()
	hit(out)
}

// hashExe hashes t's executable, pinned by a pidfd and checked by its
// start time, when its change time is still ctime (the kernel's, at exec).
func hashExe(t Target, ctime execdenyFileCtime) ([sha256.Size]byte, error) {
	p, err := pinTarget("", t)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	defer unix.Close(p.fd)
	f, err := os.Open("/proc/" + strconv.Itoa(t.PID) + "/exe")
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	defer f.Close()
	return hashFile(f, nil, ctime)
}

// hashPath hashes the file at path (the one execve was given, for a
// process that exited before its check) when it is the exec'd file: the
// same device, inode and change time as the kernel reported. Only a host
// path can be checked so: a container's path is in its mount namespace.
func hashPath(path string, h execdenyExecHit) ([sha256.Size]byte, error) {
	if !filepath.IsAbs(path) {
		return [sha256.Size]byte{}, fmt.Errorf("%q: not an absolute path", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	defer f.Close()
	return hashFile(f, &execdenyExecKey{Dev: h.Dev, Ino: h.Ino}, h.Ctime)
}

// hashFile hashes f when its change time is ctime and, given key, it is
// that (device, inode).
func hashFile(f *os.File, key *execdenyExecKey, ctime execdenyFileCtime) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return sum, err
	}
	if st.Ctim.Sec != ctime.Sec || uint64(st.Ctim.Nsec) != ctime.Nsec {
		return sum, fmt.Errorf("the file changed, or the process exec'd again, since the exec (change time %d.%09d, at exec %d.%09d)",
			st.Ctim.Sec, st.Ctim.Nsec, ctime.Sec, ctime.Nsec)
	}
	if key != nil && (uint64(unix.Major(st.Dev))<<20|uint64(unix.Minor(st.Dev)) != key.Dev || st.Ino != key.Ino) {
		return sum, errors.New("not the exec'd file")
	}
	if st.Size > maxHashedBytes {
		return sum, fmt.Errorf("%d bytes: larger than the %d hashed", st.Size, maxHashedBytes)
	}
	d := sha256.New()
	if _, err := io.Copy(d, io.LimitReader(f, maxHashedBytes)); err != nil {
		return sum, err
	}
	copy(sum[:], d.Sum(nil))
	return sum, nil
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
