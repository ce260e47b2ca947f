package analytics

import (
	"fmt"
	"net/netip"
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
		loopers, err := set("shells")
		if err != nil {
			return nil, err
		}
		interp, err := set("interpreters")
		if err != nil {
			return nil, err
		}
		for k := range interp {
			loopers[k] = true
		}
		return &networkScan{tools: tools, loopers: loopers, window: e.cfg.ScanWindow.Std(), threshold: e.cfg.ScanThreshold,
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
	case api.DetectionBase64Pipe:
		shells, err := set("shells")
		if err != nil {
			return nil, err
		}
		return &base64Pipe{shells: shells, window: pipeWindow, pending: map[pipeKey]pipeHalf{}}, nil
	case api.DetectionReconBurst:
		tools, err := set("recon_burst_tools")
		if err != nil {
			return nil, err
		}
		installers, err := set("package_managers")
		if err != nil {
			return nil, err
		}
		return &reconBurst{tools: tools, installers: installers, window: reconWindow, threshold: reconThreshold,
			runs: map[pipeKey]*reconRun{}}, nil
	case api.DetectionIOCDomain:
		return loadIOCs(e.cfg.IOCFiles)
	case api.DetectionAPIFromProxy:
		controlPlane, err := set("k8s_control_plane_users")
		if err != nil {
			return nil, err
		}
		return loadProxyAddresses(e.cfg.ProxyAddressFiles, controlPlane)
	case api.DetectionAnomalousProcess:
		return &baselineDetector{store: e.baseline, egress: false}, nil
	case api.DetectionAnomalousEgress:
		return &baselineDetector{store: e.baseline, egress: true}, nil
	case api.DetectionSAAnomalousOp:
		return &saBaseline{store: e.baseline}, nil
	case api.DetectionAnomalousPodDeployment, api.DetectionAnomalousSecretAccess, api.DetectionSAPermissionAnomaly:
		ignored, err := set("k8s_control_plane_users")
		if err != nil {
			return nil, err
		}
		controllers, err := set("k8s_controller_users")
		if err != nil {
			return nil, err
		}
		for k := range controllers {
			ignored[k] = true
		}
		actors := actorBaseline{store: e.baseline, ignored: ignored}
		switch api.DetectionID(r.Detector) {
		case api.DetectionAnomalousPodDeployment:
			workloads, err := set("k8s_workload_resources")
			if err != nil {
				return nil, err
			}
			return &podDeploymentAnomaly{actorBaseline: actors, workloads: workloads}, nil
		case api.DetectionAnomalousSecretAccess:
			return &secretAccessAnomaly{actorBaseline: actors}, nil
		}
		sensitive, err := set("k8s_sensitive_resources")
		if err != nil {
			return nil, err
		}
		return &saPermissionAnomaly{actorBaseline: actors, sensitive: sensitive}, nil
	case api.DetectionPostgresTrust, api.DetectionPostgresBroadRange:
		images, err := set("postgres_images")
		if err != nil {
			return nil, err
		}
		return newExposedPostgres(api.DetectionID(r.Detector) == api.DetectionPostgresBroadRange, images), nil
	case api.DetectionAdmissionViolation:
		return admissionViolation{}, nil
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
	tools map[string]bool
	// loopers are the parents (shells, interpreters) whose children's
	// connects are also counted together.
	loopers   map[string]bool
	window    time.Duration
	threshold int
	procs     map[scanKey]*scanTracker
}

// scanKey is a process, or with byParent the children of one: a shell
// loop of short-lived nc or /dev/tcp processes scans as one.
type scanKey struct {
	container string
	tgid      uint32
	byParent  bool
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
	key := scanKey{container: ev.GetContainer().GetId(), tgid: p.GetTgid()}
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
	if evidence := s.track(key, ev, dst, now); evidence != nil {
		return evidence
	}
	if anc := ev.GetAncestry(); len(anc) > 0 && anc[0].GetPid() == p.GetPpid() && s.loopers[ancestorName(anc[0])] {
		return s.track(scanKey{container: key.container, tgid: p.GetPpid(), byParent: true}, ev, dst, now)
	}
	return nil
}

// track counts one connect for key; it returns the evidence when key's
// connects reach the threshold within the window. A parent's tracker ends
// with its window (it has no exit of its own here).
func (s *networkScan) track(key scanKey, ev *api.Event, dst *api.SocketAddress, now time.Time) []*api.Event {
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

func portString(p uint32) string { return strconv.FormatUint(uint64(p), 10) }
