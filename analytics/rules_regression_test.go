package analytics

import (
	"slices"
	"testing"

	"github.com/harrier-sec/harrier/api"
)

// False positives found by the benign-workload corpus through the real
// sensor (tests/e2e), kept here as replay cases next to the positives they
// must not lose.
func TestRuleRegressions(t *testing.T) {
	ctr := inContainer("c0ffee")
	sh := "/bin/sh"
	tests := []struct {
		name string
		args []string
		exe  string
		want string
		not  string
	}{
		{"grep a user in /etc/passwd", []string{"grep", "root", "/etc/passwd"}, "/bin/grep", "", "secret-recon"},
		{"shell greps /etc/passwd", []string{"sh", "-c", "grep -q '^app:' /etc/passwd || echo missing"}, sh, "", "secret-recon"},
		{"grep for passwd strings", []string{"grep", "-ri", "passwd", "/srv/app"}, "/bin/grep", "secret-recon", ""},
		{"grep for db_passwd", []string{"grep", "-r", "db_passwd=", "/etc"}, "/bin/grep", "secret-recon", ""},
		{"shell reads nr_hugepages", []string{"sh", "-c", "cat /proc/sys/vm/nr_hugepages"}, sh, "", "cpu-optimization"},
		{"shell writes nr_hugepages", []string{"sh", "-c", "echo 1280 > /proc/sys/vm/nr_hugepages"}, sh, "cpu-optimization", ""},
		{"shell tees allow_writes", []string{"sh", "-c", "echo on | tee /sys/module/msr/parameters/allow_writes"}, sh, "cpu-optimization", ""},
		{"shell runs sysctl for hugepages", []string{"bash", "-c", "sysctl -w vm.nr_hugepages=1280"}, "/bin/bash", "cpu-optimization", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, _ := run(newTestEngine(t, Config{}), execEv(tc.exe, tc.args, ctr))
			if tc.want != "" && !slices.Contains(ids, tc.want) {
				t.Errorf("want %s, got %v", tc.want, ids)
			}
			if tc.not != "" && slices.Contains(ids, tc.not) {
				t.Errorf("unexpected %s (alerts %v)", tc.not, ids)
			}
		})
	}
}

// What `kubectl exec` or `docker exec` runs is a direct child of the
// runtime's shim (runc exec's child here): a dropped or in-memory binary
// run that way is still drift and fileless; the runtime's own memfd clone
// is not.
func TestExecByRuntimeStillDrift(t *testing.T) {
	ctr := inContainer("c0ffee")
	for _, shim := range []string{"/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc"} {
		ids, _ := run(newTestEngine(t, Config{}),
			execEv("/tmp/xmrig", []string{"./xmrig"}, ctr, origin(&api.ExeOrigin{OverlayUpper: true}), parents(shim)),
			execEv("/memfd:x (deleted)", []string{"x"}, ctr, origin(&api.ExeOrigin{Memfd: true}), parents(shim)))
		if !slices.Contains(ids, "drift-binary") || !slices.Contains(ids, "fileless") {
			t.Errorf("under %s: want drift-binary and fileless, got %v", shim, ids)
		}
	}
	ids, _ := run(newTestEngine(t, Config{}), execEv("/memfd:runc_cloned:/proc/self/exe (deleted)", []string{"runc", "init"},
		ctr, origin(&api.ExeOrigin{Memfd: true}), parents("/usr/sbin/runc")))
	if len(ids) != 0 {
		t.Errorf("runc init from its memfd clone raised %v", ids)
	}
}

// TestDebianCorpusFalsePositives keeps the fixes for what tests/e2e's
// Debian corpus raised: each benign case stays quiet and its malicious
// neighbour still fires.
func TestDebianCorpusFalsePositives(t *testing.T) {
	ctr := inContainer("c0ffee")
	upper := origin(&api.ExeOrigin{OverlayUpper: true})
	tests := []struct {
		name string
		evs  []*api.Event
		id   string
		fire bool
	}{
		{"a program the container linked runs", []*api.Event{
			execEv("/usr/lib/gcc/x86_64-linux-gnu/12/collect2", []string{"/usr/lib/gcc/x86_64-linux-gnu/12/collect2", "-plugin", "x.so", "-o", "hello", "hello.o", "util.o"}, ctr, cwd("/src")),
			execEv("/src/hello", []string{"./hello"}, ctr, cwd("/src"), upper),
		}, "drift-binary", false},
		{"gcc without -o links a.out", []*api.Event{
			execEv("/usr/bin/gcc", []string{"gcc", "main.c"}, ctr, cwd("/work")),
			execEv("/work/a.out", []string{"./a.out"}, ctr, cwd("/work"), upper),
		}, "drift-binary", false},
		{"go build -o", []*api.Event{
			execEv("/usr/local/go/bin/go", []string{"go", "build", "-o=/app/server", "."}, ctr, cwd("/src")),
			execEv("/app/server", []string{"/app/server"}, ctr, upper),
		}, "drift-binary", false},
		{"go test runs the test binary Go's linker wrote", []*api.Event{
			execEv("/usr/lib/go-1.19/pkg/tool/linux_amd64/link", []string{"/usr/lib/go-1.19/pkg/tool/linux_amd64/link", "-o", "/tmp/go-build1/b001/corpus.test", "-importcfg", "/tmp/go-build1/b001/importcfg.link", "/tmp/go-build1/b001/_pkg_.a"}, ctr, cwd("/src/go")),
			execEv("/tmp/go-build1/b001/corpus.test", []string{"/tmp/go-build1/b001/corpus.test", "-test.paniconexit0"}, ctr, cwd("/src/go"), upper),
		}, "drift-binary", false},
		{"coreutils link without -o builds nothing", []*api.Event{
			execEv("/usr/bin/link", []string{"link", "/tmp/a", "/tmp/b"}, ctr, cwd("/tmp")),
			execEv("/tmp/a.out", []string{"/tmp/a.out"}, ctr, cwd("/tmp"), upper),
		}, "drift-binary", true},
		{"a compile-only step links nothing", []*api.Event{
			execEv("/usr/bin/gcc", []string{"gcc", "-c", "x.c", "-o", "/tmp/x"}, ctr, cwd("/src")),
			execEv("/tmp/x", []string{"/tmp/x"}, ctr, upper),
		}, "drift-binary", true},
		{"another container's build does not count", []*api.Event{
			execEv("/usr/bin/ld", []string{"ld", "-o", "/tmp/x", "x.o"}, inContainer("other"), cwd("/src")),
			execEv("/tmp/x", []string{"/tmp/x"}, ctr, upper),
		}, "drift-binary", true},
		{"a dropped binary still drifts", []*api.Event{
			execEv("/usr/bin/gcc", []string{"gcc", "-o", "hello", "hello.c"}, ctr, cwd("/src")),
			execEv("/tmp/kdevtmpfsi", []string{"/tmp/kdevtmpfsi"}, ctr, upper),
		}, "drift-binary", true},
		{"postgres initdb lists locales", []*api.Event{
			execEv("/bin/busybox", []string{"sh", "-c", "locale -a"}, ctr, parents("/usr/lib/postgresql/15/bin/postgres")),
		}, "db-spawns-shell", false},
		{"postgres runs any other shell command", []*api.Event{
			execEv("/bin/busybox", []string{"sh", "-c", "locale -a; id"}, ctr, parents("/usr/lib/postgresql/15/bin/postgres")),
		}, "db-spawns-shell", true},
		{"a load test discards what it fetches", []*api.Event{
			execEv("/bin/busybox", []string{"wget", "-q", "-O", "/dev/null", "http://10.0.0.5:8080/big.bin"}, ctr),
		}, "suspect-download", false},
		{"a binary fetched from a bare IP and kept", []*api.Event{
			execEv("/bin/busybox", []string{"wget", "-q", "-O", "/tmp/big.bin", "http://10.0.0.5:8080/big.bin"}, ctr),
		}, "suspect-download", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, _ := run(newTestEngine(t, Config{}), tc.evs...)
			if got := slices.Contains(ids, tc.id); got != tc.fire {
				t.Errorf("%s raised: %v, want %v (alerts %v)", tc.id, got, tc.fire, ids)
			}
		})
	}
}
