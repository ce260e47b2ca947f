package export

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testpki"
)

// memSource is the store as slices, one per kind: record i of a kind has
// Seq i+1.
type memSource struct {
	mu   sync.Mutex
	recs map[Kind][]Record
}

func (m *memSource) add(a *api.Alert) { m.addRecord(Record{Kind: KindAlerts, Alert: a}) }

func (m *memSource) addRecord(r Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recs == nil {
		m.recs = map[Kind][]Record{}
	}
	r.Seq, r.Stored = uint64(len(m.recs[r.Kind])+1), time.Now()
	m.recs[r.Kind] = append(m.recs[r.Kind], r)
}

func (m *memSource) RecordsAfter(_ context.Context, k Kind, after uint64, limit int) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	recs := m.recs[k]
	// Seqs increase but may have gaps (a test drops records).
	i, _ := slices.BinarySearchFunc(recs, after+1, func(r Record, seq uint64) int { return cmp.Compare(r.Seq, seq) })
	return slices.Clone(recs[i:min(len(recs), i+limit)]), nil
}

func (m *memSource) LastSeq(k Kind) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if recs := m.recs[k]; len(recs) > 0 {
		return recs[len(recs)-1].Seq
	}
	return 0
}

type memKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (k *memKV) Get(_ context.Context, key []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[string(key)], nil
}

func (k *memKV) Set(_ context.Context, key, v []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[string(key)] = slices.Clone(v)
	return nil
}

func (k *memKV) Scan(_ context.Context, prefix []byte, fn func(k, v []byte) bool) error {
	k.mu.Lock()
	var keys []string
	for key := range k.m {
		if strings.HasPrefix(key, string(prefix)) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	k.mu.Unlock()
	for _, key := range keys {
		if !fn([]byte(key), k.m[key]) {
			break
		}
	}
	return nil
}

func alertN(i int) *api.Alert {
	a := sampleAlert()
	a.Id = fmt.Sprintf("alert-%05d", i)
	a.Count = 1
	return a
}

// runFor runs the manager until cond holds (or fails after timeout), then
// stops it and waits for it.
func runFor(t *testing.T, m *Manager, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("timed out; status %+v", m.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// hookReceiver verifies each request's HMAC with key; it answers 422 to
// alert IDs in reject and 503 while down is set.
type hookReceiver struct {
	key    []byte
	mu     sync.Mutex
	got    map[string]int // alert ID → deliveries
	badSig int
	reject map[string]bool
	down   bool
	// failAt makes the request after that many deliveries fail with 503
	// (once), in the middle of a batch.
	failAt int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !hmac.Equal([]byte(r.Header.Get(SignatureHeader)), []byte(Sign(h.key, body))) {
		h.badSig++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if h.down || (h.failAt > 0 && len(h.got) == h.failAt) {
		h.failAt = 0
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	var a api.Alert
	id := r.Header.Get(EventIDHeader)
	if err := protojson.Unmarshal(body, &a); err != nil || a.GetId() != id || h.reject[id] {
		http.Error(w, "malformed record", http.StatusUnprocessableEntity)
		return
	}
	h.got[id]++
	fmt.Fprint(w, `{"ok":true}`)
}

func (h *hookReceiver) count() (n int, badSig int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got), h.badSig
}

func writeSecret(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func hookConfig(url, keyFile string) Config {
	return Config{Name: "hook", Type: TypeWebhook, Webhook: &WebhookConfig{URL: url, HMACKeyFile: keyFile, Headers: map[string]string{"X-Site": "test"}},
		Retry: RetryConfig{Initial: 20 * 1e6, Max: 100 * 1e6}, BatchSize: 50}
}

// TestWebhook: every alert arrives signed; a rejected one goes to the dead
// letters; an outage is retried; a restart resumes from the cursor.
func TestWebhook(t *testing.T) {
	h := &hookReceiver{key: []byte("k3y"), got: map[string]int{}, reject: map[string]bool{"alert-00007": true}, failAt: 30}
	srv := httptest.NewServer(h)
	defer srv.Close()
	src, kv := &memSource{}, newMemKV()
	for i := range 100 {
		src.add(alertN(i))
	}
	cfg := hookConfig(srv.URL+"/in?token=not-shown", writeSecret(t, "k3y"))
	m, err := New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { n, _ := h.count(); return n == 99 })
	st := m.Status()[0]
	if st.DeadLettered != 1 || st.Sent != 99 || st.Failed != 1 || st.Resent != 0 || strings.Contains(st.Target, "token") {
		t.Errorf("status %+v", st)
	}
	dl, err := m.DeadLetters(t.Context(), "hook", 10)
	if err != nil || len(dl) != 1 || dl[0].AlertID != "alert-00007" || !strings.Contains(dl[0].Reason, "422") {
		t.Errorf("dead letters %+v, %v", dl, err)
	}
	// Down, then 50 more, then up again, across a restart.
	h.mu.Lock()
	h.down = true
	h.mu.Unlock()
	for i := 100; i < 150; i++ {
		src.add(alertN(i))
	}
	m2, _ := New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	runFor(t, m2, 10*time.Second, func() bool { return m2.Status()[0].Failed >= 3 })
	h.mu.Lock()
	h.down = false
	h.mu.Unlock()
	m3, _ := New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	runFor(t, m3, 10*time.Second, func() bool { n, _ := h.count(); return n == 149 })
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, n := range h.got {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if h.badSig != 0 {
		t.Errorf("%d requests with a bad signature", h.badSig)
	}
}

// TestWebhookWrongSecret: a receiver with another key refuses every
// request; nothing is delivered or dead-lettered, the export retries.
func TestWebhookWrongSecret(t *testing.T) {
	h := &hookReceiver{key: []byte("right"), got: map[string]int{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	src := &memSource{}
	src.add(alertN(1))
	m, err := New([]Config{hookConfig(srv.URL, writeSecret(t, "wrong"))}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 5*time.Second, func() bool { _, bad := h.count(); return bad >= 2 })
	st := m.Status()[0]
	if n, _ := h.count(); n != 0 || st.DeadLettered != 0 || st.Cursor != 0 || !strings.Contains(st.LastError, "401") {
		t.Errorf("delivered %d, status %+v", n, st)
	}
	reply, err := SendTest(t.Context(), hookConfig(srv.URL, writeSecret(t, "wrong")), TestAlert(time.Now()), Options{})
	if err == nil || !strings.Contains(reply, "401") {
		t.Errorf("SendTest with the wrong secret: %q, %v", reply, err)
	}
	reply, err = SendTest(t.Context(), hookConfig(srv.URL, writeSecret(t, "right")), TestAlert(time.Now()), Options{})
	if err != nil || !strings.Contains(reply, "200") {
		t.Errorf("SendTest: %q, %v", reply, err)
	}
}

// TestFileSinkRotation: lines are whole, rotation keeps N files, filters
// apply, and every record that passes the filter is in some file once.
func TestFileSinkRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "alerts.jsonl")
	src := &memSource{}
	want := map[string]bool{}
	for i := range 300 {
		a := alertN(i)
		if i%3 == 0 {
			a.Severity = api.Severity_SEVERITY_LOW
		} else {
			want[a.GetId()] = true
		}
		src.add(a)
	}
	cfg := Config{Name: "usb", Type: TypeFile, Format: FormatOCSF, File: &FileConfig{Path: path, MaxBytes: 40 << 10, Keep: 100},
		Filter: Filter{MinSeverity: "medium"}, BatchSize: 64}
	m, err := New([]Config{cfg}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Cursor == 300 })
	files, _ := filepath.Glob(path + "*")
	if len(files) < 3 {
		t.Fatalf("want rotation, got %v", files)
	}
	got := map[string]int{}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if st, _ := os.Stat(f); st.Size() > 40<<10 {
			t.Errorf("%s is %d bytes", f, st.Size())
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			id, _ := lookup(m, "finding_info.uid")
			got[id.(string)]++
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d records in files, want %d", len(got), len(want))
	}
	for id, n := range got {
		if !want[id] || n != 1 {
			t.Errorf("%s: %d times (wanted: %v)", id, n, want[id])
		}
	}
	if st := m.Status()[0]; st.Skipped != 100 {
		t.Errorf("skipped %d, want 100", st.Skipped)
	}
	// Keep bounds the rotated files.
	cfg.Name, cfg.File.Keep, cfg.File.Path = "small", 2, filepath.Join(dir, "small.jsonl")
	m, _ = New([]Config{cfg}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Cursor == 300 })
	if files, _ := filepath.Glob(cfg.File.Path + "*"); len(files) != 3 {
		t.Errorf("keep 2: files %v", files)
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		n        int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{20, 500 * time.Millisecond, time.Second},
	} {
		for range 100 {
			if d := backoff(100*time.Millisecond, time.Second, c.n); d < c.min || d > c.max {
				t.Errorf("attempt %d: %v not in [%v, %v]", c.n, d, c.min, c.max)
			}
		}
	}
}

func TestRateCap(t *testing.T) {
	dir := t.TempDir()
	src := &memSource{}
	for i := range 30 {
		src.add(alertN(i))
	}
	cfg := Config{Name: "slow", Type: TypeFile, File: &FileConfig{Path: filepath.Join(dir, "a")}, MaxPerSecond: 20, BatchSize: 5}
	m, _ := New([]Config{cfg}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
	start := time.Now()
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Cursor == 30 })
	// 20 at once (the burst), 10 more at 20/s.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("30 records at 20/s took %v", d)
	}
}

// TestFileSinkTornLine: a line torn by a crash is ended before the next
// record, so every later line parses.
func TestFileSinkTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	if err := os.WriteFile(path, []byte("{\"id\":\"whole\"}\n{\"id\":\"tor"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newFileSink(FileConfig{Path: path, MaxBytes: 1 << 20, Keep: 1})
	if _, err := s.send(t.Context(), []message{{head: alertN(1), body: []byte(`{"id":"next"}`)}}); err != nil {
		t.Fatal(err)
	}
	_ = s.close()
	b, _ := os.ReadFile(path)
	if want := "{\"id\":\"whole\"}\n{\"id\":\"tor\n{\"id\":\"next\"}\n"; string(b) != want {
		t.Errorf("file %q, want %q", b, want)
	}
}

// TestWebhookMTLS: over HTTPS with the receiver's CA pinned and a client
// certificate the receiver requires; without the certificate it is refused.
func TestWebhookMTLS(t *testing.T) {
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(testpki.Cert{CommonName: "hooks", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(testpki.Cert{CommonName: "harrier-backend"})
	if err != nil {
		t.Fatal(err)
	}
	h := &hookReceiver{key: []byte("k"), got: map[string]int{}}
	srv := httptest.NewUnstartedServer(h)
	cert, err := server.TLS()
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	dir := t.TempDir()
	files := map[string][]byte{"ca.crt": ca.PEM, "client.crt": client.CertPEM, "client.key": client.KeyPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := hookConfig(srv.URL, writeSecret(t, "k"))
	cfg.Webhook.TLS = TLSConfig{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key")}
	reply, err := SendTest(t.Context(), cfg, TestAlert(time.Now()), Options{})
	if err != nil || !strings.Contains(reply, "200") {
		t.Errorf("with the client certificate: %q, %v", reply, err)
	}
	cfg.Webhook.TLS.CertFile, cfg.Webhook.TLS.KeyFile = "", ""
	if _, err := SendTest(t.Context(), cfg, TestAlert(time.Now()), Options{}); err == nil {
		t.Error("without the client certificate: accepted")
	}
	if n, _ := h.count(); n != 1 {
		t.Errorf("%d delivered, want 1", n)
	}
}
