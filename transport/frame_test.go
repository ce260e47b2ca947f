package transport

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

func TestFrameRoundTrip(t *testing.T) {
	c, err := NewCodec(Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := &api.Batch{AgentId: "a-1", Records: makeRecords(100, nil), Health: &api.AgentHealth{Node: "n"}}
	var buf bytes.Buffer
	if err := c.WriteBatch(&buf, b); err != nil {
		t.Fatal(err)
	}
	if err := WriteAck(&buf, &api.Ack{Seqs: []uint64{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadBatch(&buf)
	if err != nil || !proto.Equal(got, b) {
		t.Fatalf("ReadBatch = %v, %v", got, err)
	}
	ack, err := ReadAck(&buf, Limits{})
	if err != nil || len(ack.GetSeqs()) != 3 {
		t.Fatalf("ReadAck = %v, %v", ack, err)
	}

	// The package-level helpers speak the same format.
	buf.Reset()
	if err := WriteBatch(&buf, b); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadBatch(&buf, Limits{}); err != nil || !proto.Equal(got, b) {
		t.Fatalf("ReadBatch = %v, %v", got, err)
	}
}

func TestFrameLimits(t *testing.T) {
	small := Limits{MaxFrameBytes: 1 << 10, MaxDecodedBytes: 8 << 10}
	c, err := NewCodec(small)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	big := &api.Batch{AgentId: "a-1", Records: makeRecords(500, nil)}
	bigRaw, err := proto.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.EncodeBatch(big); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("EncodeBatch over the limits: %v, want ErrFrameTooLarge", err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty input", nil},
		{"short header", []byte{0, 0, 1}},
		{"header over limit", header(small.MaxFrameBytes + 1)},
		{"header at 4 GiB", []byte{0xff, 0xff, 0xff, 0xff}},
		{"truncated payload", append(header(10), 1, 2, 3)},
		{"empty frame", header(0)},
		{"not zstd", frameOf([]byte("definitely not zstd"))},
		{"decodes over MaxDecodedBytes", frameOf(enc.EncodeAll(bigRaw, nil))},
		{"not protobuf", frameOf(enc.EncodeAll([]byte{0xff, 0xff, 0xff}, nil))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.ReadBatch(bytes.NewReader(tc.data)); !errors.Is(err, ErrBadFrame) {
				t.Fatalf("ReadBatch: %v, want ErrBadFrame", err)
			}
		})
	}
	if _, err := ReadAck(bytes.NewReader(frameOf([]byte{0xff})), small); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("ReadAck of garbage: %v, want ErrBadFrame", err)
	}
	// An I/O failure is not the peer's frame's fault.
	if _, err := c.ReadBatch(io.MultiReader(bytes.NewReader([]byte{0}), errReader{})); err == nil || errors.Is(err, ErrBadFrame) {
		t.Fatalf("ReadBatch on a failing reader: %v, want a non-frame error", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }

// fuzzLimits keep each fuzz iteration cheap.
var fuzzLimits = Limits{MaxFrameBytes: 256 << 10, MaxDecodedBytes: 1 << 20}

func FuzzReadBatch(f *testing.F) {
	c, err := NewCodec(fuzzLimits)
	if err != nil {
		f.Fatal(err)
	}
	good, err := c.EncodeBatch(&api.Batch{AgentId: "a-1", Records: makeRecords(5, nil), Gaps: []*api.Gap{{Count: 2}}, Health: &api.AgentHealth{Drops: map[string]uint64{"x": 1}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(header(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(frameOf([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := c.ReadBatch(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error does not wrap ErrBadFrame: %v", err)
			}
			return
		}
		if _, err := proto.Marshal(b); err != nil {
			t.Fatalf("decoded batch does not marshal: %v", err)
		}
	})
}

func FuzzReadAck(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteAck(&buf, &api.Ack{Seqs: []uint64{1, 1 << 40, 7}, Error: "refused"}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(header(0))
	f.Add(header(3))
	f.Add([]byte{0, 0, 0, 2, 0x0a, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ReadAck(bytes.NewReader(data), fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error does not wrap ErrBadFrame: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteAck(&out, a); err != nil {
			t.Fatal(err)
		}
		again, err := ReadAck(&out, fuzzLimits)
		if err != nil || !proto.Equal(a, again) {
			t.Fatalf("ack does not round-trip: %v, %v", again, err)
		}
	})
}

// TestEncodeRawBatch holds raw records to their decoded form: a batch
// encoded from marshaled records (with or without a seq of their own) reads
// back as the batch with those records decoded and their seqs set.
func TestEncodeRawBatch(t *testing.T) {
	c, err := NewCodec(Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recs := makeRecords(40, nil)
	tests := []struct {
		name string
		// stored: how the source keeps record r.
		stored func(r *api.Record) *api.Record
		head   *api.Batch
	}{
		{"payload without seq", func(r *api.Record) *api.Record {
			r = proto.Clone(r).(*api.Record)
			r.Seq = 0
			return r
		}, &api.Batch{AgentId: "a-1", SpoolId: "0123456789abcdef0123456789abcdef"}},
		{"payload with another seq", func(r *api.Record) *api.Record {
			r = proto.Clone(r).(*api.Record)
			r.Seq = 99999
			return r
		}, &api.Batch{AgentId: "a-1", Gaps: []*api.Gap{{FirstSeq: 1, LastSeq: 2, Count: 2}}}},
		{"decoded records first", func(r *api.Record) *api.Record { return r },
			&api.Batch{AgentId: "a-1", Records: makeRecords(3, nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := proto.Clone(tt.head).(*api.Batch)
			var raws []RawRecord
			for i, r := range recs {
				b, err := proto.Marshal(tt.stored(r))
				if err != nil {
					t.Fatal(err)
				}
				seq := uint64(1000 + i)
				raws = append(raws, RawRecord{Seq: seq, Payload: b})
				r = proto.Clone(r).(*api.Record)
				r.Seq = seq
				want.Records = append(want.Records, r)
			}
			frame, err := c.EncodeRawBatch(tt.head, raws)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.ReadBatch(bytes.NewReader(frame))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("decoded %v\nwant %v", got, want)
			}
		})
	}
}
