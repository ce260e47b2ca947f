package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestRun: a short run of every measurement prints each figure and writes
// them as JSON, with as many kills as asked and storm times above zero.
func TestRun(t *testing.T) {
	testenv.RequireRoot(t)
	out := filepath.Join(t.TempDir(), "response.json")
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"-kills", "20", "-execs", "20", "-connects", "50", "-rounds", "2", "-out", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kill at exec: fork to SIGKILL sent", "kill-process-tree", "exec storm", "connect storm"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.KillAtExec) != 3 || r.KillAtExec[0].N != 20 || r.KillAtExec[0].P50Us <= 0 || len(r.KillProcessTree) != 1 || r.KillProcessTree[0].N != 20 {
		t.Errorf("latencies %+v %+v", r.KillAtExec, r.KillProcessTree)
	}
	if r.ExecStorm.WithoutUs <= 0 || r.ExecStorm.WithUs <= 0 || r.ConnectStorm.WithoutUs <= 0 || r.ConnectStorm.WithUs <= 0 {
		t.Errorf("storms %+v %+v", r.ExecStorm, r.ConnectStorm)
	}
}
