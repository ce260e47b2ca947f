// Package sensor captures process, file and network activity on this node
// with eBPF and turns it into api.Events carrying process ancestry and
// container context. It knows nothing of analytics or transport.
package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/sensor/container"
	"github.com/harrier-sec/harrier/sensor/proc"
)

// Status describes what the sensor loaded and how, for `harrier events
// --status`, the log and the agent's heartbeat.
type Status struct {
	Kernel          string        `json:"kernel"`
	BTF             string        `json:"btf"`
	CgroupMode      string        `json:"cgroupMode"`
	CgroupHierarchy string        `json:"cgroupHierarchy"`
	RingBufferBytes int           `json:"ringBufferBytes"`
	WatchPaths      int           `json:"watchPaths"`
	HomeWatchPaths  int           `json:"homeWatchPaths"`
	SeededProcesses int           `json:"seededProcesses"`
	Probes          []ProbeStatus `json:"probes"`
	// Syscalls the dispatcher reports on this architecture and kernel.
	Syscalls []string `json:"syscalls"`
	// Unavailable lists what this kernel refused, in words.
	Unavailable []string `json:"unavailable,omitempty"`
}

// Stats are cumulative counters of every stage, including the kernel's.
type Stats struct {
	// Kernel: records submitted and records lost because the ring buffer was
	// full, by event kind name.
	KernelSubmitted     map[string]uint64 `json:"kernelSubmitted"`
	KernelRingFull      map[string]uint64 `json:"kernelRingBufferFull"`
	KernelPathTrunc     uint64            `json:"kernelPathTruncated"`
	KernelArgsTrunc     uint64            `json:"kernelArgsTruncated"`
	KernelFileFiltered  uint64            `json:"kernelFileFiltered"`
	KernelDirCacheHits  uint64            `json:"kernelDirCacheHits"`
	KernelFileCacheHits uint64            `json:"kernelFileCacheHits"`
	// KernelShedReads counts read-only opens of ordinary (not sensitive)
	// watched paths shed in the kernel while the ring buffer was over half
	// full.
	KernelShedReads uint64 `json:"kernelShedReads"`
	// KernelShedRepeats counts, by kind, execs, forks and exits the kernel
	// shed with the ring buffer over three quarters full because their
	// origin had already done the same more than 16 times in that second
	// (a fork+exec storm of one program), keeping room for the rest.
	KernelShedRepeats map[string]uint64 `json:"kernelShedRepeats"`
	// KernelEnvUnscanned counts execs whose environment held more strings
	// than the kernel looks at for LD_PRELOAD (64): one set past them is not
	// reported.
	KernelEnvUnscanned uint64 `json:"kernelEnvUnscanned"`
	// User space.
	Received     uint64 `json:"received"`
	DecodeErrors uint64 `json:"decodeErrors"`
	// DNSDecodeErrors counts dns_query events whose payload was not a
	// well-formed query; they are still emitted, with an empty name.
	DNSDecodeErrors uint64            `json:"dnsDecodeErrors"`
	Emitted         uint64            `json:"emitted"`
	QueueDropped    map[string]uint64 `json:"queueDropped"`
	// QueueShed counts events of the shed kinds and ordinary reads dropped
	// under overload (queue past shedAt or older than maxQueueDelay) to
	// keep room and time for the others.
	QueueShed map[string]uint64 `json:"queueShed"`
	// QueueHeadAge is how long the oldest queued event had waited when the
	// sensor last looked (every 64 records); stale once the queue is empty.
	QueueHeadAge time.Duration `json:"queueHeadAgeNs"`
	// InContainer counts emitted events the sensor attributed to a
	// container (they carry its ID), by event kind: under container churn,
	// whether the container context keeps up.
	InContainer  map[string]uint64 `json:"inContainer"`
	ProcessCache proc.Stats        `json:"processCache"`
	Containers   int               `json:"containersCached"`
}

// Sensor is a loaded, attached eBPF sensor. Create it with New, consume
// events with Run, and Close it.
type Sensor struct {
	cfg    Config
	log    *slog.Logger
	kern   *loaded
	reader *ringbuf.Reader
	// ring parks Run between drains; nil when the netpoller cannot hold
	// the ring buffer's fd, and Run blocks in the reader instead.
	ring    *ringWait
	procs   *proc.Cache
	cgroups *cgroupResolver
	// privileged: containers seen running with every capability.
	privileged *privilegedContainers
	views      *viewCache
	bootTime   time.Time
	// queueNow reads the clock that ages queued events; tests substitute
	// one they advance.
	queueNow func() time.Time
	status   Status
	seq      atomic.Uint64

	received     atomic.Uint64
	decodeErrors atomic.Uint64
	dnsErrors    atomic.Uint64
	emitted      atomic.Uint64
	queueDropped [kindMax]atomic.Uint64
	queueShed    [kindMax]atomic.Uint64
	queueAge     atomic.Int64 // QueueHeadAge, ns
	inContainer  [kindMax]atomic.Uint64
	shed         [kindMax]bool // kinds shed first under overload
	shedAt       int           // queue length from which they are

	closeOnce sync.Once
	closed    atomic.Bool
}

// New checks privileges and kernel features, loads and attaches the BPF
// programs, fills the filter maps and seeds the process cache. Probes the
// kernel refuses are reported in Status; New fails only when the sensor
// would be blind (no exec/fork/exit) or cannot start at all.
func New(cfg Config, log *slog.Logger) (*Sensor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sensor config: %w", err)
	}
	cfg = cfg.withDefaults()
	if cfg.Node == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		cfg.Node = host
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	s := &Sensor{cfg: cfg, log: log, queueNow: time.Now}
	shed, err := api.ParseKinds(cfg.ShedKinds)
	if err != nil {
		return nil, fmt.Errorf("sensor config: shedKinds: %w", err)
	}
	for k := range shed {
		if int(k) < len(s.shed) {
			s.shed[k] = true
		}
	}
	s.shedAt = max(1, int(float64(cfg.QueueSize)*cfg.ShedAt))

	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		s.status.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	kernel, err := loadKernelSpec(cfg.BTFPath)
	if err != nil {
		return nil, err
	}
	s.status.BTF = "/sys/kernel/btf/vmlinux"
	if cfg.BTFPath != "" {
		s.status.BTF = cfg.BTFPath
	}

	hier, err := findHierarchies()
	if err != nil {
		return nil, err
	}
	controller, mountpoint := hier.Preferred()
	subsys := int32(-1)
	if controller != "" {
		if subsys, err = cgroupSubsysIndex(kernel, controller); err != nil {
			// A named hierarchy (name=systemd) has no subsystem the
			// kernel side can read: use the default hierarchy instead.
			s.status.Unavailable = append(s.status.Unavailable,
				fmt.Sprintf("cgroup hierarchy %s: %v; containers resolved from the default hierarchy", controller, err))
			subsys, mountpoint = -1, hier.V2
		}
	}
	s.status.CgroupMode = hier.Mode()
	s.status.CgroupHierarchy = mountpoint
	s.cgroups = newCgroupResolver(mountpoint, 4096)
	s.privileged = newPrivilegedContainers(4096)
	s.views = newViewCache(cfg.ProcessCacheSize)

	s.kern, err = load(loadOptions{
		cfg: cfg, selfTgid: uint32(os.Getpid()), cgroupSubsys: subsys, kernel: kernel, fill: s.fillMaps,
	})
	if err != nil {
		return nil, err
	}
	if s.kern.tracefsMounted {
		log.Info("mounted tracefs for the per-syscall tracepoints (it was not mounted)", "path", tracefsDir)
	}
	s.status.Probes = s.kern.status
	for _, p := range s.kern.status {
		if !p.Attached {
			s.status.Unavailable = append(s.status.Unavailable, fmt.Sprintf("probe %s: %s", p.Name, p.Error))
		}
		for _, u := range p.Unhooked {
			s.status.Unavailable = append(s.status.Unavailable,
				fmt.Sprintf("probe %s: no tracepoint %s: this kernel lacks the syscall (calls fail with ENOSYS); not reported", p.Name, u))
		}
		if p.Name == "syscalls" {
			for _, sc := range syscallNumbers() {
				if slices.Contains(p.Unhooked, syscallHook(sc)) {
					s.status.Syscalls = slices.DeleteFunc(s.status.Syscalls, func(n string) bool { return n == syscallName(sc) })
				}
			}
		}
	}
	s.status.RingBufferBytes = cfg.RingBufferBytes
	s.status.WatchPaths = len(cfg.WatchPaths)
	s.status.HomeWatchPaths = len(cfg.HomeWatchPaths)

	s.reader, err = ringbuf.NewReader(s.kern.maps.Events)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open ring buffer: %w", err), s.kern.Close())
	}
	if s.ring, err = newRingWait(s.kern.maps.Events.FD()); err != nil {
		log.Warn("ring buffer: waiting in a blocking system call", "error", err)
	}
	s.bootTime, err = bootTime()
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	// Seed after attaching, so a process started in between is seen by
	// one or the other.
	s.procs = proc.New(proc.Config{MaxEntries: cfg.ProcessCacheSize, MaxArgBytes: cfg.MaxArgBytes, ExitedKeep: cfg.ExitedProcesses})
	n, err := s.procs.Seed(cfg.ProcRoot)
	if err != nil {
		log.Warn("seeding the process cache failed; ancestry starts empty", "procRoot", cfg.ProcRoot, "error", err)
	}
	s.status.SeededProcesses = n
	for _, p := range s.status.Probes {
		if p.Attached && len(p.Tried) > 0 {
			// A fallback: say which variant was used and why the better ones were not.
			log.Warn("probe attached by a fallback", "probe", p.Name, "attach", p.Attach, "tried", p.Tried)
		} else if p.Attached {
			log.Info("probe attached", "probe", p.Name, "attach", p.Attach, "unhooked", len(p.Unhooked))
		} else {
			log.Warn("probe unavailable", "probe", p.Name, "error", p.Error)
		}
	}
	return s, nil
}

func findHierarchies() (container.Hierarchies, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return container.Hierarchies{}, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	mounts, err := container.ParseMountinfo(f)
	if err != nil {
		return container.Hierarchies{}, fmt.Errorf("parse /proc/self/mountinfo: %w", err)
	}
	return container.FindHierarchies(mounts), nil
}

// bootTime is the wall-clock time of boot, to turn CLOCK_BOOTTIME
// timestamps from the kernel into wall time.
func bootTime() (time.Time, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	return time.Now().Add(-time.Duration(ts.Nano())), nil
}

func (s *Sensor) fillMaps(maps *sensorMaps) error {
	// Sensitive paths go in after ordinary ones: for a prefix in both lists
	// the sensitive class wins.
	for _, list := range []struct {
		paths []string
		class uint8
	}{{s.cfg.WatchPaths, watchOrdinary}, {s.cfg.SensitivePaths, watchSensitive}} {
		for _, p := range list.paths {
			if err := maps.WatchPaths.Put(prefixKey(p), list.class); err != nil {
				return fmt.Errorf("add watch path %q: %w", p, err)
			}
			for _, d := range dirPrefixes(p) {
				dk := prefixKey(d)
				dk.Prefixlen = 0 // watch_dirs keys are exact strings, zero padded
				if err := maps.WatchDirs.Put(dk, uint8(1)); err != nil {
					return fmt.Errorf("add watch directory %q: %w", d, err)
				}
			}
		}
	}
	for _, p := range s.cfg.HomeWatchPaths {
		if err := maps.HomePaths.Put(prefixKey(p), uint8(1)); err != nil {
			return fmt.Errorf("add home watch path %q: %w", p, err)
		}
	}
	// The sensor protects itself: a signal to it is a tamper attempt.
	if err := maps.ProtectedPids.Put(uint32(os.Getpid()), uint8(1)); err != nil {
		return fmt.Errorf("protect the sensor's pid: %w", err)
	}
	for nr, sc := range syscallNumbers() {
		if err := maps.SyscallIds.Put(uint32(nr), sc); err != nil {
			return fmt.Errorf("enable syscall %d: %w", nr, err)
		}
		s.status.Syscalls = append(s.status.Syscalls, syscallName(sc))
	}
	slices.Sort(s.status.Syscalls)
	return nil
}

// Classes of watched paths (WATCH_* in the C source): events of sensitive
// paths are never shed.
const (
	watchOrdinary  uint8 = 1
	watchSensitive uint8 = 2
)

// prefixKey is the LPM key matching every path that starts with p.
func prefixKey(p string) *sensorLpmKey {
	var key sensorLpmKey
	n := copy(key.Data[:], p)
	key.Prefixlen = uint32(n * 8)
	return &key
}

// dirPrefixes lists the directories (with trailing slash) above a watched
// prefix: "/etc/ssh/x" gives "/", "/etc/", "/etc/ssh/". The kernel only
// skips directories not among them, so a watched file is never dismissed.
func dirPrefixes(p string) []string {
	var dirs []string
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			dirs = append(dirs, p[:i+1])
		}
	}
	return dirs
}

// ProtectPID adds a process (a host pid; a thread id for tkill) whose
// incoming signals are reported as signal events, as the sensor's own are.
// The kernel map holds 64 entries.
func (s *Sensor) ProtectPID(pid uint32) error {
	if err := s.kern.maps.ProtectedPids.Put(pid, uint8(1)); err != nil {
		return fmt.Errorf("protect pid %d: %w", pid, err)
	}
	return nil
}

// Status reports what was loaded and what was not.
func (s *Sensor) Status() Status { return s.status }

// idleFlushFactor bounds the idle back-off of the ring buffer poll: with
// the default 25ms FlushInterval, the first record after a quiet spell
// waits at most 200ms (unless it fills the wake-up threshold).
const idleFlushFactor = 8

// Run reads the ring buffer until ctx is done, and sends each event to out.
// When out is full the event is dropped and counted (the process cache is
// updated first, so ancestry stays right); the caller sizes out with
// Config.QueueSize.
func (s *Sensor) Run(ctx context.Context, out chan<- *api.Event) error {
	var raw ringbuf.Record
	var rec record
	// The deadline bounds how long a record waits when the kernel did not
	// wake us (batched wake-ups). It is re-armed only after it fires: the
	// reader drains everything pending first.
	// On a quiet node the deadline backs off (doubling up to
	// idleFlushFactor × FlushInterval) so that an idle sensor does not wake
	// 40 times a second; the first record after a quiet spell resets it.
	flush := s.cfg.FlushInterval.Std()
	wait, readSince := flush, false
	deadline := time.Now().Add(wait)
	fired := func() {
		if readSince {
			wait = flush
		} else {
			wait = min(2*wait, idleFlushFactor*flush)
		}
		readSince = false
		deadline = time.Now().Add(wait)
	}
	if s.ring != nil {
		// The reader only drains (its deadline has passed); Run waits in
		// s.ring.
		stop := context.AfterFunc(ctx, s.ring.interrupt)
		defer stop()
		s.reader.SetDeadline(time.Unix(1, 0))
	} else {
		stop := context.AfterFunc(ctx, func() { s.reader.SetDeadline(time.Now()) })
		defer stop()
		s.reader.SetDeadline(deadline)
	}
	// Overload is the queue past shedAt, or its head older than
	// maxQueueDelay: checked every stride records, which costs one clock
	// read per stride.
	clock := newQueueClock(cap(out), s.queueNow())
	maxDelay := s.cfg.MaxQueueDelay.Std()
	lagging := false
	for {
		err := s.reader.ReadInto(&raw)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return nil
				}
				if s.ring == nil {
					fired()
					s.reader.SetDeadline(deadline)
					continue
				}
				// Drained: wait for a wake-up or the deadline.
				switch werr := s.ring.wait(ctx, deadline); {
				case werr == nil:
				case errors.Is(werr, os.ErrDeadlineExceeded):
					fired()
				case s.closed.Load():
					return nil
				default:
					return fmt.Errorf("wait for the ring buffer: %w", werr)
				}
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read ring buffer: %w", err)
		}
		received := s.received.Add(1)
		readSince = true
		if err := decodeRecord(raw.RawSample, &rec); err != nil {
			s.decodeErrors.Add(1)
			s.log.Debug("dropping undecodable record", "error", err)
			continue
		}
		queued := len(out)
		switch {
		case queued == 0:
			lagging = false
		case received%queueClockStride == 0:
			age := clock.headAge(s.emitted.Load(), queued, s.queueNow())
			s.queueAge.Store(int64(age))
			lagging = age > maxDelay
		}
		overloaded := queued >= s.shedAt || lagging
		// An ordinary read is shed before enrichment, which it would waste;
		// the shed kinds after it, which keeps their process-cache updates.
		if overloaded && ordinaryRead(&rec) {
			s.queueShed[rec.Kind].Add(1)
			continue
		}
		ev := s.enrich(&rec)
		if overloaded && int(rec.Kind) < len(s.shed) && s.shed[rec.Kind] {
			s.queueShed[rec.Kind].Add(1)
			continue
		}
		// Read before the send: the consumer owns ev afterwards.
		inContainer := ev.GetContainer().GetId() != ""
		select {
		case out <- ev:
			// Emitted counts what entered the queue: this event's index is
			// one less.
			if i := s.emitted.Add(1) - 1; closesBlock(i) {
				clock.enqueued(i, s.queueNow())
			}
			if inContainer {
				s.inContainer[rec.Kind].Add(1)
			}
		default:
			s.queueDropped[rec.Kind].Add(1)
		}
	}
}

// ordinaryRead is a read-only open of a watched path that is not sensitive:
// the bulk of file events (every process reads /etc/passwd and /etc/hosts),
// shed with fork and exit under overload. The kernel marks sensitive paths.
func ordinaryRead(rec *record) bool {
	if rec.Kind != kindFileOpen || rec.Num[3] != 0 {
		return false
	}
	return uint32(rec.Num[1])&(oAccMode|oCreat|oTrunc) == 0
}

// QueueSize is the capacity Run's consumers should give their channel.
func (s *Sensor) QueueSize() int { return s.cfg.QueueSize }

// Stats collects the kernel's per-CPU counters and user-space counters.
func (s *Sensor) Stats() (Stats, error) {
	st := Stats{
		KernelSubmitted:   map[string]uint64{},
		KernelRingFull:    map[string]uint64{},
		KernelShedRepeats: map[string]uint64{},
		QueueDropped:      map[string]uint64{},
		QueueShed:         map[string]uint64{},
		InContainer:       map[string]uint64{},
		Received:          s.received.Load(),
		DecodeErrors:      s.decodeErrors.Load(),
		DNSDecodeErrors:   s.dnsErrors.Load(),
		Emitted:           s.emitted.Load(),
		QueueHeadAge:      time.Duration(s.queueAge.Load()),
		ProcessCache:      s.procs.Stats(),
		Containers:        s.cgroups.Len(),
	}
	for k := uint32(1); k < kindMax; k++ {
		if n := s.queueShed[k].Load(); n > 0 {
			st.QueueShed[api.EventKind(k).Name()] = n
		}
		if n := s.queueDropped[k].Load(); n > 0 {
			st.QueueDropped[api.EventKind(k).Name()] = n
		}
		if n := s.inContainer[k].Load(); n > 0 {
			st.InContainer[api.EventKind(k).Name()] = n
		}
	}
	stats := s.kern.maps.Stats
	sum := func(slot sensorStatSlot) (uint64, error) {
		var perCPU []uint64
		if err := stats.Lookup(slot, &perCPU); err != nil {
			return 0, fmt.Errorf("read kernel counter %d: %w", slot, err)
		}
		var total uint64
		for _, v := range perCPU {
			total += v
		}
		return total, nil
	}
	for k := uint32(1); k < kindMax; k++ {
		sub, err := sum(statSubmitted + sensorStatSlot(k))
		if err != nil {
			return st, err
		}
		full, err := sum(statRingFull + sensorStatSlot(k))
		if err != nil {
			return st, err
		}
		repeats, err := sum(statShedRepeat + sensorStatSlot(k))
		if err != nil {
			return st, err
		}
		if sub > 0 {
			st.KernelSubmitted[api.EventKind(k).Name()] = sub
		}
		if repeats > 0 {
			st.KernelShedRepeats[api.EventKind(k).Name()] = repeats
		}
		if full > 0 {
			st.KernelRingFull[api.EventKind(k).Name()] = full
		}
	}
	for slot, dst := range map[sensorStatSlot]*uint64{
		statPathTrunc: &st.KernelPathTrunc,
		statArgsTrunc: &st.KernelArgsTrunc, statFileFiltered: &st.KernelFileFiltered,
		statDirCacheHit: &st.KernelDirCacheHits, statFileCacheHit: &st.KernelFileCacheHits, statShedReads: &st.KernelShedReads,
		statEnvUnscanned: &st.KernelEnvUnscanned,
	} {
		v, err := sum(slot)
		if err != nil {
			return st, err
		}
		*dst = v
	}
	return st, nil
}

// Counter slots of the stats map (enum stat_slot in the C source).
const (
	statSubmitted    = sensorStatSlotSTAT_SUBMITTED
	statRingFull     = sensorStatSlotSTAT_RINGBUF_FULL
	statPathTrunc    = sensorStatSlotSTAT_PATH_TRUNCATED
	statArgsTrunc    = sensorStatSlotSTAT_ARGS_TRUNCATED
	statFileFiltered = sensorStatSlotSTAT_FILE_FILTERED
	statDirCacheHit  = sensorStatSlotSTAT_DIR_CACHE_HIT
	statFileCacheHit = sensorStatSlotSTAT_FILE_CACHE_HIT
	statShedReads    = sensorStatSlotSTAT_SHED_READS
	statEnvUnscanned = sensorStatSlotSTAT_ENV_UNSCANNED
	statShedRepeat   = sensorStatSlotSTAT_SHED_REPEAT
)

// Close detaches the programs and frees the kernel objects.
func (s *Sensor) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.ring != nil {
			err = errors.Join(err, s.ring.Close())
		}
		if s.reader != nil {
			err = errors.Join(err, s.reader.Close())
		}
		err = errors.Join(err, s.kern.Close())
	})
	return err
}
