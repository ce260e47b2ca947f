package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

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
