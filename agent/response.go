package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/response"
	"github.com/harrier-sec/harrier/store"
)

// responseRunner is the agent's side of the response policies: the
// responder, where its policies came from, and the kill-at-exec lists' next
// version for the guard's supervisor.
type responseRunner struct {
	r       *response.Responder
	record  func(*api.Event)
	dir     string // <dataDir>/response: the backend's policies, answered commands
	log     *slog.Logger
	boot    time.Time // for the exec guard's start times; zero when unknown (bootErr)
	bootErr error

	guardMu   sync.Mutex // serialises swapGuard
	stopGuard func()     // stops the running exec guard; nil when none
	// drift is the running kill-at-exec program when it watches containers
	// (scoped drift entries), else nil: the pipeline tells it of each
	// event's container.
	drift atomic.Pointer[response.ExecGuard]

	mu      sync.Mutex
	source  string // policiesFromBackend, policiesFromFile or ""
	version uint64 // the backend's version, when source is the backend
	sha     [32]byte
}

// Where the policies in force came from (AgentHealth.response_policies_source).
const (
	policiesFromBackend = "backend"
	policiesFromFile    = "file"
)

func (rr *responseRunner) offer(a *api.Alert) { rr.r.Offer(a) }

// enrichThenObserve returns enrich followed, while scoped drift entries
// watch containers, by telling the guard of the event's container: such an
// entry covers a container from its first event on.
func (rr *responseRunner) enrichThenObserve(enrich func(*api.Event)) func(*api.Event) {
	return func(ev *api.Event) {
		enrich(ev)
		g := rr.drift.Load()
		if g == nil || ev.GetContainer() == nil {
			return
		}
		if err := g.ObserveContainer(ev.GetContainer()); err != nil {
			rr.log.Warn("kill at exec: container not watched for drift", "container", ev.GetContainer().GetId(), "error", err)
		}
	}
}

// startResponse runs the responder with the policies the backend sent last
// (kept under the data directory, so they hold across restarts and outages),
// else response.policyFile, else none until the backend sends some. Its
// records are spooled with the alerts (the alert class: the same priority),
// as events of kind response, whatever spool.eventKinds says. A policy file
// that does not load is an error in the log, and the agent runs without
// those policies rather than not at all.
func startResponse(ctx context.Context, cfg ResponseConfig, uplink UplinkConfig, node, dataDir string, spool *store.Spool, notify func(), run func(string, func() error), log *slog.Logger) *responseRunner {
	record := func(ev *api.Event) {
		b, err := proto.Marshal(&api.Record{Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: ev}})
		if err != nil {
			log.Error("encode response record", "error", err)
			return
		}
		if _, err := spool.AppendBatch(store.ClassAlert, [][]byte{b}); err != nil {
			log.Error("spool append failed; response record dropped", "error", err)
			return
		}
		notify()
	}
	rr := &responseRunner{r: response.NewResponder(nil, node, record, log), record: record,
		dir: filepath.Join(dataDir, "response"), log: log}
	rr.boot, rr.bootErr = procstat.BootTime()
	rr.r.UseQuarantineDir(filepath.Join(dataDir, "quarantine"))
	rr.r.UseNetBlockerFactory(func() (*response.NetBlocker, error) {
		allow := backendAddrs(ctx, uplink, log)
		n, err := response.NewNetBlocker(allow)
		if err != nil {
			log.Error("block-network and isolate-network unavailable; those actions will fail with the reason", "error", err)
			return nil, err
		}
		log.Info("block-network and isolate-network ready", "allowed", allow)
		context.AfterFunc(ctx, func() { _ = n.Close() })
		return n, nil
	})
	run("response", func() error { return rr.r.Run(ctx) })
	run("kill at exec", func() error {
		<-ctx.Done()
		rr.swapGuard(ctx, nil)
		return nil
	})

	if f, version, err := rr.loadBackendPolicies(); err != nil {
		log.Error("the backend's response policies kept on disk do not load; using response.policyFile until the backend sends them again", "error", err)
	} else if f != nil {
		rr.apply(ctx, f, policiesFromBackend, version, "the backend (kept on disk)")
		return rr
	}
	if cfg.PolicyFile != "" {
		if f, err := response.Load(cfg.PolicyFile); err != nil {
			log.Error("response policies not loaded; no response actions until the backend sends policies", "error", err)
		} else {
			rr.apply(ctx, f, policiesFromFile, 0, cfg.PolicyFile)
		}
	}
	return rr
}

// apply puts f in force; its kill-at-exec lists are attached when it
// returns.
func (rr *responseRunner) apply(ctx context.Context, f *response.File, source string, version uint64, from string) {
	rr.mu.Lock()
	rr.source, rr.version = source, version
	rr.mu.Unlock()
	rr.r.SetPolicies(f)
	if f.NeedsNetBlocker() {
		_, _ = rr.r.NetBlocker() // made now, so that a host that cannot says so at once
	}
	rr.swapGuard(ctx, f.ExecDeny)
	modes := map[string]int{}
	for _, p := range f.Policies {
		modes[p.Mode]++
	}
	rr.log.Info("response policies in force", "from", from, "version", version,
		"enforce", modes[response.ModeEnforce], "audit", modes[response.ModeAudit], "execDeny", len(f.ExecDeny))
}

// policiesState says where the policies in force came from, for heartbeats.
func (rr *responseRunner) policiesState() (source string, version uint64) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return rr.source, rr.version
}

// Files under responseRunner.dir.
const (
	backendPoliciesFile = "policies.yaml"
	backendVersionFile  = "policies.version"
	answeredFile        = "commands.json"
)

// applyBundle puts the backend's policies in force and keeps them on disk;
// a bundle that does not load leaves the policies in force as they are.
func (rr *responseRunner) applyBundle(ctx context.Context, b *api.PolicyBundle) error {
	sum := sha256.Sum256(b.GetYaml())
	rr.mu.Lock()
	same := rr.source == policiesFromBackend && rr.version == b.GetVersion() && rr.sha == sum
	rr.mu.Unlock()
	if same {
		return nil // sent again on a new connection: already in force
	}
	name := fmt.Sprintf("version %d from the backend", b.GetVersion())
	f, err := response.Parse(b.GetYaml(), name)
	if err != nil {
		rr.log.Error("response policies from the backend refused; the policies in force stay", "version", b.GetVersion(), "error", err)
		return err
	}
	if err := os.MkdirAll(rr.dir, 0o700); err != nil {
		return fmt.Errorf("keep response policies: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(rr.dir, backendPoliciesFile), b.GetYaml()); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(rr.dir, backendVersionFile), []byte(strconv.FormatUint(b.GetVersion(), 10)+"\n")); err != nil {
		return err
	}
	rr.apply(ctx, f, policiesFromBackend, b.GetVersion(), name)
	rr.mu.Lock()
	rr.sha = sum
	rr.mu.Unlock()
	return nil
}

// loadBackendPolicies reads the backend's policies kept on disk: nil when
// there are none.
func (rr *responseRunner) loadBackendPolicies() (*response.File, uint64, error) {
	raw, err := os.ReadFile(filepath.Join(rr.dir, backendPoliciesFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	vText, err := os.ReadFile(filepath.Join(rr.dir, backendVersionFile))
	if err != nil {
		return nil, 0, err
	}
	version, err := strconv.ParseUint(strings.TrimSpace(string(vText)), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", backendVersionFile, err)
	}
	f, err := response.Parse(raw, filepath.Join(rr.dir, backendPoliciesFile))
	if err != nil {
		return nil, 0, err
	}
	rr.sha = sha256.Sum256(raw)
	return f, version, nil
}

// writeFileAtomic replaces path with b (mode 0600), never leaving half a file.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// swapGuard stops the running kill-at-exec program and loads one for lists
// (none for an empty list). A kernel that refuses it is an error in the
// log; the alert-driven actions keep working. The program runs until the
// next swap, or until ctx ends.
func (rr *responseRunner) swapGuard(ctx context.Context, lists []response.ExecDeny) {
	rr.guardMu.Lock()
	defer rr.guardMu.Unlock()
	if rr.stopGuard != nil {
		rr.drift.Store(nil)
		rr.stopGuard()
		rr.stopGuard = nil
	}
	if len(lists) == 0 || ctx.Err() != nil {
		return
	}
	if rr.bootErr != nil {
		rr.log.Error("kill at exec not started", "error", rr.bootErr)
		return
	}
	g, skipped, err := response.StartExecGuard(lists, rr.boot)
	for _, s := range skipped {
		rr.log.Warn("kill at exec: executable not listed", "error", s)
	}
	if err != nil {
		rr.log.Error("kill at exec not started; alert-driven response actions still run", "error", err)
		return
	}
	g.UseHashStats(rr.r.ExecHashStats())
	rr.log.Info("kill at exec attached", "attach", g.Attach, "entries", g.Entries(), "drift", g.WatchesContainers())
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer g.Close()
		if err := g.Run(gctx, rr.r.ExecHit, rr.log); err != nil && gctx.Err() == nil {
			rr.log.Error("kill at exec stopped", "error", err)
		}
	}()
	rr.stopGuard = func() { cancel(); <-done }
	if g.WatchesContainers() {
		rr.drift.Store(g)
	}
}

// backendAddrs are the addresses a blocked cgroup may still reach: the
// backend's ingest (every replica's) and enrollment API (a pod may be the agent's own
// neighbour), resolved now.
func backendAddrs(ctx context.Context, uplink UplinkConfig, log *slog.Logger) []netip.AddrPort {
	hostPorts := append([]string{uplink.Addr}, uplink.FallbackAddrs...)
	if u, err := url.Parse(uplink.Enroll.Server); err == nil && u.Host != "" {
		port := u.Port()
		if port == "" {
			port = "443"
		}
		hostPorts = append(hostPorts, net.JoinHostPort(u.Hostname(), port))
	}
	var out []netip.AddrPort
	for _, hp := range hostPorts {
		host, portText, err := net.SplitHostPort(hp)
		if err != nil {
			continue
		}
		port, err := strconv.ParseUint(portText, 10, 16)
		if err != nil {
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			log.Warn("block-network: backend address not resolved; blocked workloads cannot reach it", "addr", hp, "error", err)
			continue
		}
		for _, ip := range ips {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
		}
	}
	return out
}
