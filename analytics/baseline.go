package analytics

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// BaselineConfig configures learned per-workload baselines.
type BaselineConfig struct {
	// Path of the baseline file; empty keeps baselines in memory only.
	// The agent sets it to <dataDir>/baselines.json.
	Path string `json:"path,omitempty"`
	// LearningPeriod is how long a workload is watched before new
	// executables or egress classes raise alerts (default 24h).
	LearningPeriod confval.Duration `json:"learningPeriod,omitempty"`
	// MaxWorkloads and MaxEntries bound memory and file size (defaults 2048
	// workloads, 256 executables and 256 egress classes each).
	MaxWorkloads int `json:"maxWorkloads,omitempty"`
	MaxEntries   int `json:"maxEntries,omitempty"`
	// SaveInterval: how often a changed baseline is written (default 1m).
	SaveInterval confval.Duration `json:"saveInterval,omitempty"`
}

func (c BaselineConfig) withDefaults() BaselineConfig {
	if c.LearningPeriod == 0 {
		c.LearningPeriod = confval.Duration(24 * time.Hour)
	}
	if c.MaxWorkloads == 0 {
		c.MaxWorkloads = 2048
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = 256
	}
	if c.SaveInterval == 0 {
		c.SaveInterval = confval.Duration(time.Minute)
	}
	return c
}

func (c BaselineConfig) validate() error {
	var errs []error
	if c.LearningPeriod < 0 || c.SaveInterval < 0 {
		errs = append(errs, errors.New("analytics.baseline: durations must not be negative"))
	}
	if c.MaxWorkloads < 1 || c.MaxEntries < 1 {
		errs = append(errs, errors.New("analytics.baseline: maxWorkloads and maxEntries must be positive"))
	}
	return errors.Join(errs...)
}

// workloadBaseline is what one workload was seen doing.
type workloadBaseline struct {
	FirstSeen time.Time       `json:"firstSeen"`
	Exes      map[string]bool `json:"exes"`
	Egress    map[string]bool `json:"egress"`
}

type baselineFile struct {
	Version   int                          `json:"version"`
	Workloads map[string]*workloadBaseline `json:"workloads"`
}

// baselineStore holds every workload's baseline, bounded, and saves it.
type baselineStore struct {
	cfg       BaselineConfig
	workloads map[string]*workloadBaseline
	dirty     bool
	lastSave  time.Time
	// Untracked counts workloads ignored because the table was full.
	Untracked uint64
}

// openBaselines loads the baseline file. A file that cannot be parsed is
// moved aside (never deleted) and learning starts again.
func openBaselines(cfg BaselineConfig) (*baselineStore, error) {
	s := &baselineStore{cfg: cfg, workloads: map[string]*workloadBaseline{}}
	if cfg.Path == "" {
		return s, nil
	}
	b, err := os.ReadFile(cfg.Path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read baselines: %w", err)
	}
	var f baselineFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		aside := cfg.Path + ".corrupt-" + time.Now().UTC().Format("20060102T150405")
		if rerr := os.Rename(cfg.Path, aside); rerr != nil {
			return nil, fmt.Errorf("baselines file %s is unreadable (%v) and could not be moved aside: %w", cfg.Path, err, rerr)
		}
		return s, &BaselineReset{Path: cfg.Path, MovedTo: aside, Err: err}
	}
	for k, w := range f.Workloads {
		if len(s.workloads) >= cfg.MaxWorkloads {
			break
		}
		if w.Exes == nil {
			w.Exes = map[string]bool{}
		}
		if w.Egress == nil {
			w.Egress = map[string]bool{}
		}
		s.workloads[k] = w
	}
	return s, nil
}

// BaselineReset says an unreadable baseline file was moved aside.
type BaselineReset struct {
	Path, MovedTo string
	Err           error
}

func (e *BaselineReset) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("baselines %s: unknown version; moved to %s and learning again", e.Path, e.MovedTo)
	}
	return fmt.Sprintf("baselines %s unreadable (%v); moved to %s and learning again", e.Path, e.Err, e.MovedTo)
}

// observe records entry for the workload and reports whether it is new after
// the learning period. A new entry is learned when reported, so each one
// alerts once. Keys come as bytes: a map lookup with string(b) does not
// allocate, so a known workload doing known things costs nothing.
func (s *baselineStore) observe(workload, entry []byte, egress bool, now time.Time) bool {
	return s.observeIn(s.touch(workload, now), entry, egress, now)
}

// observeIn is observe for a workload already touched (nil: not tracked).
func (s *baselineStore) observeIn(w *workloadBaseline, entry []byte, egress bool, now time.Time) bool {
	if w == nil {
		return false
	}
	set := w.Exes
	if egress {
		set = w.Egress
	}
	if set[string(entry)] {
		return false
	}
	learning := now.Sub(w.FirstSeen) < s.cfg.LearningPeriod.Std()
	if len(set) < s.cfg.MaxEntries {
		set[string(entry)] = true
		s.dirty = true
	}
	return !learning
}

// touch returns the workload's baseline, starting its learning period at now
// if it is new, or nil when the table is full. Detectors that learn only some
// of an actor's requests touch it on every request, so that its learning
// period starts when it is first seen, not at its first judged request.
func (s *baselineStore) touch(workload []byte, now time.Time) *workloadBaseline {
	if w := s.workloads[string(workload)]; w != nil {
		return w
	}
	if len(s.workloads) >= s.cfg.MaxWorkloads {
		s.Untracked++
		return nil
	}
	w := &workloadBaseline{FirstSeen: now, Exes: map[string]bool{}, Egress: map[string]bool{}}
	s.workloads[string(workload)] = w
	s.dirty = true
	return w
}

func (s *baselineStore) maybeSave(now time.Time) error {
	if !s.dirty || now.Sub(s.lastSave) < s.cfg.SaveInterval.Std() {
		return nil
	}
	s.lastSave = now
	return s.save()
}

// save writes the file atomically (temp file, fsync, rename).
func (s *baselineStore) save() error {
	if s.cfg.Path == "" || !s.dirty {
		return nil
	}
	b, err := json.Marshal(baselineFile{Version: 1, Workloads: s.workloads})
	if err != nil {
		return fmt.Errorf("encode baselines: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.cfg.Path), ".baselines-*")
	if err != nil {
		return fmt.Errorf("save baselines: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save baselines: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save baselines: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save baselines: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.cfg.Path); err != nil {
		return fmt.Errorf("save baselines: %w", err)
	}
	s.dirty = false
	return nil
}

// appendWorkloadKey names what a baseline belongs to: a pod template
// (namespace, owner and image) when the kube part knows it, else the image,
// else the container itself; on the host, the systemd service (svc).
// Interactive host sessions have no workload and no baseline.
func appendWorkloadKey(b []byte, c *api.Container, svc string) []byte {
	switch {
	case c.GetWorkloadName() != "":
		b = append(b, "k8s:"...)
		b = append(b, c.GetPodNamespace()...)
		b = append(b, '/')
		b = append(b, c.GetWorkloadKind()...)
		b = append(b, '/')
		b = append(b, c.GetWorkloadName()...)
		b = append(b, '@')
		return append(b, c.GetImage()...)
	case c.GetImage() != "":
		return append(append(b, "image:"...), c.GetImage()...)
	case c.GetId() != "":
		return append(append(b, "container:"...), c.GetId()...)
	}
	if svc != "" {
		return append(append(b, "host:"...), svc...)
	}
	return b
}

// appendEgressClass generalises a destination so baselines stay small: the
// address scope and the port, not every IP.
func appendEgressClass(b []byte, dst *api.SocketAddress, proto string) []byte {
	scope := "public"
	if a, err := netip.ParseAddr(dst.GetIp()); err == nil {
		a = a.Unmap()
		switch {
		case a.IsLoopback():
			scope = "loopback"
		case a == netip.AddrFrom4([4]byte{169, 254, 169, 254}) || a == netip.AddrFrom16([16]byte{0xfd, 0, 0x0e, 0xc2, 15: 0x54, 14: 0x02}):
			scope = "metadata"
		case a.IsLinkLocalUnicast():
			scope = "link-local"
		case a.IsPrivate():
			scope = "private"
		case a.IsUnspecified():
			scope = "unspecified"
		}
	}
	b = append(b, scope...)
	b = append(b, '/')
	b = append(b, proto...)
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(dst.GetPort()), 10)
}

// baselineDetector raises anomalous-process or anomalous-egress.
type baselineDetector struct {
	store      *baselineStore
	egress     bool
	key, entry []byte // reused buffers
}

func (b *baselineDetector) kinds() []api.EventKind {
	if b.egress {
		return []api.EventKind{api.EventKind_EVENT_KIND_CONNECT}
	}
	return []api.EventKind{api.EventKind_EVENT_KIND_EXEC}
}

func (b *baselineDetector) observe(c *evalContext, now time.Time) []*api.Event {
	ev := c.ev
	svc := ""
	if ev.GetContainer().GetId() == "" {
		svc = hostService(ev)
	}
	b.key = appendWorkloadKey(b.key[:0], ev.GetContainer(), svc)
	if len(b.key) == 0 {
		return nil
	}
	if b.egress {
		dst := ev.GetConnect().GetDestination()
		if dst.GetIp() == "" {
			return nil
		}
		b.entry = appendEgressClass(b.entry[:0], dst, protocolName(ev))
	} else {
		p := ev.GetProcess()
		b.entry = append(b.entry[:0], p.GetExe()...)
		if len(b.entry) == 0 {
			return nil
		}
		if multiCall(baseName(p.GetExe())) {
			// Every busybox applet is the same file: learn the applet.
			b.entry = append(append(b.entry, ':'), procName(p)...)
		}
	}
	if b.store.observe(b.key, b.entry, b.egress, now) {
		return []*api.Event{ev}
	}
	return nil
}
