package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/response"
	"github.com/harrier-sec/harrier/transport"
)

func TestResponseTestCommand(t *testing.T) {
	p := filepath.Join(t.TempDir(), "p.yaml")
	policy := "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n" +
		"  - {name: kill-miners, mode: enforce, match: {detections: [crypto-miner], where: container}, actions: [kill-process-tree]}\n"
	if err := os.WriteFile(p, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := response.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	in := `{"id":"a1","detection_id":"crypto-miner","severity":"SEVERITY_HIGH","container":{"id":"c"}}
{"id":"a2","detection_id":"crypto-miner"}

not json
`
	var out, errOut bytes.Buffer
	err = decideAlerts(f, strings.NewReader(in), &out, &errOut, "alerts.jsonl")
	if err == nil || !strings.Contains(err.Error(), "1 line(s)") || !strings.Contains(errOut.String(), "alerts.jsonl:4: not an alert") {
		t.Errorf("bad line: err %v, stderr %q", err, errOut.String())
	}
	want := `{"alert":"a1","detection":"crypto-miner","decisions":[{"policy":"kill-miners","mode":"enforce","action":"kill-process-tree"}]}
{"alert":"a2","detection":"crypto-miner","decisions":[]}
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

const dryRunPolicies = `apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - name: kill-miners
    mode: enforce
    match: {detections: [crypto-miner], where: container}
    actions: [kill-process-tree]
    rateLimit: {maxActionsPerMinute: 3, coolDown: 10m}
  - name: isolate-miners
    mode: enforce
    match: {detections: [crypto-miner], where: container}
    actions: [block-network]
  - name: host-shells
    mode: audit
    match: {detections: [reverse-shell], where: host}
    actions: [kill-process-tree]
`

// dryRunAlerts are a day's alerts: five miners in two pods within a minute
// (the fourth trips kill-miners' breaker of three a minute), one in
// kube-system, two reverse shells on the host (one from a
// process named containerd), and a miner from two days ago.
func dryRunAlerts(now time.Time) []*api.Alert {
	t0 := now.Add(-2 * time.Hour)
	miner := func(id string, at time.Duration, pid uint32, pod, ns string) *api.Alert {
		return &api.Alert{Id: id, DetectionId: "crypto-miner", Severity: api.Severity_SEVERITY_HIGH, Node: "n1",
			FirstSeen: timestamppb.New(t0.Add(at)), LastSeen: timestamppb.New(t0.Add(at)),
			Container: &api.Container{Id: "c-" + pod, PodName: pod, PodNamespace: ns},
			Process:   &api.Process{Tgid: pid, Exe: "/tmp/xmrig", StartTime: timestamppb.New(t0)}}
	}
	shell := func(id string, at time.Duration, pid uint32, exe string) *api.Alert {
		return &api.Alert{Id: id, DetectionId: "reverse-shell", Severity: api.Severity_SEVERITY_CRITICAL, Node: "n1",
			FirstSeen: timestamppb.New(t0.Add(at)), LastSeen: timestamppb.New(t0.Add(at)),
			Process: &api.Process{Tgid: pid, Exe: exe, StartTime: timestamppb.New(t0)}}
	}
	old := miner("m-old", 0, 99, "web-0", "shop")
	old.FirstSeen, old.LastSeen = timestamppb.New(now.Add(-48*time.Hour)), timestamppb.New(now.Add(-48*time.Hour))
	return []*api.Alert{
		miner("m1", 0, 100, "web-1", "shop"),
		miner("m2", time.Second, 101, "web-1", "shop"),
		miner("m3", 2*time.Second, 102, "web-2", "shop"),
		miner("m4", 3*time.Second, 103, "web-2", "shop"),
		miner("m5", 4*time.Second, 104, "web-2", "shop"),
		miner("m-dns", time.Hour, 300, "coredns-1", "kube-system"),
		shell("s1", time.Hour, 200, "/usr/bin/bash"),
		shell("s2", time.Hour+time.Second, 201, "/usr/bin/containerd"),
		old,
	}
}

// wantDryRun is the report of dryRunAlerts since 24h.
const wantDryRun = `kill-miners (enforce): 6 alerts matched
  would have killed 3 processes in 2 pods (kill-process-tree, 3 alerts)
  audit only: would have killed 2 processes in 1 pod (kill-process-tree, 2 alerts)
  would have refused 1 action (protected target: kube-system)
  circuit breaker would have tripped 1 time; 2 actions only audited while it was open
isolate-miners (enforce): 6 alerts matched
  would have blocked the network of 2 containers in 2 pods (block-network, 5 alerts)
  would have refused 1 action (protected target: kube-system)
host-shells (audit): 2 alerts matched
  audit only: would have killed 1 process on the host (kill-process-tree, 1 alert)
  would have refused 1 action (protected target: runtime)
`

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return out.String(), err
}

// TestResponseDryRunFile: the report from a file of alerts as JSON lines,
// the alerts out of order, the old one left out by --since.
func TestResponseDryRunFile(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte(dryRunPolicies), 0o600); err != nil {
		t.Fatal(err)
	}
	alerts := dryRunAlerts(time.Now())
	var lines bytes.Buffer
	for _, i := range []int{3, 0, 8, 7, 1, 6, 2, 5, 4} {
		b, err := protojson.Marshal(alerts[i])
		if err != nil {
			t.Fatal(err)
		}
		lines.Write(append(b, '\n'))
	}
	file := filepath.Join(dir, "alerts.jsonl")
	if err := os.WriteFile(file, lines.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "response", "dry-run", pol, "--alerts", file, "--since", "24h")
	if err != nil {
		t.Fatal(err)
	}
	if _, report, _ := strings.Cut(out, "\n"); report != wantDryRun || !strings.HasPrefix(out, "replayed 8 alerts from ") {
		t.Errorf("report:\n%s\nwant 8 alerts replayed and:\n%s", out, wantDryRun)
	}
	// Without --since the old alert counts: a third pod.
	out, err = runCLI(t, "response", "dry-run", pol, "--alerts", file, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep response.DryRunReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Alerts != 9 || rep.Policies[1].Actions[0].Pods != 3 || rep.Policies[1].Actions[0].Action != response.ActionBlockNetwork {
		t.Errorf("report without --since: %s", out)
	}
	// --as-enforce: the audit policy's kill counts as done.
	out, err = runCLI(t, "response", "dry-run", pol, "--alerts", file, "--since", "24h", "--as-enforce")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "host-shells (enforce): 2 alerts matched\n  would have killed 1 process on the host (kill-process-tree, 1 alert)\n") {
		t.Errorf("--as-enforce report:\n%s", out)
	}
	if _, err := runCLI(t, "response", "dry-run", pol, "--alerts", file, "--since", "yesterday"); err == nil || !strings.Contains(err.Error(), `--since "yesterday"`) {
		t.Errorf("bad --since: %v", err)
	}
}

// TestResponseDryRunBackend: the same report from a real backend's alerts
// API, with its token, the old alert left out by the backend's since.
func TestResponseDryRunBackend(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte(dryRunPolicies), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := backend.OpenBadgerStore(data, log)
	if err != nil {
		t.Fatal(err)
	}
	batch := &api.Batch{AgentId: "n1"}
	for i, a := range dryRunAlerts(time.Now()) {
		batch.Records = append(batch.Records, &api.Record{Seq: uint64(i + 1), Class: api.RecordClass_RECORD_CLASS_ALERT,
			Payload: &api.Record_Alert{Alert: a}})
	}
	if _, err := st.Ingest(context.Background(), "n1", batch); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(dir, "pki")
	writeCLITestPKI(t, pki)
	svc, err := backend.NewService(backend.Config{DataDir: data, APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0",
		CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "server.crt"), KeyFile: filepath.Join(pki, "server.key"),
		Token: "dry-run-test-token-0123456789"}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("backend: %v", err)
		}
	})
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("dry-run-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "http://" + svc.APIAddr().String()
	var out string
	testenv.WaitFor(t, 10*time.Second, "the backend's API", func() bool {
		out, err = runCLI(t, "response", "dry-run", pol, "--api", url, "--token-file", tok, "--since", "24h")
		return err == nil
	})
	t.Logf("report:\n%s", out)
	if _, report, _ := strings.Cut(out, "\n"); report != wantDryRun || !strings.HasPrefix(out, "replayed 8 alerts from ") {
		t.Errorf("report:\n%s\nwant 8 alerts replayed and:\n%s", out, wantDryRun)
	}
	bad := filepath.Join(dir, "bad-token")
	if err := os.WriteFile(bad, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "response", "dry-run", pol, "--api", url, "--token-file", bad); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a wrong token: %v, want the API's 401", err)
	}
}

func writeCLITestPKI(t *testing.T, dir string) {
	t.Helper()
	caCert, caKey, err := transport.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFiles(dir, "ca", caCert, nil); err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFiles(dir, "server", srvCert, srvKey); err != nil {
		t.Fatal(err)
	}
}
