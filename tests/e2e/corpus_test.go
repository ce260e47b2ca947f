package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// The Debian benign corpus: real server software, compilers and system
// jobs from Debian's packages (tests/corpus/build.sh unpacks them into a
// cached tree the containers stack under their busybox layer), each run in
// its own runc container with a real workload under the real sensor. None
// may raise an alert above info; a false positive found here is fixed in
// the detection, and the workload stays as its regression test.

// debianApplets are the busybox applets the corpus scripts use beyond the
// default set; logrotate compresses with /bin/gzip.
var debianApplets = []string{"usleep", "gzip", "gunzip", "pidof", "killall", "crond"}

const (
	nginxConf = `user nobody nogroup;
worker_processes 2;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
events { worker_connections 64; }
http {
	include /etc/nginx/mime.types;
	access_log /var/log/nginx/access.log;
	client_body_temp_path /var/lib/nginx/body;
	proxy_temp_path /var/lib/nginx/proxy;
	server {
		listen 127.0.0.1:8080;
		root /www;
	}
}
`
	helloC = `#include <stdio.h>
#include "util.h"

int main(void) {
	printf("sum %d\n", add(40, 2));
	return 0;
}
`
	utilC = `#include "util.h"

int add(int a, int b) { return a + b; }
`
	utilH      = "int add(int a, int b);\n"
	cMakefile  = "CFLAGS = -O2 -Wall -Wextra -Werror\n\nhello: hello.o util.o\n\t$(CC) $(CFLAGS) -o $@ hello.o util.o\n\nhello.o util.o: util.h\n"
	cronTab    = "* * * * * /etc/corpus/rotate-logs.sh >>/var/log/corpus-job.log 2>&1\n"
	rotateConf = `/var/log/app/*.log {
	rotate 3
	size 1
	compress
	missingok
	create 0640 root root
}
`
	rotateJob = "#!/bin/sh\n# The nightly-style job cron runs: rotate the application's logs.\nset -e\nmkdir -p /var/lib/logrotate\n/usr/sbin/logrotate -s /var/lib/logrotate/status /etc/corpus/logrotate.conf\necho \"rotated $(date)\"\n"
	pgBin     = "/usr/lib/postgresql/15/bin"
	goMain    = "package main\n\nimport \"fmt\"\n\nfunc add(a, b int) int { return a + b }\n\nfunc main() { fmt.Println(\"sum\", add(40, 2)) }\n"
	goTest    = "package main\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tif add(40, 2) != 42 {\n\t\tt.Fatal(\"add\")\n\t}\n}\n"
)

// TestDebianCorpusRealSensor runs Debian's nginx, redis, gcc and make, Go,
// apt and dpkg, logrotate as a job of busybox's crond (Debian's cron needs
// the PAM configuration its maintainer scripts generate) and PostgreSQL
// under load, and requires that the built-in detections raise nothing
// above info for any of them.
func TestDebianCorpusRealSensor(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	start := time.Now()
	layer := testenv.BuiltTool(t, "corpus")
	t.Logf("Debian corpus layer %s ready in %v", layer, time.Since(start).Round(time.Millisecond))
	r := startRig(t)

	newDebianBox := func(t *testing.T, image map[string]runctest.File) *box {
		t.Helper()
		ctr := runctest.Start(t, runctest.Options{Layers: []string{layer}, Applets: debianApplets, Image: image})
		x := &box{t: t, r: r, ctr: ctr, scope: inContainer(ctr.ID)}
		// base-files' postinst makes /var/run a link to /run; dpkg -x
		// runs no maintainer scripts.
		x.sh("[ -e /var/run ] || ln -s /run /var/run")
		return x
	}
	var scopes []func(*api.Event) bool
	names := map[string]string{} // container ID → workload

	// cron starts first and is checked last: its job runs at the next
	// minute boundary while the other workloads run.
	cron := newDebianBox(t, map[string]runctest.File{
		"/var/spool/cron/crontabs/root": {Content: cronTab, Mode: 0o600},
		"/etc/corpus/rotate-logs.sh":    {Content: rotateJob, Mode: 0o755},
		"/etc/corpus/logrotate.conf":    {Content: rotateConf},
		"/var/log/app/app.log":          {Content: strings.Repeat("GET /index.html 200\n", 200)},
		"/var/log/app/worker.log":       {Content: strings.Repeat("job done\n", 100)},
	})
	cron.sh("crond -b -c /var/spool/cron/crontabs -L /var/log/crond.log && sleep 0.2 && pidof crond")
	scopes = append(scopes, cron.scope)
	names[cron.ctr.ID] = "cron + logrotate"

	workload := func(name string, image map[string]runctest.File, run func(x *box)) {
		t.Run(name, func(t *testing.T) {
			x := newDebianBox(t, image)
			run(x)
			x.settle()
			// The container goes with the subtest; its events stay.
			scopes = append(scopes, x.scope)
			names[x.ctr.ID] = name
		})
	}
	// systemd as a node runs it, with Debian's own timers (their services
	// as the packages ship them), each told by a drop-in to fire 2 s
	// after boot rather than daily; Debian's redis-server.service starts
	// with the other units.
	t.Run("systemd running Debian's timers", func(t *testing.T) {
		timers := []string{"apt-daily", "apt-daily-upgrade", "dpkg-db-backup", "logrotate", "systemd-tmpfiles-clean"}
		image := map[string]runctest.File{
			// The users the packages' maintainer scripts would have made.
			"/etc/passwd": {Content: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n" +
				"_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\nredis:x:100:101::/var/lib/redis:/usr/sbin/nologin\n" +
				"postgres:x:101:102::/var/lib/postgresql:/bin/sh\n"},
			"/etc/group": {Content: "root:x:0:\nnogroup:x:65534:\nredis:x:101:\npostgres:x:102:\nadm:x:4:\n"},
			"/etc/systemd/system/timers.target.d/corpus.conf": {Content: "[Unit]\nWants=" + strings.Join(timers, ".timer ") + ".timer\n"},
			// The directories redis-server's postinst would have made,
			// made at boot by systemd-tmpfiles instead.
			// Debian's network is ifupdown's: on first boot, systemd's
			// presets would otherwise enable networkd, whose wait-online
			// holds network-online.target (and apt-daily) for 2 minutes on
			// a container with only loopback.
			"/etc/systemd/system-preset/10-corpus.preset": {Content: "disable systemd-networkd.service\ndisable systemd-networkd.socket\n" +
				"disable systemd-networkd-wait-online.service\n"},
			"/etc/tmpfiles.d/redis-corpus.conf": {Content: "d /var/lib/redis 0750 redis redis -\nd /var/log/redis 2750 redis adm -\n"},
		}
		for _, tm := range timers {
			image["/etc/systemd/system/"+tm+".timer.d/soon.conf"] = runctest.File{
				Content: "[Timer]\nOnCalendar=\nOnActiveSec=2s\nRandomizedDelaySec=0\nAccuracySec=100ms\nPersistent=false\n"}
		}
		ctr := runctest.Start(t, runctest.Options{Layers: []string{layer}, Applets: debianApplets, Image: image,
			Systemd: true, Args: []string{"/usr/lib/systemd/systemd"}})
		x := &box{t: t, r: r, ctr: ctr, scope: inContainer(ctr.ID)}
		services := strings.Join(timers, ".service ") + ".service"
		// Each timer's service has run once when it has left the inactive
		// state once (a job waiting to start is inactive too) and is back
		// in it or failed (systemctl answers once systemd is up, a few
		// seconds in).
		ran := func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := ctr.Exec(ctx, "sh", "-c", "systemctl show -p InactiveExitTimestampMonotonic --value "+services+"; "+
				"systemctl is-active "+services+" || true")
			f := strings.Fields(out)
			if err != nil || len(f) != 2*len(timers) {
				return false
			}
			for i, started := range f[:len(timers)] {
				if state := f[len(timers)+i]; started == "0" || state != "inactive" && state != "failed" {
					return false
				}
			}
			return true
		}
		deadline := time.Now().Add(90 * time.Second)
		for !ran() {
			if time.Now().After(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				out, err := ctr.Exec(ctx, "sh", "-c", "ps; systemctl list-timers --all --no-pager")
				so, _ := ctr.Stdout()
				t.Fatalf("Debian's timers did not all run: %v\n%s\nsystemd's output:\n%s", err, out, so)
			}
			time.Sleep(500 * time.Millisecond)
		}
		for _, svc := range append(strings.Fields(services), "redis-server.service") {
			if got := strings.TrimSpace(x.exec("systemctl", "show", "-p", "Result", "--value", svc)); got != "success" {
				t.Errorf("%s: result %q:\n%s", svc, got, x.exec("journalctl", "--no-pager", "-u", svc))
			}
		}
		x.settle()
		// What the timers and units ran, by program (a script's is its
		// path among the arguments; redis-server is a link to
		// redis-check-rdb).
		execs := map[string]int{}
		for _, ev := range r.snapshot(x.scope) {
			if ev.GetKind() == api.EventKind_EVENT_KIND_EXEC {
				execs[ev.GetProcess().GetExe()]++
				for _, a := range ev.GetProcess().GetArgs() {
					if strings.HasPrefix(a, "/usr/") {
						execs[a]++
					}
				}
			}
		}
		for _, program := range []string{"/usr/lib/systemd/systemd", "/usr/sbin/logrotate", "/usr/lib/apt/apt.systemd.daily",
			"/usr/libexec/dpkg/dpkg-db-backup", "/usr/bin/systemd-tmpfiles", "/usr/bin/redis-server"} {
			if execs[program] == 0 {
				t.Errorf("no exec of %s in the container's events (execs: %v)", program, execs)
			}
		}
		scopes = append(scopes, x.scope)
		names[ctr.ID] = "systemd timers"
	})
	workload("nginx serving static files", map[string]runctest.File{
		"/etc/corpus/nginx.conf": {Content: nginxConf},
		"/www/index.html":        {Content: "<html>hello</html>\n"},
		"/www/big.bin":           {Content: strings.Repeat("0123456789abcdef", 64<<10)},
	}, func(x *box) {
		x.sh("mkdir -p /var/log/nginx /var/lib/nginx && nginx -t -c /etc/corpus/nginx.conf 2>&1 && " +
			"nginx -c /etc/corpus/nginx.conf && waitport 8080")
		// 300 requests from short-lived clients, as a load balancer's
		// health checks and browsers would make them.
		x.sh("for i in $(seq 150); do wget -q -O /dev/null http://127.0.0.1:8080/index.html; done")
		x.sh("for i in $(seq 150); do wget -q -O /dev/null http://127.0.0.1:8080/big.bin; done")
		if n := strings.Count(x.exec("cat", "/var/log/nginx/access.log"), "\" 200 "); n != 300 {
			t.Errorf("nginx served %d requests with 200, want 300", n)
		}
		x.sh("nginx -c /etc/corpus/nginx.conf -s quit")
	})
	workload("redis under redis-benchmark", nil, func(x *box) {
		x.sh("redis-server --bind 127.0.0.1 --port 6379 --dir /tmp --daemonize yes --logfile /tmp/redis.log && waitport 6379")
		x.sh("for i in $(seq 50); do redis-cli -h 127.0.0.1 SET key:$i value-$i >/dev/null; done; " +
			"test \"$(redis-cli -h 127.0.0.1 GET key:42)\" = value-42")
		out := x.sh("redis-benchmark -h 127.0.0.1 -q -n 5000 -c 8 -t set,get,incr,lpush,lpop")
		if !strings.Contains(out, "SET:") || !strings.Contains(out, "GET:") {
			t.Errorf("redis-benchmark printed no SET/GET figures: %s", out)
		}
		x.sh("redis-cli -h 127.0.0.1 BGSAVE && sleep 0.5 && redis-cli -h 127.0.0.1 SHUTDOWN NOSAVE || true")
	})
	workload("C build with gcc and make", map[string]runctest.File{
		"/src/hello.c":  {Content: helloC},
		"/src/util.c":   {Content: utilC},
		"/src/util.h":   {Content: utilH},
		"/src/Makefile": {Content: cMakefile},
	}, func(x *box) {
		x.sh("cd /src && make CC=gcc")
		if out := x.exec("/src/hello"); strings.TrimSpace(out) != "sum 42" {
			t.Errorf("built program printed %q, want sum 42", out)
		}
		x.sh("cd /src && make clean >/dev/null 2>&1; rm -f hello *.o && make CC=gcc -j2 >/dev/null && ./hello >/dev/null")
	})
	workload("Go build with go build and go test", map[string]runctest.File{
		"/src/go/go.mod":       {Content: "module example.com/corpus\n\ngo 1.19\n"},
		"/src/go/main.go":      {Content: goMain},
		"/src/go/main_test.go": {Content: goTest},
	}, func(x *box) {
		goEnv := "export HOME=/root GOCACHE=/tmp/gocache GOPATH=/tmp/gopath GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0; cd /src/go && "
		x.sh(goEnv + "go vet ./... && go build -o /src/go/hello . 2>&1")
		if out := x.exec("/src/go/hello"); strings.TrimSpace(out) != "sum 42" {
			t.Errorf("built Go program printed %q, want sum 42", out)
		}
		x.sh(goEnv + "go test ./... 2>&1")
	})
	workload("apt-get install and upgrade of a local package", nil, func(x *box) {
		// An image with apt whose dpkg database starts empty (dpkg -x
		// installs no database).
		x.sh("mkdir -p /var/lib/dpkg/info /var/lib/dpkg/updates /var/lib/dpkg/triggers /var/lib/apt/lists/partial " +
			"/var/cache/apt/archives/partial /var/log/apt && touch /var/lib/dpkg/status /var/lib/dpkg/available")
		apt := "export DEBIAN_FRONTEND=noninteractive; apt-get -y -q "
		x.sh(apt + "install /srv/debs/harrier-corpus-hello_1.0_all.deb 2>&1")
		if out := x.exec("corpus-hello"); !strings.Contains(out, "hello from the corpus package 1.0") {
			t.Errorf("installed program printed %q", out)
		}
		// busybox's sh prefers its own applets (it has a dpkg): name Debian's.
		x.sh("/usr/bin/dpkg -s harrier-corpus-hello | grep -q 'Status: install ok installed' && grep -q 'configured 1.0' /var/lib/corpus-hello/state")
		x.sh(apt + "install /srv/debs/harrier-corpus-hello_1.1_all.deb 2>&1")
		if out := x.exec("corpus-hello"); !strings.Contains(out, "hello from the corpus package 1.1") {
			t.Errorf("upgraded program printed %q", out)
		}
		x.sh("grep -q 'configured 1.0' /var/lib/corpus-hello/state.before-upgrade && grep -q 'configured 1.1' /var/lib/corpus-hello/state")
		x.sh(apt + "remove harrier-corpus-hello 2>&1 && ! test -e /usr/bin/corpus-hello")
	})
	workload("apt-get update and upgrade from an HTTP repository", map[string]runctest.File{
		// The image as Debian's apt leaves it: its postinst made the _apt
		// user its http method drops to.
		"/etc/passwd": {Content: "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n"},
		"/etc/apt/sources.list": {Content: "deb [trusted=yes] http://127.0.0.1:8081/current/ ./\n"},
	}, func(x *box) {
		// apt's http method, as on a node, fetches as the _apt user from a
		// repository served by busybox httpd on the container's loopback;
		// /srv/repo/current is switched from the archive's 1.0 state to
		// its 1.1 state between the two updates.
		x.sh("mkdir -p /var/lib/dpkg/info /var/lib/dpkg/updates /var/lib/dpkg/triggers /var/lib/apt/lists/partial " +
			"/var/cache/apt/archives/partial /var/log/apt /etc/apt/sources.list.d && touch /var/lib/dpkg/status /var/lib/dpkg/available && " +
			"ln -sfn 1.0 /srv/repo/current && httpd -p 127.0.0.1:8081 -h /srv/repo && waitport 8081")
		apt := "export DEBIAN_FRONTEND=noninteractive; apt-get -y -q "
		x.sh(apt + "update 2>&1 && " + apt + "install harrier-corpus-hello 2>&1")
		if out := x.exec("corpus-hello"); !strings.Contains(out, "hello from the corpus package 1.0") {
			t.Errorf("program installed from the repository printed %q", out)
		}
		x.sh("ln -sfn 1.1 /srv/repo/current && " + apt + "update 2>&1 && " + apt + "upgrade 2>&1")
		if out := x.exec("corpus-hello"); !strings.Contains(out, "hello from the corpus package 1.1") {
			t.Errorf("program upgraded from the repository printed %q", out)
		}
		x.sh("grep -q 'configured 1.1' /var/lib/corpus-hello/state && pkill httpd || true")
	})
	t.Run("dpkg on the host upgrading a package in a sandbox root", func(t *testing.T) {
		// The host's own dpkg installs and upgrades the package into a
		// container's root file system (the host's packages are never
		// touched): dpkg, dpkg-deb and tar run as host processes, the
		// maintainer scripts chrooted into the root, as a node's package
		// upgrade runs them.
		x := newDebianBox(t, nil)
		root := x.ctr.Path("/")
		x.sh("mkdir -p /var/lib/dpkg/info /var/lib/dpkg/updates /var/lib/dpkg/triggers && touch /var/lib/dpkg/status /var/lib/dpkg/available")
		dpkg := testenv.RequireCommand(t, "dpkg", "Debian's dpkg")
		var pids []uint32
		for _, version := range []string{"1.0", "1.1"} {
			cmd := exec.Command(dpkg, "--root="+root, "--force-not-root", "-i", filepath.Join(root, "srv/debs/harrier-corpus-hello_"+version+"_all.deb"))
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("host dpkg -i %s: %v\n%s", version, err, out)
			}
			pids = append(pids, uint32(cmd.Process.Pid))
		}
		state, err := os.ReadFile(x.ctr.Path("/var/lib/corpus-hello/state"))
		if err != nil || !strings.Contains(string(state), "configured 1.1") {
			t.Errorf("after the host's upgrade the package's state is %q (%v)", state, err)
		}
		r.settled(t, func(args ...string) {
			if out, err := exec.Command(runctest.BusyboxPath, args...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", args, err, out)
			}
		})
		scope := underPIDs(pids...)
		if n := len(r.snapshot(scope)); n < 5 {
			t.Fatalf("only %d events from the host's dpkg", n)
		}
		scopes = append(scopes, scope)
		names[""] = "dpkg on the host"
	})
	workload("postgres with pgbench", nil, func(x *box) {
		pg := func(script string) string {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := x.ctr.ExecAs(ctx, 1000, 1000, "sh", "-c", "export LANG=C PATH="+pgBin+":$PATH HOME=/home/user; "+script)
			if err != nil {
				t.Fatalf("%s: %v\n%s", script, err, out)
			}
			return out
		}
		pg("initdb -D /home/user/pg -U postgres --auth=trust -E UTF8 >/home/user/initdb.log 2>&1 || { cat /home/user/initdb.log; exit 1; }")
		pg("pg_ctl -D /home/user/pg -l /home/user/pg.log -w -o '-c listen_addresses=127.0.0.1 -k /tmp' start >/dev/null || { cat /home/user/pg.log; exit 1; }")
		pg("createdb -h 127.0.0.1 -U postgres shop && " +
			"psql -h 127.0.0.1 -U postgres -d shop -v ON_ERROR_STOP=1 -q -c 'CREATE TABLE orders (id serial PRIMARY KEY, item text, qty int)' " +
			"-c \"INSERT INTO orders (item, qty) SELECT 'item' || g, g % 7 FROM generate_series(1, 1000) g\"")
		if out := pg("psql -h 127.0.0.1 -U postgres -d shop -tA -c 'SELECT count(*) FROM orders'"); strings.TrimSpace(out) != "1000" {
			t.Errorf("orders count %q, want 1000", out)
		}
		pg("pgbench -h 127.0.0.1 -U postgres -i -q shop >/dev/null 2>&1 && pgbench -h 127.0.0.1 -U postgres -c 4 -j 2 -t 200 shop >/dev/null")
		pg("pg_dump -h 127.0.0.1 -U postgres shop >/home/user/shop.sql && pg_ctl -D /home/user/pg -m fast -w stop >/dev/null")
	})

	// The cron job: wait for it to have run once (it runs every minute).
	// The log is read from the host through the container's root file
	// system: polling with runc exec would add a process per poll to the
	// container's events.
	jobLog := cron.ctr.Path("/var/log/corpus-job.log")
	testenv.WaitFor(t, 75*time.Second, "the cron job's logrotate run", func() bool {
		out, _ := os.ReadFile(jobLog)
		return strings.Contains(string(out), "rotated")
	})
	if out := cron.exec("ls", "/var/log/app"); !strings.Contains(out, "app.log.1.gz") {
		t.Errorf("logrotate did not rotate app.log: %s", out)
	}
	cron.settle()

	all := func(ev *api.Event) bool {
		for _, s := range scopes {
			if s(ev) {
				return true
			}
		}
		return false
	}
	if len(scopes) != 10 {
		t.Fatalf("%d of 10 workloads ran", len(scopes))
	}
	events := r.snapshot(all)
	kinds := map[api.EventKind]int{}
	type tally struct{ events, execs, connects, opens int }
	per := map[string]*tally{}
	for _, ev := range events {
		kinds[ev.GetKind()]++
		n := per[names[ev.GetContainer().GetId()]]
		if n == nil {
			n = &tally{}
			per[names[ev.GetContainer().GetId()]] = n
		}
		n.events++
		switch ev.GetKind() {
		case api.EventKind_EVENT_KIND_EXEC:
			n.execs++
		case api.EventKind_EVENT_KIND_CONNECT:
			n.connects++
		case api.EventKind_EVENT_KIND_FILE_OPEN:
			n.opens++
		}
	}
	for name, n := range per {
		t.Logf("%s: %d events, %d execs, %d connections, %d file opens", name, n.events, n.execs, n.connects, n.opens)
	}
	bySeverity := map[api.Severity]int{}
	for _, a := range r.alerts(t, analytics.Config{}, all) {
		bySeverity[a.GetSeverity()]++
		if a.GetSeverity() > api.Severity_SEVERITY_INFO {
			t.Errorf("benign %s raised %s (%v): %s (process %v)", names[a.GetContainer().GetId()], a.GetDetectionId(),
				a.GetSeverity(), a.GetSummary(), a.GetProcess().GetArgs())
		} else {
			t.Logf("info alert from %s: %s: %s", names[a.GetContainer().GetId()], a.GetDetectionId(), a.GetSummary())
		}
	}
	var sev []string
	for s := api.Severity_SEVERITY_INFO; s <= api.Severity_SEVERITY_CRITICAL; s++ {
		sev = append(sev, fmt.Sprintf("%s %d", strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_")), bySeverity[s]))
	}
	workloads := make([]string, 0, len(names))
	for _, n := range names {
		workloads = append(workloads, n)
	}
	slices.Sort(workloads)
	t.Logf("Debian corpus (%s): %d events: %d processes (execs), %d connections (%d accepts), %d file opens; alerts by severity: %s; %v in all",
		strings.Join(workloads, ", "), len(events), kinds[api.EventKind_EVENT_KIND_EXEC], kinds[api.EventKind_EVENT_KIND_CONNECT],
		kinds[api.EventKind_EVENT_KIND_ACCEPT], kinds[api.EventKind_EVENT_KIND_FILE_OPEN], strings.Join(sev, ", "),
		time.Since(start).Round(time.Second))
}
