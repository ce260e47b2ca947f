package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/internal/fsync"
)

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
