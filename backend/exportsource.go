package backend

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

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
