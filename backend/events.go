package backend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// eventHeader precedes each stored event so queries can filter on time, kind
// and node without unmarshalling the event: version(1) time-ns(8) kind(4)
// node-len(2) node. It is appended to h.
func eventHeader(h []byte, e *api.Event) []byte {
	h = append(h, 1)
	h = binary.BigEndian.AppendUint64(h, uint64(e.GetTime().AsTime().UnixNano()))
	h = binary.BigEndian.AppendUint32(h, uint32(e.GetKind()))
	node := eventNode(e)
	h = binary.BigEndian.AppendUint16(h, uint16(len(node)))
	return append(h, node...)
}

// eventNode is the node name as the header holds it.
func eventNode(e *api.Event) string {
	node := e.GetNode()
	if len(node) > 0xffff {
		node = node[:0xffff]
	}
	return node
}

type parsedHeader struct {
	time time.Time
	kind api.EventKind
	node string
	body []byte
}

func parseEventHeader(v []byte) (parsedHeader, error) {
	if len(v) < 15 || v[0] != 1 {
		return parsedHeader{}, errors.New("bad event header")
	}
	n := int(binary.BigEndian.Uint16(v[13:15]))
	if len(v) < 15+n {
		return parsedHeader{}, errors.New("short event header")
	}
	return parsedHeader{
		time: time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))),
		kind: api.EventKind(binary.BigEndian.Uint32(v[9:13])),
		node: string(v[15 : 15+n]),
		body: v[15+n:],
	}, nil
}

// Event pages. The events of one batch are stored as one page in a segment
// file (eventlog.go): version 2, then per event its length (BE32) and
// eventHeader + body. A Badger value starting with version 1 is a single
// inline event (the earlier layout, still read). One index key per batch
// instead of one value per event is 512 times fewer keys to write, compact
// and delete, and no event byte is rewritten by compaction.
const (
	pageVersion = 2
	// A page is cut at maxPageEvents events or maxPageBytes, so that it and
	// its events' markers always fit in one Badger transaction.
	maxPageEvents = 1024
	maxPageBytes  = 1 << 20
	// pageBufBytes is a page buffer's first capacity: a batch's page.
	pageBufBytes = 512 << 10
)

// storeEvent adds e to the batch's page; its marker is written with the page.
func (s *BadgerStore) storeEvent(w *txnWriter, e *api.Event, marker *badger.Entry, st *ingestStats) error {
	if w.pageN == 0 {
		if cap(w.page) == 0 {
			w.page = make([]byte, 0, pageBufBytes)
		}
		w.page = append(w.page[:0], pageVersion)
	}
	// The length is filled in after marshalling: no separate size pass.
	at := len(w.page)
	page := eventHeader(append(w.page, 0, 0, 0, 0), e)
	page, err := proto.MarshalOptions{}.MarshalAppend(page, e)
	if err != nil {
		return fmt.Errorf("marshal event: %w", err)
	}
	n := len(page) - at - 4
	if w.pageN > 0 && (w.pageN >= maxPageEvents || len(page) > maxPageBytes) {
		// Full: this event starts the next page, moved to the front of the
		// same buffer once the page before it is written.
		w.page = page[:at]
		if err := w.flushPage(); err != nil {
			return err
		}
		page[0] = pageVersion
		binary.BigEndian.PutUint32(page[1:], uint32(n))
		copy(page[5:], page[at+4:at+4+n])
		page = page[:5+n]
	} else {
		binary.BigEndian.PutUint32(page[at:], uint32(n))
	}
	w.page = page
	w.pageN++
	w.pageMarkers = append(w.pageMarkers, marker)
	st.events++
	return nil
}

// eachPageEvent calls fn with the stored form (eventHeader + body) of each
// event of page v, oldest first.
func eachPageEvent(v []byte, fn func(rec []byte) error) error {
	if len(v) == 0 {
		return errors.New("empty event value")
	}
	switch v[0] {
	case 1: // a single event
		return fn(v)
	case pageVersion:
	default:
		return fmt.Errorf("event page version %d", v[0])
	}
	for v = v[1:]; len(v) > 0; {
		if len(v) < 4 || int(binary.BigEndian.Uint32(v)) > len(v)-4 {
			return errors.New("truncated event page")
		}
		n := int(binary.BigEndian.Uint32(v))
		if err := fn(v[4 : 4+n]); err != nil {
			return err
		}
		v = v[4+n:]
	}
	return nil
}

// Events walks the ring newest first. Only the newest MaxEvents are
// visible: the ring drops whole pages, so it may hold up to a page more.
func (s *BadgerStore) Events(ctx context.Context, q EventQuery) ([]*api.Event, error) {
	limit := effectiveLimit(q.Limit)
	var out []*api.Event
	pages := &pageReader{dir: filepath.Join(s.cfg.Dir, eventsDirName)}
	defer pages.close()
	err := s.db.View(func(txn *badger.Txn) error {
		var oldest uint64 // positions below this are beyond MaxEvents
		newest := true
		for item := range badgerkv.PrefixReverse(txn, key(prefixEvent)) {
			if len(out) >= limit {
				break
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			k := item.Key()
			if len(k) != len(prefixEvent)+8 {
				return fmt.Errorf("event key %x: bad length", k)
			}
			first := binary.BigEndian.Uint64(k[len(prefixEvent):])
			err := item.Value(func(v []byte) error {
				v, err := pages.page(v)
				if err != nil {
					return err
				}
				var recs [][]byte
				if err := eachPageEvent(v, func(rec []byte) error { recs = append(recs, rec); return nil }); err != nil {
					return err
				}
				if newest {
					if end := first + uint64(len(recs)); end > uint64(s.cfg.MaxEvents) {
						oldest = end - uint64(s.cfg.MaxEvents)
					}
					newest = false
				}
				for i := len(recs) - 1; i >= 0 && len(out) < limit; i-- {
					if first+uint64(i) < oldest {
						return nil
					}
					h, err := parseEventHeader(recs[i])
					if err != nil {
						return err
					}
					if (q.Node != "" && h.node != q.Node) ||
						(q.Kind != api.EventKind_EVENT_KIND_UNSPECIFIED && h.kind != q.Kind) ||
						(!q.Since.IsZero() && h.time.Before(q.Since)) {
						continue
					}
					if !q.Search.Until.IsZero() && h.time.After(q.Search.Until) {
						continue
					}
					e := &api.Event{}
					if err := proto.Unmarshal(h.body, e); err != nil {
						return err
					}
					if q.Search.matches(e) {
						out = append(out, e)
					}
				}
				return nil
			})
			if errors.Is(err, fs.ErrNotExist) {
				break // the ring moved past this segment while we read
			}
			if err != nil {
				return fmt.Errorf("event page %x: %w", k, err)
			}
			if first < oldest {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// loadPages lists the stored event pages, oldest first, and returns where
// the newest one ends in its segment.
func (s *BadgerStore) loadPages() (newestEnd uint64, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, key(prefixEvent)) {
			k := item.Key()
			if len(k) != len(prefixEvent)+8 {
				return fmt.Errorf("event key %x: bad length", k)
			}
			p := pageRef{first: binary.BigEndian.Uint64(k[len(prefixEvent):])}
			if err := item.Value(func(v []byte) error {
				if len(v) == 0 || v[0] != locVersion {
					return nil // an inline event of the earlier layout
				}
				loc, err := decodePageLocation(v)
				if err != nil {
					return err
				}
				p.seg, newestEnd = loc.seg, loc.off+uint64(loc.len)
				return nil
			}); err != nil {
				return fmt.Errorf("event page %x: %w", k, err)
			}
			s.pages = append(s.pages, p)
		}
		return nil
	})
	return newestEnd, err
}
