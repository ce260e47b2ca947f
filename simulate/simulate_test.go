package simulate

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/api"
)

func TestParseScenarios(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: []string{"all"}, want: []string{"recon", "lateral", "secrets", "mining", "webshell", "threat-intel"}},
		{in: []string{"mining", "recon"}, want: []string{"recon", "mining"}},
		{in: []string{"recon", "recon"}, want: []string{"recon"}},
		{in: []string{"nope"}, wantErr: `unknown scenario "nope"`},
		{in: nil, wantErr: "no scenario"},
	} {
		got, err := ParseScenarios(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
		}
		if err != nil || !slices.Equal(names, tc.want) {
			t.Errorf("%v = %v, %v; want %v", tc.in, names, err, tc.want)
		}
	}
}

func query(name string, qtype uint16) []byte {
	q := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(name, ".") {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	q = append(q, 0)
	q = binary.BigEndian.AppendUint16(q, qtype)
	return append(q, 0, 1)
}

func TestDNSAnswer(t *testing.T) {
	victim := netip.MustParseAddr("10.213.3.2")
	for _, tc := range []struct {
		name    string
		q       []byte
		from    netip.Addr
		rcode   uint16
		answers uint16
		addr    string
	}{
		{"test domain", query(api.IOCTestDomain, 1), victim, 0, 1, "10.213.3.1"},
		{"under the test domain", query("c2."+api.IOCTestDomain, 1), victim, 0, 1, "10.213.3.1"},
		{"AAAA of the test domain", query(api.IOCTestDomain, 28), victim, 0, 0, ""},
		{"another name", query("example.org", 1), victim, 3, 0, ""},
		{"asker outside the sandbox", query(api.IOCTestDomain, 1), netip.MustParseAddr("192.0.2.1"), 0, 0, ""},
	} {
		resp, _, err := dnsAnswer(tc.q, tc.from)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if rc := binary.BigEndian.Uint16(resp[2:4]) & 0xf; rc != tc.rcode {
			t.Errorf("%s: rcode %d, want %d", tc.name, rc, tc.rcode)
		}
		if an := binary.BigEndian.Uint16(resp[6:8]); an != tc.answers {
			t.Errorf("%s: %d answers, want %d", tc.name, an, tc.answers)
		}
		if tc.addr != "" {
			got, _ := netip.AddrFromSlice(resp[len(resp)-4:])
			if got.String() != tc.addr {
				t.Errorf("%s: answer %v, want %s", tc.name, got, tc.addr)
			}
		}
	}
	if _, _, err := dnsAnswer([]byte{1, 2, 3}, victim); err == nil {
		t.Error("short packet accepted")
	}
}

func TestInjectEncodesEverything(t *testing.T) {
	u := inject("10.213.1.2", "cat /etc/x && echo 'a b'")
	if want := "http://10.213.1.2:8080/cgi-bin/ping?host=%3Bcat%20%2Fetc%2Fx%20%26%26%20echo%20%27a%20b%27"; u != want {
		t.Errorf("inject = %s, want %s", u, want)
	}
}
