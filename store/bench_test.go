package store

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// procStatusKiB reads a "Name:   123 kB" field of /proc/self/status.
func procStatusKiB(tb testing.TB, field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// randomPayloads are incompressible, so the figures are not flattered by ZSTD.
func randomPayloads(r *rand.Rand, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		p := make([]byte, size)
		for j := 0; j < size; j += 8 {
			v := r.Uint64()
			for k := 0; k < 8 && j+k < size; k++ {
				p[j+k] = byte(v >> (8 * k))
			}
		}
		out[i] = p
	}
	return out
}

// BenchmarkSpoolMemory writes 200k 1 KiB records (batches of 100, one fsync
// each) and reports peak heap in use, runtime Sys and process RSS:
//
//	go test -run '^$' -bench SpoolMemory -benchtime 1x ./store/
func BenchmarkSpoolMemory(b *testing.B) {
	const records, batch, size = 200_000, 100, 1024
	r := rand.New(rand.NewPCG(1, 2))
	payloads := randomPayloads(r, batch, size)
	for b.Loop() {
		s := openTest(b, Config{})
		var peakHeap, peakSys uint64
		var peakRSS, peakAnon int64
		var ms runtime.MemStats
		for i := 0; i < records/batch; i++ {
			if _, err := s.AppendBatch(ClassEvent, payloads); err != nil {
				b.Fatal(err)
			}
			if i%100 == 0 {
				runtime.ReadMemStats(&ms)
				peakHeap, peakSys = max(peakHeap, ms.HeapInuse), max(peakSys, ms.Sys)
				peakRSS = max(peakRSS, procStatusKiB(b, "VmRSS"))
				peakAnon = max(peakAnon, procStatusKiB(b, "RssAnon"))
			}
		}
		st := s.Stats()
		b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-inuse-MiB")
		b.ReportMetric(float64(peakSys)/(1<<20), "peak-sys-MiB")
		b.ReportMetric(float64(peakRSS)/1024, "peak-rss-MiB")
		b.ReportMetric(float64(peakAnon)/1024, "peak-rss-anon-MiB")
		b.ReportMetric(float64(procStatusKiB(b, "VmHWM"))/1024, "vmhwm-MiB")
		b.ReportMetric(float64(st.DiskBytes)/(1<<20), "disk-MiB")
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// fillAndDrain appends ~50 MB of 1 KiB events, acks them all and reclaims;
// it returns the disk usage when full and after reclaiming.
func fillAndDrain(tb testing.TB, s *Spool) (full, drained int64) {
	r := rand.New(rand.NewPCG(3, 4))
	payloads := randomPayloads(r, 500, 1024)
	for range 100 { // 50 000 records
		if _, err := s.AppendBatch(ClassEvent, payloads); err != nil {
			tb.Fatal(err)
		}
	}
	var err error
	if full, err = diskUsage(s.cfg.Dir); err != nil {
		tb.Fatal(err)
	}
	drainEach(tb, s, 1000, 4<<20, nil)
	if err := s.Reclaim(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if drained, err = diskUsage(s.cfg.Dir); err != nil {
		tb.Fatal(err)
	}
	return full, drained
}

func TestDrainedSpoolGivesSpaceBack(t *testing.T) {
	s := openTest(t, Config{})
	full, drained := fillAndDrain(t, s)
	t.Logf("disk: %.1f MiB full, %.1f MiB drained and reclaimed", float64(full)/(1<<20), float64(drained)/(1<<20))
	if drained > full/2 {
		t.Fatalf("reclaimed spool uses %d bytes, more than half of the %d it used full", drained, full)
	}
	if st := s.Stats().Classes[ClassEvent]; st.Depth != 0 || st.Acked != 50_000 {
		t.Fatalf("stats %+v", st)
	}
	// Still works after the prefix was dropped.
	if seq := mustAppend(t, s, ClassEvent, []byte("after")); seq != 50_001 {
		t.Fatalf("seq after drain = %d", seq)
	}
	recs, err := s.Next(10, 1<<20)
	if err != nil || len(recs) != 1 || string(recs[0].Payload) != "after" {
		t.Fatalf("Next after drain = %+v, %v", recs, err)
	}
}

// BenchmarkNextAfterDrain measures a Next/Ack round trip of one record on a
// spool that held ~50 MB and was drained, against a fresh spool.
func BenchmarkNextAfterDrain(b *testing.B) {
	for _, tc := range []struct {
		name    string
		drained bool
		reclaim bool
	}{{"fresh", false, false}, {"drained", true, true}, {"drained-no-reclaim", true, false}} {
		b.Run(tc.name, func(b *testing.B) {
			s := openTest(b, Config{})
			if tc.drained {
				fillAndDrainNoReclaim(b, s, tc.reclaim)
			}
			p := []byte("x")
			for b.Loop() {
				mustAppend(b, s, ClassEvent, p)
				recs, err := s.Next(100, 1<<20)
				if err != nil || len(recs) != 1 {
					b.Fatal(recs, err)
				}
				if err := s.Ack(recs[0].RecordID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func fillAndDrainNoReclaim(b *testing.B, s *Spool, reclaim bool) {
	if reclaim {
		fillAndDrain(b, s)
		return
	}
	r := rand.New(rand.NewPCG(3, 4))
	payloads := randomPayloads(r, 500, 1024)
	for range 100 {
		first, err := s.AppendBatch(ClassEvent, payloads)
		if err != nil {
			b.Fatal(err)
		}
		acks := make([]RecordID, len(payloads))
		for i := range acks {
			acks[i] = RecordID{ClassEvent, first + uint64(i)}
		}
		if err := s.Ack(acks...); err != nil {
			b.Fatal(err)
		}
	}
}
