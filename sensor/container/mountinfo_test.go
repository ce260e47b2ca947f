package container

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// Mountinfo of an Ubuntu 22.04 host: unified hierarchy only.
const mountinfoV2 = `22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 22 0:27 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
`

// Mountinfo of a CentOS 7 host: legacy hierarchies only, with comounted
// controllers and mount flags mixed into the super options.
const mountinfoV1 = `18 61 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw,seclabel
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,seclabel,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,seclabel,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
27 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,seclabel,cpu,cpuacct
28 24 0:24 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,seclabel,net_cls,net_prio
29 24 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,seclabel,memory
30 24 0:26 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,seclabel,cpuset,clone_children
31 24 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,seclabel,pids
`

// Mountinfo of an Ubuntu 20.04 host: systemd's hybrid layout.
const mountinfoHybrid = `25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
31 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
32 25 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
33 25 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
`

// A sensor container that sees its own cgroup bind-mounted before the
// host's hierarchy.
const mountinfoContainerView = `100 90 0:30 /docker/` + idA + ` /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
101 90 0:31 /docker/` + idA + ` /sys/fs/cgroup/unified ro,nosuid - cgroup2 cgroup2 rw
102 90 0:30 / /host/sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
103 90 0:31 / /host/sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
`

func TestFindHierarchies(t *testing.T) {
	tests := []struct {
		name      string
		text      string
		want      Hierarchies
		mode      string
		prefCtrl  string
		prefMount string
	}{
		{
			name: "v2 only", text: mountinfoV2,
			want: Hierarchies{V2: "/sys/fs/cgroup"},
			mode: "v2", prefCtrl: "", prefMount: "/sys/fs/cgroup",
		},
		{
			name: "v1 only", text: mountinfoV1,
			want: Hierarchies{V1: map[string]string{
				"name=systemd": "/sys/fs/cgroup/systemd",
				"cpu":          "/sys/fs/cgroup/cpu,cpuacct",
				"cpuacct":      "/sys/fs/cgroup/cpu,cpuacct",
				"net_cls":      "/sys/fs/cgroup/net_cls,net_prio",
				"net_prio":     "/sys/fs/cgroup/net_cls,net_prio",
				"memory":       "/sys/fs/cgroup/memory",
				"cpuset":       "/sys/fs/cgroup/cpuset",
				"pids":         "/sys/fs/cgroup/pids",
			}},
			mode: "v1", prefCtrl: "pids", prefMount: "/sys/fs/cgroup/pids",
		},
		{
			name: "hybrid", text: mountinfoHybrid,
			want: Hierarchies{V2: "/sys/fs/cgroup/unified", V1: map[string]string{
				"name=systemd": "/sys/fs/cgroup/systemd",
				"cpu":          "/sys/fs/cgroup/cpu,cpuacct",
				"cpuacct":      "/sys/fs/cgroup/cpu,cpuacct",
				"memory":       "/sys/fs/cgroup/memory",
				"pids":         "/sys/fs/cgroup/pids",
			}},
			mode: "hybrid", prefCtrl: "pids", prefMount: "/sys/fs/cgroup/pids",
		},
		{
			name: "v1 without pids", text: strings.ReplaceAll(mountinfoV1, "rw,seclabel,pids", "rw,seclabel,hugetlb"),
			want: Hierarchies{V1: map[string]string{
				"name=systemd": "/sys/fs/cgroup/systemd",
				"cpu":          "/sys/fs/cgroup/cpu,cpuacct",
				"cpuacct":      "/sys/fs/cgroup/cpu,cpuacct",
				"net_cls":      "/sys/fs/cgroup/net_cls,net_prio",
				"net_prio":     "/sys/fs/cgroup/net_cls,net_prio",
				"memory":       "/sys/fs/cgroup/memory",
				"cpuset":       "/sys/fs/cgroup/cpuset",
				"hugetlb":      "/sys/fs/cgroup/pids",
			}},
			mode: "v1", prefCtrl: "memory", prefMount: "/sys/fs/cgroup/memory",
		},
		{
			name: "only unusual controller",
			text: "1 0 0:1 / /cg/hugetlb rw - cgroup cgroup rw,hugetlb\n2 0 0:2 / /cg/debug rw - cgroup cgroup rw,debug\n",
			want: Hierarchies{V1: map[string]string{"hugetlb": "/cg/hugetlb", "debug": "/cg/debug"}},
			mode: "v1", prefCtrl: "debug", prefMount: "/cg/debug",
		},
		{
			name: "container view prefers hierarchy roots", text: mountinfoContainerView,
			want: Hierarchies{V2: "/host/sys/fs/cgroup/unified", V1: map[string]string{"memory": "/host/sys/fs/cgroup/memory"}},
			mode: "hybrid", prefCtrl: "memory", prefMount: "/host/sys/fs/cgroup/memory",
		},
		{
			name: "no cgroups", text: "28 1 8:1 / / rw - ext4 /dev/sda1 rw\n",
			want: Hierarchies{},
			mode: "", prefCtrl: "", prefMount: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts, err := ParseMountinfo(strings.NewReader(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			h := FindHierarchies(mounts)
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("FindHierarchies\n got %+v\nwant %+v", h, tt.want)
			}
			if m := h.Mode(); m != tt.mode {
				t.Errorf("Mode() = %q, want %q", m, tt.mode)
			}
			if c, mp := h.Preferred(); c != tt.prefCtrl || mp != tt.prefMount {
				t.Errorf("Preferred() = %q, %q; want %q, %q", c, mp, tt.prefCtrl, tt.prefMount)
			}
		})
	}
}

func TestParseMountinfoLine(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Mount
	}{
		{
			name: "proc(5) example",
			line: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`,
			want: Mount{ID: 36, ParentID: 35, Major: 98, Minor: 0, Root: "/mnt1", MountPoint: "/mnt2",
				Options: "rw,noatime", Optional: []string{"master:1"}, FSType: "ext3", Source: "/dev/root",
				SuperOptions: "rw,errors=continue"},
		},
		{
			name: "no optional fields",
			line: `40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`,
			want: Mount{ID: 40, ParentID: 30, Major: 0, Minor: 37, Root: "/", MountPoint: "/sys/fs/cgroup/unified",
				Options: "rw,relatime", FSType: "cgroup2", Source: "cgroup2", SuperOptions: "rw"},
		},
		{
			name: "several optional fields",
			line: `50 1 0:40 / /a rw shared:1 master:2 propagate_from:3 unbindable - tmpfs tmpfs rw`,
			want: Mount{ID: 50, ParentID: 1, Minor: 40, Root: "/", MountPoint: "/a", Options: "rw",
				FSType: "tmpfs", Source: "tmpfs", SuperOptions: "rw",
				Optional: []string{"shared:1", "master:2", "propagate_from:3", "unbindable"}},
		},
		{
			name: "octal escapes",
			line: `60 1 0:41 /in\040root /mnt/with\040space\011tab\012nl\134bs rw - fuse.sshfs user@host:/a\040b rw`,
			want: Mount{ID: 60, ParentID: 1, Minor: 41, Root: "/in root", MountPoint: "/mnt/with space\ttab\nnl\\bs",
				Options: "rw", FSType: "fuse.sshfs", Source: "user@host:/a b", SuperOptions: "rw"},
		},
		{
			name: "invalid escapes kept",
			line: `61 1 0:42 / /m\9\04\777\ rw - tmpfs tmpfs rw`,
			want: Mount{ID: 61, ParentID: 1, Minor: 42, Root: "/", MountPoint: `/m\9\04\777\`,
				Options: "rw", FSType: "tmpfs", Source: "tmpfs", SuperOptions: "rw"},
		},
		{
			name: "empty source",
			line: `62 1 0:43 / /e rw - tmpfs  rw`,
			want: Mount{ID: 62, ParentID: 1, Minor: 43, Root: "/", MountPoint: "/e",
				Options: "rw", FSType: "tmpfs", SuperOptions: "rw"},
		},
		{
			name: "mount point named -",
			line: `63 1 0:44 / - rw - tmpfs tmpfs rw`,
			want: Mount{ID: 63, ParentID: 1, Minor: 44, Root: "/", MountPoint: "-",
				Options: "rw", FSType: "tmpfs", Source: "tmpfs", SuperOptions: "rw"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tt.line + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseMountinfoMalformed(t *testing.T) {
	tests := []struct{ name, text string }{
		{"too few fields", "1 2 0:3 / /a\n"},
		{"no separator", "1 2 0:3 / /a rw shared:1 tmpfs tmpfs rw\n"},
		{"nothing after separator", "1 2 0:3 / /a rw - tmpfs tmpfs\n"},
		{"bad mount id", "x 2 0:3 / /a rw - tmpfs tmpfs rw\n"},
		{"bad parent id", "1 y 0:3 / /a rw - tmpfs tmpfs rw\n"},
		{"bad device", "1 2 0-3 / /a rw - tmpfs tmpfs rw\n"},
		{"bad major", "1 2 a:3 / /a rw - tmpfs tmpfs rw\n"},
		{"bad minor", "1 2 0:b / /a rw - tmpfs tmpfs rw\n"},
		{"huge minor", "1 2 0:99999999999 / /a rw - tmpfs tmpfs rw\n"},
		{"good then bad", mountinfoV2 + "garbage\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMountinfo(strings.NewReader(tt.text))
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

// realHierarchies parses this machine's mountinfo.
func realHierarchies(t *testing.T) Hierarchies {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("no /proc/self/mountinfo: %v", err)
	}
	defer f.Close()
	mounts, err := ParseMountinfo(f)
	if err != nil {
		t.Fatalf("parse real mountinfo: %v", err)
	}
	if len(mounts) == 0 {
		t.Fatal("real mountinfo has no mounts")
	}
	return FindHierarchies(mounts)
}

// Filesystem magic numbers from linux/magic.h, used to check the parser's
// findings against the kernel independently of mountinfo.
const (
	cgroupSuperMagic  = 0x27e0eb
	cgroup2SuperMagic = 0x63677270
)

func fsMagic(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	return int64(st.Type)
}

func TestFindHierarchiesReal(t *testing.T) {
	h := realHierarchies(t)
	if h.Mode() == "" {
		t.Fatal("no cgroup filesystem mounted: the sensor needs one")
	}
	t.Logf("mode %s, v2 %q, v1 %v", h.Mode(), h.V2, h.V1)
	if h.V2 != "" {
		if m := fsMagic(t, h.V2); m != cgroup2SuperMagic {
			t.Errorf("V2 %s: fs magic %#x, want cgroup2", h.V2, m)
		}
	}
	for c, mp := range h.V1 {
		if m := fsMagic(t, mp); m != cgroupSuperMagic {
			t.Errorf("V1[%s] %s: fs magic %#x, want cgroup", c, mp, m)
		}
	}
	// The hybrid layout systemd sets up: cgroup2 beside v1 controllers.
	if h.Mode() == "hybrid" {
		for _, c := range []string{"pids", "memory", "cpu", "name=systemd"} {
			if _, ok := h.V1[c]; ok {
				if got, _ := h.Preferred(); got != c {
					t.Errorf("Preferred() = %q, want %q", got, c)
				}
				break
			}
		}
	}
	if _, mp := h.Preferred(); mp == "" {
		t.Error("Preferred() found no mount point")
	}
}
