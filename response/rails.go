package response

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Protected targets a policy may act on only when it names their class in
// allowProtected.
const (
	// ProtectKubelet is the kubelet (or k3s, k0s, microk8s's kubelite)
	// running on the host.
	ProtectKubelet = "kubelet"
	// ProtectRuntime is the container runtime on the host: containerd and
	// its shims, dockerd, CRI-O, conmon, runc, crun.
	ProtectRuntime = "runtime"
	// ProtectKubeSystem is every workload in the kube-system namespace.
	ProtectKubeSystem = "kube-system"
)

// Targets no policy may act on, whatever it allows.
const (
	protectHostInit = "host-init"
	protectAgent    = "agent"
)

// ProtectedClasses lists what allowProtected may name.
func ProtectedClasses() []string { return []string{ProtectKubelet, ProtectRuntime, ProtectKubeSystem} }

// neverAllowed says why a class cannot be allowed.
var neverAllowed = map[string]string{
	protectHostInit: "the host's PID 1 is never acted on (killing it panics the kernel)",
	protectAgent:    "the agent and its parent are never acted on (nothing would respond afterwards)",
}

// Executable names (base name of the executable, or the kernel's 15-byte
// comm) of the protected host daemons.
var (
	kubeletNames = []string{"kubelet", "kubelite", "k3s", "k3s-server", "k3s-agent", "k0s"}
	runtimeNames = []string{"containerd", "dockerd", "docker-proxy", "cri-dockerd", "crio", "conmon", "conmonrs", "runc", "crun", "podman"}
)

// runtimeName matches a runtime's executable; every containerd shim
// (containerd-shim, containerd-shim-runc-v2, its 15-byte comm
// "containerd-shim") is one.
func runtimeName(name string) bool {
	return slices.Contains(runtimeNames, name) || strings.HasPrefix(name, "containerd-shim")
}

// Protection recognises the targets the responder must not act on. Its
// zero value knows only what an alert says (as the dry-run does); the
// agent's (NewProtection) also reads the live process in /proc.
type Protection struct {
	// never are PIDs no policy may act on, and why: pid 1, the agent, its
	// parent.
	never map[int]string
	// procRoot is /proc for the live checks; "" reads nothing live.
	procRoot string
	// hostMnt is the host's mount namespace, "" when unreadable.
	hostMnt string
}

// NewProtection protects pid 1 and the calling process and its parent,
// reading live processes under procRoot ("" for /proc).
func NewProtection(procRoot string) *Protection {
	if procRoot == "" {
		procRoot = "/proc"
	}
	p := &Protection{procRoot: procRoot, never: map[int]string{
		1:            protectHostInit,
		os.Getpid():  protectAgent,
		os.Getppid(): protectAgent,
	}}
	// PID 1's, else (when a sandbox hides it) the agent's own: an agent
	// installed on the node runs in the host's.
	var err error
	if p.hostMnt, err = os.Readlink(procRoot + "/1/ns/mnt"); err != nil {
		p.hostMnt, _ = os.Readlink(procRoot + "/self/ns/mnt")
	}
	return p
}

// OfflineProtection judges alerts only by what they say: for a dry-run
// over past alerts, whose processes are gone.
func OfflineProtection() *Protection {
	return &Protection{never: map[int]string{1: protectHostInit}}
}

// Protected is a refused target: its class and the evidence.
type Protected struct {
	Class  string
	Reason string
}

// Check returns the protected class of the target of a, or nil. It is
// conservative: a daemon's name in the alert or in the live process, with
// either the alert saying "not in a container" or the live process sharing
// the host's mount namespace, is enough.
func (p *Protection) Check(a *api.Alert) *Protected {
	c := a.GetContainer()
	if c.GetPodNamespace() == ProtectKubeSystem {
		return &Protected{ProtectKubeSystem, fmt.Sprintf("pod %s/%s is a kube-system workload", c.GetPodNamespace(), c.GetPodName())}
	}
	// PID 0 is an alert without a process: the process actions refuse it
	// themselves, the container actions need none.
	pid := int(a.GetProcess().GetTgid())
	if class, ok := p.never[pid]; ok && pid > 0 {
		return &Protected{class, neverAllowed[class]}
	}
	names := []string{exeBase(a.GetProcess().GetExe()), a.GetProcess().GetComm()}
	onHost := c.GetId() == ""
	how := "the alert names no container"
	if pid > 0 {
		liveNames, liveOnHost := p.live(pid)
		names = append(names, liveNames...)
		if liveOnHost && !onHost {
			onHost, how = true, "it runs in the host's mount namespace"
		}
	}
	if !onHost {
		return nil
	}
	return daemon(pid, names, how)
}

// live reads pid's executable and comm, and whether it shares the host's
// mount namespace; nothing without a procRoot.
func (p *Protection) live(pid int) (names []string, onHost bool) {
	if p.procRoot == "" {
		return nil, false
	}
	dir := p.procRoot + "/" + strconv.Itoa(pid)
	if exe, err := os.Readlink(dir + "/exe"); err == nil {
		names = append(names, exeBase(exe))
	}
	if comm, err := os.ReadFile(dir + "/comm"); err == nil {
		names = append(names, strings.TrimSpace(string(comm)))
	}
	mnt, err := os.Readlink(dir + "/ns/mnt")
	return names, err == nil && p.hostMnt != "" && mnt == p.hostMnt
}

// spareLive says whether a live descendant of a target must be spared:
// pid 1, the agent, its parent, or a host daemon (kubelet, runtime), by
// what /proc says. A policy's allowProtected covers the alert's target
// only, never what runs under it.
func (p *Protection) spareLive(pid int) bool {
	if _, ok := p.never[pid]; ok {
		return true
	}
	names, onHost := p.live(pid)
	return onHost && daemon(pid, names, "") != nil
}

// daemon names the protected host daemon among names, or nil.
func daemon(pid int, names []string, how string) *Protected {
	for _, n := range names {
		switch {
		case n == "":
		case slices.Contains(kubeletNames, n):
			return &Protected{ProtectKubelet, fmt.Sprintf("process %d (%s) is the kubelet: %s", pid, n, how)}
		case runtimeName(n):
			return &Protected{ProtectRuntime, fmt.Sprintf("process %d (%s) is the container runtime: %s", pid, n, how)}
		}
	}
	return nil
}

// exeBase is an executable path's base name, without the kernel's
// " (deleted)" suffix.
func exeBase(exe string) string {
	if exe == "" {
		return ""
	}
	return path.Base(strings.TrimSuffix(exe, " (deleted)"))
}

// refusal is the record's error for a refused protected target.
func refusal(pr *Protected) string {
	if _, never := neverAllowed[pr.Class]; never {
		return "protected: " + pr.Reason
	}
	return fmt.Sprintf("protected: %s; a policy acts on it only with allowProtected: [%s]", pr.Reason, pr.Class)
}

// ValidateAllowProtected checks an analyst's command's allowed protected
// classes, as a policy's are checked.
func ValidateAllowProtected(allow []string) error {
	if bad := validateAllowProtected(allow); len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// validateAllowProtected checks a policy's allowProtected.
func validateAllowProtected(allow []string) []string {
	var bad []string
	for _, c := range allow {
		switch {
		case slices.Contains(ProtectedClasses(), c):
		case neverAllowed[c] != "":
			bad = append(bad, fmt.Sprintf("allowProtected %q: %s", c, neverAllowed[c]))
		default:
			bad = append(bad, fmt.Sprintf("allowProtected %q: want %s", c, strings.Join(ProtectedClasses(), ", ")))
		}
	}
	return bad
}

// guard applies the safety rails to a policy's decision before anything is
// done: protected targets are refused, and an enforcing policy past its
// rate limit only audits. The agent's responder and the dry-run share it.
type guard struct {
	protect  *Protection
	breakers *breakers
}

func newGuard(protect *Protection) *guard {
	return &guard{protect: protect, breakers: newBreakers()}
}

// admission is the rails' verdict on one decision.
type admission struct {
	// refused, when set, is why nothing is done (the record's error).
	refused string
	// mode is the mode to act in: the policy's, or audit while its
	// breaker is open.
	mode string
	// breaker is set when the breaker decided (enforce policies only).
	breaker *breakerVerdict
}

// note says why an enforce decision was only audited.
func (ad admission) note() string {
	if ad.breaker == nil || ad.breaker.enforce {
		return ""
	}
	return "circuit breaker open until " + ad.breaker.until.UTC().Format(time.RFC3339) + ": enforce turned to audit"
}

// admit judges d, a decision of policies f on a.
func (g *guard) admit(f *File, a *api.Alert, d Decision, now time.Time) admission {
	p := f.policy(d.Policy)
	if pr := g.protect.Check(a); pr != nil && (p == nil || !slices.Contains(p.AllowProtected, pr.Class)) {
		return admission{refused: refusal(pr), mode: d.Mode}
	}
	ad := admission{mode: d.Mode}
	if d.Mode != ModeEnforce || p == nil {
		return ad
	}
	v := g.breakers.admit(p, now)
	ad.breaker = &v
	if !v.enforce {
		ad.mode = ModeAudit
	}
	return ad
}

// policy returns the named policy, or nil.
func (f *File) policy(name string) *Policy {
	for i := range f.Policies {
		if f.Policies[i].Name == name {
			return &f.Policies[i]
		}
	}
	return nil
}
