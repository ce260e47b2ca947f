package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/simulate"
)

// TestSimulateIncidents: every scenario of `harrier simulate --local
// --scenario all` (all on this one node, run side by side under one
// simulator process) becomes exactly one incident at the backend, holding
// all of that scenario's alerts and no other scenario's; and the web
// shell's incident page shows its alerts.
func TestSimulateIncidents(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	bin := buildHarrier(t)
	base, token := startRun(t, bin, t.TempDir(), "metricsAddr: \"off\"\n")
	// A scenario that missed an alert fails below, by name.
	rep, err := simulateLocal(t, bin, base, token, "all")
	if err != nil {
		t.Log(err)
	}
	scenarioOf := map[string]string{} // container ID → scenario
	for _, s := range rep.Scenarios {
		scenarioOf[s.Container] = s.Name
	}

	var list struct {
		Alerts []json.RawMessage `json:"alerts"`
	}
	if code := getJSON(t, base+"/api/v1/alerts?limit=1000", token, &list); code != http.StatusOK {
		t.Fatalf("alerts: %d", code)
	}
	alertsOf := map[string][]string{} // scenario → alert IDs
	for _, raw := range list.Alerts {
		a := &api.Alert{}
		if err := protojson.Unmarshal(raw, a); err != nil {
			t.Fatal(err)
		}
		if s, ok := scenarioOf[a.GetContainer().GetId()]; ok {
			alertsOf[s] = append(alertsOf[s], a.GetId())
		}
	}

	var incs struct {
		Incidents []struct {
			ID string `json:"id"`
		} `json:"incidents"`
	}
	if code := getJSON(t, base+"/api/v1/incidents?limit=1000", token, &incs); code != http.StatusOK {
		t.Fatalf("incidents: %d", code)
	}
	incidentOf := map[string]string{} // alert ID → incident
	members := map[string][]string{}
	for _, l := range incs.Incidents {
		var one struct {
			Incident struct {
				AlertIDs []string `json:"alert_ids"`
				Title    string   `json:"title"`
				Tactics  []string `json:"tactics"`
			} `json:"incident"`
		}
		if code := getJSON(t, base+"/api/v1/incidents/"+l.ID, token, &one); code != http.StatusOK {
			t.Fatalf("incident %s: %d", l.ID, code)
		}
		members[l.ID] = one.Incident.AlertIDs
		for _, id := range one.Incident.AlertIDs {
			incidentOf[id] = l.ID
		}
		t.Logf("%s: %d alerts, %v: %s", l.ID, len(one.Incident.AlertIDs), one.Incident.Tactics, one.Incident.Title)
	}

	used := map[string]string{} // incident → scenario
	for _, s := range rep.Scenarios {
		ids := alertsOf[s.Name]
		if len(ids) == 0 {
			t.Errorf("%s: no alerts at the backend", s.Name)
			continue
		}
		inc := incidentOf[ids[0]]
		for _, id := range ids {
			if incidentOf[id] != inc {
				t.Errorf("%s: alert %s in incident %q, its first alert in %q", s.Name, id, incidentOf[id], inc)
			}
		}
		if other, ok := used[inc]; ok {
			t.Errorf("scenarios %s and %s share incident %s", other, s.Name, inc)
		}
		used[inc] = s.Name
		got, want := slices.Clone(members[inc]), slices.Clone(ids)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: incident %s holds %v, the scenario's alerts are %v", s.Name, inc, got, want)
		}
	}

	// The web shell's incident page, as a browser with the token sees it.
	ws := alertsOf["webshell"]
	if len(ws) == 0 {
		t.Fatal("no alerts of the webshell scenario")
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/incidents/"+incidentOf[ws[0]], nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("incident page: %d", resp.StatusCode)
	}
	for _, id := range ws {
		if !bytes.Contains(body, []byte(`href="/alerts/`+id+`"`)) {
			t.Errorf("incident page lacks alert %s", id)
		}
	}

	// Its first alert's explanation: the tree from the real ancestry, with
	// the web server inside the container and the boundary drawn above it
	// (below runc when the process cache recorded it, else below host PID 1).
	var ex struct {
		Explanation struct {
			Sentence string          `json:"sentence"`
			Incident string          `json:"incident"`
			Boundary bool            `json:"boundary_recorded"`
			Tree     json.RawMessage `json:"tree"`
		} `json:"explanation"`
	}
	if code := getJSON(t, base+"/api/v1/alerts/"+ws[0]+"/explanation", token, &ex); code != http.StatusOK {
		t.Fatalf("explanation: %d", code)
	}
	t.Logf("web shell: %s", ex.Explanation.Sentence)
	// The tree starts at the oldest recorded ancestor: host PID 1 when the
	// chain is short, the test's own runner under make (ancestry depth).
	if ex.Explanation.Incident != incidentOf[ws[0]] || !bytes.HasPrefix(ex.Explanation.Tree, []byte(`{"pid":`)) ||
		!bytes.Contains(ex.Explanation.Tree, []byte(`"host":true,"container_below":true`)) || !bytes.Contains(ex.Explanation.Tree, []byte(`"this_alert":true`)) ||
		!bytes.Contains(ex.Explanation.Tree, []byte(`"cmdline":"httpd -f -p 8080 -h /www","uid":1000`)) ||
		!strings.Contains(ex.Explanation.Sentence, "started by sh") {
		t.Errorf("explanation: incident %q (want %q), boundary %v, tree %s", ex.Explanation.Incident, incidentOf[ws[0]],
			ex.Explanation.Boundary, ex.Explanation.Tree)
	}
}

// simulateLocal runs `harrier simulate --local --scenario scenarios`
// against the backend at base and returns its report; err is the
// simulator's failure (a scenario whose alerts did not all come), with its
// log. A report that does not parse ends t.
func simulateLocal(t *testing.T, bin, base, token, scenarios string) (simulate.Report, error) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "simulate", "--local", "--scenario", scenarios, "--api", base,
		"--token-file", tokenFile, "--timeout", "10s", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var rep simulate.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("simulate %s: %v (report %v)\n%s", scenarios, runErr, err, stderr.String())
	}
	if runErr != nil {
		return rep, fmt.Errorf("simulate %s: %w\n%s", scenarios, runErr, stderr.String())
	}
	return rep, nil
}
