package transport

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The functions of this file make and keep a small PKI in one directory, for sites
// without their own: `harrier certs` and the all-in-one's first start.

// certValidity is how long generated certificates last. Sites replace them
// with `harrier certs` or their own PKI well before.
const certValidity = 5 * 365 * 24 * time.Hour

// InitCA creates ca.crt and ca.key in dir unless they exist, and returns
// the CA either way.
func InitCA(dir string) (caCert, caKey []byte, err error) {
	caCert, caKey, err = readPair(dir, "ca")
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return caCert, caKey, err
	}
	if caCert, caKey, err = NewCA("Harrier CA", certValidity); err != nil {
		return nil, nil, fmt.Errorf("make CA: %w", err)
	}
	if err := WriteFiles(dir, "ca", caCert, caKey); err != nil {
		return nil, nil, err
	}
	return caCert, caKey, nil
}

// IssueBackendCert writes backend.crt/backend.key for hosts, signed by the
// CA in dir, unless they exist.
func IssueBackendCert(dir string, hosts []string) error {
	return IssueServerCert(dir, "backend", hosts)
}

// IssueServerCert writes <name>.crt/<name>.key, a serving certificate for
// hosts signed by the CA in dir, unless they exist: the backend's, or the
// agent's audit or admission webhook's.
func IssueServerCert(dir, name string, hosts []string) error {
	return issueOnce(dir, name, func(caCert, caKey []byte) ([]byte, []byte, error) {
		return IssueServer(caCert, caKey, hosts, certValidity)
	})
}

// IssueAgentCert writes <name>.crt/<name>.key for agentID, signed by the CA
// in dir, unless they exist.
func IssueAgentCert(dir, agentID, name string) error {
	return issueOnce(dir, name, func(caCert, caKey []byte) ([]byte, []byte, error) {
		return IssueAgent(caCert, caKey, agentID, certValidity)
	})
}

func issueOnce(dir, name string, issue func(caCert, caKey []byte) ([]byte, []byte, error)) error {
	if _, err := os.Stat(filepath.Join(dir, name+".crt")); err == nil {
		return nil
	}
	caCert, caKey, err := readPair(dir, "ca")
	if err != nil {
		return fmt.Errorf("CA in %s (run `harrier certs init` first): %w", dir, err)
	}
	cert, key, err := issue(caCert, caKey)
	if err != nil {
		return fmt.Errorf("issue %s certificate: %w", name, err)
	}
	return WriteFiles(dir, name, cert, key)
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
