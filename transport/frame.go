package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// Frame limits used when Limits leaves a field zero.
const (
	DefaultMaxFrameBytes   = 8 << 20
	DefaultMaxDecodedBytes = 64 << 20
)

const (
	frameHeaderBytes = 4
	// initialReadBuffer bounds what a frame header alone can make the reader
	// allocate; the buffer then grows with the bytes that actually arrive.
	initialReadBuffer = 64 << 10
)

var (
	// ErrBadFrame is wrapped by every error caused by what the peer sent: a
	// truncated, oversized, undecompressable or unparsable frame.
	ErrBadFrame = errors.New("bad frame")
	// ErrFrameTooLarge is returned when a message to be sent would exceed the
	// limits; the caller should send fewer records.
	ErrFrameTooLarge = errors.New("frame too large")
)

// Limits bound what one frame may cost the receiver.
type Limits struct {
	// MaxFrameBytes is the largest frame payload accepted on the wire
	// (compressed, for batches). Default DefaultMaxFrameBytes.
	MaxFrameBytes int
	// MaxDecodedBytes is the largest decompressed batch. Default
	// DefaultMaxDecodedBytes.
	MaxDecodedBytes int
}

func (l Limits) withDefaults() Limits {
	if l.MaxFrameBytes <= 0 {
		l.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if l.MaxDecodedBytes <= 0 {
		l.MaxDecodedBytes = DefaultMaxDecodedBytes
	}
	return l
}

// Codec reads and writes frames with one reusable zstd encoder and decoder.
// It is safe for concurrent use. Long-lived callers (Server, Client) keep one;
// building zstd state per frame costs far more than the frame.
type Codec struct {
	limits Limits
	enc    *zstd.Encoder
	dec    *zstd.Decoder
	// Field numbers of Batch.records and Record.seq, for raw records.
	recordsField, seqField protowire.Number
}

// NewCodec returns a Codec enforcing l (zero fields take the defaults).
func NewCodec(l Limits) (*Codec, error) {
	l = l.withDefaults()
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		// The agent sends one batch at a time; one encoder keeps its memory small.
		zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		// Caps both the declared and the actual decoded size, so a small
		// frame cannot expand into unbounded memory.
		zstd.WithDecoderMaxMemory(uint64(l.MaxDecodedBytes)),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Codec{
		limits: l, enc: enc, dec: dec,
		recordsField: (&api.Batch{}).ProtoReflect().Descriptor().Fields().ByName("records").Number(),
		seqField:     (&api.Record{}).ProtoReflect().Descriptor().Fields().ByName("seq").Number(),
	}, nil
}

// Limits returns the limits the codec enforces.
func (c *Codec) Limits() Limits { return c.limits }

// Close releases the zstd state.
func (c *Codec) Close() {
	c.dec.Close()
	_ = c.enc.Close()
}

// EncodeBatch returns b as one complete frame (header included), or an error
// wrapping ErrFrameTooLarge when it exceeds the codec's limits.
func (c *Codec) EncodeBatch(b *api.Batch) ([]byte, error) { return c.EncodeRawBatch(b, nil) }

// EncodeRawBatch is EncodeBatch with raw records after b's own. The bytes decode
// as b with those records appended: a repeated field may come in any number
// of runs, and a scalar given twice takes its last value, so seq appended to
// a marshaled Record sets it.
func (c *Codec) EncodeRawBatch(b *api.Batch, raws []RawRecord) ([]byte, error) {
	size := proto.Size(b)
	for _, r := range raws {
		n := r.size(c.seqField)
		size += protowire.SizeTag(c.recordsField) + protowire.SizeBytes(n)
	}
	raw, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, size), b)
	if err != nil {
		return nil, fmt.Errorf("marshal batch: %w", err)
	}
	for _, r := range raws {
		raw = protowire.AppendTag(raw, c.recordsField, protowire.BytesType)
		raw = protowire.AppendVarint(raw, uint64(r.size(c.seqField)))
		raw = append(raw, r.Payload...)
		raw = protowire.AppendTag(raw, c.seqField, protowire.VarintType)
		raw = protowire.AppendVarint(raw, r.Seq)
	}
	if len(raw) > c.limits.MaxDecodedBytes {
		return nil, fmt.Errorf("%w: batch of %d bytes exceeds the decoded limit of %d", ErrFrameTooLarge, len(raw), c.limits.MaxDecodedBytes)
	}
	frame := make([]byte, frameHeaderBytes, frameHeaderBytes+len(raw)/2+64)
	frame = c.enc.EncodeAll(raw, frame)
	n := len(frame) - frameHeaderBytes
	if n > c.limits.MaxFrameBytes {
		return nil, fmt.Errorf("%w: compressed batch of %d bytes exceeds the frame limit of %d", ErrFrameTooLarge, n, c.limits.MaxFrameBytes)
	}
	binary.BigEndian.PutUint32(frame, uint32(n))
	return frame, nil
}

// WriteBatch writes b as one zstd-compressed protobuf frame.
func (c *Codec) WriteBatch(w io.Writer, b *api.Batch) error {
	frame, err := c.EncodeBatch(b)
	if err != nil {
		return err
	}
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("write batch frame: %w", err)
	}
	return nil
}

// ReadBatch reads one batch frame. Errors caused by the frame's content wrap
// ErrBadFrame; I/O errors (reset, deadline, closed connection) do not.
func (c *Codec) ReadBatch(r io.Reader) (*api.Batch, error) {
	payload, err := readFrame(r, c.limits.MaxFrameBytes)
	if err != nil {
		return nil, err
	}
	if len(payload) == 0 {
		return nil, fmt.Errorf("%w: empty batch frame", ErrBadFrame)
	}
	raw, err := c.dec.DecodeAll(payload, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %w", ErrBadFrame, err)
	}
	b := new(api.Batch)
	if err := proto.Unmarshal(raw, b); err != nil {
		return nil, fmt.Errorf("%w: batch protobuf: %w", ErrBadFrame, err)
	}
	return b, nil
}

// WriteBatch writes b with a throwaway Codec; callers writing more than one
// batch should keep a Codec instead.
func WriteBatch(w io.Writer, b *api.Batch) error {
	c, err := NewCodec(Limits{})
	if err != nil {
		return err
	}
	defer c.Close()
	return c.WriteBatch(w, b)
}

// ReadBatch reads one batch with a throwaway Codec enforcing l; callers
// reading more than one batch should keep a Codec instead.
func ReadBatch(r io.Reader, l Limits) (*api.Batch, error) {
	c, err := NewCodec(l)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ReadBatch(r)
}

// WriteAck writes a as one plain protobuf frame: acks are small and not
// worth compressing.
func WriteAck(w io.Writer, a *api.Ack) error { return writePlain(w, "ack", a) }

// ReadAck reads one ack frame of at most l.MaxFrameBytes.
func ReadAck(r io.Reader, l Limits) (*api.Ack, error) {
	a := new(api.Ack)
	return a, readPlain(r, l, "ack", a)
}

// WriteControl writes c as one plain protobuf frame (backend → agent).
func WriteControl(w io.Writer, c *api.Control) error { return writePlain(w, "control", c) }

// ReadControl reads one control frame of at most l.MaxFrameBytes.
func ReadControl(r io.Reader, l Limits) (*api.Control, error) {
	c := new(api.Control)
	return c, readPlain(r, l, "control", c)
}

// WriteControlAck writes a as one plain protobuf frame (agent → backend).
func WriteControlAck(w io.Writer, a *api.ControlAck) error { return writePlain(w, "control ack", a) }

// ReadControlAck reads one control ack frame of at most l.MaxFrameBytes.
func ReadControlAck(r io.Reader, l Limits) (*api.ControlAck, error) {
	a := new(api.ControlAck)
	return a, readPlain(r, l, "control ack", a)
}

// writePlain writes m as one uncompressed frame; what names it in errors.
func writePlain(w io.Writer, what string, m proto.Message) error {
	raw, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", what, err)
	}
	frame := make([]byte, frameHeaderBytes, frameHeaderBytes+len(raw))
	binary.BigEndian.PutUint32(frame, uint32(len(raw)))
	frame = append(frame, raw...)
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("write %s frame: %w", what, err)
	}
	return nil
}

// readPlain reads one uncompressed frame into m.
func readPlain(r io.Reader, l Limits, what string, m proto.Message) error {
	payload, err := readFrame(r, l.withDefaults().MaxFrameBytes)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return fmt.Errorf("%w: %s protobuf: %w", ErrBadFrame, what, err)
	}
	return nil
}

func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [frameHeaderBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, readError("frame header", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("%w: frame of %d bytes exceeds the limit of %d", ErrBadFrame, n, limit)
	}
	// Grow with the data received rather than trusting the header, so a peer
	// announcing large frames on many streams cannot make us allocate them.
	var buf bytes.Buffer
	buf.Grow(min(int(n), initialReadBuffer))
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		return nil, readError(fmt.Sprintf("frame payload (%d of %d bytes)", buf.Len(), n), err)
	}
	return buf.Bytes(), nil
}

// readError tells a frame cut short by its sender (a bad frame) from a
// transport failure (reset stream, deadline, closed connection).
func readError(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated %s", ErrBadFrame, what)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// expectEOF checks that the peer ended its direction right after the frame:
// one frame per stream direction.
func expectEOF(r io.Reader) error {
	var one [1]byte
	n, err := io.ReadFull(r, one[:])
	switch {
	case n > 0:
		return fmt.Errorf("%w: data after the frame", ErrBadFrame)
	case errors.Is(err, io.EOF):
		return nil
	default:
		return fmt.Errorf("read end of stream: %w", err)
	}
}
