package analytics

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// benchMix is a busy node's event stream: process churn of shells, daemons
// and tools (fork, exec, exit), reads of watched configuration by daemons,
// log appends, outbound connects and accepts — the events every rule sees
// and almost none matches. Shapes follow `harrier events` on a build host
// and a small web service.
func benchMix() []*api.Event {
	var evs []*api.Event
	ctr := func(i int) evOpt {
		return func(e *api.Event) {
			if i%3 != 0 {
				e.Container = &api.Container{Runtime: "containerd", Id: fmt.Sprintf("%064d", i%7), Image: "shop/web:1." + itoa(i%3)}
			}
		}
	}
	web := parents("/bin/sh", "/usr/bin/containerd-shim-runc-v2", "/sbin/init")
	build := parents("/usr/bin/make", "/bin/bash", "/usr/sbin/sshd", "/sbin/init")
	for i := 0; i < 200; i++ {
		d := at(time.Duration(i) * time.Millisecond)
		switch i % 20 {
		case 0, 1:
			evs = append(evs, execEv("/usr/bin/gcc", []string{"gcc", "-O2", "-c", "file" + itoa(i) + ".c", "-o", "file.o"}, build, d, cwd("/home/dev/src")))
		case 2:
			evs = append(evs, execEv("/bin/date", []string{"date", "+%s"}, parents("/usr/sbin/cron", "/sbin/init"), d))
		case 3:
			evs = append(evs, execEv("/usr/bin/wget", []string{"wget", "-q", "-O-", "http://127.0.0.1:8080/healthz"}, web, d, ctr(i)))
		case 4, 5:
			e := base(api.EventKind_EVENT_KIND_FORK, "/bin/bash", []string{"bash"}, []evOpt{build, d})
			e.Detail = &api.Event_Fork{Fork: &api.Fork{ChildPid: uint32(i), ChildTgid: uint32(i)}}
			evs = append(evs, e)
		case 6, 7:
			e := base(api.EventKind_EVENT_KIND_EXIT, "/usr/bin/gcc", []string{"gcc"}, []evOpt{build, d})
			e.Detail = &api.Event_Exit{Exit: &api.Exit{}}
			evs = append(evs, e)
		case 8:
			evs = append(evs, openEv("/usr/sbin/nginx", "/etc/passwd", false, d, ctr(i), parents("/usr/sbin/nginx")))
		case 9:
			evs = append(evs, openEv("/usr/sbin/nginx", "/var/log/nginx/access.log", true, d, ctr(i), parents("/usr/sbin/nginx")))
		case 10:
			evs = append(evs, openEv("/usr/bin/python3", "/etc/hosts", false, d, ctr(i), web))
		case 11:
			evs = append(evs, openEv("/usr/sbin/sshd", "/etc/ssh/sshd_config", false, d, parents("/sbin/init")))
		case 12:
			evs = append(evs, openEv("/bin/bash", "/home/dev/.bashrc", false, d, build))
		case 13, 14:
			evs = append(evs, connectEv("/usr/bin/python3", "10.96.12."+itoa(i%9), 5432, -115, d, ctr(i), web))
		case 15:
			evs = append(evs, connectEv("/usr/bin/curl", "203.0.113.7", 443, 0, d, build))
		case 16:
			e := base(api.EventKind_EVENT_KIND_ACCEPT, "/usr/sbin/nginx", []string{"nginx: worker process"}, []evOpt{d, ctr(i), parents("/usr/sbin/nginx")})
			e.Detail = &api.Event_Accept{Accept: &api.Accept{Local: &api.SocketAddress{Ip: "10.0.0.2", Port: 80}, Remote: &api.SocketAddress{Ip: "10.0.0.9", Port: 40000}, Protocol: api.Protocol_PROTOCOL_TCP, Result: 5}}
			evs = append(evs, e)
		case 17:
			evs = append(evs, execEv("/bin/ls", []string{"ls", "-la", "/var/www"}, build, d))
		case 18:
			evs = append(evs, execEv("/usr/bin/python3", []string{"python3", "manage.py", "runserver"}, web, d, ctr(i)))
		case 19:
			evs = append(evs, openEv("/usr/bin/git", "/home/dev/.gitconfig", false, d, build))
		}
	}
	return evs
}

// BenchmarkEngine is the engine's throughput with every built-in rule on a
// realistic mix; report events/s per core as 1e9/ns_op.
// processLoop is a benchmark's loop over evs. Beside the wall time it
// reports the process's CPU time per event (GC included), which holds
// still when the machine is shared with other jobs.
func processLoop(b *testing.B, e *Engine, evs []*api.Event) {
	emit := func(*api.Alert) {}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.CPUTime(b)
	for i := 0; b.Loop(); i++ {
		e.Process(evs[i%len(evs)], emit)
	}
	b.ReportMetric(float64(testenv.CPUTime(b)-cpu0)/float64(b.N), "cpu-ns/event")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkEngine(b *testing.B) {
	e := newTestEngine(b, Config{})
	evs := benchMix()
	emit := func(*api.Alert) {}
	// Warm the redaction cache and the dedup table as a running agent has.
	for _, ev := range evs {
		e.Process(ev, emit)
	}
	processLoop(b, e, evs)
}

// noMatchEvents is the part of the mix that no rule or detector matches.
func noMatchEvents(t testing.TB, e *Engine) []*api.Event {
	var out []*api.Event
	for _, ev := range benchMix() {
		matched := false
		e.Process(ev, func(*api.Alert) { matched = true })
		if !matched {
			out = append(out, ev)
		}
	}
	if len(out) < 100 {
		t.Fatalf("only %d no-match events in the mix", len(out))
	}
	return out
}

func BenchmarkEngineNoMatch(b *testing.B) {
	e := newTestEngine(b, Config{})
	evs := noMatchEvents(b, e)
	processLoop(b, e, evs)
}

// TestNoMatchPathAllocationFree pins the engine's promise: an event that
// matches nothing costs no allocation, whatever its kind.
func TestNoMatchPathAllocationFree(t *testing.T) {
	e := newTestEngine(t, Config{})
	evs := noMatchEvents(t, e)
	emit := func(*api.Alert) {}
	for _, ev := range evs {
		ev := ev
		if n := testing.AllocsPerRun(50, func() { e.Process(ev, emit) }); n != 0 {
			t.Errorf("%s %v: %.1f allocations per event", ev.GetKind(), ev.GetProcess().GetArgs(), n)
		}
	}
}

// BenchmarkEngineAudit is the engine's cost per audit event on a steady
// control-plane mix (known actors doing known things, controllers at work),
// with every built-in rule, and without the learned actor anomalies and the
// Postgres join, to show what they add.
func BenchmarkEngineAudit(b *testing.B) {
	var evs []*api.Event
	for i := range 200 {
		switch i % 8 {
		case 0:
			evs = append(evs, actorEv(ciSA, "create", "deployments", "shop", "web-"+itoa(i), 201, 0, deploymentObj("registry.local/shop/web:"+itoa(i))))
		case 1:
			evs = append(evs, actorEv(webSA, "get", "configmaps", "shop", "cfg", 200, 0, ""))
		case 2:
			evs = append(evs, actorEv(webSA, "get", "secrets", "shop", "db", 200, 0, ""))
		case 3:
			evs = append(evs, actorEv(rsCtrl, "create", "pods", "shop", "web-"+itoa(i), 201, 0, podObj("registry.local/shop/web:1")))
		case 4:
			evs = append(evs, actorEv("alice", "list", "pods", "shop", "", 200, 0, ""))
		case 5:
			evs = append(evs, actorEv("system:kube-controller-manager", "update", "configmaps", "kube-system", "leader", 200, 0,
				`{"kind":"ConfigMap","data":{"k":"v"}}`))
		case 6:
			evs = append(evs, actorEv("system:node:n1", "get", "secrets", "shop", "db", 200, 0, ""))
		case 7:
			evs = append(evs, actorEv("alice", "update", "services", "shop", "web", 200, 0,
				`{"kind":"Service","spec":{"type":"ClusterIP","selector":{"app":"web"}}}`))
		}
	}
	off := writeRules(b, `
rules:
  - {id: anomalous-pod-deployment, enabled: false}
  - {id: anomalous-secret-access, enabled: false}
  - {id: sa-permission-anomaly, enabled: false}
  - {id: exposed-postgres-trust, enabled: false}
  - {id: exposed-postgres-broad-range, enabled: false}
`)
	warm := func(b *testing.B, files ...string) *Engine {
		e := newTestEngine(b, Config{}, files...)
		for _, ev := range evs {
			e.Process(ev, func(*api.Alert) {})
		}
		return e
	}
	b.Run("built-in", func(b *testing.B) { processLoop(b, warm(b), evs) })
	b.Run("without-actor-anomalies-and-postgres", func(b *testing.B) { processLoop(b, warm(b, off), evs) })
	// paired runs both engines in alternating chunks of the mix and compares
	// the medians of their chunks: on a shared machine the load drifts
	// between two separate runs, but not within a few milliseconds.
	b.Run("paired", func(b *testing.B) {
		engines := []*Engine{warm(b), warm(b, off)}
		var chunks [2][]time.Duration
		emit := func(*api.Alert) {}
		for b.Loop() {
			for i, e := range engines {
				start := time.Now()
				for _, ev := range evs {
					e.Process(ev, emit)
				}
				chunks[i] = append(chunks[i], time.Since(start))
			}
		}
		median := func(d []time.Duration) float64 {
			slices.Sort(d)
			return float64(d[len(d)/2]) / float64(len(evs))
		}
		with, without := median(chunks[0]), median(chunks[1])
		b.ReportMetric(with, "built-in-ns/event")
		b.ReportMetric(without, "without-ns/event")
		b.ReportMetric(100*(with-without)/without, "added-%")
	})
}
