package replicate_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// replica is one backend replica: its store, publisher and materializers
// (records, raw events).
type replica struct {
	dir    string
	store  *backend.BadgerStore
	pub    *replicate.Publisher
	mat    *replicate.Materializer
	events *replicate.Materializer
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startReplica(t *testing.T, cfg replicate.Config, dir, name string, opts ...nats.Option) *replica {
	t.Helper()
	cfg.ReplicaName = name
	st, err := backend.OpenBadgerStoreConfig(backend.BadgerConfig{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := replicate.Connect(cfg, "harrier-test-"+name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", name)
	r := &replica{dir: dir, store: st, pub: replicate.NewPublisher(js, cfg, log), mat: replicate.NewMaterializer(js, cfg, st, log),
		events: replicate.NewEventsMaterializer(js, cfg, st, log)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = func() { cancel(); r.wg.Wait(); nc.Close(); _ = st.Close() }
	r.wg.Go(func() { _ = r.mat.Run(ctx) })
	r.wg.Go(func() { _ = r.events.Run(ctx) })
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// upload sends batch as an agent does: what is not acknowledged is sent
// again, until all of it is, each time to the replica pick names (an agent
// fails over to another backend when its own goes away).
func upload(ctx context.Context, t *testing.T, pick func() *replicate.Publisher, agent, spool string, records []*api.Record) (attempts int) {
	t.Helper()
	left := slices.Clone(records) // DeleteFunc below clears the tail it leaves
	for len(left) > 0 {
		attempts++
		if ctx.Err() != nil {
			t.Fatalf("agent %s: %d records never acknowledged", agent, len(left))
		}
		acked, err := pick().Store(ctx, agent, &api.Batch{AgentId: agent, SpoolId: spool, Records: left,
			Health: &api.AgentHealth{Node: agent}})
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		left = slices.DeleteFunc(left, func(r *api.Record) bool { return slices.Contains(acked, r.GetSeq()) })
	}
	return attempts
}

func alertRecord(agent string, seq uint64) *api.Record {
	return &api.Record{Seq: seq, Class: api.RecordClass_RECORD_CLASS_ALERT, Payload: &api.Record_Alert{Alert: &api.Alert{
		Id: fmt.Sprintf("%s-alert-%d", agent, seq), DetectionId: "test-alert", Severity: api.Severity_SEVERITY_HIGH, Node: agent, Count: 1,
		// One container per agent: each agent's alerts are one incident.
		Container: &api.Container{Runtime: "containerd", Id: agent + "-container"}}}}
}

// TestReplicasOverNATSCluster: three real nats-servers clustered on
// loopback with JetStream, a stream replicated three ways, two backend
// replicas. Three agents upload 900 alerts through either replica, each
// batch sent twice (a lost acknowledgement); mid-stream one NATS server is
// killed with SIGKILL and one replica is stopped, both started again. Every
// alert is then stored exactly once (count 1) at both replicas, and a third
// replica started from an empty directory catches up to the same result.
// waitStreams creates the streams once the servers have formed their
// cluster and elected a meta leader, which takes a few seconds when the
// machine is idle and much longer under a loaded CI's parallel packages.
func waitStreams(ctx context.Context, t *testing.T, js jetstream.JetStream, cfg replicate.Config) {
	t.Helper()
	var last error
	testenv.WaitFor(t, 3*time.Minute, "the JetStream cluster accepts the streams", func() bool {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		err := replicate.EnsureStream(actx, js, cfg)
		if err != nil && (last == nil || err.Error() != last.Error()) {
			t.Logf("not yet: %v", err)
		}
		last = err
		return err == nil
	})
}

func TestReplicasOverNATSCluster(t *testing.T) {
	nodes := natstest.Cluster(t)
	cfg := replicate.Config{Servers: natstest.URLs(nodes), Replicas: 3}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// The stream, once the servers have formed their cluster.
	nc, err := replicate.Connect(cfg, "harrier-test-setup")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitStreams(ctx, t, js, cfg)

	a := startReplica(t, cfg, t.TempDir(), "a")
	defer func() { a.cancel() }()
	bDir := t.TempDir()
	b := startReplica(t, cfg, bDir, "b")
	defer func() { b.cancel() }()

	const agents, perAgent, batch = 3, 300, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	progress := 0
	for i := range agents {
		agent := fmt.Sprintf("node-%d", i)
		wg.Go(func() {
			for first := 1; first <= perAgent; first += batch {
				var recs []*api.Record
				for s := first; s < first+batch; s++ {
					recs = append(recs, alertRecord(agent, uint64(s)))
				}
				// Alternate replicas, as agents failing over would; the
				// second send is a retry after a lost acknowledgement.
				pick := func() *replicate.Publisher {
					mu.Lock()
					defer mu.Unlock()
					return []*replica{a, b}[(first/batch+i)%2].pub
				}
				upload(ctx, t, pick, agent, "spool-"+agent, recs)
				upload(ctx, t, pick, agent, "spool-"+agent, recs)
				mu.Lock()
				progress += batch
				mu.Unlock()
			}
		})
	}
	waitProgress := func(n int) {
		testenv.WaitFor(t, 2*time.Minute, fmt.Sprintf("%d alerts uploaded", n), func() bool { mu.Lock(); defer mu.Unlock(); return progress >= n })
	}
	waitProgress(300)
	nodes[1].Kill9()
	t.Logf("nats-server %s killed (SIGKILL) at %d alerts", nodes[1].Name, 300)
	waitProgress(450)
	mu.Lock()
	stopped := b
	b = a // a replica goes away; its agents fail over to a
	mu.Unlock()
	stopped.cancel()
	waitProgress(600)
	nodes[1].Start(t)
	wg.Wait()
	b = startReplica(t, cfg, bDir, "b") // restarted over its own directory

	c := startReplica(t, cfg, t.TempDir(), "c") // a new replica from empty
	defer func() { c.cancel() }()
	info, err := js.Stream(ctx, cfg.WithDefaults().Stream)
	if err != nil {
		t.Fatal(err)
	}
	last := info.CachedInfo().State.LastSeq
	for _, r := range []*replica{a, b, c} {
		testenv.WaitFor(t, time.Minute, "the replica applies the whole stream", func() bool { return r.mat.Applied() >= last && r.mat.Ready() == nil })
	}
	t.Logf("stream: %d messages (%d alerts uploaded twice, heartbeats included)", last, agents*perAgent)
	var want []string
	for i := range agents {
		for s := 1; s <= perAgent; s++ {
			want = append(want, fmt.Sprintf("node-%d-alert-%d", i, s))
		}
	}
	slices.Sort(want)
	for name, r := range map[string]*replica{"a": a, "b (restarted)": b, "c (from empty)": c} {
		alerts, err := r.store.Alerts(ctx, backend.AlertQuery{Limit: backend.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, al := range alerts {
			got = append(got, al.GetId())
			if al.GetCount() != 1 {
				t.Errorf("replica %s: alert %s stored %d times", name, al.GetId(), al.GetCount())
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("replica %s: %d alerts, want %d (missing or extra)", name, len(got), len(want))
		}
		// Incidents are grouped in Ingest, which materialising goes
		// through: one per agent, at every replica.
		incs, err := r.store.Incidents(ctx, backend.IncidentQuery{Limit: backend.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(incs) != agents {
			t.Errorf("replica %s: %d incidents, want %d", name, len(incs), agents)
		}
		for _, inc := range incs {
			if inc.Alerts != perAgent || len(inc.Nodes) != 1 {
				t.Errorf("replica %s: incident %s has %d alerts on %v, want %d on one node", name, inc.ID, inc.Alerts, inc.Nodes, perAgent)
			}
		}
		if r.mat.Undecodable() != 0 {
			t.Errorf("replica %s: %d undecodable messages", name, r.mat.Undecodable())
		}
	}
	// Identical results, not only the same IDs: every alert as a's, and
	// the agents' record counts and health.
	sameAs(ctx, t, a, "b (restarted)", b)
	sameAs(ctx, t, a, "c (from empty)", c)
}

// sameAs compares r's alerts and agents with ref's; the agents' first and
// last seen are each replica's own apply times and are not compared.
func sameAs(ctx context.Context, t *testing.T, ref *replica, name string, r *replica) {
	t.Helper()
	alerts := func(r *replica) map[string]*api.Alert {
		out := map[string]*api.Alert{}
		for i := range 3 {
			list, err := r.store.Alerts(ctx, backend.AlertQuery{Node: fmt.Sprintf("node-%d", i), Limit: backend.MaxLimit})
			if err != nil {
				t.Fatal(err)
			}
			for _, al := range list {
				out[al.GetId()] = al
			}
		}
		return out
	}
	want, got := alerts(ref), alerts(r)
	for id, w := range want {
		if g, ok := got[id]; !ok || !proto.Equal(g, w) {
			t.Errorf("replica %s: alert %s differs from a's:\n%v\n%v", name, id, g, w)
			return
		}
	}
	wantAgents, err := ref.store.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gotAgents, err := r.store.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotAgents) != len(wantAgents) {
		t.Fatalf("replica %s: %d agents, a has %d", name, len(gotAgents), len(wantAgents))
	}
	for i, w := range wantAgents {
		g := gotAgents[i]
		if g.ID != w.ID || g.Records != w.Records || !proto.Equal(g.Health, w.Health) {
			t.Errorf("replica %s: agent %s: %d records, health %v; a: %s, %d records, health %v", name, g.ID, g.Records, g.Health, w.ID, w.Records, w.Health)
		}
	}
}
