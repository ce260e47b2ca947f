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
