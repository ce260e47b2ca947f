package sensor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// dnsQueryBytes builds a query for name (dot separated) the way a stub
// resolver does.
func dnsQueryBytes(id uint16, name string, qtype uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD, QDCOUNT 1
	if name != "." {
		for label := range strings.SplitSeq(name, ".") {
			b = append(b, byte(len(label)))
			b = append(b, label...)
		}
	}
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, qtype)
	return binary.BigEndian.AppendUint16(b, 1) // IN
}

func TestParseDNSQuery(t *testing.T) {
	good := dnsQueryBytes(0xbeef, "harrier-test.example", 28)
	tests := []struct {
		name     string
		in       []byte
		wantName string
		wantType uint16
		wantErr  bool
	}{
		{"AAAA query", good, "harrier-test.example", 28, false},
		{"root", dnsQueryBytes(7, ".", 2), ".", 2, false},
		{"truncated to the header", good[:12], "", 0, true},
		{"shorter than the header", good[:5], "", 0, true},
		{"empty", nil, "", 0, true},
		{"name cut in a label", good[:20], "", 0, true},
		{"qtype missing", good[:len(good)-4], "", 0, true},
		{"response bit set", func() []byte { b := []byte(string(good)); b[2] |= 0x80; return b }(), "", 0, true},
		{"no question", func() []byte { b := []byte(string(good)); b[5] = 0; return b }(), "", 0, true},
		{"pointer to itself", append(dnsQueryBytes(1, ".", 1)[:12], 0xc0, 12, 0, 1, 0, 1), "", 0, true},
		{"pointer forward", append(dnsQueryBytes(1, ".", 1)[:12], 0xc0, 14, 0, 0, 1, 0, 1), "", 0, true},
		// The first name can only point back into itself, which would loop.
		{"pointer back into the same name", append(dnsQueryBytes(1, ".", 1)[:12], 1, 'a', 0xc0, 12, 0, 1, 0, 1), "", 0, true},
		{"pointer into the header", append(dnsQueryBytes(1, ".", 1)[:12], 0xc0, 2, 0, 1, 0, 1), "", 0, true},
		{"reserved label type", append(dnsQueryBytes(1, ".", 1)[:12], 0x40, 0, 1, 0, 1), "", 0, true},
		{"label over 63 bytes", dnsQueryBytes(1, strings.Repeat("a", 64), 1), "", 0, true},
		{"name over 255 bytes", dnsQueryBytes(1, strings.Repeat(strings.Repeat("a", 60)+".", 5)+"x", 1), "", 0, true},
		{"name of 253 characters, the longest", dnsQueryBytes(1, strings.Repeat(strings.Repeat("a", 62)+".", 4)+"x", 1),
			strings.Repeat(strings.Repeat("a", 62)+".", 4) + "x", 1, false},
		{"label of 63 bytes", dnsQueryBytes(1, strings.Repeat("a", 63), 16), strings.Repeat("a", 63), 16, false},
		{"case and odd bytes kept", dnsQueryBytes(1, "ExAmple.\x00\xff", 1), "ExAmple.\x00\xff", 1, false},
		// A dot inside a label would make the name ambiguous.
		{"label holding a dot", append(dnsQueryBytes(1, ".", 1)[:12], 3, 'a', '.', 'b', 0, 0, 1, 0, 1), "", 0, true},
		// A pointer forward to a well-formed name is still not a query a resolver writes.
		{"pointer forward to a name", append(dnsQueryBytes(1, ".", 1)[:12], 0xc0, 14, 1, 'a', 0, 0, 1, 0, 1), "", 0, true},
		{"class missing", good[:len(good)-2], "", 0, true},
		{"trailing answers ignored", append(slices.Clone(good), 0xff, 0xff, 0xff), "harrier-test.example", 28, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := parseDNSQuery(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, errDNS) {
					t.Errorf("error %v does not wrap errDNS", err)
				}
				return
			}
			if q.Name != tt.wantName || q.QType != tt.wantType {
				t.Errorf("got %q type %d, want %q type %d", q.Name, q.QType, tt.wantName, tt.wantType)
			}
		})
	}
}

// FuzzParseDNSQuery: arbitrary payloads sent to port 53 must never panic,
// and what the parser accepts must be a bounded, marshalable name.
func FuzzParseDNSQuery(f *testing.F) {
	f.Add(dnsQueryBytes(0xbeef, "harrier-test.example", 1))
	f.Add(dnsQueryBytes(1, ".", 2))
	f.Add(append(dnsQueryBytes(1, ".", 1)[:12], 0xc0, 12, 0, 1, 0, 1))
	f.Add(append(dnsQueryBytes(1, "a", 1)[:15], 0xc0, 12, 0, 1, 0, 1))
	f.Add(append(dnsQueryBytes(1, ".", 1)[:12], 3, 'a', '.', 'b', 0, 0, 1, 0, 1))
	f.Add(append(dnsQueryBytes(1, ".", 1)[:12], 0xc0, 14, 1, 'a', 0, 0, 1, 0, 1))
	f.Add([]byte{})
	s := testSensor()
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := parseDNSQuery(b)
		if err != nil {
			if !errors.Is(err, errDNS) {
				t.Fatalf("error %v does not wrap errDNS", err)
			}
		} else {
			if q.Name == "" || len(q.Name) > dnsMaxName {
				t.Fatalf("accepted name of %d bytes", len(q.Name))
			}
			// What is accepted is exactly what the payload spells out:
			// the name written label by label, then the type.
			want := dnsQueryBytes(q.ID, q.Name, q.QType)
			if n := len(want) - 2; len(b) < n || !bytes.Equal(b[dnsHeaderSize:n], want[dnsHeaderSize:n]) {
				t.Fatalf("accepted %q type %d from a payload that does not spell it: %x", q.Name, q.QType, b)
			}
		}
		rec := record{Kind: kindDNSQuery, Tgid: 1}
		rec.Num[0], rec.Num[3] = afInet, 53
		rec.Str[0] = b
		if _, err := proto.Marshal(s.enrich(&rec)); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	})
}

// BenchmarkParseDNSQuery is the user-space cost of decoding one query.
func BenchmarkParseDNSQuery(b *testing.B) {
	raw := dnsQueryBytes(0xbeef, "harrier-test.example", 28)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseDNSQuery(raw); err != nil {
			b.Fatal(err)
		}
	}
}
