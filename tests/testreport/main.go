// Command testreport reads `go test -json` output on stdin, prints the output
// of every failed test, lists every skipped test with its reason, and ends
// with one line "N passed, N failed, N skipped". It exits non-zero when a
// test or a package build failed, when nothing ran, and, with -fail-on-skip,
// when any test skipped: CI runs as root on a machine with every dependency,
// so a skip there is a test that never ran.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// testEvent is one line of test2json output (cmd/test2json).
type testEvent struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string
	Elapsed    float64
}

// report is what one run of `go test -json` said, test by test.
type report struct {
	passed, failed, skipped int
	failures                []string // "pkg Test" or "pkg (package)"
	skips                   []string // "pkg Test: reason"
	buildFailures           []string
	output                  map[string]*strings.Builder // per test, until it ends
	buildOutput             map[string]*strings.Builder // per import path
	text                    []string                    // non-JSON lines (go vet, linker errors)
}

func newReport() *report {
	return &report{output: map[string]*strings.Builder{}, buildOutput: map[string]*strings.Builder{}}
}

func key(pkg, test string) string { return pkg + " " + test }

// add records one line of input.
func (r *report) add(line []byte, out io.Writer) {
	var ev testEvent
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
		r.text = append(r.text, string(line))
		return
	}
	switch ev.Action {
	case "build-output":
		b := r.buildOutput[ev.ImportPath]
		if b == nil {
			b = &strings.Builder{}
			r.buildOutput[ev.ImportPath] = b
		}
		b.WriteString(ev.Output)
		return
	case "build-fail":
		r.buildFailures = append(r.buildFailures, ev.ImportPath)
		if b := r.buildOutput[ev.ImportPath]; b != nil {
			fmt.Fprintf(out, "--- BUILD FAIL %s\n%s", ev.ImportPath, b.String())
		}
		return
	}
	k := key(ev.Package, ev.Test)
	switch ev.Action {
	case "output":
		b := r.output[k]
		if b == nil {
			b = &strings.Builder{}
			r.output[k] = b
		}
		b.WriteString(ev.Output)
	case "pass", "fail", "skip":
		testOut := r.output[k]
		delete(r.output, k)
		if ev.Test == "" { // the package's own result, printed as go test does
			fmt.Fprintf(out, "%-4s %s %.1fs\n", map[string]string{"pass": "ok", "fail": "FAIL", "skip": "?"}[ev.Action], ev.Package, ev.Elapsed)
			if ev.Action == "fail" {
				r.failures = append(r.failures, ev.Package+" (package)")
				if testOut != nil {
					fmt.Fprintf(out, "--- FAIL package %s\n%s", ev.Package, testOut.String())
				}
				r.printUnfinished(out, ev.Package)
			}
			return
		}
		switch ev.Action {
		case "pass":
			r.passed++
		case "fail":
			r.failed++
			r.failures = append(r.failures, k)
			if testOut != nil {
				fmt.Fprintf(out, "--- FAIL %s\n%s", k, testOut.String())
			}
		case "skip":
			r.skipped++
			r.skips = append(r.skips, k+": "+skipReason(testOut))
		}
	}
}

// printUnfinished prints the output of the package's tests that started but
// never ended: a panic in a goroutine, a timeout or an os.Exit ends the test
// binary mid-test, and its message is in that test's output, not the
// package's.
func (r *report) printUnfinished(out io.Writer, pkg string) {
	var unfinished []string
	for k := range r.output {
		if strings.HasPrefix(k, pkg+" ") {
			unfinished = append(unfinished, k)
		}
	}
	sort.Strings(unfinished)
	for _, k := range unfinished {
		fmt.Fprintf(out, "--- UNFINISHED %s\n%s", k, r.output[k].String())
		delete(r.output, k)
	}
}

// skipReason picks the line t.Skip wrote (the one after "--- SKIP").
func skipReason(out *strings.Builder) string {
	if out == nil {
		return "(no reason given)"
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var reason []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		reason = append(reason, l)
	}
	if len(reason) == 0 {
		return "(no reason given)"
	}
	return strings.Join(reason, " | ")
}

// options are the command's flags.
type options struct {
	failOnSkip bool
	// stream echoes every output line as it arrives (go test -v's view),
	// for long runs whose logs are the figures.
	stream bool
}

func run(in io.Reader, out io.Writer, opts options) error {
	r := newReport()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		if opts.stream {
			var ev testEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Action == "output" {
				fmt.Fprint(out, ev.Output)
			}
		}
		r.add(sc.Bytes(), out)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading go test -json: %w", err)
	}
	for _, l := range r.text {
		fmt.Fprintln(out, l)
	}
	sort.Strings(r.skips)
	if len(r.skips) > 0 {
		fmt.Fprintf(out, "skipped tests (%d):\n", len(r.skips))
		for _, s := range r.skips {
			fmt.Fprintln(out, "  "+s)
		}
	}
	if len(r.failures) > 0 || len(r.buildFailures) > 0 {
		fmt.Fprintln(out, "failed:")
		for _, f := range append(r.buildFailures, r.failures...) {
			fmt.Fprintln(out, "  "+f)
		}
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	var errs []error
	if len(r.failures) > 0 || len(r.buildFailures) > 0 {
		errs = append(errs, fmt.Errorf("%d tests and %d packages failed", r.failed, len(r.failures)-r.failed+len(r.buildFailures)))
	}
	if r.passed+r.failed == 0 {
		errs = append(errs, errors.New("no test ran"))
	}
	if opts.failOnSkip && r.skipped > 0 {
		errs = append(errs, fmt.Errorf("%d tests skipped: in CI every test must run (see the list above)", r.skipped))
	}
	return errors.Join(errs...)
}

func main() {
	var opts options
	flag.BoolVar(&opts.failOnSkip, "fail-on-skip", false, "fail when any test skipped")
	flag.BoolVar(&opts.stream, "stream", false, "echo every test's output as it arrives (like go test -v)")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, opts); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
}
