package replicate_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

// TestNATSAuthentication: a replica authenticates to a real nats-server
// from files, as cluster.caFile/certFile/keyFile and nkeySeedFile say:
// TLS with a client certificate the server verifies against its CA, and
// an NKey. With both, records go through the stream into the replica's
// store; without the certificate, without the NKey or with another user's
// NKey the server refuses the connection and no stream is made.
func TestNATSAuthentication(t *testing.T) {
	pki := t.TempDir()
	write := func(name string, cert, key []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := transport.WriteFiles(pki, name, cert, key); err != nil {
			t.Fatal(err)
		}
	}
	caCert, caKey, err := transport.NewCA("nats test CA", time.Hour)
	write("ca", caCert, nil, err)
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	write("server", srvCert, srvKey, err)
	cliCert, cliKey, err := transport.IssueAgent(caCert, caKey, "replica-a", time.Hour)
	write("client", cliCert, cliKey, err)
	seedFile := func(name string) (seedPath, public string) {
		t.Helper()
		user, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, err := user.Seed()
		if err != nil {
			t.Fatal(err)
		}
		public, err = user.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		seedPath = filepath.Join(pki, name+".nk")
		if err := os.WriteFile(seedPath, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		return seedPath, public
	}
	seed, public := seedFile("replica")
	otherSeed, _ := seedFile("other")
	conf := filepath.Join(pki, "nats.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n"+
		"authorization {\n  users: [{nkey: %q}]\n}\n",
		filepath.Join(pki, "server.crt"), filepath.Join(pki, "server.key"), filepath.Join(pki, "ca.crt"), public), 0o600); err != nil {
		t.Fatal(err)
	}
	node := natstest.Single(t, "-c", conf)
	url := strings.Replace(node.URL(), "nats://", "tls://", 1)
	good := replicate.Config{Servers: []string{url}, Replicas: 1, CAFile: filepath.Join(pki, "ca.crt"),
		CertFile: filepath.Join(pki, "client.crt"), KeyFile: filepath.Join(pki, "client.key"), NKeySeedFile: seed}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}

	for name, cfg := range map[string]replicate.Config{
		"no client certificate": {Servers: good.Servers, Replicas: 1, CAFile: good.CAFile, NKeySeedFile: seed},
		"no NKey":               {Servers: good.Servers, Replicas: 1, CAFile: good.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile},
		"another user's NKey": {Servers: good.Servers, Replicas: 1, CAFile: good.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile,
			NKeySeedFile: otherSeed},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := replicate.Connect(cfg, "harrier-test-refused")
			if err != nil {
				t.Fatal(err) // the files are fine; the server refuses
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := replicate.EnsureStream(ctx, js, cfg); err == nil || nc.IsConnected() {
				t.Errorf("connected (%v) and made the stream (error %v) without the right credentials", nc.IsConnected(), err)
			}
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := startReplica(t, good, t.TempDir(), "a")
	defer r.cancel()
	recs := []*api.Record{alertRecord("node-0", 1), alertRecord("node-0", 2)}
	upload(ctx, t, func() *replicate.Publisher { return r.pub }, "node-0", "spool-0", recs)
	testenv.WaitFor(t, 30*time.Second, "both alerts in the replica's store over TLS and NKey", func() bool {
		alerts, err := r.store.Alerts(ctx, backend.AlertQuery{Node: "node-0"})
		return err == nil && len(alerts) == 2
	})
}
