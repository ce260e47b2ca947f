// Package store is the agent's offline spool: everything the node produced
// while the uplink is down, kept on disk in Badger v4 until the backend
// acknowledges it.
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
// Badger runs in a low-memory profile (see badgerOptions and README.md).
// Measured on the project's 2-core VM, BenchmarkSpoolMemory (200k
// incompressible 1 KiB records in fsync'd batches of 100, 200 MiB on disk)
// peaks at 99–133 MiB Go heap in use, 153–173 MiB runtime Sys and
// 132–143 MiB anonymous RSS; total RSS peaks at 340–369 MiB because Badger
// mmaps its tables and the written pages count as file-backed RSS (page
// cache the kernel can reclaim). Badger's defaults take ~600 MB. Most of the
// heap is compaction's table builders, transient while a compaction runs.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
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
	// Badger writes its logs and tables through mmap'd sparse files; a write
	// to one on a full disk is a SIGBUS that kills the process rather than an
	// error. The reserve covers two memtable flushes, an L0→L1 compaction and
	// a value-log GC rewrite.
	DefaultMinFreeBytes = 48 << 20
	MinQuotaBytes       = 4 << 20
)

// Live records may use liveShareNum/liveShareDen of the quota; the rest is
// headroom for what Badger keeps besides live records (value-log garbage
// until GC, memtable WALs, the LSM tree).
const (
	liveShareNum = 3
	liveShareDen = 4
)

// Config configures a spool.
type Config struct {
	// Dir holds the spool; it is created if missing.
	Dir string
	// QuotaBytes bounds the disk the spool uses (default 1 GiB, minimum 4 MiB).
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
	Bytes     uint64        // live bytes (payload plus per-record overhead)
	OldestAge time.Duration // age of the oldest live record; 0 when empty
	NextSeq   uint64
	Appended  uint64 // since the spool was created
	Acked     uint64
	Evicted   uint64
	Rejected  uint64 // appends refused for lack of quota, since Open
}

// Stats is a snapshot of the spool.
type Stats struct {
	Classes    map[Class]ClassStats
	LiveBytes  uint64
	LiveLimit  uint64 // live bytes above which Append evicts
	DiskBytes  int64  // space the spool's files occupy, as last measured
	QuotaBytes int64
}

// Errors callers may test for with errors.Is.
var (
	ErrClosed        = errors.New("store: spool is closed")
	ErrQuotaExceeded = errors.New("store: quota exceeded")
	ErrDiskFull      = errors.New("store: disk full")
	ErrInvalid       = errors.New("store: invalid record")
)

// recordOverhead is what a record costs besides its payload in the live-byte
// accounting: its key and value header.
const recordOverhead = recordKeyLen + recordHeaderLen

func recordSize(payloadLen int) uint64 { return uint64(payloadLen + recordOverhead) }

// itemRecordSize is the accounted size of a stored record. Item.ValueSize is
// an estimate for values in the value log; the accounting needs the exact
// length.
func itemRecordSize(item *badger.Item) (uint64, error) {
	var size uint64
	err := item.Value(func(v []byte) error {
		size = recordSize(len(v) - recordHeaderLen)
		return nil
	})
	return size, err
}

// txnBudget bounds the estimated bytes of one Badger transaction; Badger's
// own limit is 15 % of the memtable.
const txnBudget = memTableSize * 15 / 100 / 2

// txnMaxEntries bounds the entries of one transaction (Badger's count limit
// is about 6 000 with these memtables).
const txnMaxEntries = 2000

// Spool is the on-disk spool. Its methods are safe for concurrent use; writes
// are serialised.
type Spool struct {
	cfg       Config
	log       *slog.Logger
	db        *badger.DB
	liveLimit uint64

	// syncMu keeps Close from closing the database under an fsync that runs
	// outside mu (readers: the syncs; writer: Close).
	syncMu   sync.RWMutex
	mu       sync.Mutex
	closed   bool
	meta     [numClasses + 1]classMeta // indexed by Class
	oldest   [numClasses + 1]time.Time // append time of the record at head; zero when empty
	lastGap  [numClasses + 1]*Gap      // latest unreported gap, extended by contiguous evictions
	dirty    [numClasses + 1]bool      // records were deleted since the class's prefix was last dropped
	rejected [numClasses + 1]uint64
	disk     int64
	// appendedSinceDisk counts bytes appended since disk usage was last measured.
	appendedSinceDisk int64
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
	db, err := badger.Open(badgerOptions(cfg.Dir, cfg.QuotaBytes, log))
	if err != nil {
		return nil, fmt.Errorf("store: open spool in %s: %w", cfg.Dir, err)
	}
	s := &Spool{
		cfg:       cfg,
		log:       log,
		db:        db,
		liveLimit: uint64(cfg.QuotaBytes) * liveShareNum / liveShareDen,
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: load spool in %s: %w", cfg.Dir, err)
	}
	if s.disk, err = diskUsage(cfg.Dir); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	return s, nil
}

// load reads the per-class metadata and unreported gaps, and finds each
// class's head.
func (s *Spool) load() error {
	err := s.db.View(func(txn *badger.Txn) error {
		for c := ClassAlert; c <= ClassEvent; c++ {
			item, err := txn.Get(metaKey(c))
			if errors.Is(err, badger.ErrKeyNotFound) {
				s.meta[c] = classMeta{next: 1, head: 1}
				continue
			}
			if err != nil {
				return fmt.Errorf("read %s metadata: %w", c, err)
			}
			if err := item.Value(func(v []byte) error {
				m, err := decodeClassMeta(v)
				s.meta[c] = m
				return err
			}); err != nil {
				return fmt.Errorf("%s metadata: %w", c, err)
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: gapPrefix()})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error {
				g, err := decodeGap(item.Key(), v)
				if err == nil {
					s.lastGap[g.Class] = &g // keys sort by first seq: the last one wins
				}
				return err
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		if err := s.advanceHead(c); err != nil {
			return err
		}
	}
	return nil
}

// advanceHead moves the class's head to its first live record (the stored
// head is a lower bound) and refreshes the oldest-record time. Seeking from
// the head skips the tombstones of everything acknowledged or evicted, which
// keeps Next fast on a drained spool before compaction removes them.
func (s *Spool) advanceHead(c Class) error {
	m := &s.meta[c]
	if m.liveCount == 0 {
		m.head = m.next
		s.oldest[c] = time.Time{}
		return nil
	}
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recordPrefix(c)})
		defer it.Close()
		it.Seek(recordKey(c, m.head))
		if !it.Valid() {
			return fmt.Errorf("%s: %d live records counted but none at or after seq %d: %w", c, m.liveCount, m.head, errCorrupt)
		}
		item := it.Item()
		id, err := decodeRecordKey(item.Key())
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			at, _, err := decodeRecordValue(v)
			if err != nil {
				return fmt.Errorf("record %s/%d: %w", c, id.Seq, err)
			}
			m.head = id.Seq
			s.oldest[c] = at
			return nil
		})
	})
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
	if !class.valid() {
		return 0, fmt.Errorf("%w: class %d", ErrInvalid, class)
	}
	if len(payloads) == 0 {
		return 0, fmt.Errorf("%w: empty batch", ErrInvalid)
	}
	var need uint64
	for i, p := range payloads {
		if len(p) > s.cfg.MaxRecordBytes {
			return 0, fmt.Errorf("%w: payload %d is %d bytes, the limit is %d", ErrInvalid, i, len(p), s.cfg.MaxRecordBytes)
		}
		need += recordSize(len(p))
	}

	first, err := s.appendLocked(class, payloads, need)
	if err != nil {
		return 0, err
	}
	// The fsync runs outside the lock: Next and Ack (the uplink) must not wait
	// for the disk behind an append. Sync covers everything committed so far,
	// so when it returns this batch is durable.
	if err := s.sync(); err != nil {
		return 0, err
	}
	return first, nil
}

// appendLocked commits the batch (not yet synced) under s.mu.
func (s *Spool) appendLocked(class Class, payloads [][]byte, need uint64) (uint64, error) {
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

	now := time.Now()
	m := s.meta[class] // committed in chunks; s.meta follows each commit
	first := m.next
	for start := 0; start < len(payloads); {
		txn := s.db.NewTransaction(true)
		var est int
		end := start
		for end < len(payloads) && end-start < txnMaxEntries && (end == start || est+len(payloads[end])+64 <= txnBudget) {
			if err := txn.Set(recordKey(class, m.next), encodeRecordValue(now, payloads[end])); err != nil {
				txn.Discard()
				return 0, s.writeError("append", err)
			}
			est += len(payloads[end]) + 64
			m.next++
			m.liveCount++
			m.liveBytes += recordSize(len(payloads[end]))
			m.appended++
			end++
		}
		if err := txn.Set(metaKey(class), m.encode()); err != nil {
			txn.Discard()
			return 0, s.writeError("append", err)
		}
		if err := txn.Commit(); err != nil {
			return 0, s.writeError("append", err)
		}
		if s.meta[class].liveCount == 0 {
			s.oldest[class] = now
		}
		s.meta[class] = m
		start = end
	}
	s.appendedSinceDisk += int64(need)
	if s.appendedSinceDisk > s.cfg.QuotaBytes/32 {
		if err := s.enforceDiskQuota(); err != nil {
			// The records are durable; the quota is enforced again by the next
			// append or Maintain.
			s.log.Warn("enforcing disk quota", "err", err)
		}
	}
	return first, nil
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
func (s *Spool) checkFreeSpace(need uint64) error {
	if s.cfg.MinFreeBytes < 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.cfg.Dir, &st); err != nil {
		return fmt.Errorf("store: statfs %s: %w", s.cfg.Dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	if free-int64(need) < s.cfg.MinFreeBytes {
		return fmt.Errorf("%w: append in %s: %d bytes free, %d needed plus a reserve of %d: %w",
			ErrDiskFull, s.cfg.Dir, free, need, s.cfg.MinFreeBytes, syscall.ENOSPC)
	}
	return nil
}

func (s *Spool) totalLive() uint64 {
	var n uint64
	for c := ClassAlert; c <= ClassEvent; c++ {
		n += s.meta[c].liveBytes
	}
	return n
}

// makeRoom evicts so that need more live bytes fit under the live limit. An
// incoming record may evict records of its own or a lower priority, never a
// higher one: an event never displaces a finding or an alert. It evicts down
// to 15/16 of the limit so that a full spool does not evict on every append.
func (s *Spool) makeRoom(class Class, need uint64) error {
	live := s.totalLive()
	if live+need <= s.liveLimit {
		return nil
	}
	if need > s.liveLimit {
		s.rejected[class]++
		return fmt.Errorf("%w: a batch of %d bytes exceeds the live limit %d", ErrQuotaExceeded, need, s.liveLimit)
	}
	target := s.liveLimit - s.liveLimit/16
	if need > target {
		target = s.liveLimit
	}
	target -= need
	for c := ClassEvent; c >= class && live > target; c-- {
		freed, err := s.evict(c, live-target)
		if err != nil {
			return err
		}
		live -= freed
	}
	if live+need > s.liveLimit {
		s.rejected[class]++
		return fmt.Errorf("%w: %d live bytes of higher priority than %s leave no room for %d more (limit %d)",
			ErrQuotaExceeded, live, class, need, s.liveLimit)
	}
	return nil
}

// evict deletes the oldest records of class c until at least want bytes are
// freed or the class is empty, records the run as a gap, and returns the bytes
// freed.
func (s *Spool) evict(c Class, want uint64) (uint64, error) {
	var freed uint64
	for freed < want && s.meta[c].liveCount > 0 {
		ids, sizes, err := s.oldestRecords(c, want-freed, txnMaxEntries)
		if err != nil {
			return freed, err
		}
		if len(ids) == 0 {
			return freed, fmt.Errorf("store: %s: %d live records counted but none found: %w", c, s.meta[c].liveCount, errCorrupt)
		}
		m := s.meta[c]
		gap := Gap{Class: c, FirstSeq: ids[0].Seq, LastSeq: ids[len(ids)-1].Seq, EvictedAt: time.Now()}
		if lg := s.lastGap[c]; lg != nil && lg.LastSeq+1 == gap.FirstSeq {
			gap.FirstSeq, gap.Count = lg.FirstSeq, lg.Count
		}
		var chunk uint64
		err = s.db.Update(func(txn *badger.Txn) error {
			for i, id := range ids {
				if err := txn.Delete(recordKey(c, id.Seq)); err != nil {
					return err
				}
				m.liveCount--
				m.liveBytes -= sizes[i]
				m.evicted++
				chunk += sizes[i]
			}
			gap.Count += uint64(len(ids))
			m.head = gap.LastSeq + 1
			if err := txn.Set(gapKey(c, gap.FirstSeq), gap.encodeValue()); err != nil {
				return err
			}
			return txn.Set(metaKey(c), m.encode())
		})
		if err != nil {
			return freed, s.writeError("evict", err)
		}
		s.meta[c] = m
		s.lastGap[c] = &gap
		s.dirty[c] = true
		freed += chunk
		s.log.Warn("spool over quota: evicted records", "class", c.String(), "first_seq", ids[0].Seq,
			"last_seq", gap.LastSeq, "count", len(ids), "bytes", chunk)
		if err := s.advanceHead(c); err != nil {
			return freed, err
		}
	}
	return freed, nil
}

// oldestRecords lists the oldest live records of c (with their accounted
// sizes) until want bytes or max records.
func (s *Spool) oldestRecords(c Class, want uint64, max int) ([]RecordID, []uint64, error) {
	var ids []RecordID
	var sizes []uint64
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recordPrefix(c)})
		defer it.Close()
		var got uint64
		for it.Seek(recordKey(c, s.meta[c].head)); it.Valid() && got < want && len(ids) < max; it.Next() {
			item := it.Item()
			id, err := decodeRecordKey(item.Key())
			if err != nil {
				return err
			}
			size, err := itemRecordSize(item)
			if err != nil {
				return err
			}
			ids = append(ids, id)
			sizes = append(sizes, size)
			got += size
		}
		return nil
	})
	return ids, sizes, err
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
		if s.meta[c].liveCount == 0 {
			continue
		}
		var recs []Record
		var bytes int
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: recordPrefix(c)})
			defer it.Close()
			for it.Seek(recordKey(c, s.meta[c].head)); it.Valid() && len(recs) < max; it.Next() {
				item := it.Item()
				id, err := decodeRecordKey(item.Key())
				if err != nil {
					return err
				}
				v, err := item.ValueCopy(nil)
				if err != nil {
					return fmt.Errorf("read %s/%d: %w", c, id.Seq, err)
				}
				at, payload, err := decodeRecordValue(v)
				if err != nil {
					return fmt.Errorf("record %s/%d: %w", c, id.Seq, err)
				}
				if len(recs) > 0 && bytes+len(payload) > maxBytes {
					break
				}
				bytes += len(payload)
				recs = append(recs, Record{RecordID: id, AppendedAt: at, Payload: payload})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store: next in %s: %w", s.cfg.Dir, err)
		}
		return recs, nil
	}
	return nil, nil
}

// Ack deletes acknowledged records. Unknown, already acknowledged or evicted
// IDs are ignored. It fsyncs, so a restart does not resend them.
func (s *Spool) Ack(ids ...RecordID) error {
	for _, id := range ids {
		if !id.Class.valid() {
			return fmt.Errorf("%w: ack of class %d", ErrInvalid, id.Class)
		}
	}
	if err := s.ackLocked(ids); err != nil {
		return err
	}
	// As in AppendBatch, the fsync does not hold up the other side.
	return s.sync()
}

// sync makes every committed write durable, unless the spool was closed
// meanwhile (closing flushes and syncs the database itself).
func (s *Spool) sync() error {
	s.syncMu.RLock()
	defer s.syncMu.RUnlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := s.db.Sync(); err != nil {
		return s.writeError("sync", err)
	}
	return nil
}

// ackLocked deletes the records (not yet synced) under s.mu.
func (s *Spool) ackLocked(ids []RecordID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var touched [numClasses + 1]bool
	for start := 0; start < len(ids); start += txnMaxEntries {
		chunk := ids[start:min(start+txnMaxEntries, len(ids))]
		meta := s.meta
		err := s.db.Update(func(txn *badger.Txn) error {
			var changed [numClasses + 1]bool
			for _, id := range chunk {
				if id.Seq == 0 { // never assigned; the drop marker lives there
					continue
				}
				item, err := txn.Get(recordKey(id.Class, id.Seq))
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				size, err := itemRecordSize(item)
				if err != nil {
					return err
				}
				if err := txn.Delete(item.KeyCopy(nil)); err != nil {
					return err
				}
				m := &meta[id.Class]
				m.liveCount--
				m.liveBytes -= size
				m.acked++
				changed[id.Class] = true
			}
			for c := ClassAlert; c <= ClassEvent; c++ {
				if changed[c] {
					touched[c] = true
					if err := txn.Set(metaKey(c), meta[c].encode()); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return s.writeError("ack", err)
		}
		s.meta = meta
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		if touched[c] {
			s.dirty[c] = true
			if err := s.advanceHead(c); err != nil {
				return fmt.Errorf("store: ack in %s: %w", s.cfg.Dir, err)
			}
		}
	}
	return nil
}

// Stats returns a snapshot of the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	st := Stats{
		Classes:    make(map[Class]ClassStats, numClasses),
		LiveLimit:  s.liveLimit,
		DiskBytes:  s.disk,
		QuotaBytes: s.cfg.QuotaBytes,
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		m := s.meta[c]
		cs := ClassStats{Depth: m.liveCount, Bytes: m.liveBytes, NextSeq: m.next, Appended: m.appended,
			Acked: m.acked, Evicted: m.evicted, Rejected: s.rejected[c]}
		if m.liveCount > 0 {
			cs.OldestAge = now.Sub(s.oldest[c])
		}
		st.Classes[c] = cs
		st.LiveBytes += m.liveBytes
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
			if lg := s.lastGap[g.Class]; lg != nil && lg.FirstSeq == g.FirstSeq && lg.LastSeq != g.LastSeq {
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
	for _, g := range gaps {
		if lg := s.lastGap[g.Class]; lg != nil && lg.FirstSeq == g.FirstSeq && lg.LastSeq == g.LastSeq {
			s.lastGap[g.Class] = nil
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

// Reclaim gives disk space back after acks and evictions: it drops the key
// range (records and tombstones) of every class that has emptied since the
// last call, runs value-log GC until there is nothing to rewrite, and then
// evicts if the files still exceed the quota.
func (s *Spool) Reclaim(ctx context.Context) error {
	// Everything under s.mu: an append to a class being dropped would be lost,
	// and Close must not run under Badger's GC. Payloads live in the LSM tree,
	// so value-log GC has little to do and holds writers up only briefly.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var drop [][]byte
	for c := ClassAlert; c <= ClassEvent; c++ {
		if s.dirty[c] && s.meta[c].liveCount == 0 {
			drop = append(drop, recordPrefix(c))
		}
	}
	if len(drop) > 0 {
		// Badger skips a prefix with no live key, however many tombstones and
		// dead versions it has; a marker at seq 0 (never assigned, and below
		// every head) makes it drop them.
		if err := s.db.Update(func(txn *badger.Txn) error {
			for _, p := range drop {
				if err := txn.Set(recordKey(Class(p[1]), 0), nil); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return s.writeError("mark drained classes", err)
		}
		if err := s.db.DropPrefix(drop...); err != nil {
			return fmt.Errorf("store: drop drained classes in %s: %w", s.cfg.Dir, err)
		}
		for _, p := range drop {
			s.dirty[p[1]] = false
		}
	}
	if err := s.runValueLogGC(ctx); err != nil {
		return err
	}
	return s.enforceDiskQuota()
}

// valueLogGCDiscardRatio: rewrite a value-log file once half of it is garbage.
const valueLogGCDiscardRatio = 0.5

func (s *Spool) runValueLogGC(ctx context.Context) error {
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(valueLogGCDiscardRatio)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return nil
		case errors.Is(err, badger.ErrDBClosed):
			return ErrClosed
		default:
			return fmt.Errorf("store: value-log GC in %s: %w", s.cfg.Dir, err)
		}
	}
	return nil
}

// enforceDiskQuota measures the spool's files and, when they exceed the quota
// plus Badger's working set although live records are within their limit
// (garbage not yet compacted outgrew the headroom), runs value-log GC and then
// evicts as many live bytes as the excess, events first. The caller holds s.mu.
func (s *Spool) enforceDiskQuota() error {
	disk, err := diskUsage(s.cfg.Dir)
	if err != nil {
		return err
	}
	s.disk, s.appendedSinceDisk = disk, 0
	limit := s.cfg.QuotaBytes + badgerWorkingSet(s.cfg.QuotaBytes)
	if disk <= limit {
		return nil
	}
	if err := s.runValueLogGC(context.Background()); err != nil {
		return err
	}
	if s.disk, err = diskUsage(s.cfg.Dir); err != nil {
		return err
	}
	if s.disk <= limit {
		return nil
	}
	excess := uint64(s.disk - limit)
	s.log.Warn("spool files exceed quota", "disk_bytes", s.disk, "limit_bytes", limit,
		"live_bytes", s.totalLive())
	for c := ClassEvent; c >= ClassAlert && excess > 0; c-- {
		freed, err := s.evict(c, excess)
		if err != nil {
			return err
		}
		excess -= min(freed, excess)
	}
	return nil
}

// Close closes the spool. Records appended are already durable.
func (s *Spool) Close() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close spool in %s: %w", s.cfg.Dir, err)
	}
	return nil
}
