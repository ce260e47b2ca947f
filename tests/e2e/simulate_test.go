package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/simulate"
)

// TestSimulateLocalAcceptance is issue 6's acceptance test: `harrier run`
// on this node plus `harrier simulate --local --scenario all` must show
// every expected alert at the backend API within 10 s of its behaviour,
// from the right container, process and ancestry, and nothing the
// scenarios do not explain.
func TestSimulateLocalAcceptance(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	start := time.Now()
	bin := buildHarrier(t)
	dataDir := t.TempDir()
	base, token := startRun(t, bin, dataDir, "metricsAddr: \"off\"\n")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	hugepages, err := os.ReadFile("/proc/sys/vm/nr_hugepages")
	if err != nil {
		t.Fatal(err)
	}
	_, preloadErr := os.Stat("/etc/ld.so.preload")
	linksBefore := hostLinks(t)

	cmd := exec.Command(bin, "simulate", "--local", "--scenario", "all", "--api", base,
		"--token-file", tokenFile, "--timeout", "10s", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var rep simulate.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("simulate: %v (report %v)\n%s\n%s", runErr, err, stdout.String(), stderr.String())
	}
	if runErr != nil {
		t.Errorf("simulate exited: %v\n%s", runErr, stderr.String())
	}

	containers := map[string]simulate.ScenarioReport{}
	for _, s := range rep.Scenarios {
		containers[s.Container] = s
	}
	if len(rep.Scenarios) != len(simulate.Scenarios()) {
		t.Fatalf("%d scenarios reported, want %d", len(rep.Scenarios), len(simulate.Scenarios()))
	}
	for _, s := range rep.Scenarios {
		for _, a := range s.Alerts {
			if a.Role != simulate.RoleExpected {
				continue
			}
			if !a.Seen {
				t.Errorf("%s: %s never reached the backend", s.Name, a.Detection)
				continue
			}
			t.Logf("%-13s %-17s %6v  %s", s.Name, a.Detection, a.Latency.Round(time.Millisecond), strings.Join(a.Alert.Args, " "))
			if a.Latency > 10*time.Second {
				t.Errorf("%s: %s took %v", s.Name, a.Detection, a.Latency)
			}
		}
	}

	// Independently of the simulator's own bookkeeping: every alert at
	// the backend from a sandbox container is one its scenario explains,
	// from the victim, with the web server among its ancestors.
	var list struct {
		Alerts []json.RawMessage `json:"alerts"`
	}
	if code := getJSON(t, base+"/api/v1/alerts?limit=1000", token, &list); code != http.StatusOK {
		t.Fatalf("alerts: %d", code)
	}
	seen := map[string][]string{}
	for _, raw := range list.Alerts {
		a := &api.Alert{}
		if err := protojson.Unmarshal(raw, a); err != nil {
			t.Fatal(err)
		}
		cid := a.GetContainer().GetId()
		if !strings.HasPrefix(cid, simulate.IDPrefix) {
			continue
		}
		s, ok := containers[cid]
		if !ok {
			t.Errorf("alert %s from sandbox container %s that is no scenario's victim: %s", a.GetDetectionId(), cid, a.GetSummary())
			continue
		}
		allowed := false
		for _, r := range s.Alerts {
			allowed = allowed || string(r.Detection) == a.GetDetectionId()
		}
		if !allowed {
			t.Errorf("%s: unexpected %s alert: %s (%v)", s.Name, a.GetDetectionId(), a.GetSummary(), a.GetProcess().GetArgs())
		}
		seen[s.Name] = append(seen[s.Name], a.GetDetectionId())
		if a.GetProcess().GetExe() == "" || len(a.GetProcess().GetArgs()) == 0 {
			t.Errorf("%s: %s alert lacks its process: %v", s.Name, a.GetDetectionId(), a.GetProcess())
		}
		if !slices.ContainsFunc(a.GetAncestry(), func(an *api.Ancestor) bool {
			return len(an.GetArgs()) > 0 && filepath.Base(an.GetArgs()[0]) == "httpd"
		}) {
			t.Errorf("%s: %s alert without the web server in its ancestry: %v", s.Name, a.GetDetectionId(), a.GetAncestry())
		}
	}
	for _, s := range rep.Scenarios {
		for _, a := range s.Alerts {
			if a.Role == simulate.RoleExpected && !slices.Contains(seen[s.Name], string(a.Detection)) {
				t.Errorf("%s: %s reported seen but not at the backend", s.Name, a.Detection)
			}
		}
	}
	if len(rep.Unexpected) > 0 {
		t.Errorf("simulate reported unexpected alerts: %+v", rep.Unexpected)
	}

	// The host is as it was.
	if now, err := os.ReadFile("/proc/sys/vm/nr_hugepages"); err != nil || !bytes.Equal(now, hugepages) {
		t.Errorf("host nr_hugepages changed: %q → %q (%v)", hugepages, now, err)
	}
	if _, err := os.Stat("/etc/ld.so.preload"); (err == nil) != (preloadErr == nil) {
		t.Errorf("host /etc/ld.so.preload changed existence: %v", err)
	}
	if after := hostLinks(t); after != linksBefore {
		t.Errorf("host network interfaces changed:\n%s\n→\n%s", linksBefore, after)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "harrier-simulate-*")); len(left) > 0 {
		t.Errorf("temporary directories left: %v", left)
	}
	if out, _ := exec.Command("sh", "-c", "grep -c "+simulate.IDPrefix+" /proc/self/mountinfo").Output(); strings.TrimSpace(string(out)) != "0" {
		t.Errorf("mounts left behind: %s", out)
	}
	t.Logf("wall time %v", time.Since(start).Round(time.Second))
}

// hostLinks lists the host's network interfaces and addresses.
func hostLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-brief", "addr").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
