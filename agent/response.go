package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/response"
	"github.com/harrier-sec/harrier/store"
)

// responseRunner is the agent's side of the response policies; its zero
// value (no policy file, or one that did not load) does nothing.
type responseRunner struct {
	r *response.Responder
	// guard is the kill-at-exec program when it watches containers (drift
	// entries), else nil.
	guard *response.ExecGuard
	// net is the network blocker, nil when no policy blocks or isolates:
	// undo (Unblock, Unisolate) goes through it, with the cgroup path of
	// the action's record ("cgroup <path>").
	net *response.NetBlocker
	log *slog.Logger
}

func (rr responseRunner) offer(a *api.Alert) {
	if rr.r != nil {
		rr.r.Offer(a)
	}
}

// enrichThenObserve returns enrich followed, when drift entries watch
// containers, by telling the guard of the event's container: scoped drift
// entries cover a container from its first event on.
func (rr responseRunner) enrichThenObserve(enrich func(*api.Event)) func(*api.Event) {
	if rr.guard == nil {
		return enrich
	}
	return func(ev *api.Event) {
		enrich(ev)
		if err := rr.guard.ObserveContainer(ev.GetContainer()); err != nil {
			rr.log.Warn("kill at exec: container not watched for drift", "container", ev.GetContainer().GetId(), "error", err)
		}
	}
}

// startResponse loads the policy file and runs the responder. Its records
// are spooled with the alerts (the alert class: the same priority), as
// events of kind response, whatever spool.eventKinds says. A policy file
// that does not load is an error in the log, and the agent runs without
// response rather than not at all.
func startResponse(ctx context.Context, cfg ResponseConfig, uplink UplinkConfig, node, dataDir string, spool *store.Spool, notify func(), run func(string, func() error), log *slog.Logger) responseRunner {
	if cfg.PolicyFile == "" {
		return responseRunner{}
	}
	policies, err := response.Load(cfg.PolicyFile)
	if err != nil {
		log.Error("response policies not loaded; no response actions will be taken", "error", err)
		return responseRunner{}
	}
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
	r := response.NewResponder(policies, node, record, log)
	r.UseQuarantineDir(filepath.Join(dataDir, "quarantine"))
	var blocker *response.NetBlocker
	if policies.NeedsNetBlocker() {
		allow := backendAddrs(ctx, uplink, log)
		n, err := response.NewNetBlocker(allow)
		if err != nil {
			log.Error("block-network and isolate-network unavailable; those actions will fail with the reason", "error", err)
		} else {
			log.Info("block-network and isolate-network ready", "allowed", allow)
			context.AfterFunc(ctx, func() { _ = n.Close() })
			blocker = n
		}
		r.UseNetBlocker(n, err)
	}
	run("response", func() error { return r.Run(ctx) })
	var guard *response.ExecGuard
	if len(policies.ExecDeny) > 0 {
		guard = startExecGuard(ctx, policies.ExecDeny, r, run, log)
	}
	modes := map[string]int{}
	for _, p := range policies.Policies {
		modes[p.Mode]++
	}
	log.Info("response policies loaded", "file", cfg.PolicyFile, "enforce", modes[response.ModeEnforce], "audit", modes[response.ModeAudit])
	rr := responseRunner{r: r, net: blocker, log: log}
	if guard != nil && guard.WatchesContainers() {
		rr.guard = guard
	}
	return rr
}

// startExecGuard loads the kill-at-exec program. A kernel that refuses it
// is an error in the log (and nil); the alert-driven actions keep working.
func startExecGuard(ctx context.Context, lists []response.ExecDeny, r *response.Responder, run func(string, func() error), log *slog.Logger) *response.ExecGuard {
	boot, err := procstat.BootTime()
	if err != nil {
		log.Error("kill at exec not started", "error", err)
		return nil
	}
	g, skipped, err := response.StartExecGuard(lists, boot)
	for _, s := range skipped {
		log.Warn("kill at exec: executable not listed", "error", s)
	}
	if err != nil {
		log.Error("kill at exec not started; alert-driven response actions still run", "error", err)
		return nil
	}
	log.Info("kill at exec attached", "attach", g.Attach, "entries", g.Entries(), "drift", g.WatchesContainers())
	run("kill at exec", func() error {
		defer g.Close()
		return g.Run(ctx, r.ExecHit, log)
	})
	return g
}

// backendAddrs are the addresses a blocked or isolated cgroup may still reach: the
// backend's ingest and enrollment API (a pod may be the agent's own
// neighbour), resolved now.
func backendAddrs(ctx context.Context, uplink UplinkConfig, log *slog.Logger) []netip.AddrPort {
	hostPorts := []string{uplink.Addr}
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
