package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/httpsserve"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/kube/audit"
)

// kubeParts are the Kubernetes pieces of the pipeline: the pod context
// enrichment of the sensor's events, and audit events to analyse.
type kubeParts struct {
	enrich func(*api.Event)
	// audit carries events from the webhook and the log tailer; nil when
	// both are off.
	audit    <-chan *api.Event
	receiver *audit.Receiver
	tailer   *audit.Tailer
}

// startKube starts what cfg.Kube asks for, each part under run.
func startKube(ctx context.Context, cfg Config, run func(string, func() error), log *slog.Logger) (*kubeParts, error) {
	enrich, _, err := kube.StartEnrichment(ctx, cfg.Kube, log, run)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	parts := &kubeParts{enrich: enrich}
	ac := cfg.Kube.Audit
	if ac.WebhookAddr == "" && ac.LogPath == "" {
		return parts, nil
	}
	out := make(chan *api.Event, 1024)
	parts.audit = out
	dec := audit.Decoder{Node: cfg.Sensor.Node, MaxObjectBytes: ac.MaxObjectBytes}
	if ac.WebhookAddr != "" {
		tlsConf, err := webhookTLS(ac, log)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", ac.WebhookAddr)
		if err != nil {
			return nil, fmt.Errorf("kube.audit.webhookAddr: %w", err)
		}
		parts.receiver = &audit.Receiver{Decoder: dec, Out: out, MaxBodyBytes: ac.MaxBodyBytes, Log: log}
		if ac.TokenFile != "" {
			parts.receiver.Token = &audit.TokenFile{Path: ac.TokenFile}
			if _, err := parts.receiver.Token.Load(); err != nil {
				return nil, fmt.Errorf("kube.audit.tokenFile: %w", err)
			}
		}
		run("audit webhook", func() error { return parts.receiver.Serve(ctx, l, tlsConf) })
		log.Info("kube: audit webhook listening", "addr", l.Addr().String())
	}
	if ac.LogPath != "" {
		parts.tailer = &audit.Tailer{Path: ac.LogPath, StateFile: filepath.Join(cfg.DataDir, "audit-log.pos"), Decoder: dec, Out: out, Log: log}
		run("audit log", func() error { return parts.tailer.Run(ctx) })
		log.Info("kube: following the audit log", "path", ac.LogPath)
	}
	return parts, nil
}

func webhookTLS(ac kube.AuditConfig, log *slog.Logger) (*tls.Config, error) {
	certs, err := httpsserve.LoadCertFiles(ac.CertFile, ac.KeyFile, log)
	if err != nil {
		return nil, fmt.Errorf("kube.audit certificate: %w", err)
	}
	var pool *x509.CertPool
	if ac.ClientCAFile != "" {
		caPEM, err := os.ReadFile(ac.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("kube.audit.clientCAFile: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("kube.audit.clientCAFile: no PEM certificate in it")
		}
	}
	return audit.ServerTLS(certs.GetCertificate, pool, ac.TokenFile != ""), nil
}
