package sensor

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Attach kinds. AttachTracepoint (per-syscall perf tracepoints) is tried
// first for syscalls; the scheduler events use tp_btf, then raw_tp.
const (
	AttachTracepoint = "tracepoint"
	AttachTPBTF      = "tp_btf"
	AttachRawTP      = "raw_tp"
)

// tracefsDir is where the per-syscall tracepoints appear once tracefs is
// mounted; many hosts do not mount it at boot.
const tracefsDir = "/sys/kernel/tracing"

// ProbeStatus says how one logical probe was attached, or why it was not.
type ProbeStatus struct {
	Name     string   `json:"name"`
	Attached bool     `json:"attached"`
	Attach   string   `json:"attach,omitempty"`
	Programs []string `json:"programs,omitempty"`
	// Tried lists the variants that failed before the chosen one, with reasons.
	Tried []string `json:"tried,omitempty"`
	// Unhooked lists hooks of the chosen variant this kernel does not have:
	// a syscall with no tracepoint is one the kernel was built without
	// (init_module without CONFIG_MODULES); it fails with ENOSYS and only
	// the raw hook, which costs every syscall, would see the attempt.
	Unhooked []string `json:"unhooked,omitempty"`
	Error    string   `json:"error,omitempty"`
}

type attachVariant struct {
	kind string
	// programs to load and attach together; all must succeed, except that
	// a tracepoint the kernel lacks is skipped (see loadVariant).
	programs []*ebpf.ProgramSpec
	// hooks name the tracepoint each program attaches to, in the same order
	// as programs. A program listed more than once is loaded once and
	// attached to each of its hooks.
	hooks []string
}

type probeSpec struct {
	name     string
	variants []attachVariant
}

// schedProbe is a scheduler event with tp_btf and raw_tp variants.
func schedProbe(name, event string, tpBTF, rawTP *ebpf.ProgramSpec) probeSpec {
	return probeSpec{name: name, variants: []attachVariant{
		{kind: AttachTPBTF, programs: []*ebpf.ProgramSpec{tpBTF}, hooks: []string{event}},
		{kind: AttachRawTP, programs: []*ebpf.ProgramSpec{rawTP}, hooks: []string{event}},
	}}
}

// probeSpecs lists the probes, best variant first, over the programs of
// the parsed object.
func probeSpecs(p *sensorProgramSpecs) []probeSpec {
	return []probeSpec{
		schedProbe("exec", "sched_process_exec", p.TpBtfExec, p.RawTpExec),
		schedProbe("fork", "sched_process_fork", p.TpBtfFork, p.RawTpFork),
		schedProbe("exit", "sched_process_exit", p.TpBtfExit, p.RawTpExit),
		// DNS written to connected sockets (sock:sock_send_length, Linux 6.3+).
		schedProbe("dns_stream", "sock_send_length", p.TpBtfSockSend, p.RawTpSockSend),
		{name: "syscalls", variants: []attachVariant{
			syscallTracepoints(p.TpSysExit),
			{kind: AttachTPBTF, programs: []*ebpf.ProgramSpec{p.TpBtfSysExit}, hooks: []string{"sys_exit"}},
			{kind: AttachRawTP, programs: []*ebpf.ProgramSpec{p.RawTpSysExit}, hooks: []string{"sys_exit"}},
		}},
	}
}

// syscallTracepoints attaches prog to the sys_exit tracepoint of each
// syscall the sensor reports on this architecture, so that no other syscall
// runs BPF (the raw sys_exit hook costs every syscall).
func syscallTracepoints(prog *ebpf.ProgramSpec) attachVariant {
	v := attachVariant{kind: AttachTracepoint}
	for _, sc := range syscallNumbers() {
		v.hooks = append(v.hooks, syscallHook(sc))
	}
	slices.Sort(v.hooks)
	for range v.hooks {
		v.programs = append(v.programs, prog)
	}
	return v
}

// syscallHook is the exit tracepoint of a syscall, "group/event". It is
// named by the kernel's name of the syscall, which differs from the name of
// the number for umount2 (SYSCALL_DEFINE2(umount, ...)).
func syscallHook(sc sensorSyscallId) string {
	name := syscallName(sc)
	if sc == scUmount2 {
		name = "umount"
	}
	return "syscalls/sys_exit_" + name
}

// programNames names a variant's programs for status output, each once.
func programNames(progs []*ebpf.ProgramSpec) []string {
	var names []string
	for _, p := range progs {
		if !slices.Contains(names, p.Name) {
			names = append(names, p.Name)
		}
	}
	return names
}

// ensureTracefs mounts tracefs at tracefsDir unless a tracefs is already
// there, and says whether it mounted it. Mounting needs CAP_SYS_ADMIN and a
// kernel with tracefs. The mount is left in place, as systemd's would be:
// unmounting it under another tracer would break that tracer.
func ensureTracefs() (mounted bool, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(tracefsDir, &st); err == nil && st.Type == unix.TRACEFS_MAGIC {
		return false, nil
	}
	if err := unix.Mount("tracefs", tracefsDir, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return false, fmt.Errorf("tracefs is not mounted at %s and mounting it failed: %w", tracefsDir, err)
	}
	return true, nil
}

// requiredProbes must attach for the sensor to be useful at all: they feed
// the process cache.
func requiredProbes() []string { return []string{"exec", "fork", "exit"} }

// loaded holds the kernel objects of a running sensor.
type loaded struct {
	// maps is the typed view of the sensor's maps; shared owns them.
	maps sensorMaps
	// shared holds every map of the object by its ELF name, the read-only
	// data of the configuration variables included: what each program is
	// loaded against, so that all of them share one set.
	shared map[string]*ebpf.Map
	progs  []*ebpf.Program
	links  []link.Link
	status []ProbeStatus
	// tracefsMounted says the loader mounted tracefs itself.
	tracefsMounted bool
}

func (l *loaded) Close() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Close())
	}
	for _, p := range l.progs {
		errs = append(errs, p.Close())
	}
	for _, m := range l.shared {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

// checkPrivileges tells a non-root user plainly what is missing.
func checkPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	return errors.New("the sensor needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE): run as root")
}

// loadKernelSpec returns the BTF used for CO-RE relocations: the running
// kernel's, or the file the operator named.
func loadKernelSpec(path string) (*btf.Spec, error) {
	if path != "" {
		spec, err := btf.LoadSpec(path)
		if err != nil {
			return nil, fmt.Errorf("load BTF from %s: %w", path, err)
		}
		return spec, nil
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel BTF (/sys/kernel/btf/vmlinux) is not available, so CO-RE programs cannot be relocated; "+
			"use a kernel built with CONFIG_DEBUG_INFO_BTF=y or set btfPath to a vmlinux BTF file: %w", err)
	}
	return spec, nil
}

// cgroupSubsysIndex maps a v1 controller name to its index in the kernel's
// css_set.subsys array, read from the kernel's own enum so no number is guessed.
func cgroupSubsysIndex(kernel *btf.Spec, controller string) (int32, error) {
	var enum *btf.Enum
	if err := kernel.TypeByName("cgroup_subsys_id", &enum); err != nil {
		return -1, fmt.Errorf("find enum cgroup_subsys_id: %w", err)
	}
	want := controller + "_cgrp_id"
	for _, v := range enum.Values {
		if v.Name == want {
			if v.Value > 15 {
				return -1, fmt.Errorf("cgroup subsystem %s has index %d, beyond what the program reads", controller, v.Value)
			}
			return int32(v.Value), nil
		}
	}
	return -1, fmt.Errorf("cgroup controller %q not in this kernel", controller)
}

type loadOptions struct {
	// probes defaults to probeSpecs over the embedded object; tests
	// substitute their own.
	probes       func(*sensorProgramSpecs) []probeSpec
	cfg          Config
	selfTgid     uint32
	cgroupSubsys int32
	kernel       *btf.Spec
	// fill populates the maps before any program is attached, so no
	// program ever runs against an empty filter.
	fill func(maps *sensorMaps) error
	// tracefs defaults to ensureTracefs; tests substitute a refusal.
	tracefs func() (bool, error)
}

// load creates the maps, then loads and attaches each probe on its own so
// that one program the kernel refuses costs only that probe, and reports
// every choice and failure in the returned status.
func load(opts loadOptions) (*loaded, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock rlimit: %w", err)
	}
	spec, err := loadSensor()
	if err != nil {
		return nil, fmt.Errorf("parse embedded BPF object: %w", err)
	}
	var specs sensorSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, fmt.Errorf("embedded BPF object: %w", err)
	}
	nrWrite, nrWritev := writeSyscalls()
	for v, val := range map[*ebpf.VariableSpec]any{
		specs.SelfTgid:      opts.selfTgid,
		specs.WakeupBytes:   uint32(opts.cfg.WakeupBytes),
		specs.CgroupSubsys:  opts.cgroupSubsys,
		specs.WatchAllFiles: opts.cfg.WatchAllFiles,
		specs.RingSize:      uint64(opts.cfg.RingBufferBytes),
		specs.NrWrite:       int64(nrWrite),
		specs.NrWritev:      int64(nrWritev),
	} {
		if err := v.Set(val); err != nil {
			return nil, fmt.Errorf("set BPF variable %s: %w", v.Name, err)
		}
	}
	specs.Events.MaxEntries = uint32(opts.cfg.RingBufferBytes)

	btfCache := btf.NewCache()
	mapOnly := &ebpf.CollectionSpec{Maps: spec.Maps, Variables: spec.Variables, Types: spec.Types, ByteOrder: spec.ByteOrder}
	mapsColl, err := ebpf.NewCollectionWithOptions(mapOnly, ebpf.CollectionOptions{Cache: btfCache})
	if err != nil {
		return nil, fmt.Errorf("create BPF maps: %w", err)
	}
	l := &loaded{shared: mapsColl.Maps}
	// Assign on a copy: it hands the typed maps over by taking them out of
	// the collection, and shared keeps them all.
	if err := (&ebpf.Collection{Maps: maps.Clone(l.shared)}).Assign(&l.maps); err != nil {
		return nil, errors.Join(fmt.Errorf("embedded BPF object: %w", err), l.Close())
	}
	if opts.fill != nil {
		if err := opts.fill(&l.maps); err != nil {
			return nil, errors.Join(err, l.Close())
		}
	}

	progOpts := ebpf.ProgramOptions{KernelTypes: opts.kernel}
	probesOf := opts.probes
	if probesOf == nil {
		probesOf = probeSpecs
	}
	tracefs := opts.tracefs
	if tracefs == nil {
		tracefs = ensureTracefs
	}
	// Asked at most once, by the first tracepoint variant: cilium/ebpf
	// caches where tracefs is on its first use.
	var tracefsErr error
	tracefsAsked := false
	for _, ps := range probesOf(&specs.sensorProgramSpecs) {
		st := ProbeStatus{Name: ps.name}
		for _, v := range ps.variants {
			if v.kind == AttachTracepoint {
				if !tracefsAsked {
					tracefsAsked = true
					l.tracefsMounted, tracefsErr = tracefs()
				}
				if tracefsErr != nil {
					st.Tried = append(st.Tried, fmt.Sprintf("%s: %v", v.kind, tracefsErr))
					continue
				}
			}
			progs, links, unhooked, err := loadVariant(spec, v, l.shared, progOpts, btfCache)
			if err != nil {
				st.Tried = append(st.Tried, fmt.Sprintf("%s: %v", v.kind, err))
				continue
			}
			l.progs = append(l.progs, progs...)
			l.links = append(l.links, links...)
			st.Attached, st.Attach, st.Programs, st.Unhooked = true, v.kind, programNames(v.programs), unhooked
			break
		}
		if !st.Attached {
			st.Error = strings.Join(st.Tried, "; ")
			st.Tried = nil
		}
		l.status = append(l.status, st)
	}
	for _, name := range requiredProbes() {
		for _, st := range l.status {
			if st.Name == name && !st.Attached {
				err := fmt.Errorf("required probe %s could not attach: %s", name, st.Error)
				return nil, errors.Join(err, l.Close())
			}
		}
	}
	return l, nil
}

// loadVariant loads and attaches a variant's programs. A tracepoint the
// kernel does not have is returned in unhooked rather than failing the
// variant, as long as the tracepoint group exists and one hook attached.
func loadVariant(spec *ebpf.CollectionSpec, v attachVariant, shared map[string]*ebpf.Map,
	progOpts ebpf.ProgramOptions, cache *btf.Cache) (progs []*ebpf.Program, links []link.Link, unhooked []string, err error) {
	loadedAs := map[*ebpf.ProgramSpec]*ebpf.Program{}
	fail := func(err error) ([]*ebpf.Program, []link.Link, []string, error) {
		for _, lk := range links {
			_ = lk.Close()
		}
		for _, p := range progs {
			_ = p.Close()
		}
		return nil, nil, nil, err
	}
	for i, ps := range v.programs {
		name := ps.Name
		prog := loadedAs[ps]
		if prog == nil {
			if prog, err = loadProgram(spec, v, i, shared, progOpts, cache); err != nil {
				return fail(err)
			}
			loadedAs[ps] = prog
			progs = append(progs, prog)
		}

		var lk link.Link
		switch v.kind {
		case AttachTracepoint:
			group, event, _ := strings.Cut(v.hooks[i], "/")
			lk, err = link.Tracepoint(group, event, prog, nil)
			if errors.Is(err, os.ErrNotExist) {
				if _, statErr := os.Stat(filepath.Join(tracefsDir, "events", group)); statErr == nil {
					unhooked = append(unhooked, v.hooks[i])
					continue
				}
			}
		case AttachTPBTF:
			lk, err = link.AttachTracing(link.TracingOptions{Program: prog})
		case AttachRawTP:
			lk, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: v.hooks[i], Program: prog})
		}
		if err != nil {
			return fail(fmt.Errorf("attach %s to %s: %w", name, v.hooks[i], err))
		}
		links = append(links, lk)
	}
	if len(links) == 0 {
		return fail(fmt.Errorf("none of %s exists", strings.Join(v.hooks, ", ")))
	}
	return progs, links, unhooked, nil
}

// loadProgram loads the i-th program of a variant against the shared maps.
func loadProgram(spec *ebpf.CollectionSpec, v attachVariant, i int, shared map[string]*ebpf.Map,
	progOpts ebpf.ProgramOptions, cache *btf.Cache) (*ebpf.Program, error) {
	ps := v.programs[i]
	name := ps.Name
	if v.kind == AttachTPBTF {
		// The BTF target is fixed at load time; take it from the
		// variant so the table above is the one place that names it.
		ps = ps.Copy()
		ps.AttachTo = v.hooks[i]
	}
	one := &ebpf.CollectionSpec{
		Maps:      spec.Maps,
		Variables: spec.Variables,
		Programs:  map[string]*ebpf.ProgramSpec{name: ps},
		Types:     spec.Types,
		ByteOrder: spec.ByteOrder,
	}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{
		MapReplacements: shared, Programs: progOpts, Cache: cache,
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	prog := coll.Programs[name]
	delete(coll.Programs, name)
	coll.Close()
	return prog, nil
}
