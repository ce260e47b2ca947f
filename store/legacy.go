package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/internal/badgerkv"
	"github.com/harrier-sec/harrier/internal/fsync"
)

// The first spool layout kept records in Badger, directly in Dir:
//
//	record: 'r' class seq(8)  → version(1)=1 appendedAt(8) payload
//	meta:   'm' class         → version(1)=1 next head liveCount liveBytes appended acked evicted (8 each)
//	gap:    'g' class first(8) → as today
//
// Open moves such a spool into the segment layout, keeping every live record
// with its sequence number (the backend de-duplicates on them, so a spool
// that started again at 1 would have its records dropped as duplicates).
const (
	legacyDirName       = "legacy-badger"
	legacyRecordKind    = 'r'
	legacyMetaVersion   = 1
	legacyMetaLen       = 1 + 8*7
	legacyRecordVersion = 1
	legacyRecordHeader  = 1 + 8
)

// legacyRecordKey is the old layout's key of record seq of class c:
// kind, class, seq (big-endian).
func legacyRecordKey(c Class, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{legacyRecordKind, byte(c)}, seq)
}

// legacyRecordSeq is the seq in an old record key, if k is one.
func legacyRecordSeq(k []byte) (uint64, bool) {
	if len(k) != 2+8 || k[0] != legacyRecordKind {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[2:]), true
}

// legacyMeta is what migration needs of a class's old metadata.
type legacyMeta struct{ next, head, acked, evicted uint64 }

// moveLegacy moves the files of an earlier-layout spool in dir into
// dir/legacy-badger. MANIFEST goes last, so a crash part-way leaves it in
// dir and the next Open finishes the move. It reports whether a migration
// is pending.
func moveLegacy(dir string) (bool, error) {
	legacy := filepath.Join(dir, legacyDirName)
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err == nil {
		if err := os.MkdirAll(legacy, 0o700); err != nil {
			return false, err
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			if n := e.Name(); n != legacyDirName && n != "MANIFEST" && n != segmentDirName && n != metaDirName {
				if err := os.Rename(filepath.Join(dir, n), filepath.Join(legacy, n)); err != nil {
					return false, err
				}
			}
		}
		if err := os.Rename(filepath.Join(dir, "MANIFEST"), filepath.Join(legacy, "MANIFEST")); err != nil {
			return false, err
		}
		if err := fsync.Dir(dir); err != nil {
			return false, err
		}
	}
	if _, err := os.Stat(legacy); err != nil {
		if os.IsNotExist(err) {
			return false, nil
		}
		return false, err
	}
	// A migration that did not finish is redone from the start.
	for _, n := range []string{segmentDirName, metaDirName} {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// openLegacy opens the old Badger spool with the options it was written with.
func openLegacy(dir string, log *slog.Logger) (*badger.DB, error) {
	return badger.Open(badgerOptions(dir, log).
		WithMemTableSize(4 << 20).
		WithValueThreshold(512 << 10).
		WithValueLogFileSize(16 << 20))
}

// seedFromLegacy writes, into the new metadata, each class's position and
// counters and every unreported gap of the old spool, so that load() starts
// each class at the old head.
func (s *Spool) seedFromLegacy(old *badger.DB) ([numClasses + 1]legacyMeta, error) {
	var metas [numClasses + 1]legacyMeta
	err := old.View(func(txn *badger.Txn) error {
		for c := ClassAlert; c <= ClassEvent; c++ {
			item, err := txn.Get(metaKey(c))
			if errors.Is(err, badger.ErrKeyNotFound) {
				metas[c] = legacyMeta{next: 1, head: 1}
				continue
			}
			if err != nil {
				return err
			}
			if err := item.Value(func(v []byte) error {
				if len(v) != legacyMetaLen || v[0] != legacyMetaVersion {
					return fmt.Errorf("%s metadata of %d bytes: %w", c, len(v), errCorrupt)
				}
				u := func(i int) uint64 { return binary.BigEndian.Uint64(v[1+8*i:]) }
				m := legacyMeta{next: u(0), head: u(1), acked: u(5), evicted: u(6)}
				if m.head == 0 || m.head > m.next {
					return fmt.Errorf("%s metadata next=%d head=%d: %w", c, m.next, m.head, errCorrupt)
				}
				metas[c] = m
				return nil
			}); err != nil {
				return err
			}
			// The stored head was only a lower bound: start at the first
			// live record, or after the last one when none is left.
			m := &metas[c]
			first := m.next
			for item := range badgerkv.PrefixFrom(txn, []byte{legacyRecordKind, byte(c)}, legacyRecordKey(c, m.head)) {
				if seq, ok := legacyRecordSeq(item.Key()); ok {
					first = min(seq, m.next)
				}
				break
			}
			m.head = first
		}
		return s.db.Update(func(w *badger.Txn) error {
			for c := ClassAlert; c <= ClassEvent; c++ {
				m := metas[c]
				cm := classMeta{next: m.head, head: m.head, acked: m.acked, evicted: m.evicted}
				if err := w.Set(metaKey(c), cm.encode()); err != nil {
					return err
				}
			}
			for item := range badgerkv.Prefix(txn, gapPrefix()) {
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if _, err := decodeGap(item.Key(), v); err != nil {
					return err
				}
				if err := w.Set(item.KeyCopy(nil), v); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return metas, err
	}
	return metas, s.db.Sync()
}

// copyLegacyRecords appends the old spool's live records of every class at
// their sequence numbers and with their append times. A sequence number
// acknowledged out of order in the old spool gets an empty frame that is
// acknowledged at once, so the numbering stays dense. It returns how many
// records it copied.
func (s *Spool) copyLegacyRecords(old *badger.DB, metas [numClasses + 1]legacyMeta) (int, error) {
	const batchRecords, batchBytes = 512, 4 << 20
	copied := 0
	for c := ClassAlert; c <= ClassEvent; c++ {
		var payloads [][]byte
		var times []int64
		var fillers []RecordID
		size := 0
		flush := func() error {
			if len(payloads) == 0 {
				return nil
			}
			if _, err := s.appendBatch(c, payloads, times); err != nil {
				return err
			}
			if len(fillers) > 0 {
				if err := s.Ack(fillers...); err != nil {
					return err
				}
				s.mu.Lock()
				s.cls[c].ackedN -= uint64(len(fillers)) // counted when the old spool acked them
				s.mu.Unlock()
			}
			payloads, times, fillers, size = nil, nil, nil, 0
			return nil
		}
		want := metas[c].head
		err := old.View(func(txn *badger.Txn) error {
			for item := range badgerkv.Prefix(txn, []byte{legacyRecordKind, byte(c)}) {
				seq, ok := legacyRecordSeq(item.Key())
				if !ok {
					return fmt.Errorf("%s record key %x: %w", c, item.Key(), errCorrupt)
				}
				if seq < want || seq >= metas[c].next {
					continue // acknowledged or evicted, not yet compacted away
				}
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if len(v) < legacyRecordHeader || v[0] != legacyRecordVersion || len(v)-legacyRecordHeader > s.cfg.MaxRecordBytes {
					return fmt.Errorf("%s record %d of %d bytes: %w", c, seq, len(v), errCorrupt)
				}
				for ; want < seq; want++ { // acknowledged out of order
					payloads, times = append(payloads, nil), append(times, time.Now().UnixNano())
					fillers = append(fillers, RecordID{c, want})
				}
				payloads = append(payloads, v[legacyRecordHeader:])
				times = append(times, int64(binary.BigEndian.Uint64(v[1:])))
				size += len(v)
				want++
				copied++
				if len(payloads) >= batchRecords || size >= batchBytes {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err != nil {
			return copied, fmt.Errorf("%s: %w", c, err)
		}
	}
	return copied, nil
}

// finishLegacy copies the old spool's records into s, closes it and
// removes it; removing it is the commit point (a crash before it redoes the
// migration from the start).
func (s *Spool) finishLegacy(old *badger.DB, metas [numClasses + 1]legacyMeta) error {
	dir := filepath.Join(s.cfg.Dir, legacyDirName)
	n, err := s.copyLegacyRecords(old, metas)
	if err != nil {
		return fmt.Errorf("copy the earlier spool in %s: %w", dir, err)
	}
	if err := old.Close(); err != nil {
		return fmt.Errorf("close the earlier spool in %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the earlier spool in %s: %w", dir, err)
	}
	s.log.Warn("moved the spool from its earlier layout into segment files", "dir", s.cfg.Dir, "records", n)
	return nil
}
