package backend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/harrier-sec/harrier/internal/fsync"
)

// The event ring's pages live in segment files beside Badger, not in it:
// raw events are most of the bytes received and are deleted oldest first,
// which append-only files serve exactly (a segment is deleted whole once
// the ring has moved past it). In Badger, every event byte was rewritten by
// compaction; in its value log, the space came back only when compaction had
// merged the deletes and value-log GC had looked every entry up again.
// Badger keeps the index: e/<first pos> → pageLocation (small, inline),
// written in the transaction that holds the page's de-dup markers, after
// the page itself is fsync'd. A page written but never indexed (a crash or a
// failed commit in between) is unreferenced bytes that Open cuts off.
const (
	eventsDirName          = "events"
	segmentSuffix          = ".seg"
	defaultEventSegmentMax = 16 << 20
	locVersion             = 3 // first byte of a pageLocation (1: an inline event of the earlier layout)
	locLen                 = 1 + 8 + 8 + 4 + 4
)

// pageLocation is where a page is: segment, offset, length and CRC-32C.
type pageLocation struct {
	seg, off  uint64
	len, csum uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (l pageLocation) encode() []byte {
	b := make([]byte, 0, locLen)
	b = append(b, locVersion)
	b = binary.BigEndian.AppendUint64(b, l.seg)
	b = binary.BigEndian.AppendUint64(b, l.off)
	b = binary.BigEndian.AppendUint32(b, l.len)
	return binary.BigEndian.AppendUint32(b, l.csum)
}

func decodePageLocation(v []byte) (pageLocation, error) {
	if len(v) != locLen || v[0] != locVersion {
		return pageLocation{}, fmt.Errorf("bad event page location (%d bytes)", len(v))
	}
	return pageLocation{
		seg: binary.BigEndian.Uint64(v[1:9]), off: binary.BigEndian.Uint64(v[9:17]),
		len: binary.BigEndian.Uint32(v[17:21]), csum: binary.BigEndian.Uint32(v[21:25]),
	}, nil
}

// pageRef is one page of the ring in memory: its first position and the
// segment holding it (0 for an inline event of the earlier layout).
type pageRef struct{ first, seg uint64 }

// eventLog appends pages to the current segment. It is used under the
// store's mutex; readers open segments themselves.
type eventLog struct {
	dir    string
	maxSeg int64
	cur    *os.File
	curID  uint64
	size   int64
	dirty  bool // written since the last fsync
}

func segmentName(id uint64) string { return fmt.Sprintf("%020d%s", id, segmentSuffix) }

func (l *eventLog) path(id uint64) string { return filepath.Join(l.dir, segmentName(id)) }

// segments lists the segment IDs in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("event segments: %w", err)
	}
	var ids []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segmentSuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue // not ours
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// openEventLog opens dir, given the pages the index holds (oldest first) and
// where the newest indexed page ends. Segments older than the oldest page
// (their deletion was cut short) are removed; the newest segment is cut to
// its last indexed page and appended to; segments newer than that hold only
// unindexed pages and are removed.
func openEventLog(dir string, maxSeg int64, pages []pageRef, newestEnd uint64) (*eventLog, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("event segments: %w", err)
	}
	l := &eventLog{dir: dir, maxSeg: maxSeg}
	ids, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	var oldest, newest uint64
	indexed := false
	for _, p := range pages {
		if p.seg == 0 {
			continue
		}
		if !indexed {
			oldest, indexed = p.seg, true
		}
		newest = p.seg
	}
	for _, id := range ids {
		if indexed && id >= oldest && id < newest {
			continue
		}
		if indexed && id == newest {
			f, err := os.OpenFile(l.path(id), os.O_RDWR, 0)
			if err != nil {
				return nil, fmt.Errorf("event segment: %w", err)
			}
			if err := f.Truncate(int64(newestEnd)); err != nil {
				f.Close()
				return nil, fmt.Errorf("event segment %s: cut unindexed tail: %w", l.path(id), err)
			}
			l.cur, l.curID, l.size = f, id, int64(newestEnd)
			continue
		}
		if err := os.Remove(l.path(id)); err != nil {
			return nil, fmt.Errorf("event segment: remove unreferenced: %w", err)
		}
	}
	if indexed && l.cur == nil {
		return nil, fmt.Errorf("event segment %s is missing: the index names it", l.path(newest))
	}
	return l, nil
}

// append writes page as the page starting at ring position first and
// returns its location. It is durable after sync.
func (l *eventLog) append(first uint64, page []byte) (pageLocation, error) {
	if l.cur == nil || l.size >= l.maxSeg {
		// A segment is named by the ring position of its first page plus
		// one: 0 in a pageRef means an inline event of the earlier layout.
		if err := l.rotate(first + 1); err != nil {
			return pageLocation{}, err
		}
	}
	if _, err := l.cur.WriteAt(page, l.size); err != nil {
		return pageLocation{}, fmt.Errorf("event segment %s: %w", l.cur.Name(), err)
	}
	loc := pageLocation{seg: l.curID, off: uint64(l.size), len: uint32(len(page)), csum: crc32.Checksum(page, castagnoli)}
	l.size += int64(len(page))
	l.dirty = true
	return loc, nil
}

// rotate syncs the current segment and starts a new one named id.
func (l *eventLog) rotate(id uint64) error {
	if err := l.sync(); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path(id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("event segment: %w", err)
	}
	if err := fsync.Dir(l.dir); err != nil {
		f.Close()
		return err
	}
	if l.cur != nil {
		if err := l.cur.Close(); err != nil {
			f.Close()
			return fmt.Errorf("event segment: %w", err)
		}
	}
	l.cur, l.curID, l.size = f, id, 0
	return nil
}

// sync makes what append wrote durable.
func (l *eventLog) sync() error {
	if !l.dirty {
		return nil
	}
	if err := l.cur.Sync(); err != nil {
		return fmt.Errorf("event segment %s: sync: %w", l.cur.Name(), err)
	}
	l.dirty = false
	return nil
}

// dropBefore removes the segments older than id (never the current one).
func (l *eventLog) dropBefore(id uint64) error {
	ids, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range ids {
		if s >= id || (l.cur != nil && s == l.curID) {
			break
		}
		if err := os.Remove(l.path(s)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("event segment: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (l *eventLog) close() error {
	if l.cur == nil {
		return nil
	}
	err := l.sync()
	return errors.Join(err, l.cur.Close())
}

// pageReader reads pages for one query, keeping the segments it opened.
type pageReader struct {
	dir   string
	files map[uint64]*os.File
	buf   []byte
}

// read returns the page at loc, or fs.ErrNotExist once its segment was
// deleted (the ring moved past it while the query ran). The slice is valid
// until the next read.
func (r *pageReader) read(loc pageLocation) ([]byte, error) {
	f, ok := r.files[loc.seg]
	if !ok {
		var err error
		if f, err = os.Open(filepath.Join(r.dir, segmentName(loc.seg))); err != nil {
			return nil, fmt.Errorf("event segment: %w", err)
		}
		if r.files == nil {
			r.files = map[uint64]*os.File{}
		}
		r.files[loc.seg] = f
	}
	if cap(r.buf) < int(loc.len) {
		r.buf = make([]byte, loc.len)
	}
	b := r.buf[:loc.len]
	if _, err := f.ReadAt(b, int64(loc.off)); err != nil {
		return nil, fmt.Errorf("event segment %s at %d: %w", f.Name(), loc.off, err)
	}
	if crc32.Checksum(b, castagnoli) != loc.csum {
		return nil, fmt.Errorf("event segment %s at %d: checksum mismatch", f.Name(), loc.off)
	}
	return b, nil
}

// page returns the events an e/ value holds: the page its location names,
// or the value itself when it is an inline event of the earlier layout.
func (r *pageReader) page(v []byte) ([]byte, error) {
	if len(v) == 0 || v[0] != locVersion {
		return v, nil
	}
	loc, err := decodePageLocation(v)
	if err != nil {
		return nil, err
	}
	return r.read(loc)
}

func (r *pageReader) close() {
	for _, f := range r.files {
		_ = f.Close()
	}
}
