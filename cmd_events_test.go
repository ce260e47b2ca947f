package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestEventsRefusesMeaninglessFlags: a flag that another one makes
// meaningless is an error before anything loads, not silently ignored.
func TestEventsRefusesMeaninglessFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--json"}, "unknown flag: --json"},
		{[]string{"--alerts", "--kind", "exec"}, "[alerts kind]"},
		{[]string{"--alerts", "--container", "3f2a"}, "[alerts container]"},
		{[]string{"--alerts", "--table"}, "were all set"},
		{[]string{"--table", "--discard"}, "were all set"},
		{[]string{"--status", "--duration", "1s"}, "[status duration]"},
		{[]string{"--status", "--stats"}, "[status stats]"},
		{[]string{"--format", "falco"}, "--format and --rules apply to --alerts"},
		{[]string{"--rules", "r.yaml"}, "--format and --rules apply to --alerts"},
	} {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"events"}, tc.args...))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("events %v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
