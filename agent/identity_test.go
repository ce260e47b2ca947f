package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/transport"
)

// TestIdentityIsTheCertificate: `harrier certs agent node-a` copied to host
// b just works as node-a; a config pinning another ID stops the agent at
// start with an error naming both (no retry loop against the backend).
func TestIdentityIsTheCertificate(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if _, _, err := transport.InitCA(pki); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueAgentCert(pki, "node-a", "agent"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, pinned, wantID, wantErr string
	}{
		{"no agentID: the certificate's", "", "node-a", ""},
		{"agentID agrees", "node-a", "node-a", ""},
		{"agentID differs", "host-b", "", `uplink.agentID is "host-b" but the certificate ` + filepath.Join(pki, "agent.crt") + ` names agent "node-a"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{DataDir: dir, Uplink: UplinkConfig{AgentID: tc.pinned}}
			cfg.Sensor.Node = "host-b"
			cfg = cfg.withDefaults()
			u, err := newUplinkIdentity(cfg, slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				// Run refuses to start the same way, before the sensor
				// (no root needed to see it).
				runErr := Run(context.Background(), cfg, "test", slog.New(slog.DiscardHandler), nil)
				if runErr == nil || !strings.Contains(runErr.Error(), tc.wantErr) {
					t.Fatalf("Run = %v, want %q", runErr, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.agentID != tc.wantID {
				t.Fatalf("agent ID %q, want %q", u.agentID, tc.wantID)
			}
		})
	}
}

func TestEnrollConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  EnrollConfig
		err  string
	}{
		{"off", EnrollConfig{}, ""},
		{"service account", EnrollConfig{Server: "https://harrier-backend.harrier.svc:9470", TokenFile: "/t", Kind: EnrollServiceAccount}, ""},
		{"bootstrap", EnrollConfig{Server: "https://10.0.0.5:9470", TokenFile: "/t", Kind: EnrollBootstrap}, ""},
		{"http", EnrollConfig{Server: "http://b:9470", TokenFile: "/t", Kind: EnrollBootstrap}, "want https"},
		{"no token file", EnrollConfig{Server: "https://b:9470", Kind: EnrollBootstrap}, "tokenFile is required"},
		{"bad kind", EnrollConfig{Server: "https://b:9470", TokenFile: "/t", Kind: "x509"}, "kind"},
		{"token without server", EnrollConfig{TokenFile: "/t"}, "server is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}
