package backend

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestServiceRunStops runs the whole backend (store, QUIC ingest, HTTP API)
// and stops it both ways Run can end: its context is cancelled, or a server
// fails, which must stop the other one too. TestMain's leak check then
// proves no goroutine of either is left.
func TestServiceRunStops(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stop    func(cancel context.CancelFunc, svc *Service)
		wantErr string
	}{
		{"context cancelled", func(cancel context.CancelFunc, _ *Service) { cancel() }, ""},
		// Closing the API listener under the HTTP server makes Serve fail.
		{"API server fails", func(_ context.CancelFunc, svc *Service) { _ = svc.api.Close() }, "API:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pki := writeTestPKI(t, filepath.Join(dir, "pki"))
			svc, err := NewService(Config{
				DataDir: filepath.Join(dir, "data"), APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0",
				CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "server.crt"), KeyFile: filepath.Join(pki, "server.key"),
			}, slog.New(slog.NewTextHandler(t.Output(), nil)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			client := &http.Client{}
			defer client.CloseIdleConnections()
			done := make(chan error, 1)
			go func() { done <- svc.Run(ctx) }()
			testenv.WaitFor(t, 10*time.Second, "the API to answer /livez", func() bool {
				resp, err := client.Get("http://" + svc.APIAddr().String() + "/livez")
				if err != nil {
					return false
				}
				_ = resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
			tc.stop(cancel, svc)
			select {
			case err := <-done:
				switch {
				case tc.wantErr == "" && err != nil:
					t.Fatalf("Run: %v", err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
					t.Fatalf("Run returned %v, want an error containing %q", err, tc.wantErr)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
			// The store is closed: nothing can read it any more.
			if err := svc.store.Ping(context.Background()); !errors.Is(err, badger.ErrDBClosed) {
				t.Fatalf("store after Run returned: ping %v, want it closed", err)
			}
		})
	}
}
