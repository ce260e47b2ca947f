package container

import (
	"strings"
	"testing"
)

func FuzzParseCgroupPath(f *testing.F) {
	for _, s := range []string{
		"/", "", "/docker/" + idA, "/docker/" + idA + "/docker/" + idB,
		"/system.slice/docker-" + idA + ".scope",
		"/kubepods/burstable/pod" + podDash + "/" + idA,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUnder + ".slice/crio-" + idA + ".scope/container",
		"/system.slice/containerd.service/kubepods-burstable-pod" + podUnder + ".slice:cri-containerd:" + idA,
		"/machine.slice/libpod-conmon-" + idA + ".scope", "/harrier/harrier-test-1a2b3c",
		"/system.slice/runc-x.scope", ":::", "/-/", "pod", "/kubepods-pod.slice",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		info := ParseCgroupPath(path)
		if info.Cgroup != path {
			t.Fatalf("Cgroup %q != input %q", info.Cgroup, path)
		}
		if (info.ID == "") != (info.Runtime == "") {
			t.Fatalf("%q: runtime %q with id %q", path, info.Runtime, info.ID)
		}
		if !strings.Contains(path, info.ID) {
			t.Fatalf("%q: id %q not in path", path, info.ID)
		}
		if info.PodUID != "" && !validUID(info.PodUID) {
			t.Fatalf("%q: bad pod uid %q", path, info.PodUID)
		}
	})
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add(mountinfoV2)
	f.Add(mountinfoV1)
	f.Add(mountinfoHybrid)
	f.Add(mountinfoContainerView)
	f.Add(`60 1 0:41 /in\040root /mnt/a\134b rw shared:1 - fuse src\011x rw` + "\n")
	f.Add("1 2 0:3 / - rw - - - -\n")
	f.Fuzz(func(t *testing.T, text string) {
		mounts, err := ParseMountinfo(strings.NewReader(text))
		if err != nil {
			return
		}
		h := FindHierarchies(mounts)
		_ = h.Mode()
		if c, mp := h.Preferred(); c != "" && h.V1[c] != mp {
			t.Fatalf("Preferred() = %q, %q, not in V1", c, mp)
		}
	})
}

func FuzzParseProcCgroup(f *testing.F) {
	f.Add("9:name=systemd:/\n8:pids:/docker/" + idA + "\n0::/\n")
	f.Add("0::/a:b:c (deleted)\n")
	f.Fuzz(func(t *testing.T, text string) {
		entries, err := ParseProcCgroup(strings.NewReader(text))
		if err != nil {
			return
		}
		for _, e := range entries {
			ParseCgroupPath(e.Path)
		}
	})
}
