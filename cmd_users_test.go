package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestUsersCommands: `harrier backend users add|list|token|role|remove` against
// a running backend with its API token: the user's token then acts with
// the user's role, and stops working once the user is removed.
func TestUsersCommands(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	writeCLITestPKI(t, pki)
	const apiToken = "users-test-token-0123456789abcdef"
	svc, err := backend.NewService(backend.Config{DataDir: filepath.Join(dir, "data"), APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0",
		CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "server.crt"), KeyFile: filepath.Join(pki, "server.key"),
		Token: apiToken, TokenDir: dir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("backend: %v", err)
		}
	})
	tok := filepath.Join(dir, "token")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(tok, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := []string{"--api", "http://" + svc.APIAddr().String(), "--token-file", tok}
	cli := func(args ...string) (string, error) {
		return runCLI(t, append(append([]string{"backend", "users"}, args...), api...)...)
	}
	var out string
	testenv.WaitFor(t, 10*time.Second, "the backend's API", func() bool {
		out, err = cli("add", "ana", "--role", "analyst", "--password-file", pw)
		return err == nil
	})
	if out != "user ana added with the role analyst\n" {
		t.Errorf("add: %q", out)
	}
	if out, err = cli("add", "vic", "--role", "viewer"); err != nil || !regexp.MustCompile(`password \(shown once\): [A-Z2-7]{26}\n`).MatchString(out) {
		t.Errorf("add with a made password: %q %v", out, err)
	}
	if _, err = cli("add", "bad", "--role", "root"); err == nil || !strings.Contains(err.Error(), "want viewer, analyst, responder or admin") {
		t.Errorf("bad role: %v", err)
	}
	if _, err = cli("add", "ana", "--role", "viewer"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("ana again: %v, want 409", err)
	}
	userToken, err := cli("token", "ana")
	if err != nil || !strings.HasPrefix(userToken, "hrr_") {
		t.Fatalf("token: %q %v", userToken, err)
	}
	out, err = cli("list")
	if err != nil || !regexp.MustCompile(`(?m)^ana\s+analyst\s+yes\s+[0-9a-f]{8}\s`).MatchString(out) || !regexp.MustCompile(`(?m)^vic\s+viewer\s+yes\s+-\s`).MatchString(out) {
		t.Errorf("list:\n%s %v", out, err)
	}
	if out, err = cli("role", "ana", "--role", "responder"); err != nil || out != "user ana now has the role responder\n" {
		t.Errorf("role: %q %v", out, err)
	}
	if _, err = cli("role", "nobody", "--role", "viewer"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("role of a user that is not there: %v, want 404", err)
	}
	if out, err = cli("list"); err != nil || !regexp.MustCompile(`(?m)^ana\s+responder\s`).MatchString(out) {
		t.Errorf("list after the role change:\n%s %v", out, err)
	}
	whoami := func() int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+svc.APIAddr().String()+"/api/v1/me", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(userToken))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := whoami(); code != 200 {
		t.Errorf("ana's token: %d", code)
	}
	if out, err = cli("remove", "ana"); err != nil || out != "user ana removed\n" {
		t.Errorf("remove: %q %v", out, err)
	}
	if code := whoami(); code != 401 {
		t.Errorf("a removed user's token: %d, want 401", code)
	}
}
