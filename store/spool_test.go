package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openTest(t testing.TB, cfg Config) *Spool {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := Open(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// payloadFor is a payload that names its class and index, padded to size.
func payloadFor(c Class, i, size int) []byte {
	p := fmt.Appendf(nil, "%s-%d-", c, i)
	for len(p) < size {
		p = append(p, byte('a'+len(p)%26))
	}
	return p
}

// get reads one record by ID; ok is false when it is gone. It walks
// frame headers from the head.
func (s *Spool) get(id RecordID) (payload []byte, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := &s.cls[id.Class]
	if _, gone := cs.acked[id.Seq]; gone || id.Seq < cs.head || id.Seq >= cs.next {
		return nil, false, nil
	}
	loc, err := s.locate(id.Class, id.Seq)
	if err != nil {
		return nil, false, err
	}
	f, closeFile, err := s.segmentFile(id.Class, s.segIndex(id.Class, loc.seg))
	if err != nil {
		return nil, false, err
	}
	defer closeFile()
	b := make([]byte, loc.size)
	if _, err := f.ReadAt(b, loc.off); err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	_, payload, err = decodeFrame(b, s.cfg.MaxRecordBytes)
	return payload, err == nil, err
}

func mustAppend(t testing.TB, s *Spool, c Class, p []byte) uint64 {
	t.Helper()
	seq, err := s.Append(c, p)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// drainEach reads batches of up to max records and maxBytes until the spool
// is empty, calls each (if not nil) with every record of a batch, then
// acknowledges the batch.
func drainEach(tb testing.TB, s *Spool, max, maxBytes int, each func(Record)) {
	tb.Helper()
	for {
		recs, err := s.Next(max, maxBytes)
		if err != nil {
			tb.Fatal(err)
		}
		if len(recs) == 0 {
			return
		}
		if each != nil {
			for _, r := range recs {
				each(r)
			}
		}
		if err := s.Ack(ids(recs)...); err != nil {
			tb.Fatal(err)
		}
	}
}

func ids(recs []Record) []RecordID {
	out := make([]RecordID, len(recs))
	for i, r := range recs {
		out[i] = r.RecordID
	}
	return out
}

func TestNextDrainsByPriorityOldestFirst(t *testing.T) {
	s := openTest(t, Config{})
	// Interleaved, so order must come from the classes, not from append order.
	for i := range 3 {
		mustAppend(t, s, ClassEvent, payloadFor(ClassEvent, i, 10))
		mustAppend(t, s, ClassFinding, payloadFor(ClassFinding, i, 10))
		mustAppend(t, s, ClassAlert, payloadFor(ClassAlert, i, 10))
	}
	for _, want := range []struct {
		class Class
		max   int
		seqs  []uint64
	}{
		{ClassAlert, 2, []uint64{1, 2}},
		{ClassAlert, 10, []uint64{3}},
		{ClassFinding, 10, []uint64{1, 2, 3}},
		{ClassEvent, 10, []uint64{1, 2, 3}},
	} {
		recs, err := s.Next(want.max, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, r := range recs {
			if r.Class != want.class {
				t.Fatalf("got class %s, want %s", r.Class, want.class)
			}
			if !bytes.Equal(r.Payload, payloadFor(r.Class, int(r.Seq-1), 10)) {
				t.Errorf("%s/%d payload %q", r.Class, r.Seq, r.Payload)
			}
			got = append(got, r.Seq)
		}
		if fmt.Sprint(got) != fmt.Sprint(want.seqs) {
			t.Fatalf("%s seqs = %v, want %v", want.class, got, want.seqs)
		}
		if err := s.Ack(ids(recs)...); err != nil {
			t.Fatal(err)
		}
	}
	if recs, err := s.Next(10, 1<<20); err != nil || len(recs) != 0 {
		t.Fatalf("empty spool: Next = %v, %v", recs, err)
	}
	st := s.Stats()
	for _, c := range []Class{ClassAlert, ClassFinding, ClassEvent} {
		if cs := st.Classes[c]; cs.Depth != 0 || cs.Bytes != 0 || cs.Appended != 3 || cs.Acked != 3 || cs.NextSeq != 4 {
			t.Errorf("%s stats = %+v", c, cs)
		}
	}
}

func TestNextRespectsMaxBytes(t *testing.T) {
	s := openTest(t, Config{})
	if _, err := s.AppendBatch(ClassEvent, [][]byte{payloadFor(ClassEvent, 0, 600), payloadFor(ClassEvent, 1, 600), payloadFor(ClassEvent, 2, 600)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ maxBytes, want int }{{100, 1}, {1199, 1}, {1200, 2}, {1 << 20, 3}} {
		recs, err := s.Next(10, tc.maxBytes)
		if err != nil || len(recs) != tc.want {
			t.Errorf("Next(10, %d) = %d records, %v; want %d", tc.maxBytes, len(recs), err, tc.want)
		}
	}
}

func TestAckIsIdempotentAndOutOfOrder(t *testing.T) {
	s := openTest(t, Config{})
	for i := range 5 {
		mustAppend(t, s, ClassEvent, payloadFor(ClassEvent, i, 100))
	}
	if err := s.Ack(RecordID{ClassEvent, 3}, RecordID{ClassEvent, 1}, RecordID{ClassEvent, 3}, RecordID{ClassEvent, 99}); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Next(10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(recs)); got != "[{event 2} {event 4} {event 5}]" {
		t.Fatalf("after acking 1 and 3: %v", got)
	}
	if st := s.Stats().Classes[ClassEvent]; st.Depth != 3 || st.Acked != 2 || st.Bytes != 3*recordSize(100) {
		t.Fatalf("stats = %+v", st)
	}
}

func TestRestartContinuesSequenceAndKeepsAcks(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.AppendBatch(ClassFinding, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	if err != nil || first != 1 {
		t.Fatalf("AppendBatch = %d, %v", first, err)
	}
	if err := s.Ack(RecordID{ClassFinding, 1}, RecordID{ClassFinding, 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, Config{Dir: dir})
	recs, err := s.Next(10, 1<<20)
	if err != nil || len(recs) != 1 || recs[0].Seq != 3 || string(recs[0].Payload) != "c" {
		t.Fatalf("after restart Next = %+v, %v", recs, err)
	}
	if seq := mustAppend(t, s, ClassFinding, []byte("d")); seq != 4 {
		t.Fatalf("seq after restart = %d, want 4", seq)
	}
	if seq := mustAppend(t, s, ClassAlert, []byte("x")); seq != 1 {
		t.Fatalf("first alert seq = %d, want 1 (sequences are per class)", seq)
	}
	st := s.Stats().Classes[ClassFinding]
	if st.Depth != 2 || st.Appended != 4 || st.Acked != 2 || st.OldestAge <= 0 {
		t.Fatalf("finding stats after restart = %+v", st)
	}
}

func TestInvalidInput(t *testing.T) {
	s := openTest(t, Config{QuotaBytes: MinQuotaBytes, MaxRecordBytes: 1000})
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"class 0", func() error { _, err := s.Append(0, nil); return err }(), ErrInvalid},
		{"class 9", func() error { _, err := s.Append(9, nil); return err }(), ErrInvalid},
		{"too large", func() error { _, err := s.Append(ClassEvent, make([]byte, 1001)); return err }(), ErrInvalid},
		{"empty batch", func() error { _, err := s.AppendBatch(ClassEvent, nil); return err }(), ErrInvalid},
		{"ack class 0", s.Ack(RecordID{0, 1}), ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ClassEvent, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: %v", err)
	}
	if _, err := s.Next(1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("next after close: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{}},
		{"quota too small", Config{Dir: dir, QuotaBytes: 1 << 20}},
		{"record larger than quota/8", Config{Dir: dir, QuotaBytes: MinQuotaBytes, MaxRecordBytes: 1 << 20}},
		{"negative record limit", Config{Dir: dir, MaxRecordBytes: -1}},
	} {
		if s, err := Open(tc.cfg, nil); err == nil {
			_ = s.Close()
			t.Errorf("%s: Open succeeded", tc.name)
		}
	}
}

func TestOpenBadDirectoryNamesIt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string
	}{
		{"dir is a file", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"corrupt manifest", func(t *testing.T) string {
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir}, nil)
			if err != nil {
				t.Fatal(err)
			}
			mustAppend(t, s, ClassAlert, []byte("x"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, metaDirName, "MANIFEST"), bytes.Repeat([]byte{0xde, 0xad}, 64), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"already open", func(t *testing.T) string {
			s := openTest(t, Config{})
			return s.cfg.Dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t)
			s, err := Open(Config{Dir: dir}, nil)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), dir) {
				t.Fatalf("error does not name %s: %v", dir, err)
			}
			t.Log(err)
		})
	}
}

// TestSpoolID: a new spool gets an ID that survives reopening; a spool made
// afresh in the same place gets another; a spool that held records before
// IDs existed keeps the empty ID, so its numbering continues unchanged.
func TestSpoolID(t *testing.T) {
	dir := t.TempDir()
	open := func() *Spool {
		t.Helper()
		s, err := Open(Config{Dir: dir}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	first := s.ID()
	if len(first) != 2*spoolIDLen {
		t.Fatalf("ID %q, want %d hex digits", first, 2*spoolIDLen)
	}
	if _, err := s.Append(ClassAlert, []byte("a")); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open()
	if s.ID() != first {
		t.Fatalf("reopened: ID %q, want %q", s.ID(), first)
	}
	// Before IDs: records but no ID key.
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte{kindID}) }); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open()
	if s.ID() != "" {
		t.Fatalf("a spool with records from before IDs got ID %q", s.ID())
	}
	// A damaged ID is replaced, not fatal.
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte{kindID}, []byte("short")) }); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open()
	if len(s.ID()) != 2*spoolIDLen || s.ID() == first {
		t.Fatalf("a damaged ID was replaced by %q", s.ID())
	}
	_ = s.Close()
	// Wiped and made afresh.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	if s.ID() == "" || s.ID() == first {
		t.Fatalf("a fresh spool got ID %q (the first was %q)", s.ID(), first)
	}
}
