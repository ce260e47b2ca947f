package ocirun

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The subset of the OCI runtime spec (version 1.0.2, as runc 1.1 speaks)
// that the containers use. Written out by hand so the configuration is
// explicit and does not depend on what "runc spec" prints.

type spec struct {
	OCIVersion string  `json:"ociVersion"`
	Process    process `json:"process"`
	Root       root    `json:"root"`
	Hostname   string  `json:"hostname"`
	Mounts     []mount `json:"mounts"`
	Linux      linux   `json:"linux"`
	// Annotations are what CRI runtimes record the pod context in.
	Annotations map[string]string `json:"annotations,omitempty"`
}

type process struct {
	Terminal        bool         `json:"terminal"`
	User            user         `json:"user"`
	Args            []string     `json:"args"`
	Env             []string     `json:"env"`
	Cwd             string       `json:"cwd"`
	Capabilities    capabilities `json:"capabilities"`
	Rlimits         []rlimit     `json:"rlimits"`
	NoNewPrivileges bool         `json:"noNewPrivileges"`
}

type user struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type capabilities struct {
	Bounding  []string `json:"bounding"`
	Effective []string `json:"effective"`
	Permitted []string `json:"permitted"`
}

type rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

type root struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

type linux struct {
	CgroupsPath   string      `json:"cgroupsPath"`
	Namespaces    []namespace `json:"namespaces"`
	Resources     resources   `json:"resources"`
	MaskedPaths   []string    `json:"maskedPaths"`
	ReadonlyPaths []string    `json:"readonlyPaths"`
}

type namespace struct {
	Type string `json:"type"`
}

type resources struct {
	Devices []deviceRule `json:"devices"`
}

type deviceRule struct {
	Allow  bool   `json:"allow"`
	Access string `json:"access"`
}

// defaultCaps is Docker's default capability set.
func defaultCaps() []string {
	return []string{
		"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
		"CAP_FSETID", "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE",
		"CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
		"CAP_SETUID", "CAP_SYS_CHROOT",
	}
}

// allCaps are the capabilities up to CAP_CHECKPOINT_RESTORE (Linux 5.9 and
// later), indexed by their numbers.
func allCaps() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
		"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
		"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
		"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
		"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
		"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
	}
}

// ownCaps are the capabilities of allCaps in this process's bounding set:
// what a privileged container gets from a runtime (runc cannot grant more).
func ownCaps() []string {
	bounding := ^uint64(0)
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
				if n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil {
					bounding = n
				}
			}
		}
	}
	var out []string
	for i, c := range allCaps() {
		if bounding&(1<<uint(i)) != 0 {
			out = append(out, c)
		}
	}
	return out
}

func newSpec(id, rootfs string, opts Options) spec {
	home := opts.Home
	switch {
	case home != "":
	case opts.UID != 0:
		home = "/home/user"
	default:
		home = "/root"
	}
	env := append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
	}, opts.Env...)
	caps := defaultCaps()
	if opts.Privileged || opts.Systemd {
		caps = ownCaps()
	}
	mounts := []mount{
		{Destination: "/proc", Type: "proc", Source: "proc",
			Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
			Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs",
			Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	namespaces := []namespace{{Type: "pid"}, {Type: "mount"}, {Type: "ipc"}, {Type: "uts"}, {Type: "network"}}
	if opts.Systemd {
		env = append(env, "container=oci")
		namespaces = append(namespaces, namespace{Type: "cgroup"})
		mounts = append(mounts,
			mount{Destination: "/sys/fs/cgroup", Type: "cgroup2", Source: "cgroup2", Options: []string{"nosuid", "noexec", "nodev", "rw"}},
			mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=65536k"}},
			mount{Destination: "/run/lock", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "noexec", "size=5120k"}},
			mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}})
	}
	for _, b := range opts.Mounts {
		o := []string{"rbind", "nosuid", "nodev"}
		if b.ReadOnly {
			o = append(o, "ro")
		}
		mounts = append(mounts, mount{Destination: b.Destination, Type: "bind", Source: b.Source, Options: o})
	}
	return spec{
		OCIVersion: "1.0.2",
		Process: process{
			User: user{UID: opts.UID, GID: opts.GID},
			Args: append([]string(nil), opts.Args...),
			Env:  env,
			Cwd:  "/",
			Capabilities: capabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			Rlimits: []rlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Root:        root{Path: rootfs},
		Hostname:    id,
		Annotations: opts.Annotations,
		Mounts:      mounts,
		Linux: linux{
			CgroupsPath: fmt.Sprintf("%s/%s", CgroupParent, id),
			Namespaces:  namespaces,
			// Deny all devices but the defaults runc always allows
			// (null, zero, full, random, urandom, tty, pts).
			Resources: resources{Devices: []deviceRule{{Allow: false, Access: "rwm"}}},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
				"/proc/scsi", "/sys/firmware",
			},
			ReadonlyPaths: []string{
				"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
				"/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
}
