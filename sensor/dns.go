package sensor

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/net/dns/dnsmessage"
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
	// dnsMaxName is the longest name on the wire (RFC 1035 2.3.4).
	dnsMaxName = 255
)

// parseDNSQuery decodes the header and the first question of a DNS query
// from the (possibly truncated) payload the kernel copied; the rest of the
// message is not read. dnsmessage bounds the name (255 bytes, 63 a label, no
// dots inside a label) and the pointers it follows. A query's first name has
// no earlier name to point to, so a compression pointer in it can only lead
// into the header, into the name itself or past it: such a payload is
// rejected, as a resolver never writes one.
func parseDNSQuery(b []byte) (dnsQuestion, error) {
	var q dnsQuestion
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return q, fmt.Errorf("%w: %d bytes: %w", errDNS, len(b), err)
	}
	q.ID = h.ID
	if h.Response {
		return q, fmt.Errorf("%w: a response, not a query", errDNS)
	}
	question, err := p.Question()
	if errors.Is(err, dnsmessage.ErrSectionDone) {
		return q, fmt.Errorf("%w: no question", errDNS)
	}
	if err != nil {
		return q, fmt.Errorf("%w: question: %w", errDNS, err)
	}
	name := question.Name.Data[:question.Name.Length]
	if !writtenOut(b[dnsHeaderSize:], name) {
		return q, fmt.Errorf("%w: compression pointer in the first question", errDNS)
	}
	if len(name) > 1 {
		name = name[:len(name)-1] // the root keeps its "."; other names lose the final one
	}
	q.Name = string(name)
	q.QType = uint16(question.Type)
	return q, nil
}

// writtenOut reports whether questions starts with name (as dnsmessage
// gives it: dot-terminated, no dot inside a label) written out label by
// label up to its terminating zero, with no compression pointer.
func writtenOut(questions, name []byte) bool {
	off := 0
	for rest := name; len(rest) > 1; {
		n := bytes.IndexByte(rest, '.')
		if n <= 0 {
			return false
		}
		end := off + 1 + n
		if end > len(questions) || int(questions[off]) != n || !bytes.Equal(questions[off+1:end], rest[:n]) {
			return false
		}
		off, rest = end, rest[n+1:]
	}
	return off < len(questions) && questions[off] == 0
}
