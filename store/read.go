package store

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"time"
)

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
