package main

import (
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	const (
		pass = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p"}
`
		skip = `{"Action":"output","Package":"p","Test":"TestS","Output":"=== RUN   TestS\n"}
{"Action":"output","Package":"p","Test":"TestS","Output":"    s_test.go:9: needs root (eBPF, containers)\n"}
{"Action":"output","Package":"p","Test":"TestS","Output":"--- SKIP: TestS (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestS"}
`
		fail = `{"Action":"output","Package":"q","Test":"TestF","Output":"    f_test.go:3: got 1, want 2\n"}
{"Action":"fail","Package":"q","Test":"TestF"}
{"Action":"fail","Package":"q"}
`
		buildFail = `{"ImportPath":"r","Action":"build-output","Output":"r/x.go:1:1: syntax error\n"}
{"ImportPath":"r","Action":"build-fail"}
{"Action":"fail","Package":"r"}
`
		panicked = `{"Action":"run","Package":"t","Test":"TestP"}
{"Action":"output","Package":"t","Test":"TestP","Output":"panic: send on closed channel\n"}
{"Action":"output","Package":"t","Output":"FAIL\tt\t1.0s\n"}
{"Action":"fail","Package":"t"}
`
	)
	tests := []struct {
		name       string
		in         string
		failOnSkip bool
		wantErr    string
		wantOut    []string
	}{
		{name: "pass", in: pass, wantOut: []string{"1 passed, 0 failed, 0 skipped"}},
		{name: "skip allowed", in: pass + skip, wantOut: []string{"p TestS: s_test.go:9: needs root", "1 passed, 0 failed, 1 skipped"}},
		{name: "skip in CI", in: pass + skip, failOnSkip: true, wantErr: "1 tests skipped", wantOut: []string{"skipped tests (1)"}},
		{name: "fail", in: pass + fail, wantErr: "1 tests and 1 packages failed", wantOut: []string{"--- FAIL q TestF", "got 1, want 2", "1 passed, 1 failed, 0 skipped"}},
		{name: "build fail", in: pass + buildFail, wantErr: "packages failed", wantOut: []string{"BUILD FAIL r", "syntax error"}},
		{name: "panic mid-test", in: pass + panicked, wantErr: "0 tests and 1 packages failed", wantOut: []string{"--- UNFINISHED t TestP", "send on closed channel"}},
		{name: "nothing ran", in: "", wantErr: "no test ran"},
		{name: "plain text kept", in: "# vet says\n" + pass, wantOut: []string{"# vet says"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			err := run(strings.NewReader(tt.in), &out, options{failOnSkip: tt.failOnSkip})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
