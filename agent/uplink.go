package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/harrier-sec/harrier/internal/httpsserve"
	"github.com/harrier-sec/harrier/transport"
)

// uplink holds the transport client once it exists, for the parts that
// start before it (the pipeline's Notify, the metrics' Stats).
type uplink struct {
	c atomic.Pointer[transport.Client]
}

func (u *uplink) Notify() {
	if c := u.c.Load(); c != nil {
		c.Notify()
	}
}

func (u *uplink) Stats() transport.ClientStats {
	if c := u.c.Load(); c != nil {
		return c.Stats()
	}
	return transport.ClientStats{LastError: "no certificate yet: enrolling"}
}

// uplinkIdentity is the agent's certificate: loaded at start, or (with
// enrollment) enrolled for by the uplink, and then renewed.
type uplinkIdentity struct {
	certs    *httpsserve.CertFiles // nil until there is a certificate
	agentID  string                // "" until then
	enroller *Enroller             // nil without enrollment
	log      *slog.Logger
}

func newUplinkIdentity(cfg Config, log *slog.Logger) (*uplinkIdentity, error) {
	u := &uplinkIdentity{log: log}
	if cfg.Uplink.Enroll.Enabled() {
		e, err := NewEnroller(cfg.Uplink, cfg.Sensor.Node, log)
		if err != nil {
			return nil, err
		}
		u.enroller = e
		if _, err := e.Current(); err != nil {
			// Missing, expired or not from this CA: the uplink enrolls.
			return u, nil
		}
	}
	certs, err := httpsserve.LoadCertFiles(cfg.Uplink.CertFile, cfg.Uplink.KeyFile, log)
	if err != nil {
		return nil, fmt.Errorf("uplink TLS (make certificates with `harrier certs`, set uplink.caFile/certFile/keyFile, or enroll with uplink.enroll): %w", err)
	}
	if err := u.use(certs, cfg); err != nil {
		return nil, err
	}
	return u, nil
}

// use takes certs as the identity, checking it against uplink.agentID.
func (u *uplinkIdentity) use(certs *httpsserve.CertFiles, cfg Config) error {
	id, err := transport.CertAgentID(certs.Leaf())
	if err != nil {
		return fmt.Errorf("uplink certificate %s: %w", cfg.Uplink.CertFile, err)
	}
	if err := checkAgentID(cfg.Uplink.AgentID, id, cfg.Uplink.CertFile); err != nil {
		return err
	}
	u.certs, u.agentID = certs, id
	return nil
}

// start enrolls when there is no certificate yet, starts renewal (with
// run) and returns the uplink client; nil and no error when ctx ended
// first.
func (u *uplinkIdentity) start(ctx context.Context, cfg Config, newClient func(string, *tls.Config) (*transport.Client, error),
	run func(string, func() error)) (*transport.Client, error) {
	if u.certs == nil {
		if err := u.enroller.Ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, err
		}
		certs, err := httpsserve.LoadCertFiles(cfg.Uplink.CertFile, cfg.Uplink.KeyFile, u.log)
		if err != nil {
			return nil, fmt.Errorf("enrolled certificate: %w", err)
		}
		if err := u.use(certs, cfg); err != nil {
			return nil, err
		}
		u.log.Info("agent enrolled", "agentID", u.agentID)
	}
	if u.enroller != nil {
		run("certificate renewal", func() error { return u.enroller.Run(ctx, u.certs.Reload) })
	}
	tlsConf, err := transport.ClientTLSWith(u.certs.GetClientCertificate, cfg.Uplink.CAFile, cfg.Uplink.ServerName)
	if err != nil {
		return nil, fmt.Errorf("uplink TLS: %w", err)
	}
	return newClient(u.agentID, tlsConf)
}
