package analytics

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// t0 is the replay clock of the unit tests.
var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

type evOpt func(*api.Event)

func at(d time.Duration) evOpt { return func(e *api.Event) { e.Time = timestamppb.New(t0.Add(d)) } }

func inContainer(id string) evOpt {
	return func(e *api.Event) { e.Container = &api.Container{Runtime: "runc", Id: id} }
}

// privileged marks the event's container privileged (after inContainer).
func privileged(e *api.Event) { e.Container.Privileged = true }

func parents(exes ...string) evOpt {
	return func(e *api.Event) {
		for i, x := range exes {
			e.Ancestry = append(e.Ancestry, &api.Ancestor{Pid: uint32(100 - i), Exe: x, Args: []string{x}})
		}
	}
}

func pid(tgid uint32) evOpt { return func(e *api.Event) { e.Process.Tgid, e.Process.Pid = tgid, tgid } }

func cwd(d string) evOpt { return func(e *api.Event) { e.Process.Cwd = d } }

func origin(o *api.ExeOrigin) evOpt { return func(e *api.Event) { e.Process.ExeOrigin = o } }

func base(kind api.EventKind, exe string, args []string, opts []evOpt) *api.Event {
	e := &api.Event{Kind: kind, Time: timestamppb.New(t0), Node: "node-a",
		Process: &api.Process{Pid: 4242, Tgid: 4242, Ppid: 100, Exe: exe, Args: args, Comm: baseName(exe), Cwd: "/"}}
	for _, o := range opts {
		o(e)
	}
	return e
}

func execEv(exe string, args []string, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_EXEC, exe, args, opts)
	e.Detail = &api.Event_Exec{Exec: &api.Exec{Filename: exe}}
	return e
}

// contentEv is the exe_content event of exe holding tools' signatures.
func contentEv(exe string, tools []string, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_EXE_CONTENT, exe, []string{exe}, opts)
	e.Detail = &api.Event_ExeContent{ExeContent: &api.ExeContent{Path: exe, Sha256: "ab12", Elf: true, Tools: tools}}
	return e
}

func openEv(exe, path string, write bool, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_FILE_OPEN, exe, []string{exe}, opts)
	o := &api.FileOpen{Path: path, Read: !write, Write: write, Result: 3}
	if write {
		o.Create, o.Flags = true, 0o1101
	}
	e.Detail = &api.Event_FileOpen{FileOpen: o}
	return e
}

func connectEv(exe, ip string, port uint32, res int64, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_CONNECT, exe, []string{exe}, opts)
	fam := "ipv4"
	if len(ip) > 0 && (ip[0] == ':' || len(ip) > 15) {
		fam = "ipv6"
	}
	e.Detail = &api.Event_Connect{Connect: &api.Connect{Destination: &api.SocketAddress{Family: fam, Ip: ip, Port: port},
		Protocol: api.Protocol_PROTOCOL_TCP, Result: res}}
	return e
}

// newTestEngine loads the built-in rules plus extra rule files.
func newTestEngine(t testing.TB, cfg Config, files ...string) *Engine {
	t.Helper()
	rs, err := LoadRules(files...)
	if err != nil {
		t.Fatalf("LoadRules: %v", err)
	}
	e, err := NewEngine(cfg, rs, Options{Node: "node-a"})
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	return e
}

// run feeds events and returns the detection ids of new alerts, in order.
func run(e *Engine, evs ...*api.Event) (ids []string, alerts []*api.Alert) {
	for _, ev := range evs {
		e.Process(ev, func(a *api.Alert) {
			ids = append(ids, a.GetDetectionId())
			alerts = append(alerts, a)
		})
	}
	return ids, alerts
}
