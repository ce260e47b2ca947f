package response

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ExecDeny is a list of executables killed at exec, before their first
// instruction (enforce), or only reported (audit).
type ExecDeny struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// Paths are absolute paths of executables; each is identified by its
	// file system and inode when the agent loads the list, so a copy
	// elsewhere is another file, and a replaced file needs a reload.
	Paths []string `json:"paths"`
}

func (d ExecDeny) validate() error {
	var errs []error
	if d.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if d.Mode != ModeAudit && d.Mode != ModeEnforce {
		errs = append(errs, fmt.Errorf("mode %q: want %s or %s", d.Mode, ModeAudit, ModeEnforce))
	}
	if len(d.Paths) == 0 {
		errs = append(errs, errors.New("no paths"))
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
	TGID             uint32
	StartTime        time.Time
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
}

type execEntry struct{ list, path, mode string }

// StartExecGuard resolves every path of lists to its (device, inode), loads
// the program with them in its map, and attaches it to sched_process_exec
// (tp_btf, else raw_tp). A path that does not exist is an error in skipped
// and costs only that path.
func StartExecGuard(lists []ExecDeny, bootTime time.Time) (g *ExecGuard, skipped []error, err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, nil, fmt.Errorf("raise memlock rlimit: %w", err)
	}
	g = &ExecGuard{bootTime: bootTime}
	type keyed struct {
		key execdenyExecKey
		act execdenyExecAction
	}
	var keys []keyed
	for _, l := range lists {
		for _, p := range l.Paths {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				skipped = append(skipped, fmt.Errorf("execDeny %q: %s: %w", l.Name, p, err))
				continue
			}
			// The kernel's dev_t, as in super_block.s_dev.
			dev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
			kill := uint32(0)
			if l.Mode == ModeEnforce {
				kill = 1
			}
			keys = append(keys, keyed{execdenyExecKey{Dev: dev, Ino: st.Ino}, execdenyExecAction{Entry: uint32(len(g.entries)), Kill: kill}})
			g.entries = append(g.entries, execEntry{l.Name, p, l.Mode})
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

// Entries is how many executables are denied.
func (g *ExecGuard) Entries() int { return len(g.entries) }

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
		out := ExecHit{List: e.list, Path: e.path, Mode: e.mode, TGID: h.Tgid,
			StartTime: g.bootTime.Add(time.Duration(h.StartBoottime)), Killed: h.Kill == 1 && h.SignalResult == 0}
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
