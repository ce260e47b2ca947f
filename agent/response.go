package agent

import (
	"context"
	"log/slog"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/response"
	"github.com/harrier-sec/harrier/store"
)

// responseRunner is the agent's side of the response policies; its zero
// value (no policy file, or one that did not load) does nothing.
type responseRunner struct{ r *response.Responder }

func (rr responseRunner) offer(a *api.Alert) {
	if rr.r != nil {
		rr.r.Offer(a)
	}
}

// startResponse loads the policy file and runs the responder. Its records
// are spooled with the alerts (the alert class: the same priority), as
// events of kind response, whatever spool.eventKinds says. A policy file
// that does not load is an error in the log, and the agent runs without
// response rather than not at all.
func startResponse(ctx context.Context, cfg ResponseConfig, node string, spool *store.Spool, notify func(), run func(string, func() error), log *slog.Logger) responseRunner {
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
	run("response", func() error { return r.Run(ctx) })
	if len(policies.ExecDeny) > 0 {
		startExecGuard(ctx, policies.ExecDeny, r, run, log)
	}
	modes := map[string]int{}
	for _, p := range policies.Policies {
		modes[p.Mode]++
	}
	log.Info("response policies loaded", "file", cfg.PolicyFile, "enforce", modes[response.ModeEnforce], "audit", modes[response.ModeAudit])
	return responseRunner{r: r}
}

// startExecGuard loads the kill-at-exec program. A kernel that refuses it
// is an error in the log; the alert-driven actions keep working.
func startExecGuard(ctx context.Context, lists []response.ExecDeny, r *response.Responder, run func(string, func() error), log *slog.Logger) {
	boot, err := procstat.BootTime()
	if err != nil {
		log.Error("kill at exec not started", "error", err)
		return
	}
	g, skipped, err := response.StartExecGuard(lists, boot)
	for _, s := range skipped {
		log.Warn("kill at exec: executable not listed", "error", s)
	}
	if err != nil {
		log.Error("kill at exec not started; alert-driven response actions still run", "error", err)
		return
	}
	log.Info("kill at exec attached", "attach", g.Attach, "executables", g.Entries())
	run("kill at exec", func() error {
		defer g.Close()
		return g.Run(ctx, r.ExecHit, log)
	})
}
