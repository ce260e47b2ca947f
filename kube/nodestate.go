package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// NodeStateConfig is `kube.nodeState`: pod context read from the container
// runtime's state on the node, for when the API server is unreachable (or
// has not told the informer about a new pod yet).
type NodeStateConfig struct {
	// Mode is "auto" (default: on when the pod informer is), "on" (also
	// without an API server) or "off".
	Mode string `json:"mode,omitempty"`
	// ContainerdRoot is containerd's state directory (default
	// /run/containerd); the OCI bundles of its CRI containers are under
	// io.containerd.runtime.v2.task/k8s.io/<id>/config.json.
	ContainerdRoot string `json:"containerdRoot,omitempty"`
	// CRIORoot is the containers/storage run root CRI-O uses (default
	// /run/containers/storage); bundles are under
	// overlay-containers/<id>/userdata/config.json.
	CRIORoot string `json:"crioRoot,omitempty"`
}

// Defaults of NodeStateConfig.
const (
	DefaultContainerdRoot = "/run/containerd"
	DefaultCRIORoot       = "/run/containers/storage"
)

// Validate reports a bad mode.
func (c NodeStateConfig) Validate() error {
	switch c.Mode {
	case "", "auto", "on", "off":
		return nil
	}
	return fmt.Errorf("kube.nodeState.mode %q: must be auto, on or off", c.Mode)
}

// The annotations the CRI implementations write into each container's OCI
// bundle: the pod context survives there while the API server is away.
const (
	containerdSandboxName      = "io.kubernetes.cri.sandbox-name"
	containerdSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	containerdSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	containerdContainerName    = "io.kubernetes.cri.container-name"
	containerdImageName        = "io.kubernetes.cri.image-name"
	crioPodName                = "io.kubernetes.pod.name"
	crioPodNamespace           = "io.kubernetes.pod.namespace"
	crioPodUID                 = "io.kubernetes.pod.uid"
	crioContainerName          = "io.kubernetes.container.name"
	crioImageName              = "io.kubernetes.cri-o.ImageName"
)

// maxBundleConfig bounds the config.json read per container (runtimes
// write a few tens of KiB).
const maxBundleConfig = 4 << 20

// NodeState looks containers up in the runtime's on-disk state. It is safe
// for concurrent use; results are cached (a container's annotations never
// change) and misses are remembered briefly, so a container unknown to the
// runtime costs one stat per missTTL.
type NodeState struct {
	containerdRoot, crioRoot string
	mu                       sync.Mutex
	hits                     map[string]*api.Container
	misses                   map[string]time.Time
	now                      func() time.Time
	found, bad               atomic.Uint64
}

const (
	nodeStateMissTTL  = 5 * time.Second
	nodeStateMaxCache = 4096
)

// NewNodeState reads the roots cfg names (defaults filled in).
func NewNodeState(cfg NodeStateConfig) *NodeState {
	ns := &NodeState{containerdRoot: cfg.ContainerdRoot, crioRoot: cfg.CRIORoot,
		hits: map[string]*api.Container{}, misses: map[string]time.Time{}, now: time.Now}
	if ns.containerdRoot == "" {
		ns.containerdRoot = DefaultContainerdRoot
	}
	if ns.crioRoot == "" {
		ns.crioRoot = DefaultCRIORoot
	}
	return ns
}

// Check says whether this node has the state of a CRI runtime where ns
// looks: containerd's k8s.io namespace or CRI-O's containers directory
// (the agent's own pod puts one there on a Kubernetes node). Nil when one
// exists; otherwise an error naming both places, so that a runtime with
// its state elsewhere gets configured rather than silently unused.
func (ns *NodeState) Check() error {
	var why []error
	for _, d := range []string{
		filepath.Join(ns.containerdRoot, "io.containerd.runtime.v2.task", "k8s.io"),
		filepath.Join(ns.crioRoot, "overlay-containers"),
	} {
		fi, err := os.Stat(d)
		if err == nil && fi.IsDir() {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%s: not a directory", d)
		}
		why = append(why, err)
	}
	return fmt.Errorf("no container runtime state on this node (containerd's under %s, CRI-O's under %s; "+
		"set kube.nodeState.containerdRoot or crioRoot, or the chart's agent.containerdStateDir): %w",
		ns.containerdRoot, ns.crioRoot, errors.Join(why...))
}

// NodeStateStats counts lookups answered from disk and bundles that could
// not be read.
type NodeStateStats struct{ Found, Unreadable uint64 }

// Stats returns the counters.
func (ns *NodeState) Stats() NodeStateStats {
	return NodeStateStats{Found: ns.found.Load(), Unreadable: ns.bad.Load()}
}

// Lookup returns the pod context of container id from the runtime's
// bundle, with pod and container fields only (no labels, workload or
// service account: the runtime does not record them).
func (ns *NodeState) Lookup(id string) (*api.Container, bool) {
	if id == "" || !safeID(id) {
		return nil, false
	}
	ns.mu.Lock()
	if c, ok := ns.hits[id]; ok {
		ns.mu.Unlock()
		return c, true
	}
	if t, ok := ns.misses[id]; ok && ns.now().Sub(t) < nodeStateMissTTL {
		ns.mu.Unlock()
		return nil, false
	}
	ns.mu.Unlock()

	c := ns.read(id)
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(ns.hits)+len(ns.misses) >= nodeStateMaxCache {
		clear(ns.hits)
		clear(ns.misses)
	}
	if c == nil {
		ns.misses[id] = ns.now()
		return nil, false
	}
	delete(ns.misses, id)
	ns.hits[id] = c
	ns.found.Add(1)
	return c, true
}

// read tries containerd's layout, then CRI-O's.
func (ns *NodeState) read(id string) *api.Container {
	for _, try := range []struct {
		path                                   string
		name, namespace, uid, container, image string
	}{
		{filepath.Join(ns.containerdRoot, "io.containerd.runtime.v2.task", "k8s.io", id, "config.json"),
			containerdSandboxName, containerdSandboxNamespace, containerdSandboxUID, containerdContainerName, containerdImageName},
		{filepath.Join(ns.crioRoot, "overlay-containers", id, "userdata", "config.json"),
			crioPodName, crioPodNamespace, crioPodUID, crioContainerName, crioImageName},
	} {
		ann, err := readAnnotations(try.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			ns.bad.Add(1)
			continue
		}
		if ann[try.name] == "" || ann[try.namespace] == "" {
			continue // a sandbox (pause) or a container not made by the CRI
		}
		return &api.Container{
			Name: ann[try.container], Image: ann[try.image],
			PodName: ann[try.name], PodNamespace: ann[try.namespace], PodUid: ann[try.uid],
		}
	}
	return nil
}

// readAnnotations returns the annotations of the OCI bundle config at path.
func readAnnotations(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseBundleAnnotations(io.LimitReader(f, maxBundleConfig))
}

// ParseBundleAnnotations decodes the annotations of an OCI runtime config
// (config.json); everything else in it is skipped.
func ParseBundleAnnotations(r io.Reader) (map[string]string, error) {
	var cfg struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.NewDecoder(r).Decode(&cfg); err != nil {
		return nil, fmt.Errorf("bundle config: %w", err)
	}
	return cfg.Annotations, nil
}

// safeID accepts the container IDs runtimes make (hex, or names of
// letters, digits, '-', '_' and '.'), so an ID can never climb out of the
// state directory.
func safeID(id string) bool {
	if len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}
