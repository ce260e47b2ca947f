package analytics

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// A detector is a Go detection for what one event cannot tell: sequences,
// fan-out, state about other processes. Its metadata (name, severity, MITRE,
// exceptions, enable switch) lives in the rule that names it, so operators
// tune detectors exactly like rules. Detectors read the named lists of the
// rule set, so operators extend them (tool names, paths) without code.
type detector interface {
	kinds() []api.EventKind
	// observe returns the evidence of a detection, oldest first and the
	// triggering event last, or nil.
	observe(c *evalContext, now time.Time) []*api.Event
}

type detectorRule struct {
	rule *Rule
	det  detector
}

func (e *Engine) newDetector(r *Rule, rs *RuleSet) (detector, error) {
	set := func(name string) (map[string]bool, error) {
		if rs.lists[name] == nil {
			return nil, fmt.Errorf("detector %s needs the list %q", r.Detector, name)
		}
		items, err := rs.listItems(name, 0)
		if err != nil {
			return nil, err
		}
		m := make(map[string]bool, len(items))
		for _, it := range items {
			m[it] = true
		}
		return m, nil
	}
	seqWindow := e.cfg.SequenceWindow.Std()
	// Each detector is named after the built-in detection it runs.
	switch api.DetectionID(r.Detector) {
	case api.DetectionWebShell:
		servers, err := set("web_servers")
		if err != nil {
			return nil, err
		}
		interp, err := set("web_interpreters")
		if err != nil {
			return nil, err
		}
		tools, err := set("shell_and_recon_tools")
		if err != nil {
			return nil, err
		}
		return &webShell{servers: servers, interpreters: interp, tools: tools, listeners: map[uint32]bool{}}, nil
	case api.DetectionNetworkScan:
		tools, err := set("scanner_tools")
		if err != nil {
			return nil, err
		}
		return &networkScan{tools: tools, window: e.cfg.ScanWindow.Std(), threshold: e.cfg.ScanThreshold,
			procs: map[scanKey]*scanTracker{}}, nil
	case api.DetectionDownloadExec:
		tools, err := set("download_tools")
		if err != nil {
			return nil, err
		}
		interp, err := set("shells")
		if err != nil {
			return nil, err
		}
		more, err := set("interpreters")
		if err != nil {
			return nil, err
		}
		for k := range more {
			interp[k] = true
		}
		return &downloadExec{tools: tools, interpreters: interp, window: seqWindow, downloads: map[string]map[string]*download{}}, nil
	case api.DetectionK8sAPIFromContainer:
		tokens, err := set("sa_token_dirs")
		if err != nil {
			return nil, err
		}
		d := &apiAfterToken{tokenDirs: tokens, window: seqWindow, reads: map[string]tokenRead{}}
		for _, s := range e.cfg.KubernetesAPIServers {
			if ap, err := netip.ParseAddrPort(s); err == nil {
				d.endpoints = append(d.endpoints, ap)
			} else if a, err := netip.ParseAddr(s); err == nil {
				d.addrs = append(d.addrs, a)
			} else {
				return nil, fmt.Errorf("kubernetesAPIServers %q: want an IP or IP:port", s)
			}
		}
		return d, nil
	case api.DetectionIOCDomain:
		return loadIOCs(e.cfg.IOCFiles)
	case api.DetectionAnomalousProcess:
		return &baselineDetector{store: e.baseline, egress: false}, nil
	case api.DetectionAnomalousEgress:
		return &baselineDetector{store: e.baseline, egress: true}, nil
	case api.DetectionSAAnomalousOp:
		return &saBaseline{store: e.baseline}, nil
	}
	return nil, fmt.Errorf("unknown detector %q", r.Detector)
}

// webShell: a web server, or an interpreter that serves connections, has a
// shell or recon tool among its descendants. Interpreters (python, node,
// java, ...) count only once seen listening or accepting, because they also
// run build scripts and CLIs that legitimately start shells.
type webShell struct {
	servers, interpreters, tools map[string]bool
	listeners                    map[uint32]bool
}

const maxTrackedListeners = 65536

func (*webShell) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_EXEC, api.EventKind_EVENT_KIND_LISTEN,
		api.EventKind_EVENT_KIND_ACCEPT, api.EventKind_EVENT_KIND_EXIT}
}

func (w *webShell) observe(c *evalContext, _ time.Time) []*api.Event {
	ev := c.ev
	p := ev.GetProcess()
	switch ev.GetKind() {
	case api.EventKind_EVENT_KIND_LISTEN, api.EventKind_EVENT_KIND_ACCEPT:
		if result(ev) >= 0 {
			if len(w.listeners) >= maxTrackedListeners {
				clear(w.listeners)
			}
			w.listeners[p.GetTgid()] = true
		}
		return nil
	case api.EventKind_EVENT_KIND_EXIT:
		if p.GetPid() == p.GetTgid() {
			delete(w.listeners, p.GetTgid())
		}
		return nil
	}
	if !w.tools[procName(p)] {
		return nil
	}
	for _, a := range ev.GetAncestry() {
		name := ancestorName(a)
		if w.servers[name] || w.interpreters[name] && w.listeners[a.GetPid()] {
			return []*api.Event{ev}
		}
	}
	return nil
}

// networkScan: exec of a scanner, or one process trying many destinations.
type networkScan struct {
	tools     map[string]bool
	window    time.Duration
	threshold int
	procs     map[scanKey]*scanTracker
}

type scanKey struct {
	container string
	tgid      uint32
}

type scanTracker struct {
	start    time.Time
	ports    map[string]map[uint32]bool // host → ports tried
	failedTo map[string]bool            // hosts with a refused or unreachable connect
	recent   [scanEvidence]*api.Event   // ring of the latest connects
	next     int
	reported bool
}

// scanEvidence is how many connects a scan alert carries.
const scanEvidence = 8

// evidence returns the ring's events, oldest first.
func (t *scanTracker) evidence() []*api.Event {
	var out []*api.Event
	for i := range scanEvidence {
		if ev := t.recent[(t.next+i)%scanEvidence]; ev != nil {
			out = append(out, ev)
		}
	}
	return out
}

const maxScanTrackers = 4096

func (*networkScan) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_EXEC, api.EventKind_EVENT_KIND_CONNECT, api.EventKind_EVENT_KIND_EXIT}
}

func (s *networkScan) observe(c *evalContext, now time.Time) []*api.Event {
	ev := c.ev
	p := ev.GetProcess()
	key := scanKey{ev.GetContainer().GetId(), p.GetTgid()}
	switch ev.GetKind() {
	case api.EventKind_EVENT_KIND_EXEC:
		name := procName(p)
		if s.tools[name] || (name == "nc" || name == "ncat" || name == "netcat") && hasArg(p.GetArgs(), "-z") {
			return []*api.Event{ev}
		}
		return nil
	case api.EventKind_EVENT_KIND_EXIT:
		delete(s.procs, key)
		return nil
	}
	dst := ev.GetConnect().GetDestination()
	if dst.GetIp() == "" {
		return nil
	}
	t := s.procs[key]
	if t == nil || now.Sub(t.start) > s.window {
		if len(s.procs) >= maxScanTrackers {
			clear(s.procs)
		}
		t = &scanTracker{start: now, ports: map[string]map[uint32]bool{}, failedTo: map[string]bool{}}
		s.procs[key] = t
	}
	if t.reported {
		return nil
	}
	ports := t.ports[dst.GetIp()]
	if ports == nil {
		if len(t.ports) > s.threshold {
			return nil // bounded: already past the threshold in hosts
		}
		ports = map[uint32]bool{}
		t.ports[dst.GetIp()] = ports
	}
	if len(ports) <= s.threshold && !ports[dst.GetPort()] {
		ports[dst.GetPort()] = true
	}
	if r := result(ev); r < 0 && r != -115 && !t.failedTo[dst.GetIp()] { // -EINPROGRESS is a normal non-blocking connect
		t.failedTo[dst.GetIp()] = true
	}
	t.recent[t.next] = ev
	t.next = (t.next + 1) % scanEvidence
	if len(ports) >= s.threshold || len(t.ports) >= s.threshold && len(t.failedTo)*2 >= len(t.ports) {
		t.reported = true
		return t.evidence()
	}
	return nil
}

func hasArg(args []string, want string) bool {
	for _, a := range args[min(1, len(args)):] {
		if a == want || strings.HasPrefix(want, "-") && len(want) == 2 && strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.ContainsRune(a[1:], rune(want[1])) {
			return true
		}
	}
	return false
}

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

// apiAfterToken: a container reads its service-account token and then talks
// to the Kubernetes API server.
type apiAfterToken struct {
	tokenDirs map[string]bool
	window    time.Duration
	endpoints []netip.AddrPort
	addrs     []netip.Addr
	reads     map[string]tokenRead
}

type tokenRead struct {
	ev *api.Event
	at time.Time
}

func (*apiAfterToken) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_FILE_OPEN, api.EventKind_EVENT_KIND_CONNECT}
}

func (a *apiAfterToken) observe(c *evalContext, now time.Time) []*api.Event {
	ev := c.ev
	cid := ev.GetContainer().GetId()
	if cid == "" {
		return nil
	}
	if o := ev.GetFileOpen(); o != nil {
		if a.isToken(o.GetPath()) {
			if len(a.reads) >= maxScanTrackers {
				clear(a.reads)
			}
			a.reads[cid] = tokenRead{ev: ev, at: now}
		}
		return nil
	}
	read, ok := a.reads[cid]
	if !ok || now.Sub(read.at) > a.window {
		return nil
	}
	conn := ev.GetConnect()
	if conn.GetProtocol() != api.Protocol_PROTOCOL_TCP || !a.isAPIServer(conn.GetDestination()) {
		return nil
	}
	return []*api.Event{read.ev, ev}
}

func (a *apiAfterToken) isToken(p string) bool {
	dir := path.Dir(p)
	for d := range a.tokenDirs {
		if dir == strings.TrimSuffix(d, "/") || strings.HasPrefix(p, d) && strings.HasSuffix(d, "/") {
			return true
		}
	}
	return false
}

func (a *apiAfterToken) isAPIServer(dst *api.SocketAddress) bool {
	ip, err := netip.ParseAddr(dst.GetIp())
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if len(a.endpoints) == 0 && len(a.addrs) == 0 {
		return dst.GetPort() == 443 || dst.GetPort() == 6443
	}
	for _, ep := range a.endpoints {
		if ep.Addr() == ip && uint32(ep.Port()) == dst.GetPort() {
			return true
		}
	}
	for _, ad := range a.addrs {
		if ad == ip {
			return true
		}
	}
	return false
}

// iocMatcher checks DNS names and connect destinations against the offline
// threat list.
type iocMatcher struct {
	domains  map[string]bool
	prefixes []netip.Prefix
}

func loadIOCs(files []string) (*iocMatcher, error) {
	m := &iocMatcher{domains: map[string]bool{api.IOCTestDomain: true}}
	for _, f := range files {
		if err := m.loadFile(f); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *iocMatcher) loadFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("IOC list: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = strings.TrimSpace(s[:i])
		}
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			m.prefixes = append(m.prefixes, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			m.prefixes = append(m.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		d := strings.ToLower(strings.TrimSuffix(s, "."))
		if strings.ContainsAny(d, " /:") || !strings.Contains(d, ".") {
			return fmt.Errorf("IOC list %s:%d: %q is not a domain, IP or CIDR", name, line, s)
		}
		m.domains[d] = true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("IOC list %s: %w", name, err)
	}
	return nil
}

func (*iocMatcher) kinds() []api.EventKind {
	return append([]api.EventKind{api.EventKind_EVENT_KIND_CONNECT}, dnsKinds()...)
}

func (m *iocMatcher) observe(c *evalContext, _ time.Time) []*api.Event {
	ev := c.ev
	if name := dnsName(ev); name != "" {
		if m.domainListed(name) {
			return []*api.Event{ev}
		}
		return nil
	}
	if ip := ev.GetConnect().GetDestination().GetIp(); ip != "" && len(m.prefixes) > 0 && addrIn(ip, m.prefixes) {
		return []*api.Event{ev}
	}
	return nil
}

// domainListed matches the name or any parent domain of it.
func (m *iocMatcher) domainListed(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for name != "" {
		if m.domains[name] {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			break
		}
		name = name[i+1:]
	}
	return false
}

// portString formats a port for messages.
func portString(p uint32) string { return strconv.FormatUint(uint64(p), 10) }
