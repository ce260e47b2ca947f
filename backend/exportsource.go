package backend

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

var _ export.Source = (*BadgerStore)(nil)

func alertSeqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(key(prefixAlertSeq), seq)
}

// loadAlertSeq finds the newest alert ingest sequence number.
func (s *BadgerStore) loadAlertSeq() error {
	return s.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.PrefixReverse(txn, key(prefixAlertSeq)) {
			k := item.Key()
			if len(k) != len(prefixAlertSeq)+8 {
				return fmt.Errorf("alert sequence key %q: bad length", k)
			}
			s.alertSeq.Store(binary.BigEndian.Uint64(k[len(prefixAlertSeq):]))
			break
		}
		return nil
	})
}

// LastAlertSeq is the newest alert ingest sequence number committed.
func (s *BadgerStore) LastAlertSeq() uint64 { return s.alertSeq.Load() }

// AlertsAfter lists alerts in ingest order after the sequence number
// after: each time an alert was stored or updated, with its current state
// (an alert updated twice appears twice, with the same ID).
func (s *BadgerStore) AlertsAfter(ctx context.Context, after uint64, limit int) ([]export.Record, error) {
	var out []export.Record
	err := s.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.PrefixFrom(txn, key(prefixAlertSeq), alertSeqKey(after+1)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(out) >= limit {
				break
			}
			k := item.Key()
			if len(k) != len(prefixAlertSeq)+8 {
				return fmt.Errorf("alert sequence key %q: bad length", k)
			}
			r := export.Record{Seq: binary.BigEndian.Uint64(k[len(prefixAlertSeq):])}
			var id string
			if err := item.Value(func(v []byte) error {
				if len(v) < 8 {
					return errors.New("short value")
				}
				r.Stored = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
				id = string(v[8:])
				return nil
			}); err != nil {
				return fmt.Errorf("alert sequence %d: %w", r.Seq, err)
			}
			a, err := getProto[api.Alert](txn, key(prefixAlert, id))
			if err != nil {
				return fmt.Errorf("alert %q at sequence %d: %w", id, r.Seq, err)
			}
			r.Alert = a
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("alerts after %d: %w", after, err)
	}
	return out, nil
}

// exportKV keeps exporters' state under x/ in the store's Badger. Its
// keys are the exporters' alone, so its writes never meet Ingest's.
type exportKV struct{ db *badger.DB }

// ExportKV is the durable state the exporters keep in this store.
func (s *BadgerStore) ExportKV() export.KV { return exportKV{db: s.db} }

func exportKey(k []byte) []byte { return append(key(prefixExport), k...) }

func (e exportKV) Get(ctx context.Context, k []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var v []byte
	err := e.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(exportKey(k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("export state: %w", err)
	}
	return v, nil
}

func (e exportKV) Set(ctx context.Context, k, v []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.db.Update(func(txn *badger.Txn) error { return txn.Set(exportKey(k), v) }); err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	return nil
}

func (e exportKV) Scan(ctx context.Context, prefix []byte, fn func(k, v []byte) bool) error {
	p := exportKey(prefix)
	err := e.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, p) {
			if err := ctx.Err(); err != nil {
				return err
			}
			var more bool
			if err := item.Value(func(v []byte) error {
				more = fn(bytes.TrimPrefix(item.Key(), key(prefixExport)), v)
				return nil
			}); err != nil {
				return err
			}
			if !more {
				break
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	return nil
}

// RecordsAfter lists records of kind after the sequence number after, in
// their kind's ingest order.
func (s *BadgerStore) RecordsAfter(ctx context.Context, kind export.Kind, after uint64, limit int) ([]export.Record, error) {
	switch kind {
	case export.KindAlerts:
		return s.AlertsAfter(ctx, after, limit)
	case export.KindEvents:
		return s.eventsAfter(ctx, after, limit)
	}
	return s.journalAfter(ctx, kind, after, limit)
}

// LastSeq is the newest ingest sequence number of kind committed.
func (s *BadgerStore) LastSeq(kind export.Kind) uint64 {
	switch kind {
	case export.KindAlerts:
		return s.LastAlertSeq()
	case export.KindEvents:
		return s.eventHead.Load() // ring positions start at 0: seq = position + 1
	}
	if c := s.journal.last[kind]; c != nil {
		return c.Load()
	}
	return 0
}

// journal is the ingest order of the exported kinds other than alerts:
// each record (a copy: findings of an old snapshot are deleted with it,
// response records change) under j/<kind>\x00<seq>. A kind's records are
// appended under mu and its last number published after the commit, so
// an exporter never reads past a gap that a later commit fills.
type journal struct {
	mu   sync.Mutex
	last map[export.Kind]*atomic.Uint64 // fixed at open; the counters change
}

var journalKinds = []export.Kind{export.KindFindings, export.KindVulnerabilities, export.KindResponses, export.KindTriage}

// A finding's journal record starts with its state: open (new or changed)
// or resolved (gone from the newest snapshot).
const (
	journalFindingOpen     = 'o'
	journalFindingResolved = 'r'
)

func journalPrefix(kind export.Kind) []byte { return append(key(prefixJournal, string(kind)), 0) }

func journalKey(kind export.Kind, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(journalPrefix(kind), seq)
}

func (s *BadgerStore) loadJournal() error {
	s.journal.last = map[export.Kind]*atomic.Uint64{}
	return s.db.View(func(txn *badger.Txn) error {
		for _, k := range journalKinds {
			c := &atomic.Uint64{}
			s.journal.last[k] = c
			p := journalPrefix(k)
			for item := range badgerkv.PrefixReverse(txn, p) {
				if len(item.Key()) != len(p)+8 {
					return fmt.Errorf("export journal key %q: bad length", item.Key())
				}
				c.Store(binary.BigEndian.Uint64(item.Key()[len(p):]))
				break
			}
		}
		return nil
	})
}

// journalBatch appends records of each kind to wb. finish, called once
// with whether wb was flushed, publishes them to exporters and releases
// the journal. The caller holds s.mu (the inventory's writer).
func (s *BadgerStore) journalBatch(wb *badger.WriteBatch, records map[export.Kind][][]byte) (finish func(flushed bool), err error) {
	s.journal.mu.Lock()
	now := uint64(s.cfg.Now().UnixNano())
	last := map[export.Kind]uint64{}
	for _, kind := range journalKinds {
		seq := s.journal.last[kind].Load()
		for _, r := range records[kind] {
			seq++
			v := append(binary.BigEndian.AppendUint64(nil, now), r...)
			if err := wb.Set(journalKey(kind, seq), v); err != nil {
				s.journal.mu.Unlock()
				return nil, fmt.Errorf("export journal: %w", err)
			}
		}
		last[kind] = seq
	}
	return func(flushed bool) {
		if flushed {
			for kind, seq := range last {
				s.journal.last[kind].Store(seq)
			}
		}
		s.journal.mu.Unlock()
	}, nil
}

// journalUpdate runs fn in one transaction with add appending records of
// kind in that same transaction.
func (s *BadgerStore) journalUpdate(kind export.Kind, fn func(txn *badger.Txn, add func(record []byte) error) error) error {
	s.journal.mu.Lock()
	defer s.journal.mu.Unlock()
	c := s.journal.last[kind]
	seq := c.Load()
	now := uint64(s.cfg.Now().UnixNano())
	err := s.db.Update(func(txn *badger.Txn) error {
		seq = c.Load()
		return fn(txn, func(r []byte) error {
			seq++
			return txn.Set(journalKey(kind, seq), append(binary.BigEndian.AppendUint64(nil, now), r...))
		})
	})
	if err == nil {
		c.Store(seq)
	}
	return err
}

func (s *BadgerStore) journalAfter(ctx context.Context, kind export.Kind, after uint64, limit int) ([]export.Record, error) {
	p := journalPrefix(kind)
	var out []export.Record
	err := s.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.PrefixFrom(txn, p, journalKey(kind, after+1)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(out) >= limit {
				break
			}
			k := item.Key()
			if len(k) != len(p)+8 {
				return fmt.Errorf("journal key %q: bad length", k)
			}
			r := export.Record{Seq: binary.BigEndian.Uint64(k[len(p):]), Kind: kind}
			if err := item.Value(func(v []byte) error {
				if len(v) < 8 {
					return errors.New("short value")
				}
				r.Stored = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
				switch kind {
				case export.KindResponses:
					r.Response = &export.ResponseAction{}
					return json.Unmarshal(v[8:], r.Response)
				case export.KindTriage:
					r.Triage = &export.AlertTriage{}
					return json.Unmarshal(v[8:], r.Triage)
				}
				if len(v) < 9 || (v[8] != journalFindingOpen && v[8] != journalFindingResolved) {
					return errors.New("bad finding state")
				}
				r.Resolved = v[8] == journalFindingResolved
				r.Finding = &api.Finding{}
				return proto.Unmarshal(v[9:], r.Finding)
			}); err != nil {
				return fmt.Errorf("%s %d: %w", kind, r.Seq, err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s after %d: %w", kind, after, err)
	}
	return out, nil
}

var _ export.Pruner = (*BadgerStore)(nil)

// PruneOrder deletes the ingest order entries of kind up to upTo, keeping
// the newest: loadAlertSeq and loadJournal read the last number from it.
func (s *BadgerStore) PruneOrder(ctx context.Context, kind export.Kind, upTo uint64) (int, error) {
	if kind == export.KindEvents {
		return 0, nil // the event ring bounds itself
	}
	upTo = min(upTo, s.LastSeq(kind)-min(s.LastSeq(kind), 1))
	prefix, keyOf := journalPrefix(kind), func(seq uint64) []byte { return journalKey(kind, seq) }
	if kind == export.KindAlerts {
		prefix, keyOf = key(prefixAlertSeq), alertSeqKey
	}
	if upTo == 0 {
		return 0, nil
	}
	end := keyOf(upTo)
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, prefix) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if bytes.Compare(item.Key(), end) > 0 {
				break
			}
			if err := wb.Delete(item.KeyCopy(nil)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return 0, fmt.Errorf("prune %s order up to %d: %w", kind, upTo, err)
	}
	return n, nil
}

// eventsAfter reads the event ring as the events' export order: the event
// at ring position p has Seq p+1. Events the ring dropped are not there:
// the exporter sees the gap and counts it.
func (s *BadgerStore) eventsAfter(ctx context.Context, after uint64, limit int) ([]export.Record, error) {
	var out []export.Record
	pages := &pageReader{dir: filepath.Join(s.cfg.Dir, eventsDirName)}
	defer pages.close()
	err := s.db.View(func(txn *badger.Txn) error {
		// The page holding position after (the next to send) starts at or
		// before it: the nearest page key at or below.
		start := after
		it := txn.NewIterator(badger.IteratorOptions{Prefix: key(prefixEvent), Reverse: true})
		it.Seek(eventKey(after))
		if it.Valid() && len(it.Item().Key()) == len(prefixEvent)+8 {
			start = binary.BigEndian.Uint64(it.Item().Key()[len(prefixEvent):])
		}
		it.Close()
		for item := range badgerkv.PrefixFrom(txn, key(prefixEvent), eventKey(start)) {
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
			i := uint64(0)
			err := item.Value(func(v []byte) error {
				v, err := pages.page(v)
				if err != nil {
					return err
				}
				return eachPageEvent(v, func(rec []byte) error {
					pos := first + i
					i++
					if pos < after || len(out) >= limit {
						return nil
					}
					h, err := parseEventHeader(rec)
					if err != nil {
						return fmt.Errorf("event %d: %w", pos, err)
					}
					e := &api.Event{}
					if err := proto.Unmarshal(h.body, e); err != nil {
						return fmt.Errorf("event %d: %w", pos, err)
					}
					out = append(out, export.Record{Seq: pos + 1, Kind: export.KindEvents, Stored: h.time, Event: e})
					return nil
				})
			})
			if errors.Is(err, fs.ErrNotExist) {
				continue // the ring dropped this page's segment while we read
			}
			if err != nil {
				return fmt.Errorf("event page %x: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events after %d: %w", after, err)
	}
	return out, nil
}
