package backend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

func (s *BadgerStore) storeAlert(w *txnWriter, agentID string, seq uint64, a *api.Alert, st *ingestStats) error {
	if a == nil {
		return nil
	}
	a = proto.CloneOf(a)
	if a.GetId() == "" {
		a.Id = fmt.Sprintf("%s-%d", agentID, seq) // keyless alerts still need an address
	}
	k := key(prefixAlert, a.GetId())
	old, err := getProto[api.Alert](w.txn, k)
	switch {
	case errors.Is(err, ErrNotFound):
		st.alertsNew++
	case err != nil:
		return err
	default:
		mergeAlert(a, old)
		st.alertsUpdated++
	}
	v, err := proto.Marshal(a)
	if err != nil {
		return fmt.Errorf("marshal alert %s: %w", a.GetId(), err)
	}
	// The alert and its place in the ingest order go into one transaction,
	// so an exporter's cursor never passes an alert it has not seen.
	w.alerts = append(w.alerts, a)
	w.alertSeq++
	idx := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(a.GetId())), uint64(s.cfg.Now().UnixNano()))
	return w.setTogether(badger.NewEntry(k, v), badger.NewEntry(alertSeqKey(w.alertSeq), append(idx, a.GetId()...)))
}

// mergeAlert makes the incoming repeat a of an alert keep what the stored one
// knew: updates can arrive out of order after an outage.
func mergeAlert(a, old *api.Alert) {
	a.Count = max(a.GetCount(), old.GetCount())
	if old.GetLastSeen() != nil && (a.GetLastSeen() == nil || old.GetLastSeen().AsTime().After(a.GetLastSeen().AsTime())) {
		a.LastSeen = old.GetLastSeen()
	}
	if old.GetFirstSeen() != nil && (a.GetFirstSeen() == nil || old.GetFirstSeen().AsTime().Before(a.GetFirstSeen().AsTime())) {
		a.FirstSeen = old.GetFirstSeen()
	}
	if len(a.GetEvidence()) == 0 {
		a.Evidence = old.GetEvidence()
	}
}

// Alerts picks the alerts from the in-memory index (incidents.go) and
// reads only those: the list stays fast with 100 000 alerts stored.
func (s *BadgerStore) Alerts(ctx context.Context, q AlertQuery) ([]*api.Alert, error) {
	ids := s.incidents.query(q)
	out := make([]*api.Alert, 0, len(ids))
	err := s.db.View(func(txn *badger.Txn) error {
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return err
			}
			a, err := getProto[api.Alert](txn, key(prefixAlert, id))
			if err != nil {
				return fmt.Errorf("alert %q: %w", id, err)
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	return out, nil
}

// Alert returns one alert.
func (s *BadgerStore) Alert(ctx context.Context, id string) (*api.Alert, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var a *api.Alert
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		a, err = getProto[api.Alert](txn, key(prefixAlert, id))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("alert %q: %w", id, err)
	}
	return a, nil
}
