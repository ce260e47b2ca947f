package analytics

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// The catalogue of built-in detections in api and the built-in rules agree:
// every catalogued detection is implemented by a rule, every built-in rule is
// catalogued, in the same order, and each rule carries its entry's metadata.
func TestBuiltinRulesImplementTheCatalogue(t *testing.T) {
	rs, err := LoadRules()
	if err != nil {
		t.Fatal(err)
	}
	catalogue := api.Detections()
	var ruleIDs, catalogued []string
	for _, r := range rs.Rules {
		ruleIDs = append(ruleIDs, r.ID)
	}
	for _, d := range catalogue {
		catalogued = append(catalogued, string(d.ID))
	}
	for _, id := range catalogued {
		if !slices.Contains(ruleIDs, id) {
			t.Errorf("api catalogues %q but no built-in rule implements it", id)
		}
	}
	for _, id := range ruleIDs {
		if !slices.Contains(catalogued, id) {
			t.Errorf("built-in rule %q is not in api's catalogue", id)
		}
	}
	if t.Failed() {
		return
	}
	if !slices.Equal(ruleIDs, catalogued) {
		t.Errorf("order differs:\nrules:     %v\ncatalogue: %v", ruleIDs, catalogued)
	}
	for _, d := range catalogue {
		r := rs.Rule(string(d.ID))
		if r.Name != d.Name || r.Severity != d.Severity {
			t.Errorf("%s: rule has name %q severity %v, catalogue %q %v", d.ID, r.Name, r.Severity, d.Name, d.Severity)
		}
		if len(r.Mitre) != len(d.Mitre) {
			t.Errorf("%s: rule has %d MITRE techniques, catalogue %d", d.ID, len(r.Mitre), len(d.Mitre))
			continue
		}
		for i := range d.Mitre {
			if !proto.Equal(r.Mitre[i], d.Mitre[i]) {
				t.Errorf("%s: MITRE %d is %v, catalogue %v", d.ID, i, r.Mitre[i], d.Mitre[i])
			}
		}
		if r.Detector != "" && r.Detector != string(d.ID) {
			t.Errorf("%s runs detector %q: detectors are named after their detection", d.ID, r.Detector)
		}
	}
	// And the engine compiles every one of them (a detector the switch does
	// not know is an error there).
	newTestEngine(t, Config{})
}

// An operator's file may redefine a built-in detection without repeating
// its metadata, or override that metadata; a new detection must state it.
func TestCatalogueMetadataInRuleFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "site.yaml")
	if err := os.WriteFile(file, []byte(`rules:
  - id: db-spawns-shell
    kinds: [exec]
    condition: proc.name == "sh" && parent.name == "postgres"
  - id: sensitive-files
    name: Site credential read
    severity: low
    mitre: [{tactic: Discovery}]
    kinds: [open]
    condition: file.path == "/etc/site-secret"
  - id: site-new
    kinds: [open]
    condition: file.path == "/etc/other"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := LoadRules(file)
	problems := Problems(err)
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), `rule "site-new": name is required`) {
		t.Fatalf("problems = %v, want only site-new's missing name", problems)
	}
	want, _ := api.LookupDetection(api.DetectionDBSpawnsShell)
	if r := rs.Rule(string(api.DetectionDBSpawnsShell)); r.Name != want.Name || r.Severity != want.Severity ||
		len(r.Mitre) != len(want.Mitre) || r.File != file {
		t.Errorf("redefined db-spawns-shell = %q %v %v from %s, want the catalogue's metadata", r.Name, r.Severity, r.Mitre, r.File)
	}
	if r := rs.Rule(string(api.DetectionSensitiveFiles)); r.Name != "Site credential read" ||
		r.Severity != api.Severity_SEVERITY_LOW || len(r.Mitre) != 1 || r.Mitre[0].GetTactic() != "Discovery" {
		t.Errorf("overridden sensitive-files = %q %v %v, want the file's metadata", r.Name, r.Severity, r.Mitre)
	}
}
