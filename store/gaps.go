package store

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/internal/badgerkv"
)

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

// Gaps returns the evictions not yet marked reported, by class and sequence.
func (s *Spool) Gaps() ([]Gap, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var gaps []Gap
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		gaps, err = readGaps(txn)
		return err
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

// readGaps decodes the stored gaps, by class and first seq.
func readGaps(txn *badger.Txn) ([]Gap, error) {
	var gaps []Gap
	for item := range badgerkv.Prefix(txn, gapPrefix()) {
		if err := item.Value(func(v []byte) error {
			g, err := decodeGap(item.Key(), v)
			gaps = append(gaps, g)
			return err
		}); err != nil {
			return nil, err
		}
	}
	return gaps, nil
}
