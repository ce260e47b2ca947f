package posture

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/harrier-sec/harrier/api"
)

// DefaultKubeletConfigPath is where kubeadm and most distributions put the
// kubelet's configuration file.
const DefaultKubeletConfigPath = "/var/lib/kubelet/config.yaml"

// maxKubeletConfigBytes bounds the file read; a real one is a few KiB.
const maxKubeletConfigBytes = 1 << 20

// KubeletSettings are the security-relevant fields of a
// KubeletConfiguration (kubelet.config.k8s.io/v1beta1). Unset fields are
// nil/empty; the file format's defaults are secure (anonymous auth off,
// read-only port 0, Webhook authorization).
type KubeletSettings struct {
	Kind           string `json:"kind"`
	APIVersion     string `json:"apiVersion"`
	Authentication struct {
		Anonymous struct {
			Enabled *bool `json:"enabled"`
		} `json:"anonymous"`
	} `json:"authentication"`
	Authorization struct {
		Mode string `json:"mode"`
	} `json:"authorization"`
	ReadOnlyPort          *int32 `json:"readOnlyPort"`
	ProtectKernelDefaults bool   `json:"protectKernelDefaults"`
}

// ParseKubeletConfig decodes a KubeletConfiguration (YAML or JSON). Fields
// it does not read are ignored (the format has dozens); a document of
// another kind is an error.
func ParseKubeletConfig(data []byte) (*KubeletSettings, error) {
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, errors.New("kubelet config: empty")
	}
	var s KubeletSettings
	if err := yaml.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("kubelet config: %w", err)
	}
	if s.Kind != "" && s.Kind != "KubeletConfiguration" {
		return nil, fmt.Errorf("kubelet config: kind %q, want KubeletConfiguration", s.Kind)
	}
	return &s, nil
}

// CheckKubeletConfig reads the kubelet configuration file at path (""
// means DefaultKubeletConfigPath) and reports anonymous authentication,
// an open read-only port, AlwaysAllow authorization and kernel settings
// the kubelet may change (protectKernelDefaults off), as findings on
// node. A missing file is not an error (this node runs no kubelet, or
// configures it by flags only): it yields no findings. Flags passed to
// the kubelet override the file and are not seen here.
func CheckKubeletConfig(path, cluster, node string, cfg Config) ([]*api.Finding, error) {
	if path == "" {
		path = DefaultKubeletConfigPath
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKubeletConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("kubelet config %s: %w", path, err)
	}
	if len(data) > maxKubeletConfigBytes {
		return nil, fmt.Errorf("kubelet config %s: larger than %d bytes", path, maxKubeletConfigBytes)
	}
	s, err := ParseKubeletConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return KubeletFindings(s, path, cluster, node, cfg), nil
}

// KubeletFindings evaluates parsed kubelet settings; source names where
// they came from in the findings' detail.
func KubeletFindings(s *KubeletSettings, source, cluster, node string, cfg Config) []*api.Finding {
	if s == nil {
		return nil
	}
	e := newEvaluator(cfg, cluster, node, time.Now())
	o := e.object(&api.ObjectRef{ApiVersion: "v1", Kind: "Node", Name: node})
	if a := s.Authentication.Anonymous.Enabled; a != nil && *a {
		o.fail(CheckKubeletAnonymous, "", source+": authentication.anonymous.enabled: true", 0)
	}
	if p := s.ReadOnlyPort; p != nil && *p != 0 {
		o.fail(CheckKubeletReadOnly, "", fmt.Sprintf("%s: readOnlyPort: %d", source, *p), 0)
	}
	if strings.EqualFold(s.Authorization.Mode, "AlwaysAllow") {
		o.fail(CheckKubeletAuthz, "", source+": authorization.mode: AlwaysAllow", 0)
	}
	if !s.ProtectKernelDefaults {
		o.fail(CheckKubeletKernelDefaults, "", source+": protectKernelDefaults is not true", 0)
	}
	o.flush()
	return e.out
}
