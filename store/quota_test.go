package store

import (
	"context"
	"errors"
	"testing"
)

func TestQuotaEvictsEventsThenFindingsThenAlerts(t *testing.T) {
	const quota = MinQuotaBytes // 4 MiB: live limit 3 MiB
	s := openTest(t, Config{QuotaBytes: quota})
	batch := func(c Class, n, size int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = payloadFor(c, i, size)
		}
		return out
	}
	appendN := func(c Class, batches int) error {
		for range batches {
			if _, err := s.AppendBatch(c, batch(c, 100, 1024)); err != nil {
				return err
			}
		}
		return nil
	}
	// ~0.5 MiB of alerts, ~1 MiB of findings, then 20 MiB of events.
	if err := appendN(ClassAlert, 5); err != nil {
		t.Fatal(err)
	}
	if err := appendN(ClassFinding, 10); err != nil {
		t.Fatal(err)
	}
	if err := appendN(ClassEvent, 200); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	t.Logf("after events: live %d, segments %d, disk %d / quota %d", st.LiveBytes, st.SegmentBytes, st.DiskBytes, st.QuotaBytes)
	if st.LiveBytes > uint64(st.SegmentBytes) || st.SegmentBytes > st.QuotaBytes {
		t.Fatalf("live bytes %d, segment bytes %d: over the quota %d", st.LiveBytes, st.SegmentBytes, st.QuotaBytes)
	}
	if a, f := st.Classes[ClassAlert], st.Classes[ClassFinding]; a.Evicted != 0 || f.Evicted != 0 || a.Depth != 500 || f.Depth != 1000 {
		t.Fatalf("events displaced higher classes: alert %+v finding %+v", a, f)
	}
	ev := st.Classes[ClassEvent]
	if ev.Evicted == 0 || ev.Evicted+ev.Depth != 20000 {
		t.Fatalf("event stats %+v", ev)
	}

	// Findings displace events first, then older findings.
	if err := appendN(ClassFinding, 30); err != nil {
		t.Fatal(err)
	}
	st = s.Stats()
	if d := st.Classes[ClassEvent].Depth; d != 0 {
		t.Fatalf("%d events left while findings were evicted", d)
	}
	if st.Classes[ClassFinding].Evicted == 0 || st.Classes[ClassAlert].Evicted != 0 {
		t.Fatalf("stats after findings: %+v", st.Classes)
	}

	// An event cannot displace findings or alerts: top the spool up with
	// findings to just below the quota, then offer an event.
	for s.Stats().SegmentBytes+2*int64(recordSize(1024)) <= quota {
		if _, err := s.Append(ClassFinding, payloadFor(ClassFinding, 0, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	evictedFindings := s.Stats().Classes[ClassFinding].Evicted
	if _, err := s.Append(ClassEvent, make([]byte, 200<<10)); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("event into a spool full of findings: err = %v", err)
	}
	if st := s.Stats(); st.Classes[ClassEvent].Rejected != 1 || st.Classes[ClassFinding].Evicted != evictedFindings {
		t.Fatalf("rejected = %d, findings evicted %d then %d", st.Classes[ClassEvent].Rejected, evictedFindings, st.Classes[ClassFinding].Evicted)
	}

	// Alerts displace findings, and alerts only when nothing else is left.
	if err := appendN(ClassAlert, 40); err != nil {
		t.Fatal(err)
	}
	st = s.Stats()
	if st.Classes[ClassFinding].Depth != 0 || st.Classes[ClassAlert].Evicted == 0 {
		t.Fatalf("stats after alerts: %+v", st.Classes)
	}

	// Every eviction is in a gap; gaps per class cover exactly the evicted count.
	gaps, err := s.Gaps()
	if err != nil {
		t.Fatal(err)
	}
	var gapped [numClasses + 1]uint64
	for _, g := range gaps {
		gapped[g.Class] += g.Count
		t.Logf("gap %s %d..%d (%d)", g.Class, g.FirstSeq, g.LastSeq, g.Count)
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		if gapped[c] != st.Classes[c].Evicted {
			t.Errorf("%s: gaps cover %d, evicted %d", c, gapped[c], st.Classes[c].Evicted)
		}
	}
	// The oldest surviving alert follows the last alert gap.
	recs, err := s.Next(1, 1<<20)
	if err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	var lastAlertGap uint64
	for _, g := range gaps {
		if g.Class == ClassAlert {
			lastAlertGap = g.LastSeq
		}
	}
	if recs[0].Class != ClassAlert || recs[0].Seq != lastAlertGap+1 {
		t.Fatalf("oldest alert %v, last alert gap ends at %d", recs[0].RecordID, lastAlertGap)
	}

	if err := s.MarkGapsReported(gaps...); err != nil {
		t.Fatal(err)
	}
	if gaps, err := s.Gaps(); err != nil || len(gaps) != 0 {
		t.Fatalf("after MarkGapsReported: %v, %v", gaps, err)
	}

	if err := s.Reclaim(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = s.Stats()
	t.Logf("after reclaim: live %d, disk %d / quota %d", st.LiveBytes, st.DiskBytes, st.QuotaBytes)
	if limit := quota + metadataAllowance; st.DiskBytes > limit {
		t.Errorf("disk %d over quota plus Badger's working set (%d)", st.DiskBytes, limit)
	}
}

func TestGapsSurviveRestartAndGrow(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, QuotaBytes: MinQuotaBytes}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 100<<10)
	for range 45 { // 41 of them fill the 4 MiB quota
		if _, err := s.Append(ClassEvent, p); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Gaps()
	if err != nil || len(before) != 1 || before[0].FirstSeq != 1 {
		t.Fatalf("gaps = %+v, %v", before, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Config{Dir: dir, QuotaBytes: MinQuotaBytes})
	for range 10 {
		if _, err := s.Append(ClassEvent, p); err != nil {
			t.Fatal(err)
		}
	}
	after, err := s.Gaps()
	if err != nil || len(after) != 1 || after[0].FirstSeq != 1 || after[0].LastSeq <= before[0].LastSeq ||
		after[0].Count != after[0].LastSeq {
		t.Fatalf("contiguous evictions across a restart should extend one gap: before %+v after %+v (%v)", before, after, err)
	}
	// Marking the stale copy reported keeps the grown gap.
	if err := s.MarkGapsReported(before...); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.Gaps(); len(g) != 1 {
		t.Fatalf("grown gap was dropped: %+v", g)
	}
}

// TestSteadyFlowStaysInQuotaWithoutEvicting streams ten quotas' worth of
// records through a small spool, acknowledging each batch soon after it is
// appended (a working uplink), with Reclaim running as Maintain would. Live
// data stays far below the limit, so nothing may be evicted: space held by
// acknowledged records must come back by itself. This is what rules out
// storing payloads in Badger's value log (see badgerOptions): there, dead
// value-log files outgrow the working set and the disk check evicts live
// records.
func TestSteadyFlowStaysInQuotaWithoutEvicting(t *testing.T) {
	const quota = 8 << 20
	s := openTest(t, Config{QuotaBytes: quota})
	const batch, size, lag = 100, 1024, 5 // ack the batch appended lag batches ago
	var pending [][]RecordID
	rounds := 10 * quota / (batch * size)
	for r := range rounds {
		payloads := make([][]byte, batch)
		for i := range payloads {
			payloads[i] = payloadFor(ClassEvent, r*batch+i, size)
		}
		first, err := s.AppendBatch(ClassEvent, payloads)
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		ids := make([]RecordID, batch)
		for i := range ids {
			ids[i] = RecordID{Class: ClassEvent, Seq: first + uint64(i)}
		}
		pending = append(pending, ids)
		if len(pending) > lag {
			if err := s.Ack(pending[0]...); err != nil {
				t.Fatalf("round %d: ack: %v", r, err)
			}
			pending = pending[1:]
		}
		if r%100 == 99 {
			if err := s.Reclaim(context.Background()); err != nil {
				t.Fatalf("round %d: reclaim: %v", r, err)
			}
		}
	}
	st := s.Stats()
	ev := st.Classes[ClassEvent]
	t.Logf("appended %d, acked %d, evicted %d; disk %d (quota %d + working set %d)",
		ev.Appended, ev.Acked, ev.Evicted, st.DiskBytes, quota, metadataAllowance)
	if ev.Evicted != 0 {
		t.Errorf("%d records evicted although at most %d were live", ev.Evicted, (lag+1)*batch)
	}
	if limit := int64(quota) + metadataAllowance; st.DiskBytes > limit {
		t.Errorf("disk %d over quota plus working set %d", st.DiskBytes, limit)
	}
}
