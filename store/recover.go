package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/internal/badgerkv"
)

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
		gaps, err := readGaps(txn)
		if err != nil {
			return err
		}
		for _, g := range gaps {
			s.cls[g.Class].lastGap = &g // keys sort by first seq: the last one wins
		}
		for item := range badgerkv.Prefix(txn, []byte{kindAcked}) {
			if err := item.Value(func(v []byte) error {
				id, size, err := decodeAcked(item.Key(), v)
				if err == nil {
					acked[id.Class][id.Seq] = ackEntry{size: size, stored: true}
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
