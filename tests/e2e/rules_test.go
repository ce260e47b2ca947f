package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestEventsAlertsFalcoShape runs `harrier events --alerts --format falco` on
// this node and checks the alerts a falcosidekick pipeline would receive.
func TestEventsAlertsFalcoShape(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	marker := exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT >/dev/null")
	shadow := exec.Command("cat", "/etc/shadow")
	lines := streamLines(t, bin, func() {
		for _, c := range []*exec.Cmd{marker, shadow} {
			if err := c.Run(); err != nil {
				t.Fatal(err)
			}
		}
	}, func(lines []string) bool { // the alert of each process printed
		alerted := func(pid int) bool {
			return slices.ContainsFunc(lines, func(l string) bool {
				var f struct {
					OutputFields map[string]any `json:"output_fields"`
				}
				if json.Unmarshal([]byte(l), &f) != nil {
					return false
				}
				p, _ := f.OutputFields["proc.pid"].(float64)
				return int(p) == pid
			})
		}
		return alerted(marker.Process.Pid) && alerted(shadow.Process.Pid)
	}, "--alerts", "--format", "falco")
	type falco struct {
		Rule, Priority, Output, Time, Hostname, Source string
		Tags                                           []string
		OutputFields                                   map[string]any `json:"output_fields"`
	}
	found := map[string]falco{}
	for _, line := range lines {
		var f falco
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("not JSON: %v: %s", err, line)
		}
		if f.Rule == "" || f.Priority == "" || f.Time == "" || f.Hostname == "" || f.Output == "" {
			t.Errorf("incomplete Falco alert: %s", line)
		}
		if pid, _ := f.OutputFields["proc.pid"].(float64); int(pid) == marker.Process.Pid || int(pid) == shadow.Process.Pid {
			found[f.OutputFields["harrier.detection_id"].(string)] = f
		}
	}
	if f, ok := found["test-alert"]; !ok || f.Priority != "Informational" || !strings.Contains(f.OutputFields["proc.cmdline"].(string), "HARRIER-TEST-ALERT") {
		t.Errorf("test-alert: %+v (all: %v)", f, lines)
	}
	if f, ok := found["sensitive-files"]; !ok || f.Priority != "Error" || f.OutputFields["fd.name"] != "/etc/shadow" || !contains(f.Tags, "T1552.001") {
		t.Errorf("sensitive-files: %+v", f)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestRulesRecordAndReplay records real events with `harrier events`, then
// replays them with `harrier rules test` through an operator rule file.
func TestRulesRecordAndReplay(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	dir := t.TempDir()
	tool := filepath.Join(dir, "site-backup")
	if err := os.Symlink("/bin/cat", tool); err != nil {
		t.Fatal(err)
	}
	lines := streamLines(t, bin, func() {
		for _, args := range [][]string{{tool, "/etc/hostname"}, {"cat", "/etc/shadow"}} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", args, err, out)
			}
		}
	}, func(lines []string) bool { // the last behaviour: cat opening /etc/shadow
		return slices.ContainsFunc(lines, func(l string) bool {
			return strings.Contains(l, `"file_open"`) && strings.Contains(l, `"/etc/shadow"`)
		})
	}, "--kind", "exec,file_open")
	rec := filepath.Join(dir, "recorded.jsonl")
	// A damaged line in the middle must be reported and skipped, not stop the replay.
	body := strings.Join(lines[:1], "\n") + "\n{not an event\n" + strings.Join(lines[1:], "\n") + "\n"
	if err := os.WriteFile(rec, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "site.yaml")
	if err := os.WriteFile(rules, []byte(`
rules:
  - id: site-cat
    name: Site tool ran
    severity: low
    kinds: [exec]
    condition: proc.argv.size() > 1 && basename(proc.argv[0]) == "site-backup"
    output: "{proc.cmdline}"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "rules", "test", rules, "--events", rec)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rules test: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), rec+":2: not an event, skipped") {
		t.Errorf("damaged line not reported with its line number: %s", stderr.String())
	}
	got := map[string]*api.Alert{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		a := &api.Alert{}
		if err := protojson.Unmarshal([]byte(line), a); err != nil {
			t.Fatalf("not an alert: %v: %s", err, line)
		}
		got[a.GetDetectionId()] = a
	}
	if a := got["site-cat"]; a == nil || !strings.HasSuffix(a.GetSummary(), "site-backup /etc/hostname") {
		t.Errorf("operator rule did not fire on the replay: %v", got)
	}
	if a := got["sensitive-files"]; a == nil || a.GetEvidence()[0].GetFileOpen().GetPath() != "/etc/shadow" {
		t.Errorf("built-in rule did not fire on the replay: %v", got)
	}
}

func TestRulesValidate(t *testing.T) {
	bin := buildHarrier(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("rules:\n  - id: test-alert\n    enabled: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("rules:\n  - id: ok-rule\n    name: OK\n    severity: low\n    kinds: [exec]\n    condition: proc.name == 'x'\n  - id: broken\n    name: Broken\n    severity: low\n    kinds: [exec]\n    condition: proc.name ==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "rules", "validate", good).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ok: ") {
		t.Fatalf("valid file: %v %s", err, out)
	}
	out, err = exec.Command(bin, "rules", "validate", good, bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), bad+`:7: rule "broken": condition:`) || !strings.Contains(string(out), "1 problem(s)") {
		t.Fatalf("invalid file: %v\n%s", err, out)
	}
}
