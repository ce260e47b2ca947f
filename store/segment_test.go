package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// segmentFiles lists a class's segment files, oldest first.
func segmentFiles(t *testing.T, dir string, c Class) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(dir, segmentDirName, c.String()+"-*"+segmentExt))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	return all
}

// drain reads and acknowledges everything, returning the seqs per class.
func drain(t *testing.T, s *Spool) map[Class][]uint64 {
	t.Helper()
	out := map[Class][]uint64{}
	drainEach(t, s, 64, 1<<20, func(r Record) {
		if !bytes.Equal(r.Payload, payloadFor(r.Class, int(r.Seq), len(r.Payload))) {
			t.Fatalf("%v: payload %.40q", r.RecordID, r.Payload)
		}
		out[r.Class] = append(out[r.Class], r.Seq)
	})
	return out
}

func appendSeqPayloads(t *testing.T, s *Spool, c Class, n, size int) {
	t.Helper()
	next := s.Stats().Classes[c].NextSeq
	batch := make([][]byte, n)
	for i := range batch {
		batch[i] = payloadFor(c, int(next)+i, size)
	}
	if _, err := s.AppendBatch(c, batch); err != nil {
		t.Fatal(err)
	}
}

// A crash in the middle of a write leaves a torn frame at the end of the
// newest segment: Open cuts it off and nothing acknowledged is lost.
func TestOpenCutsTornTail(t *testing.T) {
	for _, tail := range []struct {
		name  string
		bytes func() []byte
	}{
		{"half a header", func() []byte { return appendFrame(nil, 11, 1, []byte("lost"))[:10] }},
		{"header without payload", func() []byte { f := appendFrame(nil, 11, 1, make([]byte, 500)); return f[:frameHeaderLen+100] }},
		{"bad checksum", func() []byte { f := appendFrame(nil, 11, 1, []byte("lost")); f[len(f)-1] ^= 0xff; return f }},
		{"zeros", func() []byte { return make([]byte, 4096) }},
	} {
		t.Run(tail.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, Config{Dir: dir})
			appendSeqPayloads(t, s, ClassEvent, 10, 100)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segmentFiles(t, dir, ClassEvent)
			f, err := os.OpenFile(files[len(files)-1], os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(tail.bytes()); err != nil {
				t.Fatal(err)
			}
			f.Close()

			s = openTest(t, Config{Dir: dir})
			if st := s.Stats().Classes[ClassEvent]; st.Depth != 10 || st.NextSeq != 11 || st.Bytes != 10*recordSize(100) {
				t.Fatalf("after a torn tail: %+v", st)
			}
			appendSeqPayloads(t, s, ClassEvent, 5, 100)
			got := drain(t, s)
			if fmt.Sprint(got[ClassEvent]) != fmt.Sprint([]uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}) {
				t.Fatalf("drained %v", got[ClassEvent])
			}
		})
	}
}

// A frame damaged on disk in an older segment costs that segment's
// remaining records, reported as evicted in a gap; the rest is delivered.
func TestDamagedSegmentIsReportedNotFatal(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, QuotaBytes: MinQuotaBytes} // 64 KiB segments
	s := openTest(t, cfg)
	for range 4 {
		appendSeqPayloads(t, s, ClassEvent, 60, 1024) // one segment each
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := segmentFiles(t, dir, ClassEvent)
	if len(files) != 4 {
		t.Fatalf("segments %v", files)
	}
	b, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	b[frameHeaderLen+10] ^= 0xff // first record of the second segment
	if err := os.WriteFile(files[1], b, 0o600); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, cfg)
	got := drain(t, s)[ClassEvent]
	if len(got) != 180 || got[59] != 60 || got[60] != 121 {
		t.Fatalf("drained %d records: %v", len(got), got)
	}
	st := s.Stats().Classes[ClassEvent]
	gaps, err := s.Gaps()
	if err != nil {
		t.Fatal(err)
	}
	if st.Evicted != 60 || len(gaps) != 1 || gaps[0].FirstSeq != 61 || gaps[0].LastSeq != 120 || gaps[0].Count != 60 {
		t.Fatalf("stats %+v, gaps %+v", st, gaps)
	}
}

// Acknowledgements out of order survive a restart, and their keys go once
// the head passes them.
func TestOutOfOrderAcksSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Config{Dir: dir})
	appendSeqPayloads(t, s, ClassAlert, 6, 50)
	if err := s.Ack(RecordID{ClassAlert, 2}, RecordID{ClassAlert, 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Config{Dir: dir})
	recs, err := s.Next(10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(recs)); got != "[{alert 1} {alert 3} {alert 4} {alert 6}]" {
		t.Fatalf("after restart: %s", got)
	}
	if st := s.Stats().Classes[ClassAlert]; st.Depth != 4 || st.Acked != 2 || st.Bytes != 4*recordSize(50) {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Ack(RecordID{ClassAlert, 1}, RecordID{ClassAlert, 3}, RecordID{ClassAlert, 4}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	head, acked := s.cls[ClassAlert].head, len(s.cls[ClassAlert].acked)
	s.mu.Unlock()
	if head != 6 || acked != 0 {
		t.Fatalf("head %d with %d acked above it, want 6 and 0", head, acked)
	}
}

// Acknowledged segments are deleted as the head passes them, without
// Reclaim; a drained class keeps one small file.
func TestAckedSegmentsAreDeleted(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Config{Dir: dir, QuotaBytes: MinQuotaBytes})
	for range 10 {
		appendSeqPayloads(t, s, ClassEvent, 60, 1024)
	}
	if n := len(segmentFiles(t, dir, ClassEvent)); n != 10 {
		t.Fatalf("%d segments, want 10", n)
	}
	drain(t, s)
	files := segmentFiles(t, dir, ClassEvent)
	st := s.Stats()
	if len(files) != 1 || st.SegmentBytes != 0 {
		t.Fatalf("after draining: files %v, segment bytes %d", files, st.SegmentBytes)
	}
}

// A directory that looks like the earlier layout but is not a Badger
// database fails Open with an error naming it, and is left in place.
func TestOpenReportsABrokenEarlierLayout(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("badger"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{Dir: dir}, nil)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, legacyDirName)) {
		t.Fatalf("Open = %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, legacyDirName, "MANIFEST")); err != nil || string(b) != "badger" {
		t.Fatalf("the earlier files were not kept: %q, %v", b, err)
	}
}

// Badger runs without compactor goroutines; heavy metadata traffic (many
// out-of-order acks: a key written and deleted per record) must neither
// stall its writes nor let level 0 grow.
func TestMetadataStaysCompactWithoutCompactors(t *testing.T) {
	s := openTest(t, Config{})
	done := make(chan error, 1)
	go func() {
		for round := range 6 {
			// Not appendSeqPayloads: t.Fatal must not run in this goroutine.
			batch := make([][]byte, 20_000)
			for i := range batch {
				batch[i] = payloadFor(ClassEvent, round*20_000+i+1, 10)
			}
			if _, err := s.AppendBatch(ClassEvent, batch); err != nil {
				done <- fmt.Errorf("round %d: append: %w", round, err)
				return
			}
			st := s.Stats().Classes[ClassEvent]
			first := st.NextSeq - 20_000
			var odd, even []RecordID
			for seq := first; seq < st.NextSeq; seq++ {
				if seq%2 == 1 {
					odd = append(odd, RecordID{ClassEvent, seq})
				} else {
					even = append(even, RecordID{ClassEvent, seq})
				}
			}
			// Acks in chunks, the later half first, so each leaves keys behind.
			for _, set := range [][]RecordID{even, odd} {
				for i := 0; i < len(set); i += 400 {
					if err := s.Ack(set[i:min(i+400, len(set))]...); err != nil {
						done <- fmt.Errorf("round %d: %w", round, err)
						return
					}
				}
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("metadata writes stalled")
	}
	if st := s.Stats().Classes[ClassEvent]; st.Depth != 0 || st.Acked != 120_000 {
		t.Fatalf("stats %+v", st)
	}
	if l0 := s.db.Levels()[0].NumTables; l0 >= numL0Tables {
		t.Fatalf("level 0 holds %d tables; the spool flattens at %d (Badger stalls writes at %d)", l0, numL0Tables, numL0TablesStall)
	}
	t.Logf("metadata: %s", s.db.LevelsToString())
}

// TestReadErrorIsNotDamage: a frame cut short is damage (errCorrupt), but a
// read that fails for another reason is returned as it is, so that a
// transient I/O error never gets a segment cut or evicted as torn.
func TestReadErrorIsNotDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	whole := appendFrame(appendFrame(nil, 1, 1, []byte("one")), 2, 1, []byte("two"))
	if err := os.WriteFile(path, whole[:len(whole)-2], 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	r := newFrameReader(f, 0, st.Size(), 1<<20, bufio.NewReader(nil))
	if _, _, err := r.next(true); err != nil {
		t.Fatalf("first frame: %v", err)
	}
	if _, _, err := r.next(true); !errors.Is(err, errCorrupt) {
		t.Fatalf("a frame cut short: %v, want errCorrupt", err)
	}
	_ = f.Close()
	r = newFrameReader(f, 0, st.Size(), 1<<20, bufio.NewReader(nil))
	if _, _, err := r.next(true); err == nil || errors.Is(err, errCorrupt) || !errors.Is(err, os.ErrClosed) {
		t.Fatalf("a failed read: %v, want the read's own error, not errCorrupt", err)
	}
}
