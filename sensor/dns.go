package sensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// dnsQuestion is the part of a DNS query the sensor reports.
type dnsQuestion struct {
	ID    uint16
	Name  string
	QType uint16
}

// errDNS wraps every reason a payload is not a well-formed DNS query.
var errDNS = errors.New("malformed DNS query")

const (
	dnsHeaderSize = 12
	// dnsMaxName is the longest name on the wire (RFC 1035 2.3.4), and so
	// also bounds how many labels and pointers a parse can visit.
	dnsMaxName  = 255
	dnsMaxLabel = 63
)

// parseDNSQuery decodes the header and the first question of a DNS query
// from the (possibly truncated) payload the kernel copied. It reads only
// within b, and compression pointers must point strictly backwards, so a
// crafted packet cannot make it loop: each hop lowers the offset.
func parseDNSQuery(b []byte) (dnsQuestion, error) {
	var q dnsQuestion
	if len(b) < dnsHeaderSize {
		return q, fmt.Errorf("%w: %d bytes, shorter than the header", errDNS, len(b))
	}
	q.ID = binary.BigEndian.Uint16(b[0:])
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&0x8000 != 0 {
		return q, fmt.Errorf("%w: a response, not a query", errDNS)
	}
	if qd := binary.BigEndian.Uint16(b[4:]); qd == 0 {
		return q, fmt.Errorf("%w: no question", errDNS)
	}
	var name strings.Builder
	off := dnsHeaderSize
	// end is where the question continues after the name: the byte after
	// its terminating zero, or after the first compression pointer.
	end := -1
	// limit is the offset every later position must stay below once a
	// pointer has been followed.
	limit := len(b)
	wire := 0
	for {
		if off >= limit {
			return q, fmt.Errorf("%w: name runs past the data at offset %d", errDNS, off)
		}
		l := int(b[off])
		switch {
		case l == 0:
			if end < 0 {
				end = off + 1
			}
			if name.Len() == 0 {
				name.WriteByte('.')
			}
			if end+4 > len(b) {
				return q, fmt.Errorf("%w: question truncated after the name", errDNS)
			}
			q.Name = name.String()
			q.QType = binary.BigEndian.Uint16(b[end:])
			return q, nil
		case l&0xc0 == 0xc0:
			if off+1 >= limit {
				return q, fmt.Errorf("%w: truncated compression pointer at %d", errDNS, off)
			}
			target := int(binary.BigEndian.Uint16(b[off:]) & 0x3fff)
			if target >= off || target < dnsHeaderSize {
				return q, fmt.Errorf("%w: compression pointer at %d to %d does not point back into the questions", errDNS, off, target)
			}
			if end < 0 {
				end = off + 2
			}
			limit = off
			off = target
		case l&0xc0 != 0:
			return q, fmt.Errorf("%w: reserved label type %#x at %d", errDNS, l&0xc0, off)
		default:
			if l > dnsMaxLabel {
				return q, fmt.Errorf("%w: label of %d bytes", errDNS, l)
			}
			if off+1+l > limit {
				return q, fmt.Errorf("%w: label at %d runs past the data", errDNS, off)
			}
			wire += l + 1
			if wire+1 > dnsMaxName {
				return q, fmt.Errorf("%w: name longer than %d bytes", errDNS, dnsMaxName)
			}
			if name.Len() > 0 {
				name.WriteByte('.')
			}
			name.Write(b[off+1 : off+1+l])
			off += 1 + l
		}
	}
}
