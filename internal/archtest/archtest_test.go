// Package archtest keeps the direction of imports between Harrier's parts.
//
// From the bottom up:
//
//	api, internal/...       the wire and config vocabulary, small helpers
//	sensor                  the kernel side; knows only api
//	analytics, store,       detections; the spool; the QUIC uplink —
//	transport, kube         each beside the others, none above them
//	agent                   one node's pipeline: sensor → analytics → spool → uplink
//	backend                 ingest, store, API and UI; knows transport, not the agent
//	allinone                the agent and an embedded backend in one process
//	main (the module root)  the commands; the only importer of allinone
//
// A part may use what is below it, never what is above or beside it where
// the table says so. Only non-test imports count: tests may cross a seam to
// check both sides of it (agent's tests feed its records to a backend store).
package archtest

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/harrier-sec/harrier"

// rules: the packages at (and under) part must not depend, directly or
// through others, on any package at or under the parts listed.
var rules = []struct {
	part      string
	forbidden []string
}{
	{"api", []string{"sensor", "analytics", "store", "transport", "kube", "backend", "agent", "allinone"}},
	{"sensor", []string{"analytics", "store", "transport", "kube", "backend", "agent", "allinone"}},
	{"analytics", []string{"sensor/container", "sensor/proc", "store", "transport", "backend", "agent", "allinone"}},
	{"store", []string{"sensor", "analytics", "transport", "kube", "backend", "agent", "allinone"}},
	{"transport", []string{"sensor", "analytics", "store", "kube", "backend", "agent", "allinone"}},
	{"kube", []string{"backend", "agent", "allinone"}},
	{"agent", []string{"backend", "allinone"}},
	{"backend", []string{"sensor", "agent", "allinone"}},
	// The exporters know the store through export.Source and export.KV only.
	{"backend/export", []string{"sensor", "analytics", "store", "transport", "kube", "agent", "allinone"}},
	// The simulator sees Harrier as a user does: through its API and the alerts it raises.
	{"simulate", []string{"sensor", "analytics", "store", "transport", "backend", "agent", "allinone"}},
}

// under reports whether the import path pkg is the module's part or below it.
func under(pkg, part string) bool {
	p := module + "/" + part
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

func TestImportDirection(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		pkg, rest, _ := strings.Cut(sc.Text(), "|")
		imports, deps, _ := strings.Cut(rest, "|")
		for _, r := range rules {
			if !under(pkg, r.part) {
				continue
			}
			seen[r.part] = true
			for _, dep := range strings.Fields(deps) {
				for _, f := range r.forbidden {
					if under(dep, f) {
						t.Errorf("%s depends on %s: %s must not use %s", pkg, dep, r.part, f)
					}
				}
			}
		}
		if pkg == module {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if under(imp, "allinone") {
				t.Errorf("%s imports %s: only the command (the module root) may", pkg, imp)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// A renamed part must not leave its rule checking nothing.
	for _, r := range rules {
		if !seen[r.part] {
			t.Errorf("no package %s/%s: update the rules", module, r.part)
		}
	}
}
