package export

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/harrier-sec/harrier/internal/confval"
)

// TestKafka: 3 000 alerts produced to a 3-partition topic of franz-go's
// in-process Kafka cluster (kfake: no broker can be installed here), keyed
// by alert ID; a 2 MiB alert is refused (MessageTooLarge) and
// dead-lettered and the records after it in its batch are not produced
// twice; produce requests fail for 3 s mid-stream (the broker closes the
// connection; the client retries them itself). A consumer then reads the
// topic from the start: every alert is there once.
func TestKafka(t *testing.T) {
	const total = 3000
	const topic = "harrier-alerts"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	var down atomic.Bool
	var refused atomic.Int64
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if down.Load() {
			refused.Add(1)
			return nil, errors.New("broker outage"), true
		}
		return nil, nil, false
	})

	src := &memSource{}
	huge := alertN(500)
	huge.Process.Args = []string{strings.Repeat("A", 2<<20)}
	for i := range total {
		if i == 500 {
			src.add(huge)
			continue
		}
		src.add(alertN(i))
	}
	cfg := Config{Name: "kafka", Type: TypeKafka, BatchSize: 100, MaxPerSecond: 1000,
		Kafka: &KafkaConfig{Brokers: cluster.ListenAddrs(), Topic: topic, Timeout: confval.Duration(time.Second)},
		Retry: RetryConfig{Initial: confval.Duration(50 * time.Millisecond), Max: confval.Duration(500 * time.Millisecond)}}
	m, err := New([]Config{cfg}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}

	// The consumer counts records by key, each checked against its header.
	consumer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var mu sync.Mutex
	got := map[string]int{}
	ctx, cancel := context.WithCancel(t.Context())
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for ctx.Err() == nil {
			fs := consumer.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				mu.Lock()
				defer mu.Unlock()
				var hdr string
				for _, h := range r.Headers {
					if h.Key == "harrier-event-id" {
						hdr = string(h.Value)
					}
				}
				if hdr != string(r.Key) || !strings.Contains(string(r.Value), `"id":"`+hdr+`"`) {
					t.Errorf("record key %q, header %q, value %.80s", r.Key, hdr, r.Value)
				}
				got[string(r.Key)]++
			})
		}
	}()
	defer func() { cancel(); <-consumed }()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	go func() {
		for count() < 1000 && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		down.Store(true)
		time.Sleep(3 * time.Second)
		down.Store(false)
	}()
	runFor(t, m, 60*time.Second, func() bool { return count() == total-1 && m.Status()[0].State == "caught-up" })
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for i := range total {
		id := alertN(i).Id
		n := got[id]
		if (n == 0) != (i == 500) {
			t.Errorf("%s: %d records", id, n)
		}
		dups += max(0, n-1)
	}
	st := m.Status()[0]
	t.Logf("%d alerts, %d duplicates, %d produce requests refused in the outage, status %+v, last reply %q", total, dups, refused.Load(), st, m.runners[0].sink.lastReply())
	if st.DeadLettered != 1 || refused.Load() == 0 || dups != 0 {
		t.Errorf("want one dead letter, an outage, no duplicates: %+v", st)
	}
	dl, err := m.DeadLetters(t.Context(), "kafka", 10)
	if err != nil || len(dl) != 1 || dl[0].AlertID != huge.Id || !strings.Contains(dl[0].Reason, "MESSAGE_TOO_LARGE") {
		t.Errorf("dead letters %v: %.300v", err, dl)
	}
}

func TestKafkaConfig(t *testing.T) {
	bad := []struct {
		cfg  KafkaConfig
		want string
	}{
		{KafkaConfig{Topic: "t"}, "at least one"},
		{KafkaConfig{Brokers: []string{"k"}, Topic: "t"}, "kafka.brokers \"k\""},
		{KafkaConfig{Brokers: []string{"k:9092"}, Topic: "bad topic"}, "kafka.topic"},
		{KafkaConfig{Brokers: []string{"k:9092"}, Topic: "t", SASL: &KafkaSASL{Mechanism: "gssapi", Username: "u", PasswordFile: "/p"}}, "mechanism"},
		{KafkaConfig{Brokers: []string{"k:9092"}, Topic: "t", SASL: &KafkaSASL{Mechanism: "scram-sha-512", Username: "u"}}, "passwordFile are required"},
		{KafkaConfig{Brokers: []string{"k:9092"}, Topic: "t", SASL: &KafkaSASL{Mechanism: "plain", Username: "u", PasswordFile: "/p"}}, "in clear"},
	}
	for _, b := range bad {
		err := Config{Name: "k", Type: TypeKafka, Kafka: &b.cfg}.Validate()
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: error %v, want %q", b.cfg, err, b.want)
		}
	}
	c := Config{Name: "k", Type: TypeKafka, Kafka: &KafkaConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t",
		SASL: &KafkaSASL{Mechanism: "scram-sha-256", Username: "u", PasswordFile: "/nonexistent/pw"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := newSink(c.withDefaults(), "h", "v"); err == nil || !strings.Contains(err.Error(), "kafka.sasl.passwordFile") {
		t.Errorf("missing password file: %v", err)
	}
}
