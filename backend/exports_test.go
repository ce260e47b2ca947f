package backend

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/internal/testpki"
)

// ingestAlerts stores alerts [from, to) as agent "node-x", one record each,
// in batches of 100.
func ingestAlerts(t testing.TB, st *BadgerStore, from, to int) {
	t.Helper()
	for i := from; i < to; i += 100 {
		b := &api.Batch{}
		for j := i; j < min(to, i+100); j++ {
			a := &api.Alert{Id: fmt.Sprintf("alert-%05d", j), DetectionId: "sensitive-files", Name: "Sensitive file opened",
				Severity: api.Severity_SEVERITY_HIGH, Node: "node-x", Count: 1,
				Process: &api.Process{Tgid: uint32(j), Exe: "/usr/bin/cat", Args: []string{"cat", "/etc/shadow"}}}
			b.Records = append(b.Records, &api.Record{Seq: uint64(j + 1), Class: api.RecordClass_RECORD_CLASS_ALERT, Payload: &api.Record_Alert{Alert: a}})
		}
		if _, err := st.Ingest(context.Background(), "node-x", b); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAlertSeq: every stored or updated alert takes the next place in the
// ingest order, kept across a reopen; a resent record takes none.
func TestAlertSeq(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenBadgerStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ingestAlerts(t, st, 0, 250)
	ingestAlerts(t, st, 0, 100) // resent: de-duplicated, no new place
	if got := st.LastAlertSeq(); got != 250 {
		t.Fatalf("last seq %d, want 250", got)
	}
	recs, err := st.AlertsAfter(t.Context(), 200, 1000)
	if err != nil || len(recs) != 50 || recs[0].Seq != 201 || recs[0].Alert.GetId() != "alert-00200" {
		t.Fatalf("after 200: %d records, %v", len(recs), err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = OpenBadgerStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := st.LastAlertSeq(); got != 250 {
		t.Fatalf("reopened: last seq %d", got)
	}
	// An update of a stored alert (a new record for the same ID) is a new place.
	b := &api.Batch{Records: []*api.Record{{Seq: 1000, Class: api.RecordClass_RECORD_CLASS_ALERT,
		Payload: &api.Record_Alert{Alert: &api.Alert{Id: "alert-00003", Count: 5}}}}}
	if _, err := st.Ingest(t.Context(), "node-x", b); err != nil {
		t.Fatal(err)
	}
	recs, _ = st.AlertsAfter(t.Context(), 250, 10)
	if len(recs) != 1 || recs[0].Seq != 251 || recs[0].Alert.GetId() != "alert-00003" || recs[0].Alert.GetCount() != 5 {
		t.Fatalf("update: %+v", recs)
	}
}

// rsyslog is a real rsyslogd with its own config in a temp dir: imtcp on a
// loopback port (TLS with gtls when tls), omfile writing each message's
// MSG part, one per line.
type rsyslog struct {
	t    testing.TB
	bin  string
	dir  string
	conf string
	port int
	out  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startRsyslog(t testing.TB, tlsFiles []string) *rsyslog {
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		bin = "/usr/sbin/rsyslogd"
		if _, err := os.Stat(bin); err != nil {
			testenv.Missing(t, "rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls; make deps does)")
		}
	}
	dir := t.TempDir()
	port := testenv.FreePorts(t, 1)[0]
	r := &rsyslog{t: t, bin: bin, dir: dir, port: port, out: filepath.Join(dir, "out.log"), conf: filepath.Join(dir, "rsyslog.conf")}
	var conf strings.Builder
	fmt.Fprintf(&conf, "global(workDirectory=%q maxMessageSize=\"256k\"", dir)
	if tlsFiles != nil {
		if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"); err != nil {
			if _, err := os.Stat("/usr/lib/rsyslog/lmnsd_gtls.so"); err != nil {
				if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
					testenv.Missing(t, "rsyslog's TLS driver is not installed (apt-get install rsyslog-gnutls; make deps does)")
				}
			}
		}
		fmt.Fprintf(&conf, " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q",
			tlsFiles[0], tlsFiles[1], tlsFiles[2])
	}
	conf.WriteString(")\n")
	if tlsFiles != nil {
		conf.WriteString("module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n")
	} else {
		conf.WriteString("module(load=\"imtcp\")\n")
	}
	fmt.Fprintf(&conf, "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"%d\" supportOctetCountedFraming=\"on\")\n", port)
	conf.WriteString("template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n")
	fmt.Fprintf(&conf, "*.* action(type=\"omfile\" file=%q template=\"msgonly\")\n", r.out)
	if err := os.WriteFile(r.conf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *rsyslog) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "-n", "-f", r.conf, "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	var stderr strings.Builder
	r.cmd.Stdout, r.cmd.Stderr = &stderr, &stderr
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-r.done:
			r.t.Fatalf("rsyslogd exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("rsyslogd not listening: %v; %s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends rsyslogd with SIGTERM, its normal stop, and waits for it.
func (r *rsyslog) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd = nil
}

// received counts each alert ID in rsyslog's output file.
func (r *rsyslog) received() (map[string]int, error) {
	f, err := os.Open(r.out)
	if os.IsNotExist(err) {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	got := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var a struct{ ID string }
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			continue // a line being written
		}
		got[a.ID]++
	}
	return got, sc.Err()
}

// TestExportToRsyslog exports 10 000 alerts to a real rsyslog over TCP and
// over TLS. rsyslog is stopped for 30 s mid-stream and started again, and
// the exporter and its store are closed and reopened later on: every alert
// is in rsyslog's output file. Duplicates can only be records written in
// the confirmation window before a failure (counted in Status.Resent).
func TestExportToRsyslog(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage: not in -short")
	}
	outage := 30 * time.Second
	if v := os.Getenv("HARRIER_EXPORT_OUTAGE"); v != "" {
		outage, _ = time.ParseDuration(v)
	}
	for _, network := range []string{"tcp", "tls"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			var tlsFiles []string
			scfg := &export.SyslogConfig{Network: network}
			if network == "tls" {
				tlsFiles, scfg.TLS = makeSyslogPKI(t)
			}
			rs := startRsyslog(t, tlsFiles)
			scfg.Address = net.JoinHostPort("127.0.0.1", strconv.Itoa(rs.port))
			cfg := export.Config{Name: "rsyslog-" + network, Type: export.TypeSyslog, Syslog: scfg, MaxPerSecond: 400,
				BatchSize: 100, Retry: export.RetryConfig{Initial: confval.Duration(100 * time.Millisecond), Max: confval.Duration(2 * time.Second)}}

			dir := t.TempDir()
			st, err := OpenBadgerStore(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			ingestAlerts(t, st, 0, 5000)
			var resent uint64
			var mu sync.Mutex
			run := func(st *BadgerStore) (stop func()) {
				m, err := export.New([]export.Config{cfg}, st, st.ExportKV(), export.Options{Poll: 50 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- m.Run(ctx) }()
				return func() {
					cancel()
					if err := <-done; err != nil {
						t.Error(err)
					}
					mu.Lock()
					resent += m.Status()[0].Resent
					mu.Unlock()
				}
			}
			stop := run(st)
			var ingested sync.WaitGroup
			ingested.Go(func() { ingestAlerts(t, st, 5000, 10_000) }) // while exporting

			waitLines := func(n int, timeout time.Duration) map[string]int {
				deadline := time.Now().Add(timeout)
				for {
					got, err := rs.received()
					if err != nil {
						t.Fatal(err)
					}
					if len(got) >= n {
						return got
					}
					if time.Now().After(deadline) {
						t.Fatalf("%d alerts in rsyslog's file after %v, want %d", len(got), timeout, n)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			waitLines(3000, time.Minute)
			rs.stop()
			t.Logf("rsyslog stopped at %d alerts; down for %v", len(waitLines(0, 0)), outage)
			time.Sleep(outage)
			rs.start()
			waitLines(7000, 2*time.Minute)
			// The exporter and the store close and reopen mid-stream.
			stop()
			ingested.Wait()
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st, err = OpenBadgerStore(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			stop = run(st)
			waitLines(10_000, 2*time.Minute)
			time.Sleep(3 * time.Second) // let the confirmation window pass: no more writes should come
			stop()
			got, err := rs.received()
			if err != nil {
				t.Fatal(err)
			}
			var missing, dups int
			for i := range 10_000 {
				switch n := got[fmt.Sprintf("alert-%05d", i)]; {
				case n == 0:
					missing++
				case n > 1:
					dups += n - 1
				}
			}
			t.Logf("%s: %d alerts in rsyslog's file, %d missing, %d duplicates, %d records resent after failures", network, len(got), missing, dups, resent)
			if missing != 0 || len(got) != 10_000 {
				t.Errorf("%d alerts missing", missing)
			}
			if uint64(dups) > resent {
				t.Errorf("%d duplicates, but only %d records were resent", dups, resent)
			}
		})
	}
}

// makeSyslogPKI writes rsyslog's CA, certificate and key, and returns the
// files and the exporter's TLS config (pinning the CA).
func makeSyslogPKI(t testing.TB) ([]string, export.TLSConfig) {
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue(testpki.Cert{CommonName: "rsyslog", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := []string{filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")}
	for i, b := range [][]byte{ca.PEM, kp.CertPEM, kp.KeyPEM} {
		if err := os.WriteFile(files[i], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files, export.TLSConfig{CAFile: files[0]}
}

// TestExportsAPI: GET /api/v1/exports shows each destination's state
// without its secrets, the dead letters are listed, and /metrics has the
// per-destination series.
func TestExportsAPI(t *testing.T) {
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "schema violation", http.StatusUnprocessableEntity)
	}))
	defer refuse.Close()
	m := NewMetrics()
	st := openTestStore(t, BadgerConfig{Metrics: m})
	ingestAlerts(t, st, 0, 3)
	key := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(key, []byte("very-secret-hmac-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgs := []export.Config{
		{Name: "hook", Type: export.TypeWebhook, Webhook: &export.WebhookConfig{URL: refuse.URL + "/in?apikey=query-secret", HMACKeyFile: key}},
		{Name: "usb", Type: export.TypeFile, File: &export.FileConfig{Path: filepath.Join(t.TempDir(), "a.jsonl")}},
	}
	mgr, err := export.New(cfgs, st, st.ExportKV(), export.Options{Registerer: m.Registerer(), Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	testenv.WaitFor(t, 10*time.Second, "3 dead letters and 3 sent", func() bool {
		s := mgr.Status()
		return s[0].DeadLettered == 3 && s[1].Cursor == 3
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewAPI(st, APIConfig{Token: testToken, Metrics: m, Exports: mgr}, nil))
	defer srv.Close()
	ts := &testServer{Server: srv, store: st, metrics: m}

	r := ts.authGet(t, "/api/v1/exports")
	var body struct{ Exports []export.Status }
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.code != 200 || len(body.Exports) != 2 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if e := body.Exports[0]; e.Name != "hook" || e.DeadLettered != 3 || e.Cursor != 3 || e.LagRecords != 0 {
		t.Errorf("hook: %+v", e)
	}
	if e := body.Exports[1]; e.Sent != 3 || e.State != "caught-up" {
		t.Errorf("usb: %+v", e)
	}
	r = ts.authGet(t, "/api/v1/exports/hook/dead-letters?limit=2")
	var dl struct{ DeadLetters []export.DeadLetter }
	if err := json.Unmarshal([]byte(r.body), &dl); err != nil || len(dl.DeadLetters) != 2 || dl.DeadLetters[0].AlertID != "alert-00000" ||
		!strings.Contains(dl.DeadLetters[0].Reason, "schema violation") {
		t.Errorf("dead letters: %d %s", r.code, r.body)
	}
	if r := ts.authGet(t, "/api/v1/exports/nope/dead-letters"); r.code != 404 {
		t.Errorf("unknown export: %d", r.code)
	}
	if r := ts.get(t, "/api/v1/exports", nil); r.code != 401 {
		t.Errorf("no token: %d", r.code)
	}
	all := ts.authGet(t, "/api/v1/exports").body + ts.authGet(t, "/api/v1/exports/hook/dead-letters").body
	for _, secret := range []string{"very-secret-hmac-key", "query-secret"} {
		if strings.Contains(all, secret) {
			t.Errorf("the API shows the secret %q", secret)
		}
	}
	metrics := ts.authGet(t, "/metrics").body
	for _, want := range []string{
		`harrier_export_records_dead_lettered_total{destination="hook"} 3`,
		`harrier_export_records_sent_total{destination="usb"} 3`,
		`harrier_export_lag_records{destination="usb"} 0`,
		`harrier_export_lag_seconds{destination="hook"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestFindingsExportOrder: a snapshot's new and changed findings join the
// findings' (or vulnerabilities') export order; an unchanged re-evaluation
// does not; the order survives a reopen.
func TestFindingsExportOrder(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, BadgerConfig{Dir: dir})
	high, med := api.Severity_SEVERITY_HIGH, api.Severity_SEVERITY_MEDIUM
	vuln := mkFinding("v-1", VulnCheckID, api.Severity_SEVERITY_CRITICAL, "Deployment", "shop", "web")
	vuln.Detail = "nginx:1.27: 1 critical (CVE-2024-6387 in openssh 9.2)"
	ingestChunks(t, s, "leader", chunkRec(1, mkChunk("edge", "s1", 0, 1, t0, nil, []*api.Finding{
		mkFinding("f-kept", "pss-privileged", high, "Deployment", "shop", "web"),
		mkFinding("f-fixed", "pss-hostpath", med, "Deployment", "shop", "db"),
		vuln,
	})))
	changedSev := mkFinding("f-kept", "pss-privileged", med, "Deployment", "shop", "web")
	ingestChunks(t, s, "leader", chunkRec(2, mkChunk("edge", "s2", 0, 1, t0.Add(time.Hour), nil, []*api.Finding{
		mkFinding("f-kept", "pss-privileged", high, "Deployment", "shop", "web"), // unchanged: not sent again
		mkFinding("f-new", "pss-hostnetwork", med, "Deployment", "shop", "api"),
		vuln,
	})))
	ingestChunks(t, s, "leader", chunkRec(3, mkChunk("edge", "s3", 0, 1, t0.Add(2*time.Hour), nil, []*api.Finding{
		changedSev, mkFinding("f-new", "pss-hostnetwork", med, "Deployment", "shop", "api"), vuln,
	})))
	check := func(s *BadgerStore) {
		t.Helper()
		recs, err := s.RecordsAfter(t.Context(), export.KindFindings, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, fmt.Sprintf("%d %s %s %s %v", r.Seq, r.Finding.GetId(), r.Finding.GetSeverity(), r.Finding.GetSnapshotId(), r.Resolved))
		}
		want := []string{"1 f-kept SEVERITY_HIGH s1 false", "2 f-fixed SEVERITY_MEDIUM s1 false", "3 f-new SEVERITY_MEDIUM s2 false",
			"4 f-fixed SEVERITY_MEDIUM s1 true", // gone from s2: resolved, in its last state
			"5 f-kept SEVERITY_MEDIUM s3 false"}
		if !slices.Equal(got, want) || s.LastSeq(export.KindFindings) != 5 {
			t.Errorf("findings order %q (last %d), want %q", got, s.LastSeq(export.KindFindings), want)
		}
		after, _ := s.RecordsAfter(t.Context(), export.KindFindings, 2, 1)
		if len(after) != 1 || after[0].Seq != 3 || after[0].Resolved {
			t.Errorf("after 2, limit 1: %+v", after)
		}
		vs, err := s.RecordsAfter(t.Context(), export.KindVulnerabilities, 0, 100)
		if err != nil || len(vs) != 1 || vs[0].Finding.GetId() != "v-1" || s.LastSeq(export.KindVulnerabilities) != 1 {
			t.Errorf("vulnerabilities order %+v %v", vs, err)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(openTestStore(t, BadgerConfig{Dir: dir}))
}

// TestExportOrderPruned: the alert ingest order is cut behind the slowest
// configured export, never past a record one has not confirmed, keeps its
// newest entry (the last number across a reopen) and, with no export
// following a kind, its newest KeepUnfollowed entries.
func TestExportOrderPruned(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, BadgerConfig{Dir: dir})
	ingestAlerts(t, st, 0, 300)
	path := filepath.Join(t.TempDir(), "out.jsonl")
	file := export.Config{Name: "file", Type: export.TypeFile, File: &export.FileConfig{Path: path}}
	// A destination that is down: nothing listens on the port.
	downAddr := testenv.FreeAddr(t)
	down := export.Config{Name: "down", Type: export.TypeWebhook, Webhook: &export.WebhookConfig{URL: "http://" + downAddr + "/"},
		Retry: export.RetryConfig{Initial: confval.Duration(10 * time.Millisecond), Max: confval.Duration(20 * time.Millisecond)}}
	opts := export.Options{Poll: 10 * time.Millisecond, PruneEvery: 20 * time.Millisecond, KeepUnfollowed: 2}
	run := func(cfgs []export.Config, until func(*export.Manager) bool) {
		t.Helper()
		m, err := export.New(cfgs, st, st.ExportKV(), opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for !until(m) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %+v", m.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // a few prune rounds
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run([]export.Config{file, down}, func(m *export.Manager) bool { return m.Status()[0].Cursor == 300 && m.Status()[1].Failed > 2 })
	if n := countKeys(t, st, prefixAlertSeq); n != 300 {
		t.Errorf("with an export down at cursor 0, %d order entries left, want all 300", n)
	}
	// Responses: no export follows them, the newest 2 stay.
	for i := range 5 {
		if err := st.journalUpdate(export.KindResponses, func(_ *badger.Txn, add func([]byte) error) error {
			return add([]byte(fmt.Sprintf(`{"id":"cmd-%d"}`, i)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The down destination removed from the config: its cursor no longer
	// holds the order back.
	run([]export.Config{file}, func(m *export.Manager) bool { return countKeys(t, st, prefixAlertSeq) == 1 })
	if n := countKeys(t, st, string(journalPrefix(export.KindResponses))); n != 2 {
		t.Errorf("unfollowed responses: %d entries left, want 2", n)
	}
	ingestAlerts(t, st, 300, 310)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openTestStore(t, BadgerConfig{Dir: dir})
	if st.LastAlertSeq() != 310 || st.LastSeq(export.KindResponses) != 5 {
		t.Fatalf("after pruning and a reopen: alert order at %d, responses at %d", st.LastAlertSeq(), st.LastSeq(export.KindResponses))
	}
	run([]export.Config{file}, func(m *export.Manager) bool { return m.Status()[0].Cursor == 310 })
	if lines := strings.Count(string(mustRead(t, path)), "\n"); lines != 310 {
		t.Errorf("file has %d records, want 310", lines)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUIExports renders the exports page from the real server: each
// destination's state, lag per kind, counts and dead letters with their
// reasons, escaped, without secrets.
func TestUIExports(t *testing.T) {
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<b>schema</b> violation", http.StatusUnprocessableEntity)
	}))
	defer refuse.Close()
	st := openTestStore(t, BadgerConfig{})
	ingestAlerts(t, st, 0, 3)
	if err := st.journalUpdate(export.KindResponses, func(_ *badger.Txn, add func([]byte) error) error {
		return add([]byte(`{"id":"cmd-1","action":"kill-process","state":"pending"}`))
	}); err != nil {
		t.Fatal(err)
	}
	cfgs := []export.Config{
		{Name: "hook", Type: export.TypeWebhook, Webhook: &export.WebhookConfig{URL: refuse.URL + "/in?apikey=query-secret"}},
		{Name: "usb", Type: export.TypeFile, File: &export.FileConfig{Path: filepath.Join(t.TempDir(), "a.jsonl")},
			Filter: export.Filter{Kinds: []export.Kind{export.KindAlerts, export.KindResponses}}},
	}
	mgr, err := export.New(cfgs, st, st.ExportKV(), export.Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	testenv.WaitFor(t, 10*time.Second, "3 dead letters and 4 sent", func() bool {
		s := mgr.Status()
		return s[0].DeadLettered == 3 && s[1].Sent == 4 && s[1].LagRecords == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewAPI(st, APIConfig{Token: testToken, Exports: mgr}, nil))
	defer srv.Close()
	ts := &testServer{Server: srv, store: st}
	r := ts.authGet(t, "/exports")
	if r.code != http.StatusOK {
		t.Fatalf("GET /exports: %d %s", r.code, r.body)
	}
	for _, want := range []string{
		"<strong>hook</strong>", "webhook, json", "<strong>usb</strong>", "file, json", "caught-up",
		"alerts: 3 of 3", "responses: 1 of 1", "0 records, 0.0 s",
		"<td>4</td>", // usb sent
		"Dead letters of hook", `href="/alerts/alert-00000"`, "&lt;b&gt;schema&lt;/b&gt; violation",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("exports page lacks %q\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, "query-secret") || strings.Contains(r.body, "<b>schema") {
		t.Errorf("exports page shows a secret or unescaped text\n%s", r.body)
	}
	if r := ts.get(t, "/exports", nil); r.code == http.StatusOK {
		t.Errorf("exports page without signing in: %d", r.code)
	}
}

// TestEventsExportOrder: the event ring is the events' export order (Seq =
// ring position + 1), read from any position, page boundaries included;
// an export behind the ring finds a gap, which it counts as lost.
func TestEventsExportOrder(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, BadgerConfig{Dir: dir, MaxEvents: 10})
	seq := uint64(0)
	ingest := func(n int) {
		var recs []*api.Record
		for range n {
			seq++
			e := mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0.Add(time.Duration(seq)*time.Second))
			e.Process.Tgid = uint32(seq)
			recs = append(recs, eventRec(seq, e))
		}
		mustIngest(t, st, "a", &api.Batch{Records: recs})
	}
	for _, n := range []int{3, 4, 2} { // 9 events on three pages
		ingest(n)
	}
	if st.LastSeq(export.KindEvents) != 9 {
		t.Fatalf("events head %d, want 9", st.LastSeq(export.KindEvents))
	}
	for _, after := range []uint64{0, 2, 3, 5, 8, 9} {
		recs, err := st.RecordsAfter(t.Context(), export.KindEvents, after, 4)
		if err != nil {
			t.Fatal(err)
		}
		want := min(4, 9-int(after))
		if len(recs) != want {
			t.Fatalf("after %d: %d records, want %d", after, len(recs), want)
		}
		for i, r := range recs {
			if r.Seq != after+uint64(i)+1 || r.Event.GetProcess().GetTgid() != uint32(r.Seq) {
				t.Errorf("after %d: record %d has seq %d, tgid %d", after, i, r.Seq, r.Event.GetProcess().GetTgid())
			}
		}
	}
	// A file export reads 4, is stopped; 12 more events push the first
	// pages out of the ring; started again it sends what is left and counts
	// the dropped as lost.
	path := filepath.Join(t.TempDir(), "events.jsonl")
	cfg := export.Config{Name: "ev", Type: export.TypeFile, File: &export.FileConfig{Path: path}, BatchSize: 4,
		Filter: export.Filter{Kinds: []export.Kind{export.KindEvents}}}
	run := func(until func(export.Status) bool) export.Status {
		t.Helper()
		m, err := export.New([]export.Config{cfg}, st, st.ExportKV(), export.Options{Poll: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		testenv.WaitFor(t, 10*time.Second, "export progress", func() bool { return until(m.Status()[0]) })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return m.Status()[0]
	}
	cfg.MaxPerSecond = 4 // one batch, then a second's wait: stop after the first
	run(func(s export.Status) bool { return s.Cursor >= 4 })
	cfg.MaxPerSecond = 0
	for _, n := range []int{4, 4, 4} {
		ingest(n)
	}
	before := strings.Count(string(mustRead(t, path)), "\n")
	s := run(func(s export.Status) bool { return s.Cursor == 21 })
	sent := strings.Count(string(mustRead(t, path)), "\n") - before
	t.Logf("first run %d, second %d, lost %d", before, sent, s.Lost)
	if s.Lost == 0 || uint64(before+sent)+s.Lost != 21 {
		t.Errorf("first run %d, second %d, lost %d: want all 21 accounted for, some lost", before, sent, s.Lost)
	}
}
