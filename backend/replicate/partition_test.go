package replicate_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestReplicasSurviveNATSPartition: three real nats-servers, each in a
// network namespace of its own joined by a bridge (all made by the test),
// a stream replicated three ways, two backend replicas: a connected to the
// server that will be cut off, b to another. Three agents upload alerts
// without pause, each attempt to the next replica; mid-upload the third
// server is cut off from its routes (iptables in its namespace) for 15 s,
// then healed. The majority side keeps acknowledging during the partition,
// nothing acknowledged is lost, and once healed both replicas hold every
// alert exactly once.
func TestReplicasSurviveNATSPartition(t *testing.T) {
	cluster := natstest.NewNetnsCluster(t)
	dial := nats.SetCustomDialer(cluster.Dialer())
	urls := natstest.URLs(cluster.Nodes)
	cfg := replicate.Config{Servers: urls, Replicas: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	nc, err := replicate.Connect(replicate.Config{Servers: []string{urls[0]}}, "harrier-test-setup", dial)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitStreams(ctx, t, js, cfg)
	// a talks to the server to be cut off first, b to another.
	const cut = 2
	a := startReplica(t, replicate.Config{Servers: []string{urls[cut], urls[0], urls[1]}, Replicas: 3}, t.TempDir(), "a", dial, nats.DontRandomize())
	defer func() { a.cancel() }()
	b := startReplica(t, replicate.Config{Servers: []string{urls[0], urls[1], urls[cut]}, Replicas: 3}, t.TempDir(), "b", dial, nats.DontRandomize())
	defer func() { b.cancel() }()

	const agents, perAgent, batch = 3, 400, 10
	var (
		acked, ackedInPartition atomic.Int64
		partitioned             atomic.Bool
		attempts, failed        atomic.Int64
		next                    atomic.Uint64
	)
	publishers := []*replicate.Publisher{a.pub, b.pub}
	var wg sync.WaitGroup
	for i := range agents {
		agent := fmt.Sprintf("node-%d", i)
		wg.Go(func() {
			for first := 1; first <= perAgent; first += batch {
				var left []*api.Record
				for s := first; s < first+batch; s++ {
					left = append(left, alertRecord(agent, uint64(s)))
				}
				for len(left) > 0 {
					if ctx.Err() != nil {
						t.Errorf("agent %s: %d records never acknowledged", agent, len(left))
						return
					}
					// An agent gives up on a backend that does not answer
					// within 5 s and tries the next one.
					actx, acancel := context.WithTimeout(ctx, 5*time.Second)
					got, err := publishers[next.Add(1)%2].Store(actx, agent, &api.Batch{AgentId: agent, SpoolId: "spool-" + agent, Records: left})
					acancel()
					attempts.Add(1)
					if err != nil {
						failed.Add(1)
					}
					left = slices.DeleteFunc(left, func(r *api.Record) bool { return slices.Contains(got, r.GetSeq()) })
					acked.Add(int64(len(got)))
					if partitioned.Load() {
						ackedInPartition.Add(int64(len(got)))
					}
				}
			}
		})
	}
	testenv.WaitFor(t, 2*time.Minute, "300 alerts acknowledged", func() bool { return acked.Load() >= 300 })
	cluster.Partition(t, cut)
	partitioned.Store(true)
	t.Logf("nats-server %s cut off its routes at %d acknowledged alerts", cluster.Nodes[cut].Name, acked.Load())
	time.Sleep(15 * time.Second)
	partitioned.Store(false)
	cluster.Heal(t, cut)
	t.Logf("healed at %d acknowledged alerts; %d acknowledged during the partition", acked.Load(), ackedInPartition.Load())
	wg.Wait()
	if ackedInPartition.Load() == 0 {
		t.Error("nothing was acknowledged during the partition: the majority side should have kept the stream writable")
	}
	t.Logf("%d upload attempts, %d failed or partly acknowledged", attempts.Load(), failed.Load())

	info, err := js.Stream(ctx, cfg.WithDefaults().Stream)
	if err != nil {
		t.Fatal(err)
	}
	last := info.CachedInfo().State.LastSeq
	for _, r := range []*replica{a, b} {
		testenv.WaitFor(t, 2*time.Minute, "the replica applies the whole stream", func() bool { return r.mat.Applied() >= last && r.mat.Ready() == nil })
	}
	var want []string
	for i := range agents {
		for s := 1; s <= perAgent; s++ {
			want = append(want, fmt.Sprintf("node-%d-alert-%d", i, s))
		}
	}
	slices.Sort(want)
	for name, r := range map[string]*replica{"a": a, "b": b} {
		var got []string
		for i := range agents { // by node: each under the query's limit
			alerts, err := r.store.Alerts(ctx, backend.AlertQuery{Node: fmt.Sprintf("node-%d", i), Limit: backend.MaxLimit})
			if err != nil {
				t.Fatal(err)
			}
			for _, al := range alerts {
				got = append(got, al.GetId())
				if al.GetCount() != 1 {
					t.Errorf("replica %s: alert %s stored %d times", name, al.GetId(), al.GetCount())
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("replica %s: %d alerts, want %d (missing or extra)", name, len(got), len(want))
		}
	}
	// The server that was cut off has caught up too: its replica of the
	// stream has every message.
	ncCut, err := replicate.Connect(replicate.Config{Servers: []string{urls[cut]}}, "harrier-test-cut", dial)
	if err != nil {
		t.Fatal(err)
	}
	defer ncCut.Close()
	testenv.WaitFor(t, time.Minute, "the healed server's copy of the stream is current", func() bool {
		jsCut, err := jetstream.New(ncCut)
		if err != nil {
			return false
		}
		s, err := jsCut.Stream(ctx, cfg.WithDefaults().Stream)
		if err != nil {
			return false
		}
		for _, p := range s.CachedInfo().Cluster.Replicas {
			if p.Name == cluster.Nodes[cut].Name && (!p.Current || p.Lag > 0) {
				return false
			}
		}
		return s.CachedInfo().State.LastSeq >= last
	})
}
