package proc

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"
)

func TestPackArgs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		limit     int
		want      []string
		truncated bool
	}{
		{"none", nil, 16, nil, false},
		{"fits", []string{"ls", "-l"}, 16, []string{"ls", "-l"}, false},
		{"exactly fits", []string{"ls", "-l"}, 6, []string{"ls", "-l"}, false},
		{"empty args kept", []string{"a", "", "b"}, 16, []string{"a", "", "b"}, false},
		{"partial last arg", []string{"echo", "hello world"}, 10, []string{"echo", "hell"}, true},
		{"drops the rest", []string{"cp", "aaaa", "bbbb"}, 9, []string{"cp", "aaaa"}, true},
		{"no room for partial", []string{"cp", "aaaa", "bbbb"}, 8, []string{"cp", "aaaa"}, true},
		{"first arg too long", []string{"abcdefgh"}, 4, []string{"abc"}, true},
		// "é" is two bytes; a cut inside it would leave invalid UTF-8.
		{"rune boundary", []string{"aéé"}, 5, []string{"aé"}, true},
		{"rune boundary at start", []string{"éé"}, 2, nil, true},
		{"flood of empty args", slices.Repeat([]string{""}, 1000), 8, slices.Repeat([]string{""}, 8), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			packed, truncated := packArgs(tt.args, tt.limit)
			if len(packed) > tt.limit {
				t.Errorf("packed %d bytes, limit %d", len(packed), tt.limit)
			}
			if truncated != tt.truncated {
				t.Errorf("truncated = %v, want %v", truncated, tt.truncated)
			}
			got := unpackArgs(packed)
			if !slices.Equal(got, tt.want) {
				t.Errorf("args = %q, want %q", got, tt.want)
			}
			for _, a := range got {
				if !utf8.ValidString(a) {
					t.Errorf("arg %q is not valid UTF-8", a)
				}
			}
		})
	}
}

func TestPackArgsCopies(t *testing.T) {
	// The cache must not pin the caller's (possibly huge) buffers.
	big := strings.Repeat("x", 1<<20)
	packed, _ := packArgs([]string{big[:3]}, 64)
	if packed != "xxx\x00" {
		t.Fatalf("packed = %q", packed)
	}
	start := uintptr(unsafe.Pointer(unsafe.StringData(big)))
	if p := uintptr(unsafe.Pointer(unsafe.StringData(packed))); p >= start && p < start+uintptr(len(big)) {
		t.Fatal("packed args alias the caller's buffer")
	}
}

func TestToProcess(t *testing.T) {
	boot := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	e := Entry{
		Tgid: 42, Ppid: 1, Uid: 1000, Gid: 100, Euid: 0, Egid: 0,
		Comm: "su", Exe: "/usr/bin/su", Cwd: "/home/u", Args: []string{"su", "-"},
		ArgsTruncated: true, StartBootNs: 3 * uint64(time.Second),
		ExeOrigin: ExeOrigin{Memfd: true, Deleted: true},
	}
	p := e.ToProcess(boot)
	if p.GetPid() != 42 || p.GetTgid() != 42 || p.GetPpid() != 1 || p.GetUid() != 1000 || p.GetGid() != 100 ||
		p.GetEuid() != 0 || p.GetComm() != "su" || p.GetExe() != "/usr/bin/su" || p.GetCwd() != "/home/u" ||
		!slices.Equal(p.GetArgs(), e.Args) || !p.GetArgsTruncated() {
		t.Errorf("ToProcess = %v", p)
	}
	if got, want := p.GetStartTime().AsTime(), boot.Add(3*time.Second); !got.Equal(want) {
		t.Errorf("start time = %v, want %v", got, want)
	}
	if o := p.GetExeOrigin(); !o.GetMemfd() || !o.GetDeleted() || o.GetOverlayUpper() {
		t.Errorf("exe origin = %v", o)
	}
	if p := (&Entry{Tgid: 7}).ToProcess(boot); p.GetExeOrigin() != nil || p.GetStartTime() != nil {
		t.Errorf("zero entry: origin %v, start %v; want nil, nil", p.GetExeOrigin(), p.GetStartTime())
	}

	chain := []Entry{{Tgid: 2, Exe: "/bin/sh", Args: []string{"sh"}, Uid: 5, StartBootNs: 1}, {Tgid: 1, Exe: "/sbin/init"}}
	anc := ToAncestry(chain, boot)
	if len(anc) != 2 || anc[0].GetPid() != 2 || anc[0].GetExe() != "/bin/sh" || anc[0].GetUid() != 5 ||
		!slices.Equal(anc[0].GetArgs(), []string{"sh"}) || anc[0].GetStartTime() == nil ||
		anc[1].GetPid() != 1 || anc[1].GetStartTime() != nil {
		t.Errorf("ToAncestry = %v", anc)
	}
	if ToAncestry(nil, boot) != nil {
		t.Error("ToAncestry(nil) != nil")
	}
}
