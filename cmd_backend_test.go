package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackendExportsTest: `harrier backend exports test NAME -c FILE` sends
// one alert to that export and prints its answer; an unknown name lists the
// ones there are.
func TestBackendExportsTest(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "alerts.jsonl")
	conf := filepath.Join(dir, "backend.yaml")
	yaml := "backend:\n  exports:\n  - name: usb\n    type: file\n    format: cef\n    file: {path: " + out + "}\n" +
		"  - name: down\n    type: syslog\n    syslog: {network: tcp, address: \"127.0.0.1:1\"}\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, wantOut, wantErr string
	}{
		{"usb", "usb: appended 1 line(s) to " + out, ""},
		{"down", "", "connection refused"},
		{"nope", "", `no export named "nope"`},
	} {
		root := newRootCommand()
		var b bytes.Buffer
		root.SetOut(&b)
		root.SetErr(&b)
		root.SetArgs([]string{"backend", "exports", "test", tc.name, "-c", conf})
		err := root.Execute()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
		if !strings.Contains(b.String(), tc.wantOut) {
			t.Errorf("%s: printed %q, want %q", tc.name, b.String(), tc.wantOut)
		}
	}
	line, err := os.ReadFile(out)
	if err != nil || !strings.HasPrefix(string(line), "CEF:0|Harrier|Harrier|") || !strings.Contains(string(line), "|export-test|") {
		t.Errorf("file: %q, %v", line, err)
	}
}
