package container

import (
	"strings"
	"testing"
)

const (
	idA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	idB = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	// Pod UID as kubelet reports it and as systemd escapes it in slices.
	podDash  = "8a0d2b45-2f6c-4e8f-9b1a-6c3d7e9f0a12"
	podUnder = "8a0d2b45_2f6c_4e8f_9b1a_6c3d7e9f0a12"
	// Static pods have a 32-hex hash as UID.
	podStatic = "5d3c1f2e8a7b6c5d4e3f2a1b0c9d8e7f"
)

func TestParseCgroupPath(t *testing.T) {
	sysPod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUnder + ".slice"
	tests := []struct {
		name, path          string
		runtime, id, podUID string
	}{
		// Docker.
		{"docker cgroupfs", "/docker/" + idA, RuntimeDocker, idA, ""},
		{"docker systemd", "/system.slice/docker-" + idA + ".scope", RuntimeDocker, idA, ""},
		{"docker systemd sub-cgroup", "/system.slice/docker-" + idA + ".scope/init.scope", RuntimeDocker, idA, ""},
		{"docker in docker", "/docker/" + idA + "/docker/" + idB, RuntimeDocker, idB, ""},
		{"docker under kubelet systemd", sysPod + "/docker-" + idA + ".scope", RuntimeDocker, idA, podDash},

		// containerd under Kubernetes.
		{"k8s cgroupfs burstable", "/kubepods/burstable/pod" + podDash + "/" + idA, RuntimeContainerd, idA, podDash},
		{"k8s cgroupfs besteffort", "/kubepods/besteffort/pod" + podDash + "/" + idA, RuntimeContainerd, idA, podDash},
		{"k8s cgroupfs guaranteed", "/kubepods/pod" + podDash + "/" + idA, RuntimeContainerd, idA, podDash},
		{"k8s static pod", "/kubepods/burstable/pod" + podStatic + "/" + idA, RuntimeContainerd, idA, podStatic},
		{"k8s systemd burstable", sysPod + "/cri-containerd-" + idA + ".scope", RuntimeContainerd, idA, podDash},
		{"k8s systemd guaranteed", "/kubepods.slice/kubepods-pod" + podUnder + ".slice/cri-containerd-" + idA + ".scope", RuntimeContainerd, idA, podDash},
		{"containerd colon form", "/system.slice/containerd.service/kubepods-burstable-pod" + podUnder + ".slice:cri-containerd:" + idA, RuntimeContainerd, idA, podDash},
		{"kind node", "/docker/" + idB + "/kubepods/besteffort/pod" + podDash + "/" + idA, RuntimeContainerd, idA, podDash},

		// CRI-O.
		{"crio systemd", sysPod + "/crio-" + idA + ".scope", RuntimeCRIO, idA, podDash},
		{"crio nested container cgroup", sysPod + "/crio-" + idA + ".scope/container", RuntimeCRIO, idA, podDash},
		{"crio cgroupfs", "/kubepods/burstable/pod" + podDash + "/crio-" + idA, RuntimeCRIO, idA, podDash},
		{"crio conmon is no container", sysPod + "/crio-conmon-" + idA + ".scope", "", "", podDash},
		{"crio colon form", "/system.slice/crio.service/kubepods-pod" + podUnder + ".slice:crio:" + idA, RuntimeCRIO, idA, podDash},

		// Podman.
		{"podman systemd", "/machine.slice/libpod-" + idA + ".scope", RuntimePodman, idA, ""},
		{"podman systemd container", "/machine.slice/libpod-" + idA + ".scope/container", RuntimePodman, idA, ""},
		{"podman cgroupfs", "/libpod_parent/libpod-" + idA, RuntimePodman, idA, ""},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + idA + ".scope", RuntimePodman, idA, ""},
		{"podman conmon is no container", "/machine.slice/libpod-conmon-" + idA + ".scope", "", "", ""},
		{"podman conmon inside docker", "/docker/" + idB + "/libpod-conmon-" + idA + ".scope", RuntimeDocker, idB, ""},

		// runc.
		{"runc default cgroupsPath", "/" + idA, RuntimeRunc, idA, ""},
		{"runc custom parent", "/harrier-test/" + idA, RuntimeRunc, idA, ""},
		{"runc systemd form", "/system.slice/runc-mybox.scope", RuntimeRunc, "mybox", ""},
		{"runc unknown prefix scope", "/system.slice/acme-" + idA + ".scope", RuntimeRunc, idA, ""},
		{"harrier convention", "/harrier/harrier-test-1a2b3c", RuntimeRunc, "harrier-test-1a2b3c", ""},
		{"harrier sub-cgroup", "/harrier/harrier-test-1a2b3c/sub", RuntimeRunc, "harrier-test-1a2b3c", ""},
		{"harrier nested in docker", "/docker/" + idB + "/harrier/c1", RuntimeRunc, "c1", ""},

		// Pod level without a container leaf.
		{"pod cgroupfs", "/kubepods/besteffort/pod" + podDash, "", "", podDash},
		{"pod systemd", sysPod, "", "", podDash},

		// Host.
		{"root", "/", "", "", ""},
		{"empty", "", "", "", ""},
		{"session", "/user.slice/user-1000.slice/session-3.scope", "", "", ""},
		{"user service", "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service", "", "", ""},
		{"ssh", "/system.slice/ssh.service", "", "", ""},
		{"init", "/init.scope", "", "", ""},
		{"dockerd", "/system.slice/docker.service", "", "", ""},
		{"containerd daemon", "/system.slice/containerd.service", "", "", ""},
		{"32 hex is no container", "/process_api/9b99a9d3214888ee032576f5319ba1da", "", "", ""},
		{"kubepods root", "/kubepods.slice/kubepods-burstable.slice", "", "", ""},
		{"harrier parent itself", "/harrier", "", "", ""},
		{"harrier trailing slash", "/harrier/", "", "", ""},

		// Malformed.
		{"short id", "/docker/" + idA[:63], "", "", ""},
		{"long id", "/docker/" + idA + "0", "", "", ""},
		{"uppercase id", "/docker/" + strings.ToUpper(idA), "", "", ""},
		{"non-hex id", "/docker/" + idA[:63] + "g", "", "", ""},
		{"bare scope id", "/system.slice/" + idA + ".scope", "", "", ""},
		{"empty scope prefix", "/system.slice/-" + idA + ".scope", RuntimeRunc, idA, ""},
		{"empty runc name", "/system.slice/runc-.scope", "", "", ""},
		{"colons only", ":::", "", "", ""},
		{"colon short", "/a:b", "", "", ""},
		{"colon bad id", "/s.slice:cri-containerd:xyz", "", "", ""},
		{"colon no slice", "/:cri-containerd:" + idA, "", "", ""},
		{"pod without uid", "/kubepods/pod", "", "", ""},
		{"pod bad uid", "/kubepods/podzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "", "", ""},
		{"slice without uid", "/kubepods-pod.slice", "", "", ""},
		{"dashes", "/-/--/-", "", "", ""},
		{"slashes", "////", "", "", ""},
		{"binary", "\x00/\xff\xfe/docker-", "", "", ""},
		{"relative", "docker/" + idA, RuntimeDocker, idA, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseCgroupPath(tt.path)
			want := Info{Runtime: tt.runtime, ID: tt.id, Cgroup: tt.path, PodUID: tt.podUID}
			if got != want {
				t.Errorf("ParseCgroupPath(%q)\n got %+v\nwant %+v", tt.path, got, want)
			}
			if got.InContainer() != (tt.id != "") {
				t.Errorf("InContainer() = %v", got.InContainer())
			}
		})
	}
}

// ParseCgroupPath runs once per new process, so common paths must not
// allocate.
func TestParseCgroupPathAllocs(t *testing.T) {
	paths := []string{
		"/docker/" + idA,
		"/system.slice/docker-" + idA + ".scope",
		"/kubepods/burstable/pod" + podDash + "/" + idA,
		"/user.slice/user-1000.slice/session-3.scope",
		"/harrier/harrier-test-1a2b3c",
	}
	for _, p := range paths {
		if n := testing.AllocsPerRun(100, func() { ParseCgroupPath(p) }); n != 0 {
			t.Errorf("ParseCgroupPath(%q): %v allocs, want 0", p, n)
		}
	}
}

func BenchmarkParseCgroupPath(b *testing.B) {
	p := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUnder + ".slice/cri-containerd-" + idA + ".scope"
	b.ReportAllocs()
	for b.Loop() {
		ParseCgroupPath(p)
	}
}
