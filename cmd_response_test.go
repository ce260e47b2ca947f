package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/response"
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
