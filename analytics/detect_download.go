package analytics

import (
	"path"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// downloadExec: a file fetched by a download tool is executed in the same
// container within the sequence window. The download's target is read from
// the tool's arguments (and from its file writes when those are watched), so
// the detection does not depend on the download path being watched.
type downloadExec struct {
	tools        map[string]bool
	interpreters map[string]bool // shells and interpreters: their argv[1] is what they run
	window       time.Duration
	downloads    map[string]map[string]*download // container → path → download
}

type download struct {
	ev    *api.Event
	at    time.Time
	chmod *api.Event
}

const maxDownloadsPerContainer = 64

func (*downloadExec) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_EXEC, api.EventKind_EVENT_KIND_FILE_OPEN, api.EventKind_EVENT_KIND_CHMOD}
}

func (d *downloadExec) observe(c *evalContext, now time.Time) []*api.Event {
	ev := c.ev
	p := ev.GetProcess()
	cid := ev.GetContainer().GetId()
	switch ev.GetKind() {
	case api.EventKind_EVENT_KIND_FILE_OPEN:
		if o := ev.GetFileOpen(); d.tools[procName(p)] && (o.GetWrite() || o.GetCreate()) && o.GetResult() >= 0 {
			d.remember(cid, o.GetPath(), ev, now)
		}
		return nil
	}
	// Chmod events (when the sensor reports them) attach to a known download.
	if t := chmodPath(ev); t != "" {
		if dl := d.downloads[cid][t]; dl != nil {
			dl.chmod = ev
		}
		return nil
	}
	if d.tools[procName(p)] {
		if out := downloadTarget(p.GetArgs(), p.GetCwd()); out != "" {
			d.remember(cid, out, ev, now)
		}
		return nil
	}
	m := d.downloads[cid]
	if len(m) == 0 {
		return nil
	}
	for _, cand := range d.execCandidates(ev) {
		dl := m[cand]
		if dl == nil {
			continue
		}
		delete(m, cand)
		if now.Sub(dl.at) > d.window {
			return nil
		}
		evidence := []*api.Event{dl.ev}
		if dl.chmod != nil {
			evidence = append(evidence, dl.chmod)
		}
		return append(evidence, ev)
	}
	return nil
}

func (d *downloadExec) remember(cid, p string, ev *api.Event, now time.Time) {
	m := d.downloads[cid]
	if m == nil {
		if len(d.downloads) >= maxScanTrackers {
			clear(d.downloads)
		}
		m = map[string]*download{}
		d.downloads[cid] = m
	}
	if len(m) >= maxDownloadsPerContainer {
		for k, v := range m {
			if now.Sub(v.at) > d.window {
				delete(m, k)
			}
		}
		if len(m) >= maxDownloadsPerContainer {
			clear(m)
		}
	}
	m[p] = &download{ev: ev, at: now}
}

// execCandidates are the paths an exec may run: the executable, the name it
// was called by, and — for a shell or interpreter only — the script it was
// asked to run (`sh ./x`); `cat ./x` reads x, it does not run it.
func (d *downloadExec) execCandidates(ev *api.Event) []string {
	p := ev.GetProcess()
	out := []string{p.GetExe()}
	args := p.GetArgs()
	if len(args) > 0 {
		out = append(out, absPath(args[0], p.GetCwd()))
	}
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") && d.interpreters[procName(p)] {
		out = append(out, absPath(args[1], p.GetCwd()))
	}
	if f := ev.GetExec().GetFilename(); f != "" {
		out = append(out, absPath(f, p.GetCwd()))
	}
	return out
}

func absPath(p, cwd string) string {
	if p == "" || strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	if cwd == "" {
		cwd = "/"
	}
	return path.Join(cwd, p)
}

// downloadTarget reads where curl or wget will write, from their arguments.
// busybox's applets are seen through argv[0], so "wget" covers both.
func downloadTarget(args []string, cwd string) string {
	if len(args) == 0 {
		return ""
	}
	tool := baseName(args[0])
	if tool == "busybox" && len(args) > 1 {
		tool, args = args[1], args[1:]
	}
	var out, dir, url string
	remoteName := false
	for i := 1; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") || strings.HasPrefix(a, "ftp://"):
			url = a
		case tool == "curl" && (a == "-o" || a == "--output"):
			out = next()
		case tool == "curl" && strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "--"):
			out = a[2:]
		case tool == "curl" && (a == "-O" || a == "--remote-name"):
			remoteName = true
		case tool == "curl" && a == "--output-dir":
			dir = next()
		case tool != "curl" && a == "-O":
			out = next()
		case tool != "curl" && strings.HasPrefix(a, "--output-document="):
			out = strings.TrimPrefix(a, "--output-document=")
		case tool != "curl" && strings.HasPrefix(a, "-O") && !strings.HasPrefix(a, "--"):
			out = a[2:]
		case tool != "curl" && a == "-P":
			dir = next()
		case tool != "curl" && strings.HasPrefix(a, "--directory-prefix="):
			dir = strings.TrimPrefix(a, "--directory-prefix=")
		}
	}
	if out == "-" {
		return ""
	}
	if out == "" && url != "" && (remoteName || tool != "curl") {
		u := url
		if i := strings.IndexAny(u, "?#"); i >= 0 {
			u = u[:i]
		}
		if i := strings.Index(u, "://"); i >= 0 {
			u = u[i+3:]
		}
		if i := strings.IndexByte(u, '/'); i >= 0 && baseName(u) != "" {
			out = baseName(u)
		} else if tool != "curl" {
			out = "index.html"
		}
	}
	if out == "" {
		return ""
	}
	if dir != "" && !strings.HasPrefix(out, "/") {
		out = path.Join(dir, out)
	}
	return absPath(out, cwd)
}
