package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// busyboxVictim serves the victim's real CGI page with busybox httpd on a
// loopback port, as the victim pod does, and returns its address.
func busyboxVictim(t *testing.T) string {
	t.Helper()
	bb := testenv.RequireCommand(t, "busybox", "`make deps` installs busybox-static")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	www := filepath.Join(dir, "www")
	for _, d := range []string{bin, filepath.Join(www, "cgi-bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, applet := range []string{"sh", "httpd", "ping", "echo", "id", "cat"} {
		if err := os.Symlink(bb, filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	// The CGI's #! line is /bin/sh; run it through busybox's sh instead so
	// the test does not depend on the host's shell.
	script := strings.Replace(cgiScript, "#!/bin/sh", "#!"+filepath.Join(bin, "sh"), 1)
	if err := os.WriteFile(filepath.Join(www, "cgi-bin", "ping"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(victimIndex), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(bb, "httpd", "-f", "-p", addr, "-h", www)
	cmd.Env = []string{"PATH=" + bin}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("httpd: %s", logs.String())
		}
	})
	return addr
}

// TestDriveThroughBusyboxCGI plays a plan through the real vulnerable CGI
// page served by busybox httpd over loopback: each command runs in the
// victim's shell, the attacker's pod IP is filled in, and the log carries
// one line per step with its send time, then done.
func TestDriveThroughBusyboxCGI(t *testing.T) {
	victim := busyboxVictim(t)
	out := t.TempDir()
	plan := ClusterPlan{VictimWait: confval.Duration(10 * time.Second), Scenarios: []PlanScenario{
		{Name: "one", Victim: victim, Steps: []string{
			"echo first > " + out + "/1",
			"echo scan " + attackerPodIP + " > " + out + "/2",
		}},
		{Name: "two", Victim: victim, Steps: []string{"id > " + out + "/3"}},
	}}
	b, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	if plan, err = ParsePlan(b); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	// Other log lines (the fake services' slog output) share the stream.
	log.WriteString("time=2025 level=INFO msg=\"miner download\"\n")
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Drive(ctx, plan, netip.MustParseAddr("10.1.2.3"), &http.Client{Timeout: 10 * time.Second}, &log); err != nil {
		t.Fatalf("Drive: %v\n%s", err, log.String())
	}
	for f, want := range map[string]string{"1": "first\n", "2": "scan 10.1.2.3\n"} {
		got, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || string(got) != want {
			t.Errorf("step file %s = %q, %v; want %q (the injection did not run the command)", f, got, err, want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(out, "3")); !strings.Contains(string(got), "uid=") {
		t.Errorf("id output %q", got)
	}
	var events []string
	var last time.Time
	for _, line := range bytes.Split(log.Bytes(), []byte("\n")) {
		d, ok := parseDriverLine(line)
		if !ok {
			continue
		}
		events = append(events, fmt.Sprintf("%s %s %d", d.Event, d.Scenario, d.Step))
		if d.Event != "step" {
			continue
		}
		if d.Status != http.StatusOK || d.Error != "" {
			t.Errorf("step %s/%d: status %d error %q", d.Scenario, d.Step, d.Status, d.Error)
		}
		if d.Sent.Before(began) || d.Sent.Before(last) || d.Sent.After(time.Now()) {
			t.Errorf("step %s/%d sent at %v: not in order within the run", d.Scenario, d.Step, d.Sent)
		}
		last = d.Sent
	}
	want := []string{"ready  0", "step one 1", "step one 2", "step two 1", "done  0"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Errorf("driver lines %q, want %q\n%s", events, want, log.String())
	}
}

// TestDriveVictimNeverAnswers: a victim that never answers ends the play
// with an error line naming it, and no step is sent.
func TestDriveVictimNeverAnswers(t *testing.T) {
	addr := testenv.FreeAddr(t) // nothing listens there
	plan := ClusterPlan{VictimWait: confval.Duration(time.Second),
		Scenarios: []PlanScenario{{Name: "lost", Victim: addr, Steps: []string{"id"}}}}
	var log bytes.Buffer
	err := Drive(context.Background(), plan, netip.MustParseAddr("10.1.2.3"), &http.Client{Timeout: time.Second}, &log)
	if err == nil || !strings.Contains(err.Error(), "victim lost") {
		t.Fatalf("err = %v", err)
	}
	d, ok := parseDriverLine(bytes.TrimSpace(log.Bytes()))
	if !ok || d.Event != "error" || !strings.Contains(d.Error, "never answered") {
		t.Errorf("log %q", log.String())
	}
}

func TestParsePlan(t *testing.T) {
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"ok", `{"scenarios":[{"name":"a","victim":"10.96.0.5","steps":["id"]}]}`, ""},
		{"with port", `{"scenarios":[{"name":"a","victim":"127.0.0.1:8081","steps":["id"]}],"victimWait":"5s"}`, ""},
		{"unknown field", `{"scenarios":[],"extra":1}`, "unknown field"},
		{"no scenarios", `{"scenarios":[]}`, "no scenarios"},
		{"victim a name", `{"scenarios":[{"name":"a","victim":"example.org","steps":["id"]}]}`, "not an IP address"},
		{"no steps", `{"scenarios":[{"name":"a","victim":"10.96.0.5","steps":[]}]}`, "needs a name and steps"},
		{"bad duration", `{"scenarios":[{"name":"a","victim":"10.96.0.5","steps":["id"]}],"victimWait":5}`, "duration"},
		{"not JSON", `scenarios: []`, "plan"},
	} {
		_, err := ParsePlan([]byte(tc.in))
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestInPodRefusesOutsideAPod: the cluster roles listen on the network
// they find, so they refuse to start without the pod spec's environment.
func TestInPodRefusesOutsideAPod(t *testing.T) {
	t.Setenv(namespaceEnv, "")
	t.Setenv(podIPEnv, "")
	if err := ServeVictimSidecar(context.Background(), netip.MustParseAddr("10.96.0.9"), nil); err == nil || !strings.Contains(err.Error(), namespaceEnv) {
		t.Errorf("sidecar outside a pod: %v", err)
	}
	if err := ServeClusterAttacker(context.Background(), "/nonexistent", "", nil, nil); err == nil || !strings.Contains(err.Error(), namespaceEnv) {
		t.Errorf("attacker outside a pod: %v", err)
	}
}
