package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/sensor/execontent"
)

// TestCatalogueDetectionsRealSensor: the detections added for the
// commercial catalogue's alert types (docs/detections.md), each made to
// fire by real behaviour in a runc container through the real sensor, next
// to a benign counterpart that must stay quiet. Tools the busybox image
// lacks (iptables, ssh, docker, ...) are stand-ins (detecthelper under the
// tool's name, see testdata/detecthelper): what these detections judge is
// the exec the kernel reports, its executable and command line.
func TestCatalogueDetectionsRealSensor(t *testing.T) {
	r := startRig(t)
	// stubs puts a stand-in for each tool at its path.
	stubs := func(paths ...string) map[string]runctest.File {
		img := map[string]runctest.File{}
		for _, p := range paths {
			img[p] = helperCopy(r)
		}
		return img
	}
	const httpd = "httpd -p 127.0.0.1:8080 -h /www && waitport 8080 && "
	// A stand-in that carries XMRig's content signatures, as the miner's
	// own binary does, whatever it is named.
	// (Written reversed: the test binary must not hold the signature itself.)
	miner := signedCopy(t, r.helper, string(execontent.Reversed("\x00xmodnar\x003333:elpmaxe.loop//:pct+mutarts\x000.12.6/giRMX\x00")))

	tests := []detectionCase{
		// A tool is what its file holds, not what it is called.
		{name: "a miner renamed kworker", image: map[string]runctest.File{"/tmp/.cache/kworker": {Host: miner}}, run: func(x *box) {
			x.sh("STANDIN_LINGER=1s /tmp/.cache/kworker --donate-level 1")
		}, fire: []string{"renamed-tool"}, check: func(t *testing.T, a *api.Alert) {
			c := a.GetEvidence()[0].GetExeContent()
			sum, err := fileSHA256(miner)
			if err != nil {
				t.Fatal(err)
			}
			if c.GetSha256() != sum || !slices.Contains(c.GetTools(), "xmrig") || !c.GetElf() {
				t.Errorf("evidence content = %v, want sha256 %s and tool xmrig", c, sum)
			}
		}},
		{name: "the miner under its own name and a plain tool renamed kworker", image: map[string]runctest.File{
			"/opt/xmrig/xmrig": {Host: miner}, "/tmp/.cache/kworker": helperCopy(r)}, run: func(x *box) {
			x.sh("STANDIN_LINGER=1s /tmp/.cache/kworker; STANDIN_LINGER=1s /opt/xmrig/xmrig --version")
		}, quiet: []string{"renamed-tool"}},

		// Privilege is what the kernel shows: every capability in the
		// bounding set of the container's programs (runc init's own full
		// set must not count).
		{name: "a shell and nsenter in a privileged container", privileged: true, image: stubs("/usr/bin/nsenter"), run: func(x *box) {
			x.sh("id")
			x.execMayFail("nsenter", "--help")
		}, fire: []string{"privileged-container-running", "privileged-exec"}, check: func(t *testing.T, a *api.Alert) {
			ev := a.GetEvidence()[0]
			if !ev.GetContainer().GetPrivileged() {
				t.Errorf("evidence container not privileged: %v", ev.GetContainer())
			}
			const capSysAdmin = 21
			if ev.GetProcess().GetCapBounding()&(1<<capSysAdmin) == 0 {
				t.Errorf("evidence process lacks CAP_SYS_ADMIN in its bounding set: %#x", ev.GetProcess().GetCapBounding())
			}
		}},
		{name: "a shell and nsenter in a default container", image: stubs("/usr/bin/nsenter"), run: func(x *box) {
			x.sh("id")
			x.execMayFail("nsenter", "--help")
		}, quiet: []string{"privileged-container-running", "privileged-exec"}},

		{name: "nohup runs a hidden file from /tmp", image: stubs("/usr/bin/nohup", "/opt/payload"), run: func(x *box) {
			x.sh("cp /opt/payload /tmp/.kworker && nohup /tmp/.kworker >/dev/null 2>&1")
		}, fire: []string{"suspect-nohup"}},
		{name: "nohup runs an installed program", image: stubs("/usr/bin/nohup", "/usr/local/bin/app-server"), run: func(x *box) {
			x.sh("nohup /usr/local/bin/app-server >/dev/null 2>&1")
		}, quiet: []string{"suspect-nohup"}},

		{name: "mkpasswd makes a crypt hash", run: func(x *box) {
			x.exec("mkpasswd", "-m", "sha512", "S3cret!")
		}, fire: []string{"password-change-crypt"}},
		{name: "usermod sets a crypt hash", image: stubs("/usr/sbin/usermod"), run: func(x *box) {
			x.sh("usermod -p '$6$salt$hash' user")
		}, fire: []string{"password-change-crypt"}},
		{name: "openssl and a checksum", image: stubs("/usr/bin/openssl"), run: func(x *box) {
			x.sh("openssl rand -hex 8 && sha256sum /etc/passwd >/dev/null")
		}, quiet: []string{"password-change-crypt"}},

		{name: "ssh remote forward and a socat relay", image: stubs("/usr/bin/ssh", "/usr/bin/socat"), run: func(x *box) {
			x.sh("ssh -N -f -R 9000:127.0.0.1:22 tunnel@203.0.113.9 && socat TCP-LISTEN:9001,fork TCP:10.0.0.5:22")
		}, fire: []string{"port-forwarding"}},
		{name: "ssh runs a remote command", image: stubs("/usr/bin/ssh", "/usr/bin/socat"), run: func(x *box) {
			x.sh("ssh -V && ssh -oUserKnownHostsFile=/dev/null -i /root/.ssh/id_ed25519 -p 2222 ops@127.0.0.1 uptime && " +
				"socat - TCP:127.0.0.1:8080")
		}, quiet: []string{"port-forwarding", "socks-proxy"}},

		{name: "killall falco", run: func(x *box) {
			x.execMayFail("killall", "-9", "falco") // no such process: the attempt counts
		}, fire: []string{"security-process-kill"}},
		{name: "kill of pidof auditd", run: func(x *box) {
			x.sh("kill -9 $(pidof auditd) 2>/dev/null || true")
		}, fire: []string{"security-process-kill"}},
		{name: "systemctl stop auditd", image: stubs("/usr/bin/systemctl"), run: func(x *box) {
			x.sh("systemctl stop auditd.service")
		}, fire: []string{"security-process-kill"}},
		{name: "httpd reloaded and auditd status", image: stubs("/usr/bin/systemctl"), run: func(x *box) {
			x.sh(httpd + "systemctl status auditd && systemctl restart auditd")
			x.exec("killall", "-HUP", "httpd")
		}, quiet: []string{"security-process-kill"}},

		// touch runs as its own process (busybox's shell would run it in
		// its own process, without an exec).
		{name: "timestomping a dropped file and /etc/hosts", run: func(x *box) {
			x.sh("echo x > /bin/.cache-helper")
			x.exec("touch", "-r", "/bin/busybox", "/bin/.cache-helper")
			x.exec("touch", "-d", "2019-03-01 10:00", "/etc/hosts")
		}, fire: []string{"timestomp"}},
		{name: "touch of a marker and a dated build output", run: func(x *box) {
			x.sh("mkdir -p /srv/build")
			x.exec("touch", "/tmp/marker", "/etc/hosts")
			x.exec("touch", "-d", "2024-01-01 00:00", "/srv/build/out.txt")
		}, quiet: []string{"timestomp"}},

		{name: "firewall flushed and opened and disabled", image: stubs("/usr/sbin/iptables", "/usr/sbin/nft", "/usr/sbin/ufw"), run: func(x *box) {
			x.sh("iptables -F && iptables -P INPUT ACCEPT && nft flush ruleset && ufw disable")
		}, fire: []string{"firewall-disabled"}},
		{name: "firewall listed and a rule added", image: stubs("/usr/sbin/iptables", "/usr/sbin/nft", "/usr/sbin/ufw"), run: func(x *box) {
			x.sh("iptables -L -n && iptables -A INPUT -p tcp --dport 22 -j ACCEPT && iptables -t nat -F KUBE-SERVICES && " +
				"nft list ruleset && ufw status")
		}, quiet: []string{"firewall-disabled"}},

		{name: "apt-daily-upgrade.timer stopped", image: stubs("/usr/bin/systemctl"), run: func(x *box) {
			x.sh("systemctl stop apt-daily-upgrade.timer && systemctl disable apt-daily-upgrade.timer")
		}, fire: []string{"update-timer-disabled"}},
		{name: "timers listed and the update timer started", image: stubs("/usr/bin/systemctl"), run: func(x *box) {
			x.sh("systemctl list-timers && systemctl start apt-daily-upgrade.timer")
		}, quiet: []string{"update-timer-disabled"}},

		{name: "docker build and buildah bud", image: stubs("/usr/bin/docker", "/usr/bin/buildah"), run: func(x *box) {
			x.sh("docker build -t registry.local/tool:1 /tmp && buildah bud -f Containerfile /tmp")
		}, fire: []string{"image-build"}},
		{name: "docker ps and images and run", image: stubs("/usr/bin/docker"), run: func(x *box) {
			x.sh("docker ps && docker images && docker run --rm alpine echo build")
		}, quiet: []string{"image-build"}},

		{name: "sshd started in the container", image: stubs("/usr/sbin/sshd"), run: func(x *box) {
			x.sh("/usr/sbin/sshd -D -e")
		}, fire: []string{"container-ssh"}},
		{name: "a server listening on port 22", run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:22 -h /www && waitport 22")
		}, fire: []string{"container-ssh"}, check: hasEvidence(api.EventKind_EVENT_KIND_LISTEN)},
		{name: "an ssh client and a server on 2200", image: stubs("/usr/bin/ssh"), run: func(x *box) {
			x.sh("ssh -V && httpd -p 127.0.0.1:2200 -h /www && waitport 2200")
		}, quiet: []string{"container-ssh"}},

		{name: "XorDDoS cron file and hping3 --flood", image: stubs("/usr/sbin/hping3"), run: func(x *box) {
			x.sh("mkdir -p /etc/cron.hourly && printf '#!/bin/sh\\n' > /etc/cron.hourly/gcc.sh && hping3 --flood -S -p 80 127.0.0.1")
		}, fire: []string{"ddos-toolkit"}},
		{name: "an hourly cron job and one hping3 probe", image: stubs("/usr/sbin/hping3"), run: func(x *box) {
			x.sh("mkdir -p /etc/cron.hourly && printf '#!/bin/sh\\n' > /etc/cron.hourly/logrotate && hping3 -c 1 -S -p 80 127.0.0.1")
		}, quiet: []string{"ddos-toolkit"}},

		{name: "set-user-ID shell in /tmp", run: func(x *box) {
			x.sh("cp /bin/busybox /tmp/.sh && chmod 4755 /tmp/.sh")
		}, fire: []string{"backdoor-artifact"}, check: hasEvidence(api.EventKind_EVENT_KIND_CHMOD)},
		{name: "PAM configuration changed", image: map[string]runctest.File{"/etc/pam.d/common-auth": {Content: "auth required pam_unix.so\n"}}, run: func(x *box) {
			x.sh("echo 'auth sufficient pam_permit.so' >> /etc/pam.d/common-auth")
		}, fire: []string{"backdoor-artifact"}, check: hasEvidence(api.EventKind_EVENT_KIND_FILE_OPEN)},
		{name: "a tool made executable and PAM read", image: map[string]runctest.File{"/etc/pam.d/common-auth": {Content: "auth required pam_unix.so\n"}}, run: func(x *box) {
			x.sh("cp /bin/busybox /tmp/tool && chmod 755 /tmp/tool && cat /etc/pam.d/common-auth >/dev/null")
		}, quiet: []string{"backdoor-artifact"}},

		{name: "Sandcat downloaded and started", image: stubs("/opt/payload"), run: func(x *box) {
			x.sh("wget -q -O /tmp/dl --header 'file:sandcat.go' --header 'platform:linux' http://127.0.0.1:8888/file/download || true")
			x.sh("cp /opt/payload /tmp/splunkd && /tmp/splunkd -server http://127.0.0.1:8888 -group red -v")
		}, fire: []string{"caldera-agent"}},
		{name: "Splunk started", image: stubs("/opt/splunk/bin/splunkd"), run: func(x *box) {
			x.sh(httpd + "/opt/splunk/bin/splunkd start --accept-license && wget -q -O- --header 'Accept: text/html' http://127.0.0.1:8080/index.html")
		}, quiet: []string{"caldera-agent"}},

		{name: "curl through SOCKS and proxychains", image: stubs("/usr/bin/curl", "/usr/bin/proxychains4"), run: func(x *box) {
			x.sh("curl --socks5-hostname 127.0.0.1:9050 http://harrier-test.example/ && proxychains4 wget -q http://harrier-test.example/")
		}, fire: []string{"socks-proxy"}},
		{name: "curl direct", image: stubs("/usr/bin/curl"), run: func(x *box) {
			x.sh("curl -s -o /dev/null http://127.0.0.1:8080/ && curl -x http://127.0.0.1:3128 http://harrier-test.example/")
		}, quiet: []string{"socks-proxy"}},

		{name: "a public DoH resolver on 443 and its name", run: func(x *box) {
			x.addAddress(dohIP)
			x.sh("httpd -p " + dohIP + ":443 -h /www && waitport 443")
			x.exec("detecthelper", "connect", dohIP+":443")
			x.exec("detecthelper", "dns", "dns.google")
		}, fire: []string{"dns-over-https"}, check: hasEvidence(api.EventKind_EVENT_KIND_CONNECT)},
		{name: "another address on 443 and another name", run: func(x *box) {
			x.addAddress(poolIP)
			x.sh("httpd -p " + poolIP + ":443 -h /www && waitport 443")
			x.exec("detecthelper", "connect", poolIP+":443")
			x.exec("detecthelper", "dns", "dns.google.example")
		}, quiet: []string{"dns-over-https"}},

		{name: "the dashboard's service name looked up", run: func(x *box) {
			x.exec("detecthelper", "dns", "kubernetes-dashboard.kubernetes-dashboard.svc.cluster.local")
		}, fire: []string{"k8s-dashboard-from-container"}, check: hasEvidence(api.EventKind_EVENT_KIND_DNS_QUERY)},
		{name: "another service's name looked up", run: func(x *box) {
			x.exec("detecthelper", "dns", "web.default.svc.cluster.local")
		}, quiet: []string{"k8s-dashboard-from-container"}},

		{name: "a mining pool name looked up", run: func(x *box) {
			x.exec("detecthelper", "dns", "pool.herominers.com")
		}, fire: []string{"mining"}, check: hasEvidence(api.EventKind_EVENT_KIND_DNS_QUERY)},
		{name: "a look-alike name looked up", run: func(x *box) {
			x.exec("detecthelper", "dns", "herominers.com.example")
		}, quiet: []string{"mining"}},

		// Evasion: the pipeline is in a script, so the decoder and the
		// shell are siblings and no command line holds it.
		{name: "a script pipes base64 -d into sh", image: map[string]runctest.File{
			"/opt/scripts/update.sh": {Content: "#!/bin/sh\necho aWQK | base64 -d | sh\n", Mode: 0o755}}, run: func(x *box) {
			x.exec("/opt/scripts/update.sh")
		}, fire: []string{"base64-pipe"}},
		{name: "a script decodes to a file and runs another script", image: map[string]runctest.File{
			"/opt/scripts/update.sh": {Content: "#!/bin/sh\necho aGVsbG8K | base64 -d > /tmp/out\ncat /tmp/out\nsh /opt/scripts/healthcheck.sh\n", Mode: 0o755}}, run: func(x *box) {
			x.exec("/opt/scripts/update.sh")
		}, quiet: []string{"base64-pipe", "base64-exec"}},

		// Evasion: a scan by a shell loop of short-lived nc processes, one
		// connect each (no nc -z, no scanner).
		{name: "a shell loop of nc over 30 ports", run: func(x *box) {
			x.sh("for p in $(seq 20000 20029); do nc -w 1 127.0.0.1 $p </dev/null 2>/dev/null; done; true")
		}, fire: []string{"network-scan"}, check: hasEvidence(api.EventKind_EVENT_KIND_CONNECT)},
		{name: "a shell loop of nc over 4 ports", run: func(x *box) {
			x.sh("for p in $(seq 20000 20003); do nc -w 1 127.0.0.1 $p </dev/null 2>/dev/null; done; true")
		}, quiet: []string{"network-scan"}},

		{name: "Shellshock and Log4Shell payloads on command lines", run: func(x *box) {
			x.exec("sh", "-c", "echo '() { :;}; /bin/id' >/dev/null")
			x.exec("sh", "-c", "echo '${jndi:ldap://127.0.0.1:1389/a}' >/dev/null")
		}, fire: []string{"exploit-attempt"}},
		{name: "a shell function and a variable", run: func(x *box) {
			x.exec("sh", "-c", "f() { echo hi; }; f; X=1; echo ${X}")
		}, quiet: []string{"exploit-attempt"}},

		{name: "a download into /dev/shm and a hidden file", run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:8081 -h /srv/dl && waitport 8081 && wget -q -O /dev/shm/r http://127.0.0.1:8081/report.txt && " +
				"mkdir -p /tmp/c && wget -q -O /tmp/c/.r http://127.0.0.1:8081/report.txt")
		}, fire: []string{"suspect-download"}},
		{name: "a download into /tmp", run: func(x *box) {
			x.sh("httpd -p 127.0.0.1:8081 -h /srv/dl && waitport 8081 && wget -q -O /tmp/report.txt http://127.0.0.1:8081/report.txt && " +
				"mkdir -p /tmp/.cache && wget -q -O /tmp/.cache/report.txt http://127.0.0.1:8081/report.txt")
		}, quiet: []string{"suspect-download"}},

		{name: "a program that is no IRC client connects to an IRC port", run: func(x *box) {
			x.addAddress(poolIP)
			x.sh("httpd -p " + poolIP + ":6667 -h /www && waitport 6667")
			x.exec("detecthelper", "connect", poolIP+":6667")
		}, fire: []string{"common-bot"}, check: hasEvidence(api.EventKind_EVENT_KIND_CONNECT)},
		{name: "the Mirai loader's cd chain", run: func(x *box) {
			x.sh("cd /tmp || cd /var/run || cd /mnt || cd /root || cd /; echo loaded >/dev/null")
		}, fire: []string{"common-bot"}},
		{name: "an IRC client on 6667 and a shell in /tmp", image: stubs("/usr/bin/irssi"), run: func(x *box) {
			x.addAddress(poolIP)
			x.sh("httpd -p " + poolIP + ":6667 -h /www && waitport 6667")
			x.exec("irssi", "connect", poolIP+":6667")
			x.exec("detecthelper", "connect", poolIP+":8080") // another program, another port
			x.sh("cd /tmp && ls >/dev/null")
		}, quiet: []string{"common-bot"}},

		// busybox's shell runs whoami, id, uname and hostname inside itself
		// (no exec); env makes them the processes they are in bash or dash.
		{name: "a script runs six discovery commands", image: map[string]runctest.File{
			"/opt/scripts/sysinfo.sh": {Content: "#!/bin/sh\nenv whoami\nenv id\nenv uname -a\nenv hostname\nifconfig -a\nnetstat -tn\n", Mode: 0o755}}, run: func(x *box) {
			x.exec("/opt/scripts/sysinfo.sh")
		}, fire: []string{"recon-burst"}},
		{name: "a health script runs two discovery commands among others", image: map[string]runctest.File{
			"/opt/scripts/health.sh": {Content: "#!/bin/sh\nenv hostname\nenv id -u\nenv id -u\nenv id -un\nenv date\nenv cat /proc/loadavg\nenv ls /tmp\nenv wc -l /etc/passwd\n", Mode: 0o755}}, run: func(x *box) {
			x.exec("/opt/scripts/health.sh")
		}, quiet: []string{"recon-burst"}},

		// Evasion: a miner run from a memfd under a kernel thread's name
		// (runc mounts /dev/shm noexec); its pool arguments and its
		// in-memory executable still give it away.
		{name: "a renamed miner run from a memfd", run: func(x *box) {
			x.execMayFail("detecthelper", "memfd-exec", "kworker/0:1", "-o", "stratum+tcp://127.0.0.1:3333", "-u", "wallet", "-k")
		}, fire: []string{"mining", "drift-binary", "fileless"}},
		{name: "a renamed tool run from /opt", image: stubs("/opt/payload"), run: func(x *box) {
			x.sh("/opt/payload -o report.txt -u ops")
		}, quiet: []string{"mining", "drift-binary"}},

		// Evasion: paths written with //, /./, through /proc/self/root or a symlink
		// reach the kernel's resolved path, which is what the sensor reports.
		{name: "the shadow file read through //, /./, /proc/self/root and a symlink", run: func(x *box) {
			x.exec("cat", "//etc/./shadow")
			x.exec("cat", "/proc/self/root/etc/shadow")
			x.sh("ln -s /etc /tmp/e && cat /tmp/e/shadow >/dev/null")
		}, fire: []string{"sensitive-files"}},
		{name: "the passwd file read through //, /./, /proc/self/root and a symlink", run: func(x *box) {
			x.exec("cat", "//etc/./passwd")
			x.exec("cat", "/proc/self/root/etc/passwd")
			x.sh("ln -s /etc /tmp/e && cat /tmp/e/passwd >/dev/null")
		}, quiet: []string{"sensitive-files"}},

		// Evasion: LD_PRELOAD exported by a script, so no command line
		// holds it; the sensor reads it from the new program's environment.
		{name: "a script preloads a library from /dev/shm through the environment", image: map[string]runctest.File{
			"/opt/app/run.sh": {Content: "#!/bin/sh\nexport LD_PRELOAD=/dev/shm/.libsys.so\nexec /opt/app/server --port 8080\n", Mode: 0o755},
			"/opt/app/server": helperCopy(r)}, run: func(x *box) {
			x.exec("/opt/app/run.sh")
		}, fire: []string{"ld-preload"}, check: func(t *testing.T, a *api.Alert) {
			if got := a.GetEvidence()[0].GetExec().GetLdPreload(); got != "/dev/shm/.libsys.so" {
				t.Errorf("evidence LD_PRELOAD %q, want /dev/shm/.libsys.so", got)
			}
		}},
		{name: "a script preloads jemalloc from /usr/lib", image: map[string]runctest.File{
			"/opt/app/run.sh": {Content: "#!/bin/sh\nexport LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\nexec /opt/app/server --port 8080\n", Mode: 0o755},
			"/opt/app/server": helperCopy(r)}, run: func(x *box) {
			x.exec("/opt/app/run.sh")
		}, quiet: []string{"ld-preload"}},

		{name: "mimipenguin.sh", image: map[string]runctest.File{"/opt/scripts/mimipenguin.sh": {Content: "#!/bin/sh\necho dumping\n", Mode: 0o755}}, run: func(x *box) {
			x.sh("sh /opt/scripts/mimipenguin.sh")
		}, fire: []string{"attack-tool"}},
	}
	r.runCases(t, tests)
}

// dohIP is a public DNS-over-HTTPS resolver's address, assigned only to the
// loopback of a test container's own network namespace: nothing leaves it.
const dohIP = "1.1.1.1"

// execMayFail runs args in the container as its own process and only logs
// a failure: attempts that find nothing to act on still count.
func (x *box) execMayFail(args ...string) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	if out, err := x.ctr.Exec(ctx, args...); err != nil {
		x.t.Logf("%v: %v (%s)", args, err, out)
	}
}

// signedCopy writes a copy of the binary at path with extra appended (an ELF
// runs with bytes after its sections) and returns the copy's path.
func signedCopy(t *testing.T, path, extra string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "signed")
	if err := os.WriteFile(out, append(b, extra...), 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

func fileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
