package sensor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/testenv"
)

func kernelOptions(t *testing.T) loadOptions {
	t.Helper()
	testenv.RequireRoot(t)
	k, err := loadKernelSpec("")
	if err != nil {
		t.Fatal(err)
	}
	return loadOptions{cfg: Config{}.withDefaults(), cgroupSubsys: -1, kernel: k}
}

// programSpecs parses the embedded object, for tests that name its programs.
func programSpecs(t *testing.T) *sensorProgramSpecs {
	t.Helper()
	spec, err := loadSensor()
	if err != nil {
		t.Fatal(err)
	}
	var p sensorProgramSpecs
	if err := spec.Assign(&p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestEveryVariantLoads proves each fallback program passes this kernel's
// verifier and attaches, not only the first choice.
func TestEveryVariantLoads(t *testing.T) {
	opts := kernelOptions(t)
	for i, ps := range probeSpecs(programSpecs(t)) {
		for j, v := range ps.variants {
			t.Run(ps.name+"/"+v.kind, func(t *testing.T) {
				opts := opts
				opts.probes = func(p *sensorProgramSpecs) []probeSpec {
					all := probeSpecs(p)
					probes := []probeSpec{{name: ps.name, variants: []attachVariant{all[i].variants[j]}}}
					if ps.name != "exec" {
						probes = append(probes, all[:3]...) // the required ones
					}
					return probes
				}
				l, err := load(opts)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				if !l.status[0].Attached || l.status[0].Attach != v.kind {
					t.Errorf("status = %+v", l.status[0])
				}
			})
		}
	}
}

func TestRefusedProgramFallsBackAndIsReported(t *testing.T) {
	opts := kernelOptions(t)
	bogusExec := func(p *sensorProgramSpecs) attachVariant {
		return attachVariant{kind: AttachTPBTF, programs: []*ebpf.ProgramSpec{p.TpBtfExec}, hooks: []string{"no_such_tracepoint"}}
	}
	opts.probes = func(p *sensorProgramSpecs) []probeSpec {
		all := probeSpecs(p)
		exec := all[0]
		exec.variants = append([]attachVariant{bogusExec(p)}, exec.variants[1:]...)
		blind := probeSpec{name: "nothing", variants: []attachVariant{
			{kind: AttachRawTP, programs: []*ebpf.ProgramSpec{p.RawTpFork}, hooks: []string{"no_such_tracepoint"}},
		}}
		return append([]probeSpec{exec, blind}, all[1:3]...)
	}
	l, err := load(opts)
	if err != nil {
		t.Fatalf("one refused probe must not stop the sensor: %v", err)
	}
	defer l.Close()
	st := l.status[0]
	if !st.Attached || st.Attach != AttachRawTP || len(st.Tried) != 1 || !strings.Contains(st.Tried[0], "tp_btf") {
		t.Errorf("exec status = %+v, want raw_tp after a failed tp_btf", st)
	}
	if !slices.Equal(st.Programs, []string{"raw_tp_exec"}) {
		t.Errorf("exec programs = %v", st.Programs)
	}
	if l.status[1].Attached || !strings.Contains(l.status[1].Error, "no_such_tracepoint") {
		t.Errorf("unattachable probe status = %+v", l.status[1])
	}

	// Without exec the sensor would be blind: that is an error, clearly said.
	opts.probes = func(p *sensorProgramSpecs) []probeSpec {
		return []probeSpec{{name: "exec", variants: []attachVariant{bogusExec(p)}}}
	}
	if _, err := load(opts); err == nil || !strings.Contains(err.Error(), "required probe exec") {
		t.Errorf("load without exec = %v", err)
	}
}

func TestBTFFile(t *testing.T) {
	testenv.RequireRoot(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := New(Config{BTFPath: "/nonexistent/vmlinux.btf"}, log); err == nil || !strings.Contains(err.Error(), "/nonexistent/vmlinux.btf") {
		t.Errorf("bad btfPath: err = %v", err)
	}
	// An explicit BTF file (as on kernels without /sys/kernel/btf) works.
	s, err := New(Config{BTFPath: "/sys/kernel/btf/vmlinux"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Status().BTF != "/sys/kernel/btf/vmlinux" {
		t.Errorf("status BTF = %q", s.Status().BTF)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults", Config{}, ""},
		{"ring not power of two", Config{RingBufferBytes: 100000}, "ringBufferBytes"},
		{"relative watch path", Config{WatchPaths: []string{"etc/shadow"}}, "must be absolute"},
		{"long watch path", Config{WatchPaths: []string{"/" + strings.Repeat("a", 300)}}, "longer than"},
		{"negative queue", Config{QueueSize: -1}, "queueSize"},
		{"flush too long", Config{FlushInterval: confval.Duration(time.Minute)}, "flushInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestRingBufferFull stalls the reader so the smallest ring overflows, and
// checks the loss is counted in the kernel and the sensor still works after.
func TestRingBufferFull(t *testing.T) {
	testenv.RequireRoot(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(Config{RingBufferBytes: 64 << 10, WakeupBytes: 4096}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// No reader yet: a few hundred execs (about 1 KiB each) overflow 64 KiB.
	// They are of 32 programs, ten each: one program's storm would be shed
	// as repeats past three quarters full rather than fill the ring.
	bin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	progs := make([]string, 32)
	for i := range progs {
		progs[i] = filepath.Join(dir, fmt.Sprintf("true-%02d", i))
		if err := os.WriteFile(progs[i], bin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 320 {
		if err := exec.Command(progs[i%len(progs)]).Run(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.KernelRingFull["exec"] == 0 {
		t.Fatalf("no ring-buffer loss counted: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *api.Event, 16384)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, out) }()
	// The reader first drains the full ring; an exec made before that is
	// lost like the others, so retry until one made afterwards arrives.
	delivered := false
	for attempt := 0; attempt < 20 && !delivered; attempt++ {
		cmd := exec.Command("/bin/true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		timeout := time.After(500 * time.Millisecond)
	wait:
		for {
			select {
			case ev := <-out:
				if ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ev.GetProcess().GetTgid() == uint32(cmd.Process.Pid) {
					delivered = true
					break wait
				}
			case <-timeout:
				break wait
			}
		}
	}
	if !delivered {
		t.Fatal("the sensor delivered nothing after the ring buffer overflowed")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestConfigDurations: durations in the YAML config are Go duration strings.
func TestConfigDurations(t *testing.T) {
	var cfg Config
	if err := yaml.UnmarshalStrict([]byte("flushInterval: 10ms\nmaxQueueDelay: 1s\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.FlushInterval.Std() != 10*time.Millisecond || cfg.MaxQueueDelay.Std() != time.Second {
		t.Errorf("decoded %v, %v", cfg.FlushInterval.Std(), cfg.MaxQueueDelay.Std())
	}
	for _, bad := range []string{"flushInterval: 10\n", "flushInterval: soon\n"} {
		if err := yaml.UnmarshalStrict([]byte(bad), &cfg); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSyscallsFallBackWithoutTracefs: when tracefs cannot be mounted the
// syscalls probe takes the raw sys_exit hook and says why.
func TestSyscallsFallBackWithoutTracefs(t *testing.T) {
	opts := kernelOptions(t)
	opts.tracefs = func() (bool, error) {
		return false, fmt.Errorf("tracefs is not mounted at %s and mounting it failed: %w", tracefsDir, unix.EPERM)
	}
	l, err := load(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := probeStatus(t, l, "syscalls")
	if st.Name != "syscalls" || !st.Attached || st.Attach == AttachTracepoint || len(st.Tried) != 1 ||
		!strings.HasPrefix(st.Tried[0], "tracepoint: ") || !strings.Contains(st.Tried[0], "operation not permitted") {
		t.Errorf("syscalls status = %+v, want tp_btf or raw_tp after a refused tracefs", st)
	}
}

// TestSyscallTracepoints: with tracefs, the syscalls probe is one program on
// the sys_exit tracepoint of each reported syscall, and only the syscalls
// this kernel lacks are left unhooked.
func TestSyscallTracepoints(t *testing.T) {
	opts := kernelOptions(t)
	l, err := load(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := probeStatus(t, l, "syscalls")
	if !st.Attached || st.Attach != AttachTracepoint || !slices.Equal(st.Programs, []string{"tp_sys_exit"}) {
		t.Fatalf("syscalls status = %+v", st)
	}
	for _, u := range st.Unhooked {
		// Only syscalls the kernel was built without may lack a tracepoint:
		// here, the module syscalls of a kernel without CONFIG_MODULES.
		if _, err := os.Stat("/proc/modules"); !strings.HasSuffix(u, "_module") || err == nil {
			t.Errorf("unhooked %q", u)
		}
	}
	if n := len(syscallNumbers()) - len(st.Unhooked); n < 20 {
		t.Errorf("%d syscall tracepoints attached", n)
	}
}

// probeStatus is the status of the probe called name.
func probeStatus(t *testing.T, l *loaded, name string) ProbeStatus {
	t.Helper()
	for _, st := range l.status {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no probe %q in %+v", name, l.status)
	return ProbeStatus{}
}
