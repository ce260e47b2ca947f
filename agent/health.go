package agent

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/store"
)

// health is what the agent's heartbeats carry: its version, what the sensor
// attached, drops per stage, spool depth and age, and its own CPU and RSS.
func health(version, node string, started time.Time, s eventSource, spool *store.Spool, as *analytics.Stats) *api.AgentHealth {
	st := s.Status()
	h := &api.AgentHealth{Version: version, Kernel: st.Kernel, Node: node, Drops: map[string]uint64{}}
	for _, p := range st.Probes {
		h.Probes = append(h.Probes, &api.ProbeHealth{Name: p.Name, Attached: p.Attached, Attach: p.Attach, Error: p.Error})
	}
	if stats, err := s.Stats(); err == nil {
		for _, n := range stats.KernelRingFull {
			h.Drops["kernel_ring_full"] += n
		}
		for _, n := range stats.QueueDropped {
			h.Drops["sensor_queue"] += n
		}
		for _, n := range stats.QueueShed {
			h.Drops["sensor_shed"] += n
		}
		h.Drops["decode_errors"] = stats.DecodeErrors
		h.Drops["kernel_shed_reads"] = stats.KernelShedReads
		for _, n := range stats.KernelShedRepeats {
			h.Drops["kernel_shed_repeats"] += n
		}
	}
	if as != nil {
		for _, n := range as.Suppressed {
			h.Drops["analytics_rate_limited"] += n
		}
		h.Drops["analytics_eval_errors"] = as.EvalErrors
	}
	sp := spool.Stats()
	h.SpoolBytes = sp.LiveBytes
	var oldest time.Duration
	for _, c := range sp.Classes {
		h.SpoolRecords += c.Depth
		h.Drops["spool_evicted"] += c.Evicted
		h.Drops["spool_rejected"] += c.Rejected
		oldest = max(oldest, c.OldestAge)
	}
	if oldest > 0 {
		h.SpoolOldest = timestamppb.New(time.Now().Add(-oldest))
	}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		h.CpuCores = float64(ru.Utime.Nano()+ru.Stime.Nano()) / float64(time.Since(started).Nanoseconds())
	}
	h.RssBytes = rssBytes()
	return h
}

// processStart is when this process started, from /proc/self/stat.
func processStart() time.Time {
	st, err := procstat.Read("", os.Getpid())
	if err != nil {
		return time.Now()
	}
	boot, err := procstat.BootTime()
	if err != nil {
		return time.Now()
	}
	return boot.Add(st.SinceBoot())
}

// rssBytes reads VmRSS from /proc/self/status.
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
