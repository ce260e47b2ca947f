package auditgen

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testpki"
	"github.com/harrier-sec/harrier/kube/audit"
)

// engine is the analytics engine with the shipped rules.
func engine(t *testing.T) *analytics.Engine {
	t.Helper()
	rs, err := analytics.LoadRules()
	if err != nil {
		t.Fatal(err)
	}
	e, err := analytics.NewEngine(analytics.Config{}, rs, analytics.Options{Node: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestStreamDecodesAndOnlyMarkerAlerts: the generated lists decode with
// the agent's own decoder, the benign mix raises no alert from the shipped
// detections, and the marker raises MarkerDetection naming its binding.
func TestStreamDecodesAndOnlyMarkerAlerts(t *testing.T) {
	var g Generator
	now := time.Now()
	var events []Event
	for i := range 2000 {
		events = append(events, g.Next(now.Add(time.Duration(i)*time.Millisecond)))
	}
	events = append(events[:1000], append([]Event{Marker("bench-marker-1", now)}, events[1000:]...)...)
	body, err := EncodeList(events)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := audit.Decoder{Node: "bench"}.DecodeList(body)
	if err != nil {
		t.Fatalf("the agent's decoder refuses the generated list: %v", err)
	}
	if len(decoded) != len(events) {
		t.Fatalf("decoded %d events, want %d", len(decoded), len(events))
	}
	verbs := map[string]int{}
	for _, ev := range decoded {
		a := ev.GetAudit()
		if ev.GetKind() != api.EventKind_EVENT_KIND_AUDIT || a.GetAuditId() == "" || a.GetUser() == "" || a.GetCode() == 0 {
			t.Fatalf("decoded event lacks fields: %v", ev)
		}
		verbs[a.GetVerb()+" "+a.GetResource()]++
	}
	for _, want := range []string{"get pods", "update leases", "list pods", "watch pods", "get configmaps", "create clusterrolebindings"} {
		if verbs[want] == 0 {
			t.Errorf("mix has no %q: %v", want, verbs)
		}
	}
	e := engine(t)
	var alerts []*api.Alert
	for _, ev := range decoded {
		e.Process(ev, func(a *api.Alert) { alerts = append(alerts, a) })
	}
	if len(alerts) != 1 {
		var ids []string
		for _, a := range alerts {
			ids = append(ids, a.GetDetectionId())
		}
		t.Fatalf("alerts %v, want exactly one %s", ids, MarkerDetection)
	}
	a := alerts[0]
	if a.GetDetectionId() != MarkerDetection {
		t.Fatalf("alert %s, want %s", a.GetDetectionId(), MarkerDetection)
	}
	if ev := a.GetEvidence(); len(ev) == 0 || ev[0].GetAudit().GetName() != "bench-marker-1" || ev[0].GetAudit().GetUser() != MarkerUser {
		t.Errorf("alert evidence %v, want the marker's binding", a.GetEvidence())
	}
	// A second marker with another name is a new alert, not a repeat.
	var again []*api.Alert
	mk, err := audit.Decoder{}.DecodeList(mustList(t, Marker("bench-marker-2", now)))
	if err != nil {
		t.Fatal(err)
	}
	e.Process(mk[0], func(a *api.Alert) { again = append(again, a) })
	if len(again) != 1 || again[0].GetDetectionId() != MarkerDetection {
		t.Errorf("second marker: %d alerts, want one new %s", len(again), MarkerDetection)
	}
}

func mustList(t *testing.T, evs ...Event) []byte {
	t.Helper()
	b, err := EncodeList(evs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBatchSize(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		want int
	}{{10, 50}, {500, 50}, {1000, 100}, {2000, 200}, {4000, 400}, {100000, 400}} {
		if got := BatchSize(tc.rate); got != tc.want {
			t.Errorf("BatchSize(%v) = %d, want %d", tc.rate, got, tc.want)
		}
	}
}

// TestPosterToReceiver posts batches over TLS with the bearer token to the
// agent's real receiver.
func TestPosterToReceiver(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue(testpki.Cert{CommonName: "audit", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	caFile, tokenFile, badToken := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token"), filepath.Join(dir, "bad")
	for f, content := range map[string][]byte{caFile: ca.PEM, tokenFile: []byte("tok\n"), badToken: []byte("nope")} {
		if err := os.WriteFile(f, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := make(chan *api.Event, 1000)
	r := &audit.Receiver{Out: out, Token: &audit.TokenFile{Path: tokenFile}, Log: slog.New(slog.DiscardHandler)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Serve(ctx, l, audit.ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }, nil, true))
	}()
	defer func() { cancel(); <-done }()

	p, err := NewPoster(l.Addr().String(), caFile, tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := &Batcher{Poster: p, Size: 50, MaxWait: time.Hour}
	var g Generator
	for range 120 {
		if err := b.Add(ctx, g.Next(time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	if b.Posts != 2 || b.Events != 100 {
		t.Errorf("after 120 events in batches of 50: %d posts of %d events, want 2 of 100", b.Posts, b.Events)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Events != 120 || len(out) != 120 {
		t.Errorf("receiver stats %+v, queued %d; want 120 events", st, len(out))
	}

	wrong, err := NewPoster(l.Addr().String(), caFile, badToken)
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if err := wrong.Post(ctx, []Event{g.Next(time.Now())}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("post with a wrong token: %v, want 401", err)
	}
	for _, addr := range []string{"10.0.0.1:443", "localhost:443", "bad"} {
		if _, err := NewPoster(addr, caFile, tokenFile); err == nil {
			t.Errorf("NewPoster(%q) accepted a non-loopback address", addr)
		}
	}
}
