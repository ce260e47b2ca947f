package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Payloads live in append-only segment files, one series per class:
//
//	segments/<class>-<first seq, 20 digits>.seg
//
// A segment is a run of frames with consecutive sequence numbers, starting
// at the seq in its name. A frame is
//
//	version(1) length(4) seq(8) appendedAt(8, unix ns) crc32c(4) payload
//
// (integers big-endian); the CRC covers the first 21 header bytes and the
// payload, so a torn or foreign tail is recognised and cut off at Open.
// Once every record of a segment is acknowledged or evicted the whole file
// is deleted: space comes back without compaction or garbage collection.
const (
	frameVersion   = 1
	frameHeaderLen = 1 + 4 + 8 + 8 + 4
	frameCRCOffset = frameHeaderLen - 4

	segmentDirName = "segments"
	segmentExt     = ".seg"

	// Segments are quota/64, between 64 KiB and 16 MiB: small enough that
	// evicting or deleting one is a fine-grained step, large enough that a
	// 1 GiB spool has at most a few hundred files.
	minSegmentBytes   = 64 << 10
	maxSegmentBytes   = 16 << 20
	segmentQuotaShare = 64
)

// crc32c is the Castagnoli table (hardware-accelerated on amd64 and arm64).
var crc32c = crc32.MakeTable(crc32.Castagnoli)

func segmentBytes(quota int64) int64 {
	return min(max(quota/segmentQuotaShare, minSegmentBytes), maxSegmentBytes)
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	length     uint32
	seq        uint64
	appendedAt int64 // unix ns
	crc        uint32
}

func (h frameHeader) size() int64 { return frameHeaderLen + int64(h.length) }

// appendFrame appends the frame of one record to dst.
func appendFrame(dst []byte, seq uint64, appendedAt int64, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, frameVersion)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(appendedAt))
	crc := crc32.Update(crc32.Checksum(dst[start:], crc32c), crc32c, payload)
	dst = binary.BigEndian.AppendUint32(dst, crc)
	return append(dst, payload...)
}

// decodeFrameHeader decodes a frame header read from disk. It checks what
// can be checked without the payload: version and length.
func decodeFrameHeader(b []byte, maxPayload int) (frameHeader, error) {
	if len(b) < frameHeaderLen {
		return frameHeader{}, fmt.Errorf("frame header of %d bytes: %w", len(b), errCorrupt)
	}
	if b[0] != frameVersion {
		return frameHeader{}, fmt.Errorf("frame version %d: %w", b[0], errCorrupt)
	}
	h := frameHeader{
		length:     binary.BigEndian.Uint32(b[1:]),
		seq:        binary.BigEndian.Uint64(b[5:]),
		appendedAt: int64(binary.BigEndian.Uint64(b[13:])),
		crc:        binary.BigEndian.Uint32(b[frameCRCOffset:]),
	}
	if int64(h.length) > int64(maxPayload) {
		return frameHeader{}, fmt.Errorf("frame payload of %d bytes over the limit %d: %w", h.length, maxPayload, errCorrupt)
	}
	return h, nil
}

// verifyFrame checks the CRC of a frame given its header bytes and payload.
func verifyFrame(h frameHeader, header, payload []byte) error {
	crc := crc32.Update(crc32.Checksum(header[:frameCRCOffset], crc32c), crc32c, payload)
	if crc != h.crc {
		return fmt.Errorf("frame seq %d: checksum mismatch: %w", h.seq, errCorrupt)
	}
	return nil
}

// segment is one segment file of a class.
type segment struct {
	first uint64 // seq of its first frame (and its name)
	end   uint64 // seq after its last frame
	// dataEnd is where its last frame ends; size is the file's length, which
	// is larger only if a failed write could not be cut back.
	dataEnd int64
	size    int64
}

func segmentName(c Class, first uint64) string {
	return fmt.Sprintf("%s-%020d%s", c, first, segmentExt)
}

// parseSegmentName parses a segment file name; ok is false for other files.
func parseSegmentName(name string) (Class, uint64, bool) {
	base, ok := strings.CutSuffix(name, segmentExt)
	if !ok {
		return 0, 0, false
	}
	cls, num, ok := strings.Cut(base, "-")
	if !ok || len(num) != 20 {
		return 0, 0, false
	}
	first, err := strconv.ParseUint(num, 10, 64)
	if err != nil || first == 0 {
		return 0, 0, false
	}
	for c := ClassAlert; c <= ClassEvent; c++ {
		if c.String() == cls {
			return c, first, true
		}
	}
	return 0, 0, false
}

// frameReader reads frames sequentially from a segment file.
type frameReader struct {
	br     *bufio.Reader
	off    int64 // offset of the next frame
	max    int
	header [frameHeaderLen]byte
}

func newFrameReader(f *os.File, off, limit int64, maxPayload int, buf *bufio.Reader) *frameReader {
	buf.Reset(io.NewSectionReader(f, off, limit-off))
	return &frameReader{br: buf, off: off, max: maxPayload}
}

// next reads the next frame. With withPayload it returns a verified copy of
// the payload; without, it skips the payload unverified (walking headers to
// find a record's position). io.EOF means a clean end; errCorrupt a torn or
// corrupt frame; anything else a failed read, which says nothing about the
// data and must not be taken for damage.
func (r *frameReader) next(withPayload bool) (frameHeader, []byte, error) {
	n, err := io.ReadFull(r.br, r.header[:])
	if err != nil {
		if errors.Is(err, io.EOF) && n == 0 {
			return frameHeader{}, nil, io.EOF
		}
		return frameHeader{}, nil, fmt.Errorf("frame header at offset %d: %w", r.off, shortRead(err))
	}
	h, err := decodeFrameHeader(r.header[:], r.max)
	if err != nil {
		return h, nil, fmt.Errorf("offset %d: %w", r.off, err)
	}
	var payload []byte
	if withPayload {
		payload = make([]byte, h.length)
		if _, err := io.ReadFull(r.br, payload); err != nil {
			return h, nil, fmt.Errorf("frame seq %d at offset %d: payload: %w", h.seq, r.off, shortRead(err))
		}
		if err := verifyFrame(h, r.header[:], payload); err != nil {
			return h, nil, fmt.Errorf("offset %d: %w", r.off, err)
		}
	} else if _, err := r.br.Discard(int(h.length)); err != nil {
		return h, nil, fmt.Errorf("frame seq %d at offset %d: payload: %w", h.seq, r.off, shortRead(err))
	}
	r.off += h.size()
	return h, payload, nil
}

// shortRead classifies a failed read inside a frame: the file ending early is
// a torn frame (errCorrupt); any other error is the read's own.
func shortRead(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("cut short: %w", errCorrupt)
	}
	return err
}

// nextAt reads the next frame, which must be seq want (frames run in
// sequence), and returns it with the offset it started at.
func (r *frameReader) nextAt(want uint64, withPayload bool) (frameHeader, []byte, int64, error) {
	start := r.off
	h, payload, err := r.next(withPayload)
	if err == nil && h.seq != want {
		err = fmt.Errorf("frame at offset %d has seq %d, want %d: %w", start, h.seq, want, errCorrupt)
	}
	return h, payload, start, err
}

// scanSegment reads a segment from the start and returns how far its valid
// frames reach: the seq after the last one and its end offset. It stops at
// the first frame that is torn, corrupt or out of sequence.
func scanSegment(path string, first uint64, maxPayload int, buf *bufio.Reader) (end uint64, dataEnd int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	r := newFrameReader(f, 0, st.Size(), maxPayload, buf)
	end = first
	for {
		if _, _, _, err := r.nextAt(end, true); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, errCorrupt) {
				return end, dataEnd, nil // the end, or a torn tail to cut
			}
			return end, dataEnd, fmt.Errorf("%s: %w", path, err)
		}
		end++
		dataEnd = r.off
	}
}

func segmentPath(dir string, c Class, first uint64) string {
	return filepath.Join(dir, segmentName(c, first))
}

// frameTime converts a frame's append time.
func frameTime(ns int64) time.Time { return time.Unix(0, ns) }
