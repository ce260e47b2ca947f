package analytics

import (
	"strings"

	"github.com/harrier-sec/harrier/api"
)

// buildOutputs remembers, per container, the files that compilers and
// linkers run in that container were told to write (their -o argument, or
// a.out). A container that links a program and runs it — a CI job, a
// build stage, `make && ./hello` — runs an executable from its writable
// layer that nobody dropped there; proc.exe_built tells drift-binary so.
// The output is read from the tool's arguments, as downloadTarget reads a
// download's, because build directories are not watched file paths.
type buildOutputs struct {
	tools map[string]bool                // the build_tools list
	byCtr map[string]map[string]struct{} // container → output paths
	buf   []byte                         // scratch: a repeated build's lookup allocates nothing
}

// Bounds: a container's outputs and the containers tracked. Forgetting
// errs toward an alert, never toward silence.
const (
	maxBuildOutputsPerContainer = 256
	maxBuildContainers          = 1024
)

func newBuildOutputs(tools []string) *buildOutputs {
	b := &buildOutputs{tools: map[string]bool{}, byCtr: map[string]map[string]struct{}{}}
	for _, t := range tools {
		b.tools[t] = true
	}
	return b
}

// observe records the output of a build tool's exec.
func (b *buildOutputs) observe(ev *api.Event) {
	if b == nil || ev.GetKind() != api.EventKind_EVENT_KIND_EXEC {
		return
	}
	p := ev.GetProcess()
	name := procName(p)
	if !b.tools[name] {
		return
	}
	out := buildTarget(name, p.GetArgs())
	if out == "" {
		return
	}
	cid := ev.GetContainer().GetId()
	m := b.byCtr[cid]
	if m == nil {
		if len(b.byCtr) >= maxBuildContainers {
			clear(b.byCtr)
		}
		m = map[string]struct{}{}
		b.byCtr[cid] = m
	}
	// The same build run again (make in a loop, a CI runner) finds its
	// output without building a new string.
	b.buf = b.buf[:0]
	if !strings.HasPrefix(out, "/") {
		b.buf = append(append(b.buf, p.GetCwd()...), '/')
	}
	b.buf = append(b.buf, out...)
	if _, ok := m[string(b.buf)]; ok {
		return
	}
	if len(m) >= maxBuildOutputsPerContainer {
		clear(m)
	}
	m[absPath(out, p.GetCwd())] = struct{}{}
}

// built reports whether the exec's executable is a recorded build output
// of its container.
func (b *buildOutputs) built(ev *api.Event) bool {
	if b == nil {
		return false
	}
	m := b.byCtr[ev.GetContainer().GetId()]
	if len(m) == 0 {
		return false
	}
	p := ev.GetProcess()
	_, ok := m[p.GetExe()]
	return ok
}

// buildTarget is the file a compiler or linker invocation writes: its -o
// (or --output) argument; for C toolchains that link without one, a.out.
// The go command and Go's linker write an executable only with -o.
// Compiling without linking (-c, -S, -E) writes no executable.
func buildTarget(tool string, args []string) string {
	out, compileOnly := "", false
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "--output":
			if i+1 < len(args) {
				i++
				out = args[i]
			}
		case strings.HasPrefix(a, "-o="), strings.HasPrefix(a, "--output="):
			out = a[strings.IndexByte(a, '=')+1:]
		case a == "-c" || a == "-S" || a == "-E":
			compileOnly = true
		}
	}
	switch {
	case compileOnly:
		return ""
	case out == "" && tool != "go" && tool != "link":
		return "a.out"
	}
	return out
}
