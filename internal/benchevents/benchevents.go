// Package benchevents builds events that look like the sensor's, for
// benchmarks that need realistic payloads (the uplink bench, the backend's
// BenchmarkIngest). Marshaled as the agent spools them they are 820-920 bytes.
package benchevents

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// Gen builds events that look like what the sensor emits on a busy
// Kubernetes node: exec, file_open and connect from a handful of containers,
// each with a full process, cwd, an ancestry of four and a container block.
// Every event varies (pids, times, arguments, paths, ports), so compression
// sees realistic redundancy, not copies. It is not safe for concurrent use.
type Gen struct {
	rnd        *rand.Rand
	node       string
	containers []*api.Container
	seq        uint64
	pid        uint32
	tables
	// pool holds pre-built events that Event cycles through, so that the
	// benchmark spends its CPU on what the agent does (marshal, spool,
	// uplink) rather than on inventing events.
	pool []*api.Event
	next int
}

// PoolSize exceeds a batch (512) several times over: no batch, and so no
// compressed frame, sees the same event twice.
const PoolSize = 4096

type program struct {
	exe  string
	args []string
}

// tables are the generator's vocabularies.
type tables struct {
	programs, ancestors []program
	filePaths, cwds     []string
	images              []string
}

func newTables() tables {
	return tables{
		programs: []program{
			{"/usr/bin/curl", []string{"curl", "-sS", "--max-time", "5", "http://payments.prod.svc.cluster.local:8080/healthz"}},
			{"/usr/local/bin/python3.12", []string{"python3", "-m", "gunicorn", "--workers", "4", "app.wsgi:application"}},
			{"/usr/bin/git", []string{"git", "fetch", "--prune", "origin", "refs/heads/main"}},
			{"/usr/local/bin/node", []string{"node", "--max-old-space-size=512", "dist/server.js", "--port", "3000"}},
			{"/usr/bin/find", []string{"find", "/var/lib/app/cache", "-type", "f", "-mmin", "+60"}},
			{"/bin/sh", []string{"sh", "-c", "test -f /tmp/ready && cat /etc/app/config.yaml"}},
			{"/usr/bin/java", []string{"java", "-Xmx768m", "-jar", "/opt/app/service.jar", "--spring.profiles.active=prod"}},
			{"/usr/sbin/nginx", []string{"nginx", "-g", "daemon off;", "-c", "/etc/nginx/nginx.conf"}},
		},
		ancestors: []program{
			{"/usr/local/bin/containerd-shim-runc-v2", []string{"containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", ""}},
			{"/usr/local/bin/tini", []string{"tini", "--", "/docker-entrypoint.sh"}},
			{"/bin/bash", []string{"bash", "/docker-entrypoint.sh", "start"}},
			{"/usr/bin/supervisord", []string{"supervisord", "-n"}},
		},
		filePaths: []string{
			"/etc/app/config.yaml", "/var/lib/app/cache/session-%d.json", "/proc/self/status",
			"/etc/ssl/certs/ca-certificates.crt", "/tmp/upload-%d.part", "/usr/lib/python3.12/json/__init__.py",
			"/var/log/app/access.log", "/etc/passwd",
		},
		cwds: []string{"/app", "/srv/www", "/opt/app", "/var/lib/app", "/home/runner/work"},
		images: []string{
			"registry.example.lan/payments/api:2.14.3", "docker.io/library/nginx:1.27.2-alpine",
			"registry.example.lan/platform/worker:v0.9.1", "ghcr.io/example/node-frontend:4.2.0",
		},
	}
}

// New returns a generator; the same seed gives the same events.
func New(seed uint64, node string) *Gen {
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &Gen{rnd: rnd, node: node, pid: 20000, tables: newTables()}
	for i := range 6 {
		id := fmt.Sprintf("%016x%016x%016x%016x", rnd.Uint64(), rnd.Uint64(), rnd.Uint64(), rnd.Uint64())
		image := g.images[i%len(g.images)]
		pod := fmt.Sprintf("workload-%d-7d9f8b6c5-%05x", i, rnd.IntN(1<<20))
		g.containers = append(g.containers, &api.Container{
			Runtime:        "containerd",
			Id:             id,
			Cgroup:         "/kubepods.slice/kubepods-burstable.slice/cri-containerd-" + id + ".scope",
			Name:           fmt.Sprintf("app-%d", i),
			Image:          image,
			PodName:        pod,
			PodNamespace:   []string{"payments", "frontend", "platform"}[i%3],
			ServiceAccount: "default",
		})
	}
	return g
}

func (g *Gen) pick(n int) int { return g.rnd.IntN(n) }

// build returns a new event: 40 % exec, 40 % file_open, 20 % connect.
func (g *Gen) build() *api.Event {
	g.seq++
	g.pid += 1 + uint32(g.pick(7))
	now := time.Now()
	c := g.containers[g.pick(len(g.containers))]
	p := g.programs[g.pick(len(g.programs))]
	args := append([]string(nil), p.args...)
	// Arguments differ from run to run in practice (ids, files, ports).
	args[len(args)-1] += "?req=" + strconv.FormatUint(g.rnd.Uint64()>>40, 36)
	start := now.Add(-time.Duration(g.pick(5000)) * time.Millisecond)
	ev := &api.Event{
		Seq:  g.seq,
		Time: timestamppb.New(now),
		Node: g.node,
		Process: &api.Process{
			Pid: g.pid, Tgid: g.pid, Ppid: g.pid - 1 - uint32(g.pick(3)),
			Uid: 1000, Gid: 1000, Euid: 1000, Egid: 1000,
			Comm:      args[0],
			Exe:       p.exe,
			Args:      args,
			Cwd:       g.cwds[g.pick(len(g.cwds))],
			StartTime: timestamppb.New(start),
		},
		Namespaces: &api.Namespaces{Pid: 4026532200 + uint32(g.pick(64)), Mnt: 4026532100 + uint32(g.pick(64)), Net: 4026532300 + uint32(g.pick(64))},
		Container:  c,
	}
	ppid := ev.Process.Ppid
	for i, a := range g.ancestors {
		aargs := append([]string(nil), a.args...)
		if i == 0 {
			aargs[4] = c.Id[:12]
		}
		ev.Ancestry = append(ev.Ancestry, &api.Ancestor{
			Pid:       ppid,
			Exe:       a.exe,
			Args:      aargs,
			Uid:       uint32(min(i, 1) * 1000),
			StartTime: timestamppb.New(start.Add(-time.Duration(4-i) * time.Hour)),
		})
		ppid -= 1 + uint32(g.pick(40))
	}
	switch r := g.pick(10); {
	case r < 4:
		ev.Kind = api.EventKind_EVENT_KIND_EXEC
		ev.Detail = &api.Event_Exec{Exec: &api.Exec{Filename: p.exe}}
	case r < 8:
		path := g.filePaths[g.pick(len(g.filePaths))]
		if strings.Contains(path, "%d") {
			path = fmt.Sprintf(path, g.rnd.IntN(1_000_000))
		}
		ev.Kind = api.EventKind_EVENT_KIND_FILE_OPEN
		ev.Detail = &api.Event_FileOpen{FileOpen: &api.FileOpen{Path: path, Flags: 0o100000, Read: true, Result: int64(3 + g.pick(60))}}
	default:
		ev.Kind = api.EventKind_EVENT_KIND_CONNECT
		ev.Detail = &api.Event_Connect{Connect: &api.Connect{
			Destination: &api.SocketAddress{Family: "inet", Ip: fmt.Sprintf("10.%d.%d.%d", 96+g.pick(4), g.pick(256), 1+g.pick(254)), Port: []uint32{443, 5432, 6379, 8080}[g.pick(4)]},
			Protocol:    api.Protocol_PROTOCOL_TCP,
		}}
	}
	return ev
}

// Event returns the next event from the pool with a fresh sequence number and
// time. The event is shared with the pool: it is valid until the pool comes
// round again (PoolSize calls later), so marshal or clone it before then.
func (g *Gen) Event() *api.Event {
	if g.pool == nil {
		g.pool = make([]*api.Event, PoolSize)
		for i := range g.pool {
			g.pool[i] = g.build()
		}
	}
	ev := g.pool[g.next]
	g.next = (g.next + 1) % len(g.pool)
	g.seq++
	ev.Seq = g.seq
	ev.Time = timestamppb.Now()
	return ev
}

// Payload returns the next event as the agent spools it: a marshaled
// api.Record of class EVENT.
func (g *Gen) Payload() ([]byte, error) {
	ev := g.Event()
	b, err := proto.Marshal(&api.Record{Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: ev}})
	if err != nil {
		return nil, fmt.Errorf("marshal event: %w", err)
	}
	return b, nil
}
