package container

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []CgroupEntry
	}{
		{
			name: "hybrid",
			text: "9:name=systemd:/\n8:pids:/docker/" + idA + "\n4:cpu,cpuacct:/docker/" + idA + "\n0::/\n",
			want: []CgroupEntry{
				{HierarchyID: 9, Controllers: []string{"name=systemd"}, Path: "/"},
				{HierarchyID: 8, Controllers: []string{"pids"}, Path: "/docker/" + idA},
				{HierarchyID: 4, Controllers: []string{"cpu", "cpuacct"}, Path: "/docker/" + idA},
				{HierarchyID: 0, Path: "/"},
			},
		},
		{
			name: "v2",
			text: "0::/system.slice/docker-" + idA + ".scope\n",
			want: []CgroupEntry{{Path: "/system.slice/docker-" + idA + ".scope"}},
		},
		{
			name: "colons in path",
			text: "0::/system.slice/containerd.service/kubepods-pod" + podUnder + ".slice:cri-containerd:" + idA + "\n",
			want: []CgroupEntry{{Path: "/system.slice/containerd.service/kubepods-pod" + podUnder + ".slice:cri-containerd:" + idA}},
		},
		{
			name: "deleted cgroup",
			text: "0::/harrier/c1 (deleted)\n",
			want: []CgroupEntry{{Path: "/harrier/c1"}},
		},
		{
			name: "blank lines and no trailing newline",
			text: "\n1:memory:/a\n\n0::/b",
			want: []CgroupEntry{
				{HierarchyID: 1, Controllers: []string{"memory"}, Path: "/a"},
				{Path: "/b"},
			},
		},
		{name: "empty", text: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProcCgroup(strings.NewReader(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseProcCgroupMalformed(t *testing.T) {
	for _, text := range []string{
		"garbage\n",
		"1:memory\n",
		"x:memory:/\n",
		"-1::/\n",
		"0::/\n:cpu:/\n",
	} {
		if _, err := ParseProcCgroup(strings.NewReader(text)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseProcCgroup(%q) err = %v, want ErrMalformed", text, err)
		}
	}
}

func TestParseProcCgroupReal(t *testing.T) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatalf("no /proc/self/cgroup: %v", err)
	}
	defer f.Close()
	entries, err := ParseProcCgroup(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("no entries")
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Path, "/") {
			t.Errorf("entry %+v: path not absolute", e)
		}
		if (e.HierarchyID == 0) != (len(e.Controllers) == 0) {
			t.Errorf("entry %+v: only the unified hierarchy (0) has no controllers", e)
		}
	}
}

func TestResolvePID(t *testing.T) {
	hybrid := Hierarchies{V2: "/sys/fs/cgroup/unified", V1: map[string]string{
		"pids": "/sys/fs/cgroup/pids", "memory": "/sys/fs/cgroup/memory", "name=systemd": "/sys/fs/cgroup/systemd",
	}}
	v2 := Hierarchies{V2: "/sys/fs/cgroup"}
	tests := []struct {
		name string
		h    Hierarchies
		text string
		want Info
	}{
		{
			name: "hybrid uses pids",
			h:    hybrid,
			text: "9:name=systemd:/system.slice/docker-" + idB + ".scope\n8:pids:/docker/" + idA + "\n0::/\n",
			want: Info{Runtime: RuntimeDocker, ID: idA, Cgroup: "/docker/" + idA},
		},
		{
			name: "v2 uses unified",
			h:    v2,
			text: "0::/system.slice/docker-" + idA + ".scope\n",
			want: Info{Runtime: RuntimeDocker, ID: idA, Cgroup: "/system.slice/docker-" + idA + ".scope"},
		},
		{
			name: "fallback to another hierarchy",
			h:    hybrid,
			text: "8:pids:/\n4:memory:/harrier/c1\n0::/\n",
			want: Info{Runtime: RuntimeRunc, ID: "c1", Cgroup: "/harrier/c1"},
		},
		{
			name: "host keeps preferred path",
			h:    hybrid,
			text: "9:name=systemd:/user.slice/session-1.scope\n8:pids:/user.slice\n0::/user.slice/session-1.scope\n",
			want: Info{Cgroup: "/user.slice"},
		},
		{
			name: "pod level",
			h:    v2,
			text: "0::/kubepods/besteffort/pod" + podDash + "\n",
			want: Info{Cgroup: "/kubepods/besteffort/pod" + podDash, PodUID: podDash},
		},
		{
			name: "preferred hierarchy missing",
			h:    hybrid,
			text: "3:cpuset:/a\n2:cpu:/b\n",
			want: Info{Cgroup: "/a"},
		},
		{
			name: "no hierarchies known",
			h:    Hierarchies{},
			text: "3:cpuset:/\n0::/machine.slice/libpod-" + idA + ".scope\n",
			want: Info{Runtime: RuntimePodman, ID: idA, Cgroup: "/machine.slice/libpod-" + idA + ".scope"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeCgroupFile(t, root, 42, tt.text)
			got, err := ResolvePID(root, 42, tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestResolvePIDErrors(t *testing.T) {
	root := t.TempDir()
	writeCgroupFile(t, root, 1, "garbage\n")
	writeCgroupFile(t, root, 2, "")
	tests := []struct {
		name string
		pid  int
		want error
	}{
		{"exited process", 99, fs.ErrNotExist},
		{"malformed", 1, ErrMalformed},
		{"empty", 2, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ResolvePID(root, tt.pid, Hierarchies{}); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestResolvePIDReal(t *testing.T) {
	h := realHierarchies(t)
	info, err := ResolvePID("/proc", os.Getpid(), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this test process: %+v", info)
	if !strings.HasPrefix(info.Cgroup, "/") {
		t.Errorf("Cgroup %q not absolute", info.Cgroup)
	}
}

func writeCgroupFile(t *testing.T, root string, pid int, text string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
