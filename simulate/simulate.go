package simulate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/ocirun"
)

// Options configure a local simulation.
type Options struct {
	Scenarios []Scenario
	// APIURL and Token reach the backend the alerts are read from.
	APIURL, Token string
	// RootCAs, when set, is what an https:// APIURL's certificate must
	// chain to (a backend with apiTLS, e.g. the Helm chart's).
	RootCAs *x509.CertPool
	// Timeout is how long each expected alert may take after its behaviour.
	Timeout time.Duration
	// Rootfs, when set, is a directory of tools laid over the busybox
	// image instead of the host's curl and nmap.
	Rootfs string
	// Self is the harrier binary (for the hidden namespace helper and the
	// stand-in miner).
	Self string
	// Keep, when set, is called with the sandbox still up after the run;
	// clean-up follows when it returns.
	Keep func(containers []string)
	Log  *slog.Logger
}

// IDPrefix starts the ID of every container the simulator creates.
const IDPrefix = "harrier-sim-"

// cleanups is a stack of undo steps, run in reverse order, every one of
// them, whatever happened.
type cleanups []func() error

func (c *cleanups) push(f func() error) { *c = append(*c, f) }

func (c *cleanups) run() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		errs = append(errs, (*c)[i]())
	}
	*c = nil
	return errors.Join(errs...)
}

// Preflight reports what prevents a local simulation here.
func Preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("harrier simulate --local needs root (it starts runc containers and network namespaces)")
	}
	if err := ocirun.Available(); err != nil {
		return err
	}
	_, err := findIP()
	return err
}

// RunLocal plays the scenarios in a local sandbox and reads the alerts back
// from the backend. The sandbox is removed before it returns, also when ctx
// is cancelled (Ctrl-C).
func RunLocal(ctx context.Context, o Options) (rep *Report, err error) {
	if err := Preflight(); err != nil {
		return nil, err
	}
	ipPath, _ := findIP()
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	b := newBackendClient(o.APIURL, o.Token, o.RootCAs)
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	var undo cleanups
	defer func() {
		err = errors.Join(err, undo.run())
		if err != nil && rep != nil {
			rep.Error = err.Error()
		}
	}()

	dir, err := os.MkdirTemp("", "harrier-simulate-")
	if err != nil {
		return nil, err
	}
	undo.push(func() error { return os.RemoveAll(dir) })
	tl, err := hostTools(o.Rootfs)
	if err != nil {
		return nil, err
	}
	// The stand-in miner is this binary when it is static (it then prints
	// and connects to the fake pool), else a copy of busybox: either way an
	// executable named xmrig that mines nothing.
	miner := ocirun.BusyboxPath
	if isStatic(o.Self) {
		miner = o.Self
	}
	token := filepath.Join(dir, "sa-token")
	if err := os.WriteFile(token, []byte(fakeToken), 0o644); err != nil {
		return nil, err
	}

	start := func(name string, opts ocirun.Options) (*ocirun.Container, netns, error) {
		cdir := filepath.Join(dir, name)
		if err := os.MkdirAll(cdir, 0o700); err != nil {
			return nil, netns{}, err
		}
		c, err := ocirun.Create(cdir, IDPrefix+name+"-", opts)
		if err != nil {
			return nil, netns{}, fmt.Errorf("%s container: %w", name, err)
		}
		undo.push(c.Teardown)
		if err := c.Start(); err != nil {
			return nil, netns{}, fmt.Errorf("%s container: %w", name, err)
		}
		pid, err := c.InitPID()
		if err != nil {
			return nil, netns{}, err
		}
		return c, netns{self: o.Self, path: fmt.Sprintf("/proc/%d/ns/net", pid), ip: ipPath}, nil
	}

	att, attNS, err := start("attacker", ocirun.Options{Args: []string{"sleep", "86400"}})
	if err != nil {
		return nil, err
	}
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", metadataIP + "/32", "dev", "lo"}} {
		if err := attNS.run(ctx, args...); err != nil {
			return nil, err
		}
	}
	attackerProc, err := startAttacker(ctx, o.Self, attNS.path, miner)
	if err != nil {
		return nil, err
	}
	undo.push(attackerProc.stop)
	o.Log.Info("sandbox up", "attacker", att.ID, "curl", tl.curl, "nmap", tl.nmap, "miner", miner)

	w := &watcher{b: b, since: time.Now().Add(-time.Second), victim: containerPrefix(IDPrefix), seen: map[string]sighting{}}
	rep = &Report{}
	containers := []string{att.ID}
	for i, sc := range o.Scenarios {
		if err := context.Cause(ctx); err != nil {
			return rep, err
		}
		n := i + 1
		env := stepEnv{attacker: fmt.Sprintf("%s.%d.1", sandboxPrefix, n), subnet: fmt.Sprintf("%s.%d", sandboxPrefix, n),
			curl: tl.curl, nmap: tl.nmap, miner: MinerName}
		victimIP := fmt.Sprintf("%s.%d.2", sandboxPrefix, n)
		victim, vNS, err := start("victim-"+sc.Name, ocirun.Options{
			Args:    []string{"httpd", "-f", "-p", fmt.Sprint(victimPort), "-h", "/www"},
			UID:     victimUID,
			GID:     victimUID,
			Home:    "/home/app",
			Env:     []string{"APP_ENV=production"},
			Applets: victimApplets(),
			Image:   victimImage(tl, env.attacker),
			Mounts:  []ocirun.Bind{{Source: token, Destination: tokenPath, ReadOnly: true}},
		})
		if err != nil {
			return rep, err
		}
		containers = append(containers, victim.ID)
		if err := link(ctx, attNS, vNS, n, victim); err != nil {
			return rep, err
		}
		sr, err := play(ctx, o, attackerProc, w, sc, env, victimIP, victim.ID)
		rep.Scenarios = append(rep.Scenarios, sr)
		if err != nil {
			return rep, err
		}
	}
	// Late alerts from the sandbox still count as unexpected.
	time.Sleep(time.Second)
	if err := w.poll(ctx); err != nil {
		return rep, err
	}
	explain(rep, w)
	if w.pollErrors > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the backend did not answer %d polls (restarting?); they were waited out", w.pollErrors))
	}
	rep.Notes = append(rep.Notes, "sa-suspicious-op is a Kubernetes audit detection: it needs a cluster (harrier simulate --kubeconfig) and is not checked locally")
	if o.Keep != nil {
		o.Keep(containers)
	}
	return rep, nil
}

// link joins the attacker and victim n with a veth pair created inside the
// attacker's namespace, so no interface ever appears on the host.
func link(ctx context.Context, att, victim netns, n int, c *ocirun.Container) error {
	pid, err := c.InitPID()
	if err != nil {
		return err
	}
	dev := fmt.Sprintf("sim%d", n)
	attAddr := fmt.Sprintf("%s.%d.1/24", sandboxPrefix, n)
	victimAddr := fmt.Sprintf("%s.%d.2/24", sandboxPrefix, n)
	gw := fmt.Sprintf("%s.%d.1", sandboxPrefix, n)
	steps := []struct {
		ns   netns
		args []string
	}{
		{att, []string{"link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", fmt.Sprint(pid)}},
		{att, []string{"addr", "add", attAddr, "dev", dev}},
		{att, []string{"link", "set", dev, "up"}},
		{victim, []string{"link", "set", "lo", "up"}},
		{victim, []string{"addr", "add", victimAddr, "dev", "eth0"}},
		{victim, []string{"link", "set", "eth0", "up"}},
		// The victim reaches the "metadata service" through the attacker;
		// it has no other route.
		{victim, []string{"route", "add", metadataIP + "/32", "via", gw}},
	}
	for _, s := range steps {
		if err := s.ns.run(ctx, s.args...); err != nil {
			return err
		}
	}
	return nil
}

// inject is the URL that makes the victim's ping page run cmd.
func inject(victimIP, cmd string) string {
	return fmt.Sprintf("http://%s:%d%s", victimIP, victimPort, injectPath(cmd))
}

// injectPath is the path and query that make the ping page run cmd.
func injectPath(cmd string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for _, c := range []byte(";" + cmd) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return "/cgi-bin/ping?host=" + b.String()
}

// play runs one scenario's steps through the web shell and waits for its
// alerts.
func play(ctx context.Context, o Options, a *attacker, w *watcher, sc Scenario, env stepEnv, victimIP, container string) (ScenarioReport, error) {
	sr := ScenarioReport{Name: sc.Name, Title: sc.Title, Container: container}
	// The web server is up when its static page answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := a.get(fmt.Sprintf("http://%s:%d/index.html", victimIP, victimPort))
		if err == nil && r.Status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			return sr, fmt.Errorf("victim web server %s never answered: %v %s", victimIP, err, r.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sent := map[api.DetectionID]time.Time{}
	first := time.Now()
	for _, st := range sc.Steps(env) {
		at := time.Now()
		r, err := a.get(inject(victimIP, st.Command))
		if err != nil {
			return sr, err
		}
		// The ping usage text comes first: the injection ends ping's
		// arguments early.
		out := r.Body
		if i := strings.LastIndex(out, "\n\n"); i >= 0 {
			out = out[i:]
		}
		o.Log.Debug("step", "scenario", sc.Name, "command", st.Command, "status", r.Status, "error", r.Error, "output", strings.TrimSpace(out))
		for _, d := range st.Raises {
			if _, ok := sent[d]; !ok {
				sent[d] = at
			}
		}
		if err := w.poll(ctx); err != nil {
			return sr, err
		}
	}
	if err := w.waitFor(ctx, container, sc.Expected, time.Now().Add(o.Timeout)); err != nil {
		return sr, err
	}
	add := func(role string, ids []api.DetectionID) {
		for _, d := range ids {
			res := AlertResult{Detection: d, Role: role}
			if s, ok := w.find(container, d); ok {
				at, ok := sent[d]
				if !ok {
					at = first
				}
				res.Seen, res.Alert, res.Latency = true, refOf(s.alert), s.seen.Sub(at)
			}
			sr.Alerts = append(sr.Alerts, res)
		}
	}
	add(RoleExpected, sc.Expected)
	add(RoleExplained, sc.Explained)
	add(RoleClusterOnly, sc.ClusterOnly)
	return sr, nil
}

// explain lists the alerts of the sandbox that no scenario accounts for.
//
// The admission guard in audit mode reports the simulator's own pods, which
// are vulnerable on purpose (root init container, NET_ADMIN, a mounted
// token): those alerts come from creating the sandbox, not from a scenario,
// and are counted in the notes instead.
func explain(rep *Report, w *watcher) {
	allowed := map[string][]api.DetectionID{}
	for _, s := range rep.Scenarios {
		for _, a := range s.Alerts {
			allowed[s.Container] = append(allowed[s.Container], a.Detection)
		}
	}
	admission := 0
	for _, id := range w.order {
		a := w.seen[id].alert
		if api.DetectionID(a.GetDetectionId()) == api.DetectionAdmissionViolation {
			admission++
			continue
		}
		if !slices.Contains(allowed[w.victim(a)], api.DetectionID(a.GetDetectionId())) {
			rep.Unexpected = append(rep.Unexpected, *refOf(a))
		}
	}
	if admission > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the admission guard reported the sandbox's own pods %d times (%s: they are vulnerable on purpose)",
			admission, api.DetectionAdmissionViolation))
	}
}
