package analytics

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

func ppid(n uint32) evOpt { return func(e *api.Event) { e.Process.Ppid = n } }

// A decoder and a stdin shell of the same parent, in either order and
// within the window, are one pipeline; anything else is not.
func TestBase64Pipe(t *testing.T) {
	ctr := inContainer("c0ffee")
	decode := func(opts ...evOpt) *api.Event {
		return execEv("/bin/busybox", []string{"base64", "-d"}, append([]evOpt{ctr, pid(11)}, opts...)...)
	}
	shell := func(args []string, opts ...evOpt) *api.Event {
		return execEv("/bin/busybox", args, append([]evOpt{ctr, pid(12)}, opts...)...)
	}
	tests := []struct {
		name string
		evs  []*api.Event
		want bool
	}{
		{"decoder then sh", []*api.Event{decode(), shell([]string{"sh"})}, true},
		{"sh then decoder", []*api.Event{shell([]string{"sh"}), decode()}, true},
		{"bash -s", []*api.Event{decode(), shell([]string{"bash", "-s"})}, true},
		{"openssl base64 -d", []*api.Event{execEv("/usr/bin/openssl", []string{"openssl", "base64", "-d"}, ctr), shell([]string{"sh"})}, true},
		{"decoder and a script", []*api.Event{decode(), shell([]string{"sh", "/opt/build.sh"})}, false},
		{"decoder and sh -c", []*api.Event{decode(), shell([]string{"sh", "-ec", "make"})}, false},
		{"encoder and sh", []*api.Event{execEv("/bin/busybox", []string{"base64"}, ctr), shell([]string{"sh"})}, false},
		{"other parents", []*api.Event{decode(ppid(7)), shell([]string{"sh"}, ppid(8))}, false},
		{"other containers", []*api.Event{decode(), shell([]string{"sh"}, inContainer("beef"))}, false},
		{"a minute apart", []*api.Event{decode(), shell([]string{"sh"}, at(time.Minute))}, false},
		{"two decoders", []*api.Event{decode(), decode()}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, alerts := run(newTestEngine(t, Config{}), tc.evs...)
			if got := slices.Contains(ids, string(api.DetectionBase64Pipe)); got != tc.want {
				t.Fatalf("base64-pipe = %v, want %v (alerts %v)", got, tc.want, ids)
			}
			if tc.want {
				for _, a := range alerts {
					if a.GetDetectionId() == string(api.DetectionBase64Pipe) && len(a.GetEvidence()) != 2 {
						t.Errorf("evidence %d events, want the decoder and the shell", len(a.GetEvidence()))
					}
				}
			}
		})
	}
}

// A shell loop of short-lived processes, one connect each, scans as one; the
// same connects from children of a service manager do not.
func TestNetworkScanByChildren(t *testing.T) {
	for _, tc := range []struct {
		parent string
		want   bool
	}{{"/bin/sh", true}, {"/usr/bin/python3", true}, {"/usr/lib/systemd/systemd", false}} {
		t.Run(tc.parent, func(t *testing.T) {
			var evs []*api.Event
			for i := range 25 {
				evs = append(evs, connectEv("/bin/nc", "10.0.0.5", uint32(20000+i), -111, pid(uint32(5000+i)),
					parents(tc.parent), at(time.Duration(i)*100*time.Millisecond)))
			}
			ids, _ := run(newTestEngine(t, Config{}), evs...)
			if got := slices.Contains(ids, string(api.DetectionNetworkScan)); got != tc.want {
				t.Errorf("network-scan = %v, want %v (alerts %v)", got, tc.want, ids)
			}
		})
	}
}

// Five different discovery commands from one parent within seconds are a
// burst; fewer, repeats, other parents, a slow typist or an installer are not.
func TestReconBurst(t *testing.T) {
	ctr := inContainer("c0ffee")
	burst := func(names []string, step time.Duration, opts ...evOpt) []*api.Event {
		var evs []*api.Event
		for i, n := range names {
			evs = append(evs, execEv("/bin/busybox", []string{n}, append([]evOpt{ctr, ppid(40), at(time.Duration(i) * step)}, opts...)...))
		}
		return evs
	}
	six := []string{"whoami", "id", "uname", "hostname", "ifconfig", "netstat"}
	tests := []struct {
		name string
		evs  []*api.Event
		want bool
	}{
		{"six at once", burst(six, 20*time.Millisecond), true},
		{"four at once", burst(six[:4], 20*time.Millisecond), false},
		{"one repeated", burst([]string{"id", "id", "id", "id", "id", "uname"}, 20*time.Millisecond), false},
		{"typed over a minute", burst(six, 12*time.Second), false},
		{"from an installer", burst(six, 20*time.Millisecond, parents("/bin/sh", "/usr/bin/dpkg")), false},
		{"other parents", func() []*api.Event {
			evs := burst(six, 20*time.Millisecond)
			for i, e := range evs {
				e.Process.Ppid = uint32(100 + i)
			}
			return evs
		}(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, alerts := run(newTestEngine(t, Config{}), tc.evs...)
			if got := slices.Contains(ids, string(api.DetectionReconBurst)); got != tc.want {
				t.Fatalf("recon-burst = %v, want %v (alerts %v)", got, tc.want, ids)
			}
			for _, a := range alerts {
				if a.GetDetectionId() == string(api.DetectionReconBurst) && len(a.GetEvidence()) != reconThreshold {
					t.Errorf("evidence %d events, want the %d commands", len(a.GetEvidence()), reconThreshold)
				}
			}
		})
	}
}

// The proxy list takes IPs and CIDRs; anything else is an error naming the
// file and line, and the control plane's own requests never match.
func TestProxyAddressList(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(good, []byte("# exits\n198.51.100.7\n203.0.113.0/24 # a VPN\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("198.51.100.7\nexit.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadProxyAddresses([]string{bad}, nil); err == nil || !strings.Contains(err.Error(), bad+":2") {
		t.Fatalf("bad list: error %v, want one naming %s:2", err, bad)
	}
	e := newTestEngine(t, Config{ProxyAddressFiles: []string{good}})
	req := func(user, ip string) *api.Event {
		return &api.Event{Kind: api.EventKind_EVENT_KIND_AUDIT, Time: timestamppb.New(t0),
			Detail: &api.Event_Audit{Audit: &api.Audit{User: user, Verb: "get", Resource: "secrets", Namespace: "default",
				Name: "db-" + ip, SourceIps: []string{ip}, Code: 200}}}
	}
	for _, tc := range []struct {
		user, ip string
		want     bool
	}{
		{"mallory", "203.0.113.9", true},
		{"mallory", "198.51.100.7", true},
		{"mallory", "198.51.100.8", false},
		{"system:apiserver", "203.0.113.9", false},
	} {
		ids, _ := run(e, req(tc.user, tc.ip))
		if got := slices.Contains(ids, string(api.DetectionAPIFromProxy)); got != tc.want {
			t.Errorf("%s from %s: api-from-proxy %v, want %v", tc.user, tc.ip, got, tc.want)
		}
	}
}
