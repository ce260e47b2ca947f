package backend

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// tokenFile is the name of the generated API token inside the data
// directory, responseTokenFile the response token's (the credential that may
// change response policies and ask agents for actions).
const (
	tokenFile         = "api-token"
	responseTokenFile = "response-token"
)

// EnsureResponseToken returns the response token from path, generating it
// (mode 0600) if there is none.
func EnsureResponseToken(path string, log *slog.Logger) (string, error) {
	return ensureTokenFile(filepath.Dir(path), filepath.Base(path), "", log)
}

// EnsureToken returns the API token: configured if it is set, else the one in
// <dataDir>/api-token, else a new random 32-byte token (hex) written there
// with mode 0600. The file's path is logged so an operator can find it; the
// token itself never is.
func EnsureToken(dataDir, configured string, log *slog.Logger) (string, error) {
	return ensureTokenFile(dataDir, tokenFile, configured, log)
}

func ensureTokenFile(dataDir, name, configured string, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if configured = strings.TrimSpace(configured); configured != "" {
		if len(configured) < 16 {
			log.Warn("configured API token is short; use at least 32 random characters")
		}
		return configured, nil
	}
	path := filepath.Join(dataDir, name)
	tok, err := readToken(path, log)
	if err == nil {
		log.Info("using token from file", "path", path)
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	tok = hex.EncodeToString(raw)
	// O_EXCL: if another process wrote the file meanwhile, use its token.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readToken(path, log)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	_, werr := f.WriteString(tok + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path) // a half-written token would lock everyone out
		return "", fmt.Errorf("%s: write %s: %w", name, path, werr)
	}
	log.Info("generated token", "path", path)
	return tok, nil
}

func readToken(path string, log *slog.Logger) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	// Group access is how a Secret volume (0440, the pod's fsGroup) or the
	// packages (group harrier) share the file with the service; only world
	// access is a leak.
	if fi.Mode().Perm()&0o007 != 0 {
		// Tighten rather than refuse, and say so. A read-only file (a mounted
		// Secret or ConfigMap) cannot be tightened: warn and go on, since
		// refusing would only turn a leak into an outage.
		if err := os.Chmod(path, fi.Mode().Perm()&0o770); err != nil {
			log.Warn("API token file is readable by every user and cannot be tightened; fix its mode", "path", path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()), "err", err)
		} else {
			log.Warn("API token file was readable by every user; removed their access", "path", path)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty; delete it to generate a new token", path)
	}
	return tok, nil
}
