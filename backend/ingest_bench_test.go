package backend

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/benchevents"
)

// BenchmarkIngest stores 512-record batches of realistic events (~870 bytes
// marshaled, like the uplink bench's) from one agent, the shape of a
// sustained upload. Past 100k records the event ring wraps, so long runs
// (-benchtime 400x) include the ring's deletes. Read ns/record; profile with
// -cpuprofile.
func BenchmarkIngest(b *testing.B) {
	const batchSize = 512
	dir := b.TempDir()
	s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: dir}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	gen := benchevents.New(1, "node-bench-1")
	ctx := context.Background()
	var seq uint64
	b.ReportAllocs()
	for b.Loop() {
		batch := &api.Batch{AgentId: "bench-agent", SpoolId: "0123456789abcdef0123456789abcdef", Records: make([]*api.Record, batchSize)}
		for i := range batch.Records {
			seq++
			batch.Records[i] = &api.Record{Seq: seq, Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: gen.Event()}}
		}
		acked, err := s.Ingest(ctx, "bench-agent", batch)
		if err != nil {
			b.Fatal(err)
		}
		if len(acked) != batchSize {
			b.Fatalf("acked %d of %d", len(acked), batchSize)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq), "ns/record")
	b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "records/s")
	// What the store occupies on disk at the end: event segments (the
	// ring), Badger's tables and value log.
	b.ReportMetric(float64(dirBytes(b, filepath.Join(dir, eventsDirName), segmentSuffix))/(1<<20), "events-MiB")
	b.ReportMetric(float64(dirBytes(b, dir, ".sst")+dirBytes(b, dir, ".vlog"))/(1<<20), "badger-MiB")
}
