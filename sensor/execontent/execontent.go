// Package execontent identifies executables by what they hold rather than by
// their name: the SHA-256 of the file and the known tools whose content
// signatures it contains. A miner or a scanner renamed or copied elsewhere
// keeps both.
//
// Each file is read once per identity (device, inode, change time, as the
// kernel reported them with the exec), in a worker goroutine off the event
// path: the exec event goes on at once, and an exe_content event follows
// when the file has been read. The worker reads the file through
// /proc/PID/exe while the process lives (which also reaches a container's
// file), else through its path for a host process, and only when the file
// there is the one the kernel executed.
package execontent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// Config is the agent's `exeContent:` section.
type Config struct {
	// Disabled turns the reader off: no exe_content events.
	Disabled bool `json:"disabled,omitempty"`
	// MaxFileBytes: larger files are scanned for signatures up to this size
	// and not hashed (a partial hash would match nothing). Default 64 MiB.
	MaxFileBytes int64 `json:"maxFileBytes,omitempty"`
	// Queue is how many execs of unread files may wait; more are dropped
	// and counted (the next exec of the file offers it again). Default 256.
	Queue int `json:"queue,omitempty"`
	// CacheFiles bounds the identities remembered as read. Default 16384.
	CacheFiles int `json:"cacheFiles,omitempty"`
}

// Validate reports negative sizes.
func (c Config) Validate() error {
	if c.MaxFileBytes < 0 || c.Queue < 0 || c.CacheFiles < 0 {
		return fmt.Errorf("exeContent: maxFileBytes, queue and cacheFiles must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxFileBytes <= 0 {
		c.MaxFileBytes = 64 << 20
	}
	if c.Queue <= 0 {
		c.Queue = 256
	}
	if c.CacheFiles <= 0 {
		c.CacheFiles = 16384
	}
	return c
}

// Signature is a known tool: a file holding every one of its byte strings
// is that tool, whatever its name.
type Signature struct {
	Tool string
	All  [][]byte
}

// DefaultSignatures are tools an attacker renames: miners, scanners,
// tunnels. Each string is one the tool's own code or help text carries.
// They are written reversed and turned round at run time, so that Harrier's
// own binary (and any program built with this package) does not hold them
// and match itself.
func DefaultSignatures() []Signature {
	b := func(reversed ...string) [][]byte {
		out := make([][]byte, len(reversed))
		for i, x := range reversed {
			out[i] = Reversed(x)
		}
		return out
	}
	return []Signature{
		{Tool: "xmrig", All: b("giRMX", "//:pct+mutarts", "xmodnar")},
		{Tool: "nmap", All: b("pamN", "gro.pamn//:sptth")},
		{Tool: "masscan", All: b("nacssam", "etar--")},
		{Tool: "chisel", All: b("lesihc/arollipj")},
		{Tool: "gost", All: b("tsog/hzreunig")},
		{Tool: "frp", All: b("prf/reidetaf")},
		{Tool: "ligolo", All: b("gn-ologil/03ahcocin")},
	}
}

// Reversed returns s back to front, as a new slice: for signature strings
// a binary must not hold as they are.
func Reversed(s string) []byte {
	b := []byte(s)
	slices.Reverse(b)
	return b
}

// fileID is a file's identity: the same file under any name.
type fileID struct {
	dev, ino uint64
	ctimeNs  int64
}

type job struct {
	ev *api.Event
	id fileID
}

// Stats counts the reader's work.
type Stats struct {
	Read, Hashed, Matched uint64
	// Dropped: offers refused with the queue full. Gone: the process and
	// its file could no longer be reached. Changed: the file at hand was not
	// the one executed.
	Dropped, Gone, Changed uint64
}

// Reader reads executables offered by exec events.
type Reader struct {
	cfg  Config
	sigs []Signature
	// longest signature string: the overlap kept between read chunks.
	overlap int
	jobs    chan job
	out     chan *api.Event

	// self is this program's own file, never read: Harrier's CLI runs
	// (harrier simulate, harrier response) are the agent's binary.
	self fileID

	mu      sync.Mutex
	seen    map[fileID]struct{}
	pending map[fileID]struct{}

	read, hashed, matched, dropped, gone, changed atomic.Uint64
}

// New makes a reader; Run must be running for offers to be read.
func New(cfg Config, sigs []Signature) *Reader {
	cfg = cfg.withDefaults()
	r := &Reader{cfg: cfg, sigs: sigs, jobs: make(chan job, cfg.Queue), out: make(chan *api.Event, cfg.Queue),
		seen: make(map[fileID]struct{}), pending: make(map[fileID]struct{})}
	for _, s := range sigs {
		for _, x := range s.All {
			r.overlap = max(r.overlap, len(x))
		}
	}
	if f, err := os.Open("/proc/self/exe"); err == nil {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil {
			r.self = identity(&st)
		}
		f.Close()
	}
	return r
}

// identity is the fileID of a stat result, in the kernel's encodings.
func identity(st *unix.Stat_t) fileID {
	return fileID{dev: uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)), ino: st.Ino,
		ctimeNs: st.Ctim.Sec*1e9 + st.Ctim.Nsec}
}

// Events are the exe_content events, one per file read.
func (r *Reader) Events() <-chan *api.Event { return r.out }

// Offer hands over an exec event (read-only, kept until its file is read).
// It costs a map lookup for a file already read.
func (r *Reader) Offer(ev *api.Event) {
	x := ev.GetExec()
	if x == nil || x.GetExeInode() == 0 {
		return
	}
	id := fileID{dev: x.GetExeDevice(), ino: x.GetExeInode(), ctimeNs: x.GetExeCtimeNs()}
	if id == r.self {
		return
	}
	r.mu.Lock()
	_, seen := r.seen[id]
	_, waiting := r.pending[id]
	if !seen && !waiting {
		r.pending[id] = struct{}{}
	}
	r.mu.Unlock()
	if seen || waiting {
		return
	}
	select {
	case r.jobs <- job{ev: ev, id: id}:
	default:
		r.dropped.Add(1)
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
	}
}

// Run reads offered files until ctx ends.
func (r *Reader) Run(ctx context.Context) error {
	buf := make([]byte, 256<<10)
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-r.jobs:
			ev, done := r.readFile(j, buf)
			r.mu.Lock()
			delete(r.pending, j.id)
			if done {
				if len(r.seen) >= r.cfg.CacheFiles {
					clear(r.seen) // bounded: files are read again after
				}
				r.seen[j.id] = struct{}{}
			}
			r.mu.Unlock()
			if ev == nil {
				continue
			}
			select {
			case r.out <- ev:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// Stats returns the counters.
func (r *Reader) Stats() Stats {
	return Stats{Read: r.read.Load(), Hashed: r.hashed.Load(), Matched: r.matched.Load(),
		Dropped: r.dropped.Load(), Gone: r.gone.Load(), Changed: r.changed.Load()}
}

var errChanged = errors.New("the file is not the one executed")

// readFile reads the job's file and builds its event; done says the file
// needs no further reading (read, or not readable in any way that a later
// exec could change).
func (r *Reader) readFile(j job, buf []byte) (*api.Event, bool) {
	f, err := r.open(j)
	if errors.Is(err, errChanged) {
		r.changed.Add(1)
		return nil, false
	}
	if err != nil {
		r.gone.Add(1)
		return nil, false
	}
	defer f.Close()
	r.read.Add(1)
	content := &api.ExeContent{Path: j.ev.GetProcess().GetExe()}
	if err := r.scan(f, buf, content); err != nil {
		content.Error = err.Error()
	}
	if content.Sha256 != "" {
		r.hashed.Add(1)
	}
	if len(content.Tools) > 0 {
		r.matched.Add(1)
	}
	src := j.ev
	ev := &api.Event{
		Time: timestamppb.Now(), Node: src.GetNode(), Kind: api.EventKind_EVENT_KIND_EXE_CONTENT,
		// Shared read-only with the exec event, as the sensor shares them.
		Process: src.GetProcess(), Ancestry: src.GetAncestry(), Namespaces: src.GetNamespaces(), Container: src.GetContainer(),
		Detail: &api.Event_ExeContent{ExeContent: content},
	}
	return ev, true
}

// open opens the executed file: /proc/PID/exe while the process runs that
// file, else (a host process) the path, when it is still the same file.
func (r *Reader) open(j job) (*os.File, error) {
	p := j.ev.GetProcess()
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(p.GetTgid()), 10) + "/exe")
	if err == nil {
		if same(f, j.id) {
			return f, nil
		}
		f.Close() // the pid now runs another program
	}
	if j.ev.GetContainer().GetId() != "" || p.GetExe() == "" || p.GetExe()[0] != '/' {
		return nil, fmt.Errorf("process %d is gone", p.GetTgid())
	}
	if f, err = os.Open(p.GetExe()); err != nil {
		return nil, err
	}
	if !same(f, j.id) {
		f.Close()
		return nil, errChanged
	}
	return f, nil
}

// same reports whether f is the file of id.
func same(f *os.File, id fileID) bool {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	return identity(&st) == id
}

// scan hashes f and looks for every signature's strings, in chunks, keeping
// an overlap so a string across two chunks is found.
func (r *Reader) scan(f *os.File, buf []byte, c *api.ExeContent) error {
	h := sha256.New()
	found := make([][]bool, len(r.sigs))
	for i, s := range r.sigs {
		found[i] = make([]bool, len(s.All))
	}
	var (
		total   int64
		carry   = make([]byte, 0, 2*r.overlap)
		partial bool
	)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if total == 0 && n >= 4 && bytes.Equal(buf[:4], []byte("\x7fELF")) {
				c.Elf = true
			}
			total += int64(n)
			if total > r.cfg.MaxFileBytes {
				partial = true
			} else {
				h.Write(buf[:n])
			}
			// The chunk itself, then the seam with the previous one (a
			// string across it), without copying the chunk.
			chunk := buf[:n]
			seam := append(carry, chunk[:min(n, r.overlap)]...)
			for i, s := range r.sigs {
				for k, x := range s.All {
					if !found[i][k] && (bytes.Contains(chunk, x) || bytes.Contains(seam, x)) {
						found[i][k] = true
					}
				}
			}
			keep := min(r.overlap, n)
			carry = append(carry[:0], chunk[n-keep:]...)
			if partial {
				break
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	}
	c.Size = uint64(total)
	if partial {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil {
			c.Size = uint64(st.Size)
		}
	}
	for i, s := range r.sigs {
		all := true
		for _, ok := range found[i] {
			all = all && ok
		}
		if all {
			c.Tools = append(c.Tools, s.Tool)
		}
	}
	if partial {
		return fmt.Errorf("larger than %d bytes: not hashed", r.cfg.MaxFileBytes)
	}
	c.Sha256 = hex.EncodeToString(h.Sum(nil))
	return nil
}
