// Package container maps processes to the containers they run in, using
// the cgroup paths that container runtimes create.
//
// Every supported runtime names a container's cgroup after the container
// ID, so the cgroup path alone identifies the container without talking to
// any runtime daemon. Hierarchy locations are always discovered from
// mountinfo, never assumed.
package container

import "strings"

// Runtime names reported in Info.Runtime.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimePodman     = "podman"
	// RuntimeRunc is plain runc or any other runtime that uses runc-style
	// cgroup paths without a recognisable runtime marker.
	RuntimeRunc = "runc"
)

// HarrierCgroupParent is the cgroup element under which Harrier's own
// tools (simulator, tests) start runc containers, with cgroupsPath
// "/harrier/<container-id>". Any element directly below an element with
// this name is taken as a runc container ID, whatever its shape, because
// those IDs (e.g. "harrier-test-1a2b3c") are not 64-hex.
const HarrierCgroupParent = "harrier"

// Info describes the container a cgroup belongs to. Runtime and ID are
// empty for host processes.
type Info struct {
	// Runtime is one of the Runtime* constants, or "" for the host.
	Runtime string
	// ID is the container ID: 64 hex digits for docker, containerd,
	// CRI-O and podman; runc's own container name for runc containers.
	ID string
	// Cgroup is the cgroup path the Info was derived from.
	Cgroup string
	// PodUID is the Kubernetes pod UID (dashed form) whenever the path
	// passes through a pod cgroup, even at pod level with no container.
	PodUID string
}

// InContainer reports whether the cgroup belongs to a container.
func (i Info) InContainer() bool { return i.ID != "" }

// ParseCgroupPath maps a cgroup path, as found in /proc/PID/cgroup, to the
// container that owns it. The innermost container element wins, so nested
// containers (docker in docker, kind) resolve to the inner one; elements
// below it (e.g. CRI-O's ".../crio-<id>.scope/container" or a container's
// own sub-cgroups) still belong to that container.
//
// Conmon scopes ("crio-conmon-<id>.scope", "libpod-conmon-<id>.scope")
// identify no container: conmon is the runtime's monitor, running outside
// the container it watches, so it is attributed to whatever encloses the
// scope (normally the host).
//
// It does not allocate except to rewrite a systemd-escaped pod UID.
func ParseCgroupPath(path string) Info {
	info := Info{Cgroup: path}
	found := false
	rest := path
	for {
		i := strings.LastIndexByte(rest, '/')
		elem, parent := rest[i+1:], ""
		if i > 0 {
			parent = rest[:i]
		}
		if elem != "" {
			if !found {
				if rt, id := classify(elem, parent); rt != "" {
					info.Runtime, info.ID, found = rt, id, true
				}
			}
			if info.PodUID == "" {
				// systemd escapes "-" in slice names as "_".
				info.PodUID = strings.ReplaceAll(podUID(elem), "_", "-")
			}
		}
		if i < 0 || (found && info.PodUID != "") {
			break
		}
		rest = rest[:i]
	}
	return info
}

// classify returns the runtime and ID for one path element, or "" if the
// element does not name a container.
func classify(elem, parent string) (runtime, id string) {
	if lastElem(parent) == HarrierCgroupParent {
		return RuntimeRunc, elem
	}
	// containerd's systemd driver under containerd.service:
	// "<pod slice>:<prefix>:<id>".
	if slice, rest, ok := strings.Cut(elem, ":"); ok {
		prefix, id, ok := strings.Cut(rest, ":")
		if !ok || slice == "" || !isContainerID(id) {
			return "", ""
		}
		return prefixRuntime(prefix), id
	}
	name, scope := strings.CutSuffix(elem, ".scope")
	if scope {
		// runc's systemd form "slice:runc:name" gives "runc-<name>.scope"
		// with an arbitrary name.
		if id, ok := strings.CutPrefix(name, "runc-"); ok && id != "" {
			return RuntimeRunc, id
		}
	}
	// "<prefix>-<64hex>[.scope]": IDs contain no '-', so the last one
	// separates prefix and ID.
	if j := strings.LastIndexByte(name, '-'); j >= 0 {
		if id := name[j+1:]; isContainerID(id) {
			return prefixRuntime(name[:j]), id
		}
		return "", ""
	}
	if !scope && isContainerID(elem) {
		return ancestorRuntime(parent), elem
	}
	return "", ""
}

// prefixRuntime maps a cgroup name prefix to its runtime. Conmon prefixes
// map to "" (not a container); unknown prefixes are runc-style.
func prefixRuntime(prefix string) string {
	switch prefix {
	case "docker":
		return RuntimeDocker
	case "cri-containerd":
		return RuntimeContainerd
	case "crio":
		return RuntimeCRIO
	case "libpod":
		return RuntimePodman
	case "crio-conmon", "libpod-conmon":
		return ""
	default:
		return RuntimeRunc
	}
}

// ancestorRuntime decides who owns a bare 64-hex cgroup from its nearest
// telling ancestor: docker's cgroupfs driver uses "/docker/<id>",
// kubelet's cgroupfs driver "/kubepods/<qos>/pod<uid>/<id>".
func ancestorRuntime(parent string) string {
	for parent != "" {
		i := strings.LastIndexByte(parent, '/')
		e := parent[i+1:]
		switch {
		case e == "docker":
			return RuntimeDocker
		case e == "libpod_parent":
			return RuntimePodman
		case strings.HasPrefix(e, "kubepods") || podUID(e) != "":
			return RuntimeContainerd
		}
		if i < 0 {
			break
		}
		parent = parent[:i]
	}
	return RuntimeRunc
}

// podUID returns the raw (possibly underscore-escaped) pod UID named by a
// pod cgroup element, or "". Forms: "pod<uid>" (cgroupfs),
// "kubepods[-<qos>]-pod<uid>.slice" (systemd), and that slice as the first
// field of containerd's "slice:prefix:id" form.
func podUID(elem string) string {
	if i := strings.IndexByte(elem, ':'); i >= 0 {
		elem = elem[:i]
	}
	if uid, ok := strings.CutPrefix(elem, "pod"); ok {
		if validUID(uid) {
			return uid
		}
		return ""
	}
	s, ok := strings.CutSuffix(elem, ".slice")
	if !ok || !strings.HasPrefix(s, "kubepods") {
		return ""
	}
	j := strings.LastIndex(s, "-pod")
	if j < 0 || !validUID(s[j+4:]) {
		return ""
	}
	return s[j+4:]
}

// validUID accepts UUIDs (dashed or systemd-escaped) and the 32-hex hashes
// kubelet uses as static pod UIDs.
func validUID(s string) bool {
	if len(s) < 32 || len(s) > 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerHex(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// isContainerID reports whether s is a 64-digit lowercase hex ID, the
// form docker, containerd, CRI-O and podman all use.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
}

func lastElem(p string) string {
	return p[strings.LastIndexByte(p, '/')+1:]
}
