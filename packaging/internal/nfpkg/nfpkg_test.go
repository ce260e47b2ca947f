package nfpkg_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/packaging/internal/nfpkg"
	"github.com/harrier-sec/harrier/packaging/internal/pkgtest"
)

// build makes a package of the binary bin for this machine's architecture.
func build(t *testing.T, format, version, bin string) string {
	t.Helper()
	root := pkgtest.RepoRoot(t)
	out, err := nfpkg.Build(nfpkg.Options{
		Format: format, Arch: runtime.GOARCH, Version: version, Binary: bin,
		SrcDir: filepath.Join(root, "packaging"), Readme: filepath.Join(root, "README.md"),
		MTime: time.Unix(1_700_000_000, 0), OutDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// sandboxEnv marks the re-executed test process that runs inside its own
// mount namespace.
const sandboxEnv = "HARRIER_DEB_SANDBOX"

// TestDebLifecycle installs the deb with dpkg, starts the agent as its
// unit would, upgrades, removes and purges, checking what each step leaves
// behind. systemd is not PID 1 here, which the maintainer scripts must cope
// with.
//
// It runs in a private mount namespace with /etc, /usr and /var/lib
// overlaid by throw-away directories: dpkg, useradd and the scripts act on
// the real system's files as they would on a site's, but nothing they do
// (and nothing already there, such as someone's /var/lib/harrier) leaks in
// either direction.
func TestDebLifecycle(t *testing.T) {
	testenv.RequireRoot(t)
	pkgtest.RequireTool(t, "dpkg", "dpkg")
	pkgtest.RequireTool(t, "setpriv", "util-linux")
	if os.Getenv(sandboxEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDebLifecycle$", "-test.v", "-test.count=1", "-test.timeout=5m")
		cmd.Env = append(os.Environ(), sandboxEnv+"="+t.TempDir())
		// Go makes the new namespace's mounts private, so the overlays
		// below never propagate to the host.
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestDebLifecycle") {
			t.Fatalf("sandboxed run: %v\n%s", err, out)
		}
		t.Logf("sandboxed run:\n%s", out)
		return
	}
	scratch := os.Getenv(sandboxEnv)
	for i, dir := range []string{"/etc", "/usr", "/var/lib"} {
		upper, work := filepath.Join(scratch, fmt.Sprint(i), "upper"), filepath.Join(scratch, fmt.Sprint(i), "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		opts := "lowerdir=" + dir + ",upperdir=" + upper + ",workdir=" + work
		if err := syscall.Mount("overlay", dir, "overlay", 0, opts); err != nil {
			t.Fatalf("overlay on %s: %v", dir, err)
		}
	}
	// Start from a machine without Harrier, whatever the real one has.
	_ = exec.Command("dpkg", "--purge", "harrier").Run()
	for _, p := range []string{"/var/lib/harrier", "/var/lib/harrier-backend", "/etc/harrier"} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	_ = exec.Command("userdel", "harrier").Run()

	bin := pkgtest.BuildHarrier(t)
	v1 := build(t, "deb", "0.1.0", bin)
	v2 := build(t, "deb", "0.1.1", bin)

	run(t, "dpkg", "-i", v1)
	for _, f := range []string{"/usr/bin/harrier", "/usr/lib/systemd/system/harrier-agent.service",
		"/usr/lib/systemd/system/harrier-backend.service", "/etc/harrier/agent.yaml", "/etc/harrier/backend.yaml",
		"/usr/share/doc/harrier/README.md"} {
		if !exists(f) {
			t.Errorf("%s not installed", f)
		}
	}
	conffiles := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "harrier")
	for _, f := range []string{"/etc/harrier/agent.yaml", "/etc/harrier/backend.yaml"} {
		if !strings.Contains(conffiles, f) {
			t.Errorf("%s is not a conffile: %q", f, conffiles)
		}
	}
	run(t, "getent", "passwd", "harrier")
	if st, err := os.Stat("/var/lib/harrier"); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("/var/lib/harrier: %v %v, want a 0700 directory", st, err)
	}
	if out := run(t, "stat", "-c", "%U %a", "/var/lib/harrier-backend"); strings.TrimSpace(out) != "harrier 700" {
		t.Errorf("/var/lib/harrier-backend is %q, want harrier 700", out)
	}
	wants := "/etc/systemd/system/multi-user.target.wants/harrier-agent.service"
	if !exists("/run/systemd/system") && !exists(wants) {
		t.Errorf("without a running systemd, postinst should have enabled the agent (%s)", wants)
	}
	if exists("/etc/systemd/system/multi-user.target.wants/harrier-backend.service") {
		t.Error("the backend was enabled on install; only the agent should be")
	}

	// Certificates as INSTALL.md says, then the agent exactly as the
	// installed unit starts it: its ExecStart, its bounding set.
	run(t, "/usr/bin/harrier", "certs", "init", "--out", "/etc/harrier/pki")
	run(t, "/usr/bin/harrier", "certs", "agent", "--out", "/etc/harrier/pki", "agent")
	unit := "/usr/lib/systemd/system/harrier-agent.service"
	execStart := pkgtest.UnitDirectives(t, unit, "ExecStart")
	if len(execStart) != 1 {
		t.Fatalf("ExecStart=%v", execStart)
	}
	cmd := pkgtest.Setpriv(pkgtest.UnitCaps(t, unit), strings.Fields(execStart[0])...)
	ok, logs, stop := pkgtest.StartUntilReady(t, cmd, 30*time.Second)
	if !ok {
		t.Fatalf("installed agent did not become ready:\n%s", logs)
	}
	stop()
	if !exists("/var/lib/harrier/spool") {
		t.Error("the agent made no spool under /var/lib/harrier")
	}

	// Upgrade keeps a local edit of a conffile.
	f, err := os.OpenFile("/etc/harrier/agent.yaml", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("# site edit\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "dpkg", "--force-confold", "-i", v2)
	if v := run(t, "dpkg-query", "-W", "-f=${Version}", "harrier"); v != "0.1.1" {
		t.Errorf("after upgrade version %q, want 0.1.1", v)
	}
	if raw, _ := os.ReadFile("/etc/harrier/agent.yaml"); !strings.Contains(string(raw), "# site edit") {
		t.Error("upgrade lost the local edit of /etc/harrier/agent.yaml")
	}

	// Remove keeps data and config; purge deletes them.
	run(t, "dpkg", "-r", "harrier")
	for _, gone := range []string{"/usr/bin/harrier", "/usr/lib/systemd/system/harrier-agent.service", wants} {
		if exists(gone) {
			t.Errorf("%s still there after dpkg -r", gone)
		}
	}
	for _, kept := range []string{"/var/lib/harrier/spool", "/etc/harrier/agent.yaml", "/etc/harrier/pki/ca.crt"} {
		if !exists(kept) {
			t.Errorf("%s deleted by dpkg -r; only purge may delete it", kept)
		}
	}
	run(t, "dpkg", "--purge", "harrier")
	for _, gone := range []string{"/var/lib/harrier", "/var/lib/harrier-backend", "/etc/harrier"} {
		if exists(gone) {
			t.Errorf("%s still there after purge", gone)
		}
	}
}

// TestRPMContents reads the rpm back with rpm(8) from Debian: files, config
// files, scripts and architecture.
func TestRPMContents(t *testing.T) {
	rpmTool := pkgtest.RequireTool(t, "rpm", "rpm")
	pkg := build(t, "rpm", "0.1.0", filepath.Join(pkgtest.RepoRoot(t), "README.md"))
	list := strings.Fields(run(t, rpmTool, "-qpl", pkg))
	for _, f := range []string{"/usr/bin/harrier", "/usr/lib/systemd/system/harrier-agent.service",
		"/usr/lib/systemd/system/harrier-backend.service", "/etc/harrier/agent.yaml", "/etc/harrier/backend.yaml"} {
		if !slices.Contains(list, f) {
			t.Errorf("%s missing from the rpm: %v", f, list)
		}
	}
	config := strings.Fields(run(t, rpmTool, "-qpc", pkg))
	if !slices.Equal(config, []string{"/etc/harrier/agent.yaml", "/etc/harrier/backend.yaml"}) {
		t.Errorf("rpm config files %v", config)
	}
	scripts := run(t, rpmTool, "-qp", "--scripts", pkg)
	for _, s := range []string{"preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet",
		"useradd --system", "try-restart"} {
		if !strings.Contains(scripts, s) {
			t.Errorf("rpm scripts lack %q:\n%s", s, scripts)
		}
	}
	want := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	if arch := run(t, rpmTool, "-qp", "--qf", "%{ARCH}", pkg); arch != want {
		t.Errorf("rpm arch %q, want %q", arch, want)
	}
}
