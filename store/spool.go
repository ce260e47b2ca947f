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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
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
