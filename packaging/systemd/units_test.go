// Package systemd_test checks the packaged units: that systemd accepts them,
// and that the capability set the agent's unit grants is exactly what the
// agent needs, by running the real binary with it.
package systemd_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/packaging/internal/pkgtest"
)

// TestUnitsVerify runs `systemd-analyze verify` on each unit. It works
// offline (systemd need not be PID 1). verify exits 0 on unknown keys and bad
// values and only prints them, so any output fails the test.
func TestUnitsVerify(t *testing.T) {
	analyze := pkgtest.RequireTool(t, "systemd-analyze", "systemd")
	bin := pkgtest.BuildHarrier(t)
	verify := func(t *testing.T, unit string) string {
		t.Helper()
		raw, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart's binary exists; point it at the one
		// just built rather than installing into /usr/bin.
		text := strings.ReplaceAll(string(raw), "ExecStart=/usr/bin/harrier ", "ExecStart="+bin+" ")
		dst := filepath.Join(t.TempDir(), filepath.Base(unit))
		if err := os.WriteFile(dst, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", dst).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("exit %v\n%s", err, out)
		}
		return string(out)
	}
	for _, u := range []string{"harrier-agent.service", "harrier-backend.service"} {
		t.Run(u, func(t *testing.T) {
			if out := verify(t, u); out != "" {
				t.Errorf("systemd-analyze verify %s:\n%s", u, out)
			}
			if got := pkgtest.UnitDirectives(t, u, "Type"); !slices.Equal(got, []string{"notify"}) {
				t.Errorf("Type=%v, want notify (the binary sends READY=1)", got)
			}
			exec := pkgtest.UnitDirectives(t, u, "ExecStart")
			if len(exec) != 1 || !strings.HasPrefix(exec[0], "/usr/bin/harrier ") {
				t.Errorf("ExecStart=%v, want the packaged /usr/bin/harrier", exec)
			}
			if got := pkgtest.UnitDirectives(t, u, "NoNewPrivileges"); !slices.Equal(got, []string{"yes"}) {
				t.Errorf("NoNewPrivileges=%v, want yes", got)
			}
		})
	}
	// The check above means something only if verify does complain.
	bad := filepath.Join(t.TempDir(), "bad.service")
	if err := os.WriteFile(bad, []byte("[Service]\nExecStart="+bin+"\nNoNewPrivileges=maybe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(analyze, "verify", bad).CombinedOutput(); !strings.Contains(string(out), "maybe") {
		t.Errorf("systemd-analyze verify did not flag a bad value:\n%s", out)
	}
}

type sensorStatus struct {
	Status struct {
		SeededProcesses int `json:"seededProcesses"`
		Probes          []struct {
			Name     string `json:"name"`
			Attached bool   `json:"attached"`
		} `json:"probes"`
	} `json:"status"`
	Stats struct {
		ProcessCache struct {
			SeedPermissionDenied int
		} `json:"processCache"`
	} `json:"stats"`
}

// status runs `harrier events --status` under caps (nil: full root).
func status(t *testing.T, bin string, caps []string) (sensorStatus, error) {
	t.Helper()
	cmd := exec.Command(bin, "events", "--status")
	if caps != nil {
		cmd = pkgtest.Setpriv(caps, bin, "events", "--status")
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var st sensorStatus
	if err != nil {
		return st, fmt.Errorf("%w: %s", err, stderr.String())
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("decode status: %w", err)
	}
	return st, nil
}

// TestAgentCapabilities runs the sensor and the agent with exactly the
// agent unit's bounding set, then with each capability removed, and checks
// that every one is needed. The findings are written in the unit.
func TestAgentCapabilities(t *testing.T) {
	testenv.RequireRoot(t)
	pkgtest.RequireTool(t, "setpriv", "util-linux")
	bin := pkgtest.BuildHarrier(t)
	caps := pkgtest.UnitCaps(t, "harrier-agent.service")
	if want := []string{"bpf", "perfmon", "sys_ptrace"}; !slices.Equal(caps, want) {
		t.Fatalf("agent bounding set %v; this test knows the effect of %v", caps, want)
	}
	if got := pkgtest.UnitDirectives(t, "harrier-agent.service", "LimitMEMLOCK"); !slices.Equal(got, []string{"infinity"}) {
		t.Errorf("LimitMEMLOCK=%v: without CAP_SYS_RESOURCE it must be infinity for kernels before 5.11", got)
	}

	// A process of another user, which only CAP_SYS_PTRACE lets the agent
	// describe.
	other := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })

	root, err := status(t, bin, nil)
	if err != nil {
		t.Fatalf("as full root: %v", err)
	}
	limited, err := status(t, bin, caps)
	if err != nil {
		t.Fatalf("with %v: %v", caps, err)
	}
	for _, p := range limited.Status.Probes {
		if !p.Attached {
			t.Errorf("with %v probe %s is not attached", caps, p.Name)
		}
	}
	// Full root is denied a few (processes in other pid namespaces); the
	// unit's set must not be denied more.
	if d, r := limited.Stats.ProcessCache.SeedPermissionDenied, root.Stats.ProcessCache.SeedPermissionDenied; d > r {
		t.Errorf("with %v, %d processes could not be read (full root: %d)", caps, d, r)
	}
	t.Logf("full root: %d seeded, %d denied; unit set %v: %d seeded, %d denied",
		root.Status.SeededProcesses, root.Stats.ProcessCache.SeedPermissionDenied,
		caps, limited.Status.SeededProcesses, limited.Stats.ProcessCache.SeedPermissionDenied)

	for _, drop := range caps {
		fewer := slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == drop })
		st, err := status(t, bin, fewer)
		switch drop {
		case "bpf", "perfmon":
			if err == nil {
				t.Errorf("without CAP_%s the sensor still started", strings.ToUpper(drop))
			} else {
				t.Logf("without CAP_%s: %v", strings.ToUpper(drop), firstLine(err.Error()))
			}
		case "sys_ptrace":
			if err != nil {
				t.Errorf("without CAP_SYS_PTRACE: %v", err)
				continue
			}
			denied := st.Stats.ProcessCache.SeedPermissionDenied
			if denied <= limited.Stats.ProcessCache.SeedPermissionDenied {
				t.Errorf("without CAP_SYS_PTRACE no more processes were denied (%d)", denied)
			}
			t.Logf("without CAP_SYS_PTRACE: %d of %d processes could not be read", denied, st.Status.SeededProcesses)
		}
	}

	// The whole agent (spool, TLS, sensor) comes up with the unit's set.
	pki := t.TempDir()
	for _, args := range [][]string{{"certs", "init", "--out", pki}, {"certs", "agent", "--out", pki, "node-1"}} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("harrier %v: %v\n%s", args, err, out)
		}
	}
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	conf := fmt.Sprintf("dataDir: %s\nuplink:\n  addr: 127.0.0.1:1\n  agentID: node-1\n  caFile: %[2]s/ca.crt\n  certFile: %[2]s/node-1.crt\n  keyFile: %[2]s/node-1.key\n",
		t.TempDir(), pki)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, logs, _ := pkgtest.StartUntilReady(t, pkgtest.Setpriv(caps, bin, "agent", "-c", cfg), 30*time.Second); !ok {
		t.Errorf("harrier agent with %v did not become ready:\n%s", caps, logs)
	}
}

// TestBackendNeedsNoCapabilities runs the backend as an unprivileged user
// with an empty bounding set, as its unit does.
func TestBackendNeedsNoCapabilities(t *testing.T) {
	testenv.RequireRoot(t)
	pkgtest.RequireTool(t, "setpriv", "util-linux")
	if got := pkgtest.UnitCaps(t, "harrier-backend.service"); len(got) != 0 {
		t.Fatalf("backend bounding set %v, want empty", got)
	}
	bin := pkgtest.BuildHarrier(t)
	dir := pkgtest.PublicTempDir(t)
	pki, data := filepath.Join(dir, "pki"), filepath.Join(dir, "data")
	for _, args := range [][]string{{"certs", "init", "--out", pki}, {"certs", "backend", "--out", pki, "--host", "127.0.0.1"}} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("harrier %v: %v\n%s", args, err, out)
		}
	}
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{data, filepath.Join(pki, "backend.key")} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "backend.yaml")
	conf := fmt.Sprintf("dataDir: %s\nbackend:\n  apiAddr: 127.0.0.1:0\n  ingestAddr: 127.0.0.1:0\n  caFile: %[2]s/ca.crt\n  certFile: %[2]s/backend.crt\n  keyFile: %[2]s/backend.key\n",
		data, pki)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
		"--bounding-set=-all", "--inh-caps=-all", "--", bin, "backend", "-c", cfg)
	if ok, logs, _ := pkgtest.StartUntilReady(t, cmd, 30*time.Second); !ok {
		t.Errorf("harrier backend without capabilities did not become ready:\n%s", logs)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
