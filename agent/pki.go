package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/harrier-sec/harrier/transport"
)

// certValidity is how long generated certificates last. Sites replace them
// with `harrier certs` or their own PKI well before.
const certValidity = 5 * 365 * 24 * time.Hour

// PKIOptions names what MakePKI issues.
type PKIOptions struct {
	Dir          string
	BackendHosts []string // DNS names and IPs the backend certificate covers
	AgentIDs     []string // one agent certificate each
}

// MakePKI creates a CA (kept if present) and the backend and agent
// certificates that are missing in o.Dir, as ca.crt/ca.key,
// backend.crt/backend.key, and <agent>.crt/<agent>.key ("agent" for the
// first agent, so the all-in-one mode finds it). Keys are written 0600.
func MakePKI(o PKIOptions) error {
	caCert, caKey, err := readPair(o.Dir, "ca")
	if errors.Is(err, fs.ErrNotExist) {
		if caCert, caKey, err = transport.NewCA("Harrier CA", certValidity); err != nil {
			return fmt.Errorf("make CA: %w", err)
		}
		if err := transport.WriteFiles(o.Dir, "ca", caCert, caKey); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if !exists(filepath.Join(o.Dir, "backend.crt")) {
		cert, key, err := transport.IssueServer(caCert, caKey, o.BackendHosts, certValidity)
		if err != nil {
			return fmt.Errorf("issue backend certificate: %w", err)
		}
		if err := transport.WriteFiles(o.Dir, "backend", cert, key); err != nil {
			return err
		}
	}
	for i, id := range o.AgentIDs {
		name := id
		if i == 0 {
			name = "agent"
		}
		if exists(filepath.Join(o.Dir, name+".crt")) {
			continue
		}
		cert, key, err := transport.IssueAgent(caCert, caKey, id, certValidity)
		if err != nil {
			return fmt.Errorf("issue agent certificate %s: %w", id, err)
		}
		if err := transport.WriteFiles(o.Dir, name, cert, key); err != nil {
			return err
		}
	}
	return nil
}

func readPair(dir, name string) (cert, key []byte, err error) {
	if cert, err = os.ReadFile(filepath.Join(dir, name+".crt")); err != nil {
		return nil, nil, err
	}
	if key, err = os.ReadFile(filepath.Join(dir, name+".key")); err != nil {
		return nil, nil, fmt.Errorf("%s.crt exists but its key does not: %w", name, err)
	}
	return cert, key, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
