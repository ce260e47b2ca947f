package sensor

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// Config is the sensor's typed configuration. The zero value of every field
// means "use the default".
type Config struct {
	// Node names this node in events; defaults to the host name.
	Node string `json:"node,omitempty"`
	// RingBufferBytes sizes the kernel→user ring buffer (a power of two ≥ 64 KiB).
	RingBufferBytes int `json:"ringBufferBytes,omitempty"`
	// WakeupBytes: the kernel wakes the reader once this much data is pending;
	// below it the reader drains on FlushInterval. Batching wake-ups is what
	// keeps the cost of an event storm low.
	WakeupBytes int `json:"wakeupBytes,omitempty"`
	// FlushInterval bounds how long an event can wait in the ring buffer.
	FlushInterval confval.Duration `json:"flushInterval,omitempty"`
	// WatchPaths are the path prefixes whose file events cross to user space.
	// Empty means DefaultWatchPaths. WatchAllFiles disables the filter (debugging only).
	WatchPaths    []string `json:"watchPaths,omitempty"`
	WatchAllFiles bool     `json:"watchAllFiles,omitempty"`
	// SensitivePaths are watched too, and their events are never shed
	// under overload (credentials, tokens, kubelet and runtime files, miner
	// tuning knobs). WatchPaths are ordinary: read-only opens of them are
	// the first file events shed when the pipeline falls behind. Empty means
	// DefaultSensitivePaths.
	SensitivePaths []string `json:"sensitivePaths,omitempty"`
	// HomeWatchPaths are watched inside every home directory: each is
	// matched against what follows /root or /home/<user> (also inside
	// containers), e.g. "/.ssh/" or "/.bash_history". Empty means
	// DefaultHomeWatchPaths.
	HomeWatchPaths []string `json:"homeWatchPaths,omitempty"`
	// ProcessCacheSize bounds the live-process cache; ExitedProcesses bounds the
	// recently-exited entries kept for late events and ancestry.
	ProcessCacheSize int `json:"processCacheSize,omitempty"`
	ExitedProcesses  int `json:"exitedProcesses,omitempty"`
	// MaxArgBytes caps the argv bytes kept per cached process.
	MaxArgBytes int `json:"maxArgBytes,omitempty"`
	// AncestryDepth caps the parents attached to each event.
	AncestryDepth int `json:"ancestryDepth,omitempty"`
	// QueueSize bounds decoded events waiting for the consumer; beyond it
	// events are dropped and counted.
	QueueSize int `json:"queueSize,omitempty"`
	// ShedKinds are shed first under overload: once the queue is ShedAt
	// full (a fraction, default 0.5), new events of these kinds are dropped
	// and counted as shed, keeping the rest of the queue for the events
	// detections need. Default: fork and exit, the high-volume kinds whose
	// content the process cache (and so every event's process and ancestry)
	// already holds. Other kinds are dropped only when the queue is full.
	ShedKinds []string `json:"shedKinds,omitempty"`
	ShedAt    float64  `json:"shedAt,omitempty"`
	// MaxQueueDelay bounds how long events wait in the queue before the
	// same shedding starts (default 250ms): once the oldest queued event
	// has waited longer, read-only opens of ordinary paths and ShedKinds are
	// shed until the consumer catches up. ShedAt bounds the queue's memory;
	// this bounds the delay an alert waits behind the bulk in a storm.
	MaxQueueDelay confval.Duration `json:"maxQueueDelay,omitempty"`
	// ProcRoot is where /proc is mounted (a DaemonSet mounts the host's at /host/proc).
	ProcRoot string `json:"procRoot,omitempty"`
	// BTFPath points at a vmlinux BTF file for kernels without /sys/kernel/btf/vmlinux.
	BTFPath string `json:"btfPath,omitempty"`
}

// DefaultWatchPaths are ordinary watched prefixes: files an attacker changes
// to persist or cover tracks, and files every process reads (whose reads are
// shed first under overload).
func DefaultWatchPaths() []string {
	return []string{
		"/etc/passwd", "/etc/group", "/etc/ld.so.conf", "/etc/pam.d/",
		"/etc/crontab", "/etc/cron.", "/var/spool/cron/", "/etc/systemd/system/",
		"/var/log/", "/boot/", "/lib/modules/",
		"/etc/hosts", "/etc/resolv.conf",
	}
}

// DefaultSensitivePaths are watched and never shed: credentials, tokens,
// kubelet and container runtime files, the dynamic loader's preload list,
// and the knobs a miner turns.
func DefaultSensitivePaths() []string {
	return []string{
		"/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ld.so.preload", "/etc/ssh/",
		"/etc/kubernetes/", "/var/lib/kubelet/", "/etc/rancher/", "/var/lib/rancher/k3s/server/",
		"/var/run/secrets/", "/run/secrets/",
		"/proc/sys/vm/nr_hugepages", "/dev/cpu/", "/sys/module/msr/",
		"/var/run/docker.sock", "/run/containerd/containerd.sock", "/var/run/crio/crio.sock",
	}
}

// DefaultHomeWatchPaths are the credential, history and login files of a
// home directory (/root and /home/<user>): keys, cloud and registry
// credentials, kubeconfigs, shell histories and start-up files. The rest of
// a home directory (sources, build caches) is not watched.
func DefaultHomeWatchPaths() []string {
	return []string{
		"/.ssh/", "/.aws/", "/.kube/", "/.docker/", "/.gnupg/", "/.azure/", "/.config/gcloud/",
		"/.git-credentials", "/.netrc", "/.pgpass", "/.my.cnf", "/.vault-token", "/.npmrc", "/.pypirc",
		"/.bash_history", "/.zsh_history", "/.ash_history", "/.sh_history", "/.history", "/.python_history",
		"/.mysql_history", "/.psql_history", "/.node_repl_history", "/.lesshst", "/.viminfo",
		"/.local/share/fish/", "/.bashrc", "/.bash_profile", "/.profile", "/.zshrc", "/.config/autostart/",
	}
}

const maxHomeWatchPaths = 128 // the home_paths map's size

const (
	defaultRingBufferBytes = 8 << 20
	defaultWakeupBytes     = 256 << 10
	defaultFlushInterval   = 25 * time.Millisecond
	defaultProcessCache    = 32768
	defaultExitedKeep      = 4096
	defaultMaxArgBytes     = 1024
	defaultAncestryDepth   = 8
	// In a cgroup with a CPU quota the reader and the consumer are throttled
	// together and then drain the ring in a burst: at 75 000 events/s in
	// 360m a 16 384 queue shed 3 % of ordinary reads, 65 536 shed none (and
	// holds at most ~40 MiB of events).
	defaultQueueSize = 65536
	// A quota-throttled agent stalls for up to ~65 ms per 100 ms period;
	// 250 ms is well above that at sustainable rates, and leaves most of
	// the 1 s alert-latency target to the rest of the pipeline in a storm.
	defaultMaxQueueDelay = 250 * time.Millisecond
	maxWatchPrefixBytes  = len(sensorLpmKey{}.Data) - 1 // the LPM trie key size in the BPF program, less one
	maxWatchPaths        = 1024
)

// withDefaults returns c with every unset field filled in.
func (c Config) withDefaults() Config {
	if c.RingBufferBytes == 0 {
		c.RingBufferBytes = defaultRingBufferBytes
	}
	if c.WakeupBytes == 0 {
		c.WakeupBytes = defaultWakeupBytes
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = confval.Duration(defaultFlushInterval)
	}
	if len(c.WatchPaths) == 0 {
		c.WatchPaths = DefaultWatchPaths()
	}
	if len(c.SensitivePaths) == 0 {
		c.SensitivePaths = DefaultSensitivePaths()
	}
	if len(c.HomeWatchPaths) == 0 {
		c.HomeWatchPaths = DefaultHomeWatchPaths()
	}
	if c.ProcessCacheSize == 0 {
		c.ProcessCacheSize = defaultProcessCache
	}
	if c.ExitedProcesses == 0 {
		c.ExitedProcesses = defaultExitedKeep
	}
	if c.MaxArgBytes == 0 {
		c.MaxArgBytes = defaultMaxArgBytes
	}
	if c.AncestryDepth == 0 {
		c.AncestryDepth = defaultAncestryDepth
	}
	if len(c.ShedKinds) == 0 {
		c.ShedKinds = []string{"fork", "exit"}
	}
	if c.ShedAt == 0 {
		c.ShedAt = 0.5
	}
	if c.QueueSize == 0 {
		c.QueueSize = defaultQueueSize
	}
	if c.MaxQueueDelay == 0 {
		c.MaxQueueDelay = confval.Duration(defaultMaxQueueDelay)
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	return c
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	c = c.withDefaults()
	if c.RingBufferBytes < 64<<10 || c.RingBufferBytes&(c.RingBufferBytes-1) != 0 {
		errs = append(errs, fmt.Errorf("ringBufferBytes %d: must be a power of two of at least 65536", c.RingBufferBytes))
	}
	if c.WakeupBytes < 0 || c.WakeupBytes >= c.RingBufferBytes {
		errs = append(errs, fmt.Errorf("wakeupBytes %d: must be between 0 and ringBufferBytes", c.WakeupBytes))
	}
	if d := c.FlushInterval.Std(); d < time.Millisecond || d > 5*time.Second {
		errs = append(errs, fmt.Errorf("flushInterval %s: must be between 1ms and 5s", d))
	}
	if n := len(c.WatchPaths) + len(c.SensitivePaths); n > maxWatchPaths {
		errs = append(errs, fmt.Errorf("watchPaths and sensitivePaths: %d entries, at most %d", n, maxWatchPaths))
	}
	for i, p := range c.SensitivePaths {
		switch {
		case !strings.HasPrefix(p, "/"):
			errs = append(errs, fmt.Errorf("sensitivePaths[%d] %q: must be absolute", i, p))
		case len(p) > maxWatchPrefixBytes:
			errs = append(errs, fmt.Errorf("sensitivePaths[%d]: longer than %d bytes", i, maxWatchPrefixBytes))
		}
	}
	if d := c.MaxQueueDelay.Std(); d < time.Millisecond || d > time.Minute {
		errs = append(errs, fmt.Errorf("maxQueueDelay %s: must be between 1ms and 1m", d))
	}
	if c.ShedAt <= 0 || c.ShedAt > 1 {
		errs = append(errs, fmt.Errorf("shedAt %v: must be in (0, 1]", c.ShedAt))
	}
	if _, err := api.ParseKinds(c.ShedKinds); err != nil {
		errs = append(errs, fmt.Errorf("shedKinds: %w", err))
	}
	if len(c.HomeWatchPaths) > maxHomeWatchPaths {
		errs = append(errs, fmt.Errorf("homeWatchPaths: %d entries, at most %d", len(c.HomeWatchPaths), maxHomeWatchPaths))
	}
	for i, p := range c.HomeWatchPaths {
		switch {
		case !strings.HasPrefix(p, "/") || len(p) < 2:
			errs = append(errs, fmt.Errorf("homeWatchPaths[%d] %q: must start with / (relative to the home directory)", i, p))
		case len(p) > maxWatchPrefixBytes:
			errs = append(errs, fmt.Errorf("homeWatchPaths[%d]: longer than %d bytes", i, maxWatchPrefixBytes))
		}
	}
	for i, p := range c.WatchPaths {
		switch {
		case !strings.HasPrefix(p, "/"):
			errs = append(errs, fmt.Errorf("watchPaths[%d] %q: must be absolute", i, p))
		case len(p) > maxWatchPrefixBytes:
			errs = append(errs, fmt.Errorf("watchPaths[%d]: longer than %d bytes", i, maxWatchPrefixBytes))
		}
	}
	for _, f := range []struct {
		name  string
		value int
	}{
		{"processCacheSize", c.ProcessCacheSize}, {"exitedProcesses", c.ExitedProcesses},
		{"maxArgBytes", c.MaxArgBytes}, {"ancestryDepth", c.AncestryDepth}, {"queueSize", c.QueueSize},
	} {
		if f.value < 1 {
			errs = append(errs, fmt.Errorf("%s %d: must be positive", f.name, f.value))
		}
	}
	return errors.Join(errs...)
}
