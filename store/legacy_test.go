package store

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// writeLegacySpool writes a spool of the earlier layout (records in Badger,
// directly in dir) as that code did: events 5..9 live except 7 (acked out of
// order), alerts 1..2 live, findings 1..7 all acknowledged, and an unreported
// event gap 1..3.
func writeLegacySpool(t *testing.T, dir string, at time.Time) {
	t.Helper()
	db, err := openLegacy(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	meta := func(next, head, live, acked, evicted uint64) []byte {
		v := make([]byte, legacyMetaLen)
		v[0] = legacyMetaVersion
		for i, n := range []uint64{next, head, live, 0, next - 1, acked, evicted} {
			binary.BigEndian.PutUint64(v[1+8*i:], n)
		}
		return v
	}
	record := func(c Class, seq uint64) ([]byte, []byte) {
		k := legacyRecordKey(c, seq)
		v := binary.BigEndian.AppendUint64([]byte{legacyRecordVersion}, uint64(at.UnixNano()))
		return k, append(v, payloadFor(c, int(seq), 40)...)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for _, kv := range [][2][]byte{
			{metaKey(ClassEvent), meta(10, 5, 4, 2, 3)},
			{metaKey(ClassAlert), meta(3, 1, 2, 0, 0)},
			{metaKey(ClassFinding), meta(8, 1, 0, 7, 0)}, // the old code stored a head that lagged
			{gapKey(ClassEvent, 1), Gap{LastSeq: 3, Count: 3, EvictedAt: at}.encodeValue()},
		} {
			if err := txn.Set(kv[0], kv[1]); err != nil {
				return err
			}
		}
		for _, id := range []RecordID{{ClassEvent, 5}, {ClassEvent, 6}, {ClassEvent, 8}, {ClassEvent, 9}, {ClassAlert, 1}, {ClassAlert, 2}} {
			if err := txn.Set(record(id.Class, id.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = db.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenMovesTheEarlierLayout(t *testing.T) {
	dir := t.TempDir()
	at := time.Unix(1_700_000_000, 0)
	writeLegacySpool(t, dir, at)

	s := openTest(t, Config{Dir: dir})
	if _, err := os.Stat(filepath.Join(dir, legacyDirName)); !os.IsNotExist(err) {
		t.Fatalf("the earlier spool is still there: %v", err)
	}
	st := s.Stats().Classes
	if e := st[ClassEvent]; e.Depth != 4 || e.NextSeq != 10 || e.Acked != 2 || e.Evicted != 3 || e.OldestAge < time.Since(at)-time.Minute {
		t.Fatalf("event stats %+v", e)
	}
	if f := st[ClassFinding]; f.Depth != 0 || f.NextSeq != 8 || f.Acked != 7 {
		t.Fatalf("finding stats %+v", f)
	}
	gaps, err := s.Gaps()
	if err != nil || len(gaps) != 1 || gaps[0].Class != ClassEvent || gaps[0].FirstSeq != 1 || gaps[0].LastSeq != 3 {
		t.Fatalf("gaps %+v, %v", gaps, err)
	}
	if seq := mustAppend(t, s, ClassFinding, []byte("new")); seq != 8 {
		t.Fatalf("a new finding got seq %d, want 8 (sequences continue)", seq)
	}
	var got []string
	drainEach(t, s, 100, 1<<20, func(r Record) {
		if r.Class != ClassFinding && (!r.AppendedAt.Equal(at) || string(r.Payload) != string(payloadFor(r.Class, int(r.Seq), 40))) {
			t.Fatalf("%v: at %v payload %q", r.RecordID, r.AppendedAt, r.Payload)
		}
		got = append(got, fmt.Sprintf("%s/%d", r.Class, r.Seq))
	})
	if want := "[alert/1 alert/2 finding/8 event/5 event/6 event/8 event/9]"; fmt.Sprint(got) != want {
		t.Fatalf("delivered %v, want %s", got, want)
	}
}

// A migration cut short (the old spool moved aside, the new layout half
// written) is redone from the start at the next Open.
func TestInterruptedMigrationIsRedone(t *testing.T) {
	dir := t.TempDir()
	at := time.Unix(1_700_000_000, 0)
	writeLegacySpool(t, dir, at)
	if _, err := moveLegacy(dir); err != nil {
		t.Fatal(err)
	}
	// A half-written new layout: one stray segment.
	if err := os.MkdirAll(filepath.Join(dir, segmentDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, segmentDirName, segmentName(ClassEvent, 5)), appendFrame(nil, 5, 1, []byte("stray")), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, Config{Dir: dir})
	if e := s.Stats().Classes[ClassEvent]; e.Depth != 4 || e.NextSeq != 10 {
		t.Fatalf("event stats %+v", e)
	}
	recs, err := s.Next(1, 1<<20)
	if err != nil || len(recs) != 1 || string(recs[0].Payload) == "stray" {
		t.Fatalf("Next = %+v, %v", recs, err)
	}
}
