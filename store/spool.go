// Package store is the agent's offline spool: everything the node produced
// while the uplink is down, kept on disk until the backend acknowledges it.
//
// Guarantees:
//   - An Append or AppendBatch that returns nil has been fsync'd (one fsync per
//     call): it survives kill -9 and power loss.
//   - Records are delivered at least once: Next does not delete; Ack does, and
//     a restart never resends an acknowledged record.
//   - Sequence numbers are per class, start at 1, increase by one per record
//     and continue after a restart; a record that is gone without an Ack was
//     evicted and is reported as a Gap.
//   - The spool stays within Config.QuotaBytes by evicting the oldest events,
//     then the oldest findings, and alerts only when nothing else is left.
//
// Payloads are appended to per-class segment files (segment.go); Badger v4
// keeps the metadata: each class's acknowledged position, out-of-order
// acknowledgements, counters and unreported gaps. A segment is deleted whole
// once everything in it is acknowledged or evicted. Why not payloads in
// Badger: its compactions rewrote every payload several times, which capped
// appends at ~9 000 records/s on the project's VM and took the agent to
// 300+ MiB RSS at quota; payloads in its value log came back only after
// compaction produced discard statistics, so a spool with a working uplink
// evicted live records (README.md, "Why segment files").
package store

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/harrier-sec/harrier/internal/fsync"
	"golang.org/x/sys/unix"
)

// Class is a record's priority class. A lower value is a higher priority:
// Next drains alerts first, and eviction takes events first.
type Class uint8

const (
	ClassAlert   Class = 1
	ClassFinding Class = 2 // findings and inventory
	ClassEvent   Class = 3

	numClasses = 3
)

func (c Class) valid() bool { return c >= ClassAlert && c <= ClassEvent }

func (c Class) String() string {
	switch c {
	case ClassAlert:
		return "alert"
	case ClassFinding:
		return "finding"
	case ClassEvent:
		return "event"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Defaults for Config fields left zero.
const (
	DefaultQuotaBytes     = 1 << 30
	DefaultMaxRecordBytes = 256 << 10
	// DefaultMinFreeBytes is the free space Append leaves on the file system.
	// Segment writes fail cleanly with ENOSPC, but Badger writes its
	// metadata through mmap'd files, where a full disk is a SIGBUS that kills
	// the process rather than an error.
	DefaultMinFreeBytes = 48 << 20
	MinQuotaBytes       = 4 << 20
)

// Config configures a spool.
type Config struct {
	// Dir holds the spool; it is created if missing.
	Dir string
	// QuotaBytes bounds the disk the spool's segment files use (default
	// 1 GiB, minimum 4 MiB). Badger's metadata comes on top (a few MiB).
	QuotaBytes int64
	// MaxRecordBytes bounds one payload (default 256 KiB).
	MaxRecordBytes int
	// MinFreeBytes is the free space Append refuses to eat into (default
	// 48 MiB); a negative value disables the check (tests only).
	MinFreeBytes int64
}

func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		return c, errors.New("store: Config.Dir is empty")
	}
	if c.QuotaBytes == 0 {
		c.QuotaBytes = DefaultQuotaBytes
	}
	if c.QuotaBytes < MinQuotaBytes {
		return c, fmt.Errorf("store: QuotaBytes %d is below the minimum %d", c.QuotaBytes, MinQuotaBytes)
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.MaxRecordBytes < 0 || int64(c.MaxRecordBytes) > c.QuotaBytes/8 {
		return c, fmt.Errorf("store: MaxRecordBytes %d must be positive and at most QuotaBytes/8", c.MaxRecordBytes)
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = DefaultMinFreeBytes
	}
	return c, nil
}

// RecordID names one record.
type RecordID struct {
	Class Class
	Seq   uint64
}

// Record is a spooled record as Next returns it.
type Record struct {
	RecordID
	AppendedAt time.Time
	Payload    []byte
}

// Gap is a run of records of one class that were evicted before delivery.
// Seq numbers FirstSeq..LastSeq that were not acknowledged are gone; Count is
// how many records were evicted in that range.
type Gap struct {
	Class     Class
	FirstSeq  uint64
	LastSeq   uint64
	Count     uint64
	EvictedAt time.Time
}

// ClassStats are the counters of one class.
type ClassStats struct {
	Depth     uint64        // live records
	Bytes     uint64        // live bytes (payload plus frame header)
	OldestAge time.Duration // age of the oldest live record; 0 when empty
	NextSeq   uint64
	Appended  uint64 // since the spool was created
	Acked     uint64
	Evicted   uint64
	Rejected  uint64 // appends refused for lack of quota, since Open
}

// Stats is a snapshot of the spool.
type Stats struct {
	Classes   map[Class]ClassStats
	LiveBytes uint64
	// SegmentBytes is the size of the segment files: live records plus the
	// acknowledged part of segments not yet wholly acknowledged.
	SegmentBytes int64
	// DiskBytes is SegmentBytes plus Badger's metadata files, as last measured.
	DiskBytes int64
	// QuotaBytes bounds SegmentBytes: above it, Append evicts.
	QuotaBytes int64
}

// Errors callers may test for with errors.Is.
var (
	ErrClosed        = errors.New("store: spool is closed")
	ErrQuotaExceeded = errors.New("store: quota exceeded")
	ErrDiskFull      = errors.New("store: disk full")
	ErrInvalid       = errors.New("store: invalid record")
)

// recordSize is what a record costs on disk: its payload and frame header.
func recordSize(payloadLen int) uint64 { return uint64(payloadLen + frameHeaderLen) }

// metaTxnEntries bounds the writes of one metadata transaction (Badger's
// limit with 1 MiB memtables is ~1 600 entries).
const metaTxnEntries = 500

// windowMax bounds the frame positions a class remembers ahead of its head.
const windowMax = 1 << 16

// frameLoc is where a frame is: its segment (by first seq), offset and size.
type frameLoc struct {
	seg        uint64
	off        int64
	appendedAt int64
	size       uint32
}

// ackEntry is a record acknowledged above its class's head.
type ackEntry struct {
	size   uint32
	stored bool // its acked key is in Badger
}

// classState is one class's segments and positions, under Spool.mu.
type classState struct {
	segs   []*segment // oldest first; the last one is open for appending
	writer *os.File   // the last segment
	next   uint64     // seq the next append gets
	head   uint64     // lowest seq that may be live; everything below is gone
	// headSeg and headOff locate head's frame (or the end of the data when
	// the class is empty); segs[0].first == headSeg.
	headSeg uint64
	headOff int64
	acked   map[uint64]ackEntry
	// window[i] is the position of frame head+i, as far as Next or Ack walked.
	window    []frameLoc
	liveBytes uint64
	ackedN    uint64
	evictedN  uint64
	oldest    time.Time // append time of the record at head; zero when empty
	lastGap   *Gap      // latest unreported gap, extended by contiguous evictions
	rejected  uint64
}

func (cs *classState) live() uint64 { return cs.next - cs.head - uint64(len(cs.acked)) }

func (cs *classState) last() *segment { return cs.segs[len(cs.segs)-1] }

// Spool is the on-disk spool. Its methods are safe for concurrent use; they
// are serialised, fsyncs included (an fsync is a millisecond or two; the
// agent appends in batches).
type Spool struct {
	cfg      Config
	log      *slog.Logger
	db       *badger.DB
	segDir   string
	segBytes int64 // size of every class's segment files
	segSize  int64 // size at which a segment is closed and a new one started

	mu       sync.Mutex
	closed   bool
	cls      [numClasses + 1]classState // indexed by Class
	metaDisk int64                      // Badger's files, as last measured
	id       string                     // see ID
	wbuf     []byte
	rbuf     *bufio.Reader
}

// Open opens (or creates) the spool in cfg.Dir.
func Open(cfg Config, log *slog.Logger) (*Spool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store")
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create spool directory %s: %w", cfg.Dir, err)
	}
	legacy, err := moveLegacy(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("store: move the earlier spool layout in %s aside: %w", cfg.Dir, err)
	}
	segDir := filepath.Join(cfg.Dir, segmentDirName)
	if err := os.MkdirAll(segDir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", segDir, err)
	}
	metaDir := filepath.Join(cfg.Dir, metaDirName)
	db, err := badger.Open(badgerOptions(metaDir, log))
	if err != nil {
		return nil, fmt.Errorf("store: open spool metadata in %s: %w", metaDir, err)
	}
	s := &Spool{
		cfg:     cfg,
		log:     log,
		db:      db,
		segDir:  segDir,
		segSize: segmentBytes(cfg.QuotaBytes),
		rbuf:    bufio.NewReaderSize(nil, 256<<10),
	}
	var old *badger.DB
	var oldMetas [numClasses + 1]legacyMeta
	if legacy {
		if old, err = openLegacy(filepath.Join(cfg.Dir, legacyDirName), log); err == nil {
			if oldMetas, err = s.seedFromLegacy(old); err != nil {
				_ = old.Close()
			}
		}
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store: read the earlier spool layout in %s: %w", filepath.Join(cfg.Dir, legacyDirName), err)
		}
	}
	if err := s.load(); err != nil {
		s.closeFiles()
		_ = db.Close()
		if old != nil {
			_ = old.Close()
		}
		return nil, fmt.Errorf("store: load spool in %s: %w", cfg.Dir, err)
	}
	if old != nil {
		if err := s.finishLegacy(old, oldMetas); err != nil {
			_ = old.Close()
			_ = s.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	if err := s.loadID(); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("store: spool ID in %s: %w", cfg.Dir, err)
	}
	if s.metaDisk, err = diskUsage(metaDir); err != nil {
		s.closeFiles()
		_ = db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	return s, nil
}

// ID names this spool's sequence numbers: a spool made afresh (a reinstall,
// a wiped data directory) starts them at 1 again, and a receiver that
// de-duplicates on sequence numbers must key them by ID too. It is 32 hex
// digits, made when the spool is created. A spool that already held records
// when IDs were introduced has the empty ID: its numbers simply continue.
func (s *Spool) ID() string { return s.id }

// loadID reads the spool's ID, or makes one for a spool that has never
// held a record.
func (s *Spool) loadID() error {
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte{kindID})
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != spoolIDLen {
				return fmt.Errorf("%d bytes, want %d: %w", len(v), spoolIDLen, errCorrupt)
			}
			s.id = hex.EncodeToString(v)
			return nil
		})
	})
	switch {
	case errors.Is(err, errCorrupt):
		// A new ID costs at most repeats of records sent but not acked;
		// refusing to open would cost everything.
		s.log.Error("spool ID damaged: making a new one; the backend may store unacknowledged records twice", "err", err)
	case !errors.Is(err, badger.ErrKeyNotFound):
		return err
	default:
		for c := ClassAlert; c <= ClassEvent; c++ {
			if s.cls[c].next != 1 {
				return nil // records from before spool IDs
			}
		}
	}
	id := make([]byte, spoolIDLen)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte{kindID}, id) }); err != nil {
		return err
	}
	// Durable before any record is numbered under it.
	if err := s.db.Sync(); err != nil {
		return err
	}
	s.id = hex.EncodeToString(id)
	return nil
}

// load reads the metadata and the segment files and settles every class's
// positions, cutting off a torn tail left by a crash.
func (s *Spool) load() error {
	var metas [numClasses + 1]*classMeta
	var acked [numClasses + 1]map[uint64]ackEntry
	for c := ClassAlert; c <= ClassEvent; c++ {
		acked[c] = map[uint64]ackEntry{}
	}
	err := s.db.View(func(txn *badger.Txn) error {
		for c := ClassAlert; c <= ClassEvent; c++ {
			item, err := txn.Get(metaKey(c))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read %s metadata: %w", c, err)
			}
			if err := item.Value(func(v []byte) error {
				m, err := decodeClassMeta(v)
				metas[c] = &m
				return err
			}); err != nil {
				return fmt.Errorf("%s metadata: %w", c, err)
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true})
		defer it.Close()
		for _, prefix := range [][]byte{gapPrefix(), {kindAcked}} {
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				item := it.Item()
				if err := item.Value(func(v []byte) error {
					if prefix[0] == kindGap {
						g, err := decodeGap(item.Key(), v)
						if err == nil {
							s.cls[g.Class].lastGap = &g // keys sort by first seq: the last one wins
						}
						return err
					}
					id, size, err := decodeAcked(item.Key(), v)
					if err == nil {
						acked[id.Class][id.Seq] = ackEntry{size: size, stored: true}
					}
					return err
				}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(s.segDir)
	if err != nil {
		return err
	}
	var firsts [numClasses + 1][]uint64
	for _, e := range entries {
		c, first, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			s.log.Warn("ignoring a foreign file among the spool's segments", "path", filepath.Join(s.segDir, e.Name()))
			continue
		}
		firsts[c] = append(firsts[c], first)
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		slices.Sort(firsts[c])
		if err := s.loadClass(c, metas[c], firsts[c], acked[c]); err != nil {
			return fmt.Errorf("%s: %w", c, err)
		}
	}
	return nil
}

// loadClass settles one class from its metadata (nil for a new class) and
// the first seqs of its segment files.
func (s *Spool) loadClass(c Class, m *classMeta, firsts []uint64, acked map[uint64]ackEntry) error {
	cs := &s.cls[c]
	cs.head, cs.next = 1, 1
	var hint classMeta
	if m != nil {
		hint = *m
		cs.head, cs.next, cs.ackedN, cs.evictedN = m.head, m.next, m.acked, m.evicted
	}
	// Segments the head passed were deleted after the metadata said so; a
	// crash may have left them.
	for len(firsts) > 1 && firsts[1] <= cs.head {
		if err := s.removeSegmentFile(c, firsts[0]); err != nil {
			return err
		}
		firsts = firsts[1:]
	}
	for i, first := range firsts {
		path := segmentPath(s.segDir, c, first)
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		seg := &segment{first: first, dataEnd: st.Size(), size: st.Size()}
		if i+1 < len(firsts) {
			seg.end = firsts[i+1]
		} else {
			// The newest segment may end in a frame cut short by a crash: it
			// was never acknowledged to the caller, so it is cut off.
			if seg.end, seg.dataEnd, err = scanSegment(path, first, s.cfg.MaxRecordBytes, s.rbuf); err != nil {
				return err
			}
			if seg.dataEnd < seg.size {
				s.log.Warn("cutting a torn tail off the newest segment", "path", path, "bytes", seg.size-seg.dataEnd)
				if err := truncateSync(path, seg.dataEnd); err != nil {
					return err
				}
				seg.size = seg.dataEnd
			}
		}
		cs.segs = append(cs.segs, seg)
	}
	floor := cs.next // as of the last acknowledgement or eviction
	startHead := cs.head
	if len(cs.segs) == 0 || cs.last().end < floor {
		// Records the metadata saw are missing from disk (or none were ever
		// written). Never reuse their sequence numbers: the backend
		// de-duplicates on them.
		if len(cs.segs) > 0 {
			s.log.Error("spool segments end before records the metadata saw", "class", c.String(),
				"segments_end", cs.last().end, "metadata_next", floor)
		}
		s.markLost(c, acked, cs.head, floor, reasonMissing)
		for _, seg := range cs.segs {
			if err := s.removeSegmentFile(c, seg.first); err != nil {
				return err
			}
		}
		cs.segs, cs.next = nil, floor
		if err := s.newSegment(c); err != nil {
			return err
		}
	} else {
		cs.next = cs.last().end
		if err := s.openWriter(c); err != nil {
			return err
		}
	}
	if first := cs.segs[0].first; cs.head < first {
		s.markLost(c, acked, cs.head, first, reasonMissing)
	}
	cs.acked = map[uint64]ackEntry{}
	for seq, a := range acked {
		if seq >= cs.head && seq < cs.next {
			cs.acked[seq] = a
		}
	}
	if err := s.findHead(c, hint); err != nil {
		return err
	}
	var stale []uint64
	for seq, a := range acked {
		if _, ok := cs.acked[seq]; !ok && a.stored {
			stale = append(stale, seq)
		}
	}
	for _, seg := range cs.segs {
		s.segBytes += seg.size
		cs.liveBytes += uint64(seg.dataEnd)
	}
	cs.liveBytes -= min(cs.liveBytes, uint64(cs.headOff))
	for _, a := range cs.acked {
		cs.liveBytes -= min(cs.liveBytes, uint64(a.size))
	}
	s.refreshOldest(c)
	if len(stale) > 0 || cs.head != startHead {
		if err := s.persist(c, stale, nil, nil); err != nil {
			return err
		}
	}
	return s.dropPassed(c)
}

// findHead locates head's frame in segs[0], trying the stored position first.
func (s *Spool) findHead(c Class, hint classMeta) error {
	cs := &s.cls[c]
	seg := cs.segs[0]
	cs.headSeg, cs.window = seg.first, nil
	if cs.head >= seg.end {
		cs.headOff = seg.dataEnd
		return nil
	}
	if hint.headSeg == seg.first && hint.headOff < uint64(seg.dataEnd) {
		cs.headOff = int64(hint.headOff)
		if loc, err := s.locate(c, cs.head); err == nil && loc.off == int64(hint.headOff) {
			return nil
		}
		cs.window = nil
	}
	// Walk the segment from its start.
	f, closeFile, err := s.segmentFile(c, 0)
	if err != nil {
		return err
	}
	defer closeFile()
	r := newFrameReader(f, 0, seg.dataEnd, s.cfg.MaxRecordBytes, s.rbuf)
	for {
		off := r.off
		h, _, err := r.next(false)
		if err != nil {
			break
		}
		if h.seq == cs.head {
			cs.headOff = off
			return nil
		}
	}
	// The head's frame is unreadable: what is left of the segment is lost.
	cs.headOff = seg.dataEnd
	s.markLost(c, cs.acked, cs.head, seg.end, reasonDamaged)
	for seq := range cs.acked {
		if seq < cs.head {
			delete(cs.acked, seq)
		}
	}
	return nil
}

// markLost counts the unacknowledged records in [from, to) as evicted (a
// crash or a damaged disk took them), records the gap and moves head to to.
// It is for Open; the caller persists the metadata.
func (s *Spool) markLost(c Class, acked map[uint64]ackEntry, from, to uint64, reason string) {
	cs := &s.cls[c]
	if to <= from {
		return
	}
	n := to - from
	for seq := range acked {
		if seq >= from && seq < to {
			n--
		}
	}
	cs.head = max(cs.head, to)
	cs.evictedN += n
	if n == 0 {
		return
	}
	s.log.Error("spool records lost", "class", c.String(), "reason", reason, "first_seq", from, "last_seq", to-1, "count", n)
	g := s.extendGap(c, from, to-1, n)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(gapKey(c, g.FirstSeq), g.encodeValue()) }); err != nil {
		s.log.Error("recording a gap", "class", c.String(), "err", err)
	}
}

// extendGap makes the gap for evicted records first..last (count of them),
// merging it into the class's last unreported gap when contiguous.
func (s *Spool) extendGap(c Class, first, last, count uint64) Gap {
	cs := &s.cls[c]
	g := Gap{Class: c, FirstSeq: first, LastSeq: last, Count: count, EvictedAt: time.Now()}
	if lg := cs.lastGap; lg != nil && lg.LastSeq+1 >= first {
		g.FirstSeq, g.Count = lg.FirstSeq, lg.Count+count
	}
	cs.lastGap = &g
	return g
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// openWriter opens the class's last segment for appending.
func (s *Spool) openWriter(c Class) error {
	cs := &s.cls[c]
	f, err := os.OpenFile(segmentPath(s.segDir, c, cs.last().first), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	cs.writer = f
	return nil
}

// newSegment starts a new segment at next and makes it the one appended to.
// An empty last segment is reused.
func (s *Spool) newSegment(c Class) error {
	cs := &s.cls[c]
	if len(cs.segs) > 0 && cs.last().first == cs.next && cs.writer != nil {
		// Nothing was appended to it (a failed write may have left bytes).
		if err := cs.writer.Truncate(0); err != nil {
			return err
		}
		s.segBytes -= cs.last().size
		cs.last().size, cs.last().dataEnd = 0, 0
		return nil
	}
	path := segmentPath(s.segDir, c, cs.next)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := fsync.Dir(s.segDir); err != nil {
		_ = f.Close()
		return err
	}
	if cs.writer != nil {
		_ = cs.writer.Close()
	}
	cs.writer = f
	cs.segs = append(cs.segs, &segment{first: cs.next, end: cs.next})
	if len(cs.segs) == 1 {
		cs.headSeg, cs.headOff = cs.next, 0
	}
	return nil
}

// Append stores one record and returns its sequence number once it is on
// disk (fsync'd).
func (s *Spool) Append(class Class, payload []byte) (uint64, error) {
	return s.AppendBatch(class, [][]byte{payload})
}

// AppendBatch stores records of one class with a single fsync and returns the
// sequence number of the first; the others follow consecutively. When it
// returns nil every record is on disk. When it returns an error none is
// acknowledged, but a prefix of the batch may have been stored and will be
// delivered (at least once).
func (s *Spool) AppendBatch(class Class, payloads [][]byte) (uint64, error) {
	return s.appendBatch(class, payloads, nil)
}

// appendBatch is AppendBatch with each record's append time (unix ns) given;
// nil means now.
func (s *Spool) appendBatch(class Class, payloads [][]byte, times []int64) (uint64, error) {
	if !class.valid() {
		return 0, fmt.Errorf("%w: class %d", ErrInvalid, class)
	}
	if len(payloads) == 0 {
		return 0, fmt.Errorf("%w: empty batch", ErrInvalid)
	}
	var need int64
	for i, p := range payloads {
		if len(p) > s.cfg.MaxRecordBytes {
			return 0, fmt.Errorf("%w: payload %d is %d bytes, the limit is %d", ErrInvalid, i, len(p), s.cfg.MaxRecordBytes)
		}
		need += int64(recordSize(len(p)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if err := s.checkFreeSpace(need); err != nil {
		return 0, err
	}
	if err := s.makeRoom(class, need); err != nil {
		return 0, err
	}
	cs := &s.cls[class]
	if seg := cs.last(); seg.size > 0 && seg.size+need > s.segSize {
		if err := s.newSegment(class); err != nil {
			return 0, s.writeError("start a segment", err)
		}
		if err := s.dropPassed(class); err != nil {
			return 0, err
		}
	}
	now := time.Now()
	buf := s.wbuf[:0]
	for i, p := range payloads {
		at := now.UnixNano()
		if times != nil {
			at = times[i]
		}
		buf = appendFrame(buf, cs.next+uint64(i), at, p)
	}
	if cap(buf) <= 4<<20 {
		s.wbuf = buf
	}
	seg := cs.last()
	if _, err := cs.writer.WriteAt(buf, seg.size); err != nil {
		return 0, s.writeError("append", s.undoWrite(class, err))
	}
	if err := unix.Fdatasync(int(cs.writer.Fd())); err != nil {
		return 0, s.writeError("sync", s.undoWrite(class, err))
	}
	first := cs.next
	if cs.live() == 0 {
		cs.oldest = now
		if times != nil {
			cs.oldest = frameTime(times[0])
		}
	}
	seg.size += need
	seg.dataEnd = seg.size
	cs.next += uint64(len(payloads))
	seg.end = cs.next
	cs.liveBytes += uint64(need)
	s.segBytes += need
	return first, nil
}

// undoWrite cuts a failed append off the segment. If that fails too, later
// appends go to a new segment, so that a segment never holds records after
// garbage.
func (s *Spool) undoWrite(c Class, cause error) error {
	cs := &s.cls[c]
	seg := cs.last()
	if err := cs.writer.Truncate(seg.size); err == nil {
		return cause
	}
	if seg.first == cs.next {
		return cause // empty: newSegment truncates it before reuse
	}
	st, err := cs.writer.Stat()
	if err == nil {
		s.segBytes += st.Size() - seg.size
		seg.size = st.Size()
	}
	if err := s.newSegment(c); err != nil {
		s.log.Error("starting a segment after a failed write", "class", c.String(), "err", err)
	}
	return cause
}

// writeError wraps a failed write, naming ENOSPC as ErrDiskFull.
func (s *Spool) writeError(op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %s in %s: %w", ErrDiskFull, op, s.cfg.Dir, err)
	}
	return fmt.Errorf("store: %s in %s: %w", op, s.cfg.Dir, err)
}

// checkFreeSpace refuses a write that would leave less than MinFreeBytes free
// on the spool's file system.
func (s *Spool) checkFreeSpace(need int64) error {
	if s.cfg.MinFreeBytes < 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.cfg.Dir, &st); err != nil {
		return fmt.Errorf("store: statfs %s: %w", s.cfg.Dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	if free-need < s.cfg.MinFreeBytes {
		return fmt.Errorf("%w: append in %s: %d bytes free, %d needed plus a reserve of %d: %w",
			ErrDiskFull, s.cfg.Dir, free, need, s.cfg.MinFreeBytes, syscall.ENOSPC)
	}
	return nil
}

// makeRoom makes need more bytes fit under the quota. Drained classes give
// back their last segment first (nothing is lost); then an incoming record
// may evict whole segments of its own class or a lower priority, never a
// higher one: an event never displaces a finding or an alert. It evicts down
// to 15/16 of the quota so that a full spool does not evict on every append.
func (s *Spool) makeRoom(class Class, need int64) error {
	limit := s.cfg.QuotaBytes
	if s.segBytes+need <= limit {
		return nil
	}
	if need > limit {
		s.cls[class].rejected++
		return fmt.Errorf("%w: a batch of %d bytes exceeds the quota %d", ErrQuotaExceeded, need, limit)
	}
	if err := s.releaseDrained(); err != nil {
		return err
	}
	target := limit - limit/16
	if need > target {
		target = limit
	}
	target -= need
	for c := ClassEvent; c >= class && s.segBytes > target; c-- {
		for s.segBytes > target && s.cls[c].live() > 0 {
			if err := s.evictHead(c, reasonOverQuota); err != nil {
				return err
			}
		}
	}
	if s.segBytes+need > limit {
		s.cls[class].rejected++
		return fmt.Errorf("%w: %d bytes of records of higher priority than %s leave no room for %d more (quota %d)",
			ErrQuotaExceeded, s.segBytes, class, need, limit)
	}
	return nil
}

// releaseDrained replaces the last segment of every class that has nothing
// live by an empty one. The head is already durable past it.
func (s *Spool) releaseDrained() error {
	for c := ClassAlert; c <= ClassEvent; c++ {
		cs := &s.cls[c]
		if cs.live() > 0 || cs.last().size == 0 {
			continue
		}
		if err := s.newSegment(c); err != nil {
			return s.writeError("start a segment", err)
		}
		if err := s.dropPassed(c); err != nil {
			return err
		}
	}
	return nil
}

// dropPassed deletes the segments that the head has passed. Call it only
// once the head's position is durable.
func (s *Spool) dropPassed(c Class) error {
	cs := &s.cls[c]
	for len(cs.segs) > 1 && cs.segs[0].end <= cs.head {
		seg := cs.segs[0]
		if err := s.removeSegmentFile(c, seg.first); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		s.segBytes -= seg.size
		cs.segs = cs.segs[1:]
		if cs.headSeg == seg.first { // head sat at its end
			cs.headSeg, cs.headOff = cs.segs[0].first, 0
		}
	}
	return nil
}

// Why records were evicted, for the log.
const (
	reasonOverQuota = "over quota"
	reasonDamaged   = "segment damaged"
	reasonMissing   = "segment files missing"
)

// removeSegmentFile deletes a segment file; one already gone is fine (a
// crash between the metadata and the delete leaves either state).
func (s *Spool) removeSegmentFile(c Class, first uint64) error {
	if err := os.Remove(segmentPath(s.segDir, c, first)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("delete segment: %w", err)
	}
	return nil
}

// evictHead evicts what is left of the class's oldest segment, records the
// gap, and deletes the file.
func (s *Spool) evictHead(c Class, reason string) error {
	cs := &s.cls[c]
	seg := cs.segs[0]
	from, to := cs.head, seg.end
	n := to - from
	live := uint64(max(seg.dataEnd-cs.headOff, 0))
	var passed []uint64
	for seq, a := range cs.acked {
		if seq < to {
			n--
			live -= min(live, uint64(a.size))
			if a.stored {
				passed = append(passed, seq)
			}
			delete(cs.acked, seq)
		}
	}
	if seg == cs.last() {
		if err := s.newSegment(c); err != nil {
			return s.writeError("start a segment", err)
		}
	}
	cs.head = to
	cs.evictedN += n
	cs.liveBytes -= min(cs.liveBytes, live)
	cs.window = nil
	var gap *Gap
	if n > 0 {
		g := s.extendGap(c, from, to-1, n)
		gap = &g
	}
	if err := s.persist(c, passed, nil, gap); err != nil {
		return err
	}
	// The whole segment goes: its acknowledged part was dead already.
	cs.headOff = seg.dataEnd
	if err := s.dropPassed(c); err != nil {
		return err
	}
	s.refreshOldest(c)
	if n > 0 {
		level := slog.LevelWarn // the quota doing its job
		if reason == reasonDamaged {
			level = slog.LevelError
		}
		s.log.Log(context.Background(), level, "spool evicted records", "class", c.String(), "reason", reason, "first_seq", from, "last_seq", to-1,
			"count", n, "bytes", live)
	}
	return nil
}

// persist writes the class's metadata, the acked keys to delete and to add,
// and a gap, then syncs.
func (s *Spool) persist(c Class, del []uint64, add map[uint64]uint32, gap *Gap) error {
	cs := &s.cls[c]
	type op struct {
		key, val []byte
	}
	ops := make([]op, 0, len(del)+len(add)+2)
	for _, seq := range del {
		ops = append(ops, op{key: ackedKey(c, seq)})
	}
	for seq, size := range add {
		ops = append(ops, op{key: ackedKey(c, seq), val: encodeAckedValue(size)})
	}
	if gap != nil {
		ops = append(ops, op{gapKey(c, gap.FirstSeq), gap.encodeValue()})
	}
	m := classMeta{next: cs.next, head: cs.head, headSeg: cs.headSeg, headOff: uint64(cs.headOff), acked: cs.ackedN, evicted: cs.evictedN}
	ops = append(ops, op{metaKey(c), m.encode()})
	for start := 0; start < len(ops); start += metaTxnEntries {
		chunk := ops[start:min(start+metaTxnEntries, len(ops))]
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, o := range chunk {
				var err error
				if o.val == nil {
					err = txn.Delete(o.key)
				} else {
					err = txn.Set(o.key, o.val)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return s.writeError("write metadata", err)
		}
	}
	if err := s.db.Sync(); err != nil {
		return s.writeError("sync metadata", err)
	}
	if err := compactIfNeeded(s.db); err != nil {
		s.log.Warn("spool metadata", "err", err) // the write is durable; the next one retries
	}
	return nil
}

// locate returns the position of frame seq (head <= seq < next), walking
// frame headers from the end of the class's window as far as needed.
func (s *Spool) locate(c Class, seq uint64) (frameLoc, error) {
	cs := &s.cls[c]
	if seq < cs.head || seq >= cs.next {
		return frameLoc{}, fmt.Errorf("seq %d outside %d..%d", seq, cs.head, cs.next)
	}
	if i := seq - cs.head; i < uint64(len(cs.window)) {
		return cs.window[i], nil
	}
	idx, off, at := s.afterWindow(c)
	for ; idx < len(cs.segs); idx, off = idx+1, 0 {
		seg := cs.segs[idx]
		if at >= seg.end {
			continue
		}
		f, closeFile, err := s.segmentFile(c, idx)
		if err != nil {
			return frameLoc{}, err
		}
		r := newFrameReader(f, off, seg.dataEnd, s.cfg.MaxRecordBytes, s.rbuf)
		for at < seg.end {
			h, _, start, err := r.nextAt(at, false)
			if err != nil {
				closeFile()
				return frameLoc{}, fmt.Errorf("%s segment %d: %w", c, seg.first, err)
			}
			loc := frameLoc{seg: seg.first, off: start, appendedAt: h.appendedAt, size: uint32(h.size())}
			if at == cs.head+uint64(len(cs.window)) && len(cs.window) < windowMax {
				cs.window = append(cs.window, loc)
			}
			if at == seq {
				closeFile()
				return loc, nil
			}
			at++
		}
		closeFile()
	}
	return frameLoc{}, fmt.Errorf("%s: seq %d not found in its segments: %w", c, seq, errCorrupt)
}

// afterWindow is the position after the class's window: segment index,
// offset and seq.
func (s *Spool) afterWindow(c Class) (int, int64, uint64) {
	cs := &s.cls[c]
	if len(cs.window) == 0 {
		return s.segIndex(c, cs.headSeg), cs.headOff, cs.head
	}
	last := cs.window[len(cs.window)-1]
	at := cs.head + uint64(len(cs.window))
	idx := s.segIndex(c, last.seg)
	if at >= cs.segs[idx].end {
		return idx + 1, 0, at
	}
	return idx, last.off + int64(last.size), at
}

func (s *Spool) segIndex(c Class, first uint64) int {
	segs := s.cls[c].segs
	return sort.Search(len(segs), func(i int) bool { return segs[i].first >= first })
}

// segmentFile returns segment idx of c open for reading and how to release it.
func (s *Spool) segmentFile(c Class, idx int) (*os.File, func(), error) {
	cs := &s.cls[c]
	if idx == len(cs.segs)-1 {
		return cs.writer, func() {}, nil
	}
	f, err := os.Open(segmentPath(s.segDir, c, cs.segs[idx].first))
	if err != nil {
		return nil, nil, err
	}
	return f, func() { _ = f.Close() }, nil
}

// refreshOldest sets the append time of the record at head.
func (s *Spool) refreshOldest(c Class) {
	cs := &s.cls[c]
	if cs.live() == 0 {
		cs.oldest = time.Time{}
		return
	}
	loc, err := s.locate(c, cs.head)
	if err != nil {
		cs.oldest = time.Now() // unreadable; Next will deal with it
		return
	}
	cs.oldest = frameTime(loc.appendedAt)
}

// Next returns up to max records, oldest first, from the highest-priority
// class that has any: alerts, then findings, then events. It stops before
// maxBytes of payload, but always returns at least one record if there is
// one. It deletes nothing; Ack does.
func (s *Spool) Next(max, maxBytes int) ([]Record, error) {
	if max <= 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		for s.cls[c].live() > 0 {
			recs, err := s.readHead(c, max, maxBytes)
			if err == nil || (errors.Is(err, errCorrupt) && len(recs) > 0) {
				return recs, nil
			}
			if !errors.Is(err, errCorrupt) {
				return nil, fmt.Errorf("store: next in %s: %w", s.cfg.Dir, err)
			}
			// The frame at head is damaged: the rest of its segment is lost.
			s.log.Error("spool segment damaged", "class", c.String(), "err", err)
			if err := s.evictHead(c, reasonDamaged); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// readHead reads records from the class's head on, skipping acknowledged
// ones, and rebuilds its window on the way.
func (s *Spool) readHead(c Class, max, maxBytes int) ([]Record, error) {
	cs := &s.cls[c]
	cs.window = cs.window[:0]
	var recs []Record
	var bytes int
	at := cs.head
	first := s.segIndex(c, cs.headSeg)
	for idx := first; idx < len(cs.segs) && len(recs) < max; idx++ {
		seg := cs.segs[idx]
		off := int64(0)
		if idx == first {
			off = cs.headOff
		}
		if at >= seg.end {
			continue
		}
		f, closeFile, err := s.segmentFile(c, idx)
		if err != nil {
			return recs, err
		}
		r := newFrameReader(f, off, seg.dataEnd, s.cfg.MaxRecordBytes, s.rbuf)
		for at < seg.end && len(recs) < max {
			_, skip := cs.acked[at]
			h, payload, start, err := r.nextAt(at, !skip)
			if err != nil {
				closeFile()
				return recs, fmt.Errorf("%s segment %d: %w", c, seg.first, err)
			}
			if !skip {
				if len(recs) > 0 && bytes+len(payload) > maxBytes {
					closeFile()
					return recs, nil
				}
				bytes += len(payload)
				recs = append(recs, Record{RecordID: RecordID{Class: c, Seq: at}, AppendedAt: frameTime(h.appendedAt), Payload: payload})
			}
			if len(cs.window) < windowMax {
				cs.window = append(cs.window, frameLoc{seg: seg.first, off: start, appendedAt: h.appendedAt, size: uint32(h.size())})
			}
			at++
		}
		closeFile()
	}
	return recs, nil
}

// Ack deletes acknowledged records. Unknown, already acknowledged or evicted
// IDs are ignored. It fsyncs, so a restart does not resend them.
func (s *Spool) Ack(ids ...RecordID) error {
	var byClass [numClasses + 1][]uint64
	for _, id := range ids {
		if !id.Class.valid() {
			return fmt.Errorf("%w: ack of class %d", ErrInvalid, id.Class)
		}
		byClass[id.Class] = append(byClass[id.Class], id.Seq)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		if len(byClass[c]) > 0 {
			if err := s.ackClass(c, byClass[c]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Spool) ackClass(c Class, seqs []uint64) error {
	cs := &s.cls[c]
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	changed := false
	for _, seq := range seqs {
		if seq < cs.head || seq >= cs.next {
			continue
		}
		if _, done := cs.acked[seq]; done {
			continue
		}
		loc, err := s.locate(c, seq)
		if err != nil {
			if errors.Is(err, errCorrupt) {
				// Next evicts the damaged segment; the ack cannot matter.
				s.log.Error("acknowledging a record in a damaged segment", "class", c.String(), "seq", seq, "err", err)
				continue
			}
			return fmt.Errorf("store: ack in %s: %w", s.cfg.Dir, err)
		}
		cs.acked[seq] = ackEntry{size: loc.size}
		cs.ackedN++
		cs.liveBytes -= min(cs.liveBytes, uint64(loc.size))
		changed = true
	}
	if !changed {
		return nil
	}
	// Move the head over the acknowledged run at its front.
	var passed []uint64
	for cs.head < cs.next {
		a, ok := cs.acked[cs.head]
		if !ok {
			break
		}
		loc, err := s.locate(c, cs.head)
		if err != nil {
			break
		}
		if a.stored {
			passed = append(passed, cs.head)
		}
		delete(cs.acked, cs.head)
		cs.head++
		cs.window = cs.window[1:]
		cs.headSeg, cs.headOff = loc.seg, loc.off+int64(loc.size)
		if idx := s.segIndex(c, loc.seg); cs.head >= cs.segs[idx].end && idx+1 < len(cs.segs) {
			cs.headSeg, cs.headOff = cs.segs[idx+1].first, 0
		}
	}
	if len(cs.window) == 0 {
		cs.window = nil // let a large walk's array go
	}
	add := map[uint64]uint32{}
	for seq, a := range cs.acked {
		if !a.stored {
			add[seq] = a.size
			cs.acked[seq] = ackEntry{size: a.size, stored: true}
		}
	}
	if err := s.persist(c, passed, add, nil); err != nil {
		return err
	}
	// Segments wholly below the head go now that the head is durable; a
	// drained class keeps its last segment until it grows past a quarter of
	// a segment, so a fast uplink does not create a file per batch.
	if err := s.dropPassed(c); err != nil {
		return err
	}
	if cs.live() == 0 && cs.last().size >= s.segSize/4 {
		if err := s.releaseDrained(); err != nil {
			return err
		}
	}
	s.refreshOldest(c)
	return nil
}

// Stats returns a snapshot of the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	st := Stats{
		Classes:      make(map[Class]ClassStats, numClasses),
		SegmentBytes: s.segBytes,
		DiskBytes:    s.segBytes + s.metaDisk,
		QuotaBytes:   s.cfg.QuotaBytes,
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		cs := &s.cls[c]
		out := ClassStats{Depth: cs.live(), Bytes: cs.liveBytes, NextSeq: cs.next, Appended: cs.next - 1,
			Acked: cs.ackedN, Evicted: cs.evictedN, Rejected: cs.rejected}
		if out.Depth > 0 {
			out.OldestAge = now.Sub(cs.oldest)
		}
		st.Classes[c] = out
		st.LiveBytes += cs.liveBytes
	}
	return st
}

// Gaps returns the evictions not yet marked reported, by class and sequence.
func (s *Spool) Gaps() ([]Gap, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var gaps []Gap
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: gapPrefix()})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error {
				g, err := decodeGap(item.Key(), v)
				gaps = append(gaps, g)
				return err
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: gaps in %s: %w", s.cfg.Dir, err)
	}
	return gaps, nil
}

// MarkGapsReported forgets gaps the backend has been told about. A gap that
// grew since Gaps returned it (same class and FirstSeq, larger LastSeq) is
// kept, so the growth is reported too.
func (s *Spool) MarkGapsReported(gaps ...Gap) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, g := range gaps {
			if !g.Class.valid() {
				return fmt.Errorf("%w: gap of class %d", ErrInvalid, g.Class)
			}
			if lg := s.cls[g.Class].lastGap; lg != nil && lg.FirstSeq == g.FirstSeq && lg.LastSeq != g.LastSeq {
				continue
			}
			if err := txn.Delete(gapKey(g.Class, g.FirstSeq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.writeError("mark gaps reported", err)
	}
	if err := compactIfNeeded(s.db); err != nil {
		s.log.Warn("spool metadata", "err", err)
	}
	for _, g := range gaps {
		if lg := s.cls[g.Class].lastGap; lg != nil && lg.FirstSeq == g.FirstSeq && lg.LastSeq == g.LastSeq {
			s.cls[g.Class].lastGap = nil
		}
	}
	return nil
}

// Maintain reclaims space every interval until ctx is done; run it in its own
// goroutine. It returns nil when ctx is cancelled.
func (s *Spool) Maintain(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Reclaim(ctx); err != nil {
				if errors.Is(err, ErrClosed) || ctx.Err() != nil {
					return nil
				}
				s.log.Warn("spool maintenance", "err", err)
			}
		}
	}
}

// Reclaim gives back the last segment of every drained class and measures
// the metadata's files. The metadata needs no value-log GC: its values are
// far below valueThreshold, so they live in the LSM tree.
func (s *Spool) Reclaim(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.releaseDrained(); err != nil {
		return err
	}
	disk, err := diskUsage(filepath.Join(s.cfg.Dir, metaDirName))
	if err != nil {
		return err
	}
	s.metaDisk = disk
	return nil
}

func (s *Spool) closeFiles() {
	for c := ClassAlert; c <= ClassEvent; c++ {
		if w := s.cls[c].writer; w != nil {
			_ = w.Close()
			s.cls[c].writer = nil
		}
	}
}

// Close closes the spool. Records appended are already durable.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closeFiles()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close spool in %s: %w", s.cfg.Dir, err)
	}
	return nil
}
