package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/sensor/execontent"
)

// The detection tests run the real sensor in this process and feed what it
// sees into analytics engines, as the agent does, while real behaviour runs
// in runc containers. Every container has its own network namespace; all
// traffic stays on its loopback or on addresses the test adds to that
// loopback. Nothing outside temporary directories and the containers' own
// root file systems is written.

// rig is a running sensor and every event it emitted.
type rig struct {
	rules  *analytics.RuleSet
	helper string // the static detecthelper binary on the host
	// syscalls the sensor reports on this kernel (its status).
	syscalls []string

	mu     sync.Mutex
	events []*api.Event
}

// startRig loads the sensor and collects its events until the test ends.
func startRig(t *testing.T) *rig {
	t.Helper()
	testenv.RequireRoot(t)
	runctest.Require(t)
	rules, err := analytics.LoadRules()
	if err != nil {
		t.Fatalf("built-in rules: %v", err)
	}
	r := &rig{rules: rules, helper: buildDetectHelper(t)}
	s, err := sensor.New(sensor.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start sensor: %v", err)
	}
	r.syscalls = s.Status().Syscalls
	out := make(chan *api.Event, s.QueueSize())
	done := make(chan error, 1)
	ctx, stop := context.WithCancel(context.Background())
	go func() { done <- s.Run(ctx, out); close(out) }()
	// The agent's executable content reader, as the pipeline runs it: each
	// exec is offered, each file read once gives an exe_content event.
	exes := execontent.New(execontent.Config{}, execontent.DefaultSignatures())
	exesDone := make(chan error, 1)
	go func() { exesDone <- exes.Run(ctx) }()
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for {
			var ev *api.Event
			select {
			case e, ok := <-out:
				if !ok {
					return
				}
				ev = e
				if ev.GetKind() == api.EventKind_EVENT_KIND_EXEC {
					exes.Offer(ev)
				}
			case ev = <-exes.Events():
			}
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("sensor run: %v", err)
		}
		<-exesDone
		<-collected
		if err := s.Close(); err != nil {
			t.Errorf("sensor close: %v", err)
		}
	})
	return r
}

// buildDetectHelper builds testdata/detecthelper statically (the containers
// have no C library); the build cache makes repeats cheap.
func buildDetectHelper(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "detecthelper")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/detecthelper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build detecthelper: %v\n%s", err, out)
	}
	return bin
}

// snapshot returns the events so far that match scope.
func (r *rig) snapshot(scope func(*api.Event) bool) []*api.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*api.Event
	for _, ev := range r.events {
		if scope(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// alerts runs the events in scope through a fresh engine with the built-in
// rules and returns the new alerts it raised. The test process stands in
// for the agent: its parent is the supervisor, as in agent.NewEngine.
func (r *rig) alerts(t *testing.T, cfg analytics.Config, scope func(*api.Event) bool) []*api.Alert {
	t.Helper()
	e, err := analytics.NewEngine(cfg, r.rules, analytics.Options{Node: "e2e", Supervisors: []uint32{uint32(os.Getppid())}})
	if err != nil {
		t.Fatalf("analytics engine: %v", err)
	}
	var out []*api.Alert
	for _, ev := range r.snapshot(scope) {
		ev = proto.Clone(ev).(*api.Event)
		cutHarness(ev)
		e.Process(ev, func(a *api.Alert) {
			if a.GetCount() == 1 { // new alerts, not updates
				out = append(out, a)
			}
		})
	}
	return out
}

// cutHarness ends the event's ancestry below this test process. Above it
// are `go test` and the shell that started it: harness, not workload. On a
// node the chain of a container process ends at its runtime or shim, as it
// does here at runc; left in, the go command above would make every
// container process look like part of a package build.
func cutHarness(ev *api.Event) {
	self := uint32(os.Getpid())
	for i, a := range ev.GetAncestry() {
		if a.GetPid() == self {
			ev.Ancestry = ev.Ancestry[:i]
			return
		}
	}
}

func detectionIDs(alerts []*api.Alert) []string {
	var ids []string
	for _, a := range alerts {
		if !slices.Contains(ids, a.GetDetectionId()) {
			ids = append(ids, a.GetDetectionId())
		}
	}
	slices.Sort(ids)
	return ids
}

// waitAlert polls until the events in scope raise detection id.
func (r *rig) waitAlert(t *testing.T, cfg analytics.Config, scope func(*api.Event) bool, id string) *api.Alert {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		alerts := r.alerts(t, cfg, scope)
		for _, a := range alerts {
			if a.GetDetectionId() == id {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s alert; alerts raised: %v (%d events in scope)", id, detectionIDs(alerts), len(r.snapshot(scope)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEvent polls until an event matches pred.
func (r *rig) waitEvent(t *testing.T, what string, pred func(*api.Event) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.snapshot(pred)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %s event", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled returns once every event of what ran before it has been
// collected: it runs a marker exec and waits for its event, which the ring
// buffer delivers after everything reserved before it.
func (r *rig) settled(t *testing.T, run func(args ...string)) {
	t.Helper()
	marker := "harrier-settle-" + randHex(t)
	run("true", marker)
	r.waitEvent(t, "marker exec", func(ev *api.Event) bool {
		return ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && slices.Contains(ev.GetProcess().GetArgs(), marker)
	})
}

func randHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func inContainer(id string) func(*api.Event) bool {
	return func(ev *api.Event) bool { return ev.GetContainer().GetId() == id }
}

// underPIDs selects the events of host processes the test started (pids)
// and of their descendants.
func underPIDs(pids ...uint32) func(*api.Event) bool {
	return func(ev *api.Event) bool {
		if slices.Contains(pids, ev.GetProcess().GetTgid()) {
			return true
		}
		for _, a := range ev.GetAncestry() {
			if slices.Contains(pids, a.GetPid()) {
				return true
			}
		}
		return false
	}
}

// box is one container of a test case and the helpers to act in it.
type box struct {
	t   *testing.T
	r   *rig
	ctr *runctest.Container
	// scope selects the events the case's alerts come from; the
	// container's by default.
	scope func(*api.Event) bool
}

const execTimeout = 20 * time.Second

// waitPort is a shell function: wait until something listens on TCP port $1.
const waitPort = `waitport() { for i in $(seq 300); do netstat -ltn | grep -q ":$1 " && return 0; usleep 10000; done; echo "port $1 never listened" >&2; return 1; }; `

// sh runs script as root in the container; it must succeed.
func (x *box) sh(script string) string {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	if strings.Contains(script, "waitport") {
		script = waitPort + script
	}
	out, err := x.ctr.Exec(ctx, "sh", "-c", script)
	if err != nil {
		x.t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

// shAs runs script as uid:uid and returns its error: non-root attempts are
// meant to fail.
func (x *box) shAs(uid uint32, script string) error {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	out, err := x.ctr.ExecAs(ctx, uid, uid, "sh", "-c", script)
	if err != nil {
		x.t.Logf("as uid %d: %s: %v (%s)", uid, script, err, strings.TrimSpace(out))
	}
	return err
}

// exec runs args in the container; it must succeed.
func (x *box) exec(args ...string) string {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	out, err := x.ctr.Exec(ctx, args...)
	if err != nil {
		x.t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return out
}

// addAddress assigns addr/32 to the loopback device of the container's own
// network namespace, from the host (the container lacks CAP_NET_ADMIN).
// The address exists nowhere else; the namespace goes with the container.
func (x *box) addAddress(addr string) {
	x.t.Helper()
	pid, err := x.ctr.InitPID()
	if err != nil {
		x.t.Fatal(err)
	}
	netns := fmt.Sprintf("/proc/%d/ns/net", pid)
	if host, err := os.Readlink("/proc/self/ns/net"); err != nil {
		x.t.Fatal(err)
	} else if ctr, err := os.Readlink(netns); err != nil || ctr == host {
		x.t.Fatalf("container network namespace %q (%v) is the host's %q", ctr, err, host)
	}
	out, err := exec.Command("nsenter", "--net="+netns, "ip", "addr", "add", addr+"/32", "dev", "lo").CombinedOutput()
	if err != nil {
		x.t.Fatalf("add %s in the container's network namespace: %v %s", addr, err, out)
	}
}

// Addresses assigned only inside a container's network namespace.
const (
	metadataIP = "169.254.169.254"
	poolIP     = "192.0.2.33" // TEST-NET-1 (RFC 5737)
)

const cgiScript = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nid\nuname -a\n"

// image is what every test container holds besides busybox: a web root
// with a CGI script, a fake service-account token and kubelet kubeconfig,
// a shadow file, history and logs, and harmless scripts with telling names.
func (r *rig) image(extra map[string]runctest.File) map[string]runctest.File {
	img := map[string]runctest.File{
		"/usr/local/bin/detecthelper": {Host: r.helper},
		"/www/index.html":             {Content: "<html>hello</html>\n"},
		"/www/healthz":                {Content: "ok\n"},
		"/www/cgi-bin/run":            {Content: cgiScript, Mode: 0o755},
		"/srv/dl/report.txt":          {Content: "quarterly numbers\n"},
		"/var/run/secrets/kubernetes.io/serviceaccount/token":     {Content: "eyJhbGciOiJSUzI1NiJ9.fake.token"},
		"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt":    {Content: "-----BEGIN CERTIFICATE-----\nfake\n"},
		"/var/run/secrets/kubernetes.io/serviceaccount/namespace": {Content: "default"},
		"/var/lib/kubelet/kubeconfig":                             {Content: "apiVersion: v1\nkind: Config\n", Mode: 0o600},
		"/var/lib/kubelet/config.yaml":                            {Content: "kind: KubeletConfiguration\n"},
		"/etc/shadow":                                             {Content: "root:*:19000:0:99999:7:::\nuser:!:19000::::::\n", Mode: 0o600},
		"/root/.ash_history":                                      {Content: "ls\nid\n", Mode: 0o600},
		"/root/.ssh/authorized_keys":                              {Content: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2U= ops\n", Mode: 0o600},
		"/var/log/messages":                                       {Content: "boot\n"},
		"/opt/scripts/linpeas.sh":                                 {Content: "#!/bin/sh\necho enumerating\n", Mode: 0o755},
		"/opt/scripts/healthcheck.sh":                             {Content: "#!/bin/sh\necho healthy\n", Mode: 0o755},
		// The command lines do not name the targets: the file opens must
		// raise these on their own.
		"/opt/scripts/tune.sh":    {Content: "#!/bin/sh\necho 1280 > /proc/sys/vm/nr_hugepages\n", Mode: 0o755},
		"/opt/scripts/preload.sh": {Content: "#!/bin/sh\necho /tmp/libevil.so > /etc/ld.so.preload\n", Mode: 0o755},
	}
	for k, v := range extra {
		img[k] = v
	}
	return img
}

// applets beyond runctest's default set.
var extraApplets = []string{"httpd", "usleep", "unshare", "passwd", "insmod", "lsmod", "truncate", "sysctl", "killall", "pidof", "mkpasswd"}

func (r *rig) newBox(t *testing.T, extra map[string]runctest.File) *box {
	t.Helper()
	return r.newBoxOpts(t, runctest.Options{Image: extra})
}

// newBoxOpts starts a box with opts; its Image adds to the common image.
func (r *rig) newBoxOpts(t *testing.T, opts runctest.Options) *box {
	t.Helper()
	opts.Applets = append(append([]string(nil), extraApplets...), opts.Applets...)
	opts.Image = r.image(opts.Image)
	ctr := runctest.Start(t, opts)
	return &box{t: t, r: r, ctr: ctr, scope: inContainer(ctr.ID)}
}

// settle waits until the box's events so far have been collected.
func (x *box) settle() {
	x.t.Helper()
	x.r.settled(x.t, func(args ...string) { x.exec(args...) })
}

type detectionCase struct {
	name string
	// extra image files.
	image map[string]runctest.File
	run   func(x *box)
	// fire must each raise an alert; quiet must not.
	fire, quiet []string
	// check inspects the alert of fire[0].
	check func(t *testing.T, a *api.Alert)
	// privileged runs the container with every capability.
	privileged bool
}

// evidenceOf returns the alert's evidence events of kind k.
func evidenceOf(a *api.Alert, k api.EventKind) []*api.Event {
	var out []*api.Event
	for _, ev := range a.GetEvidence() {
		if ev.GetKind() == k {
			out = append(out, ev)
		}
	}
	return out
}

// failedOpen requires the alert to come from a failed open of path.
func failedOpen(path string) func(t *testing.T, a *api.Alert) {
	return func(t *testing.T, a *api.Alert) {
		t.Helper()
		for _, ev := range evidenceOf(a, api.EventKind_EVENT_KIND_FILE_OPEN) {
			if o := ev.GetFileOpen(); o.GetPath() == path && o.GetResult() < 0 && ev.GetProcess().GetUid() == 1000 {
				return
			}
		}
		t.Errorf("alert %s has no failed open of %s by uid 1000 as evidence: %v", a.GetDetectionId(), path, a.GetEvidence())
	}
}

// dnsEvidence requires a DNS query over proto for the IOC test domain
// among the alert's evidence.
func dnsEvidence(proto api.Protocol) func(t *testing.T, a *api.Alert) {
	return func(t *testing.T, a *api.Alert) {
		t.Helper()
		for _, ev := range evidenceOf(a, api.EventKind_EVENT_KIND_DNS_QUERY) {
			if q := ev.GetDnsQuery(); q.GetProtocol() == proto && q.GetName() == api.IOCTestDomain {
				return
			}
		}
		t.Errorf("alert %s has no %v query for %s as evidence: %v", a.GetDetectionId(), proto, api.IOCTestDomain, a.GetEvidence())
	}
}

func hasEvidence(k api.EventKind) func(t *testing.T, a *api.Alert) {
	return func(t *testing.T, a *api.Alert) {
		t.Helper()
		if len(evidenceOf(a, k)) == 0 {
			t.Errorf("alert %s has no %v evidence: %v", a.GetDetectionId(), k, a.GetEvidence())
		}
	}
}

func helperCopy(r *rig) runctest.File { return runctest.File{Host: r.helper} }
