package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/harrier-sec/harrier/internal/confval"
)

// In a cluster the attacker pod runs the harrier binary as the scripted
// driver: it plays a ClusterPlan (from a ConfigMap) through the victims'
// Services and writes one DriverLine per step to its log, which the
// simulator follows through the API server (pods/log). No exec into pods.

// Cluster roles of AttackerCommand (its --cluster flag).
const (
	RoleAttackerPod   = "attacker"
	RoleVictimSidecar = "victim-sidecar"
)

// Environment the simulator's pod specs set (the downward API); the
// cluster roles refuse to run without it.
const (
	namespaceEnv = "HARRIER_SIMULATE_NAMESPACE"
	podIPEnv     = "POD_IP"
)

// attackerPodIP is replaced in step commands by the driver with its own
// pod IP, which the simulator cannot know when it writes the plan.
const attackerPodIP = "{{attacker-pod-ip}}"

// ClusterPlan is what the driver plays.
type ClusterPlan struct {
	Scenarios []PlanScenario `json:"scenarios"`
	// VictimWait bounds how long the driver waits for the victims' web
	// servers to answer.
	VictimWait confval.Duration `json:"victimWait"`
}

// PlanScenario is one scenario's victim and the commands injected into it.
type PlanScenario struct {
	Name string `json:"name"`
	// Victim is the victim Service's address: an IP (port victimPort) or
	// IP:PORT.
	Victim string   `json:"victim"`
	Steps  []string `json:"steps"`
}

// ParsePlan reads a plan strictly: unknown fields, a victim that is not an
// IP address or a scenario without steps are errors.
func ParsePlan(b []byte) (ClusterPlan, error) {
	var p ClusterPlan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("plan: %w", err)
	}
	if len(p.Scenarios) == 0 {
		return p, errors.New("plan: no scenarios")
	}
	for i, s := range p.Scenarios {
		if _, err := victimAddr(s.Victim); err != nil {
			return p, fmt.Errorf("plan: scenario %d (%s): %w", i, s.Name, err)
		}
		if s.Name == "" || len(s.Steps) == 0 {
			return p, fmt.Errorf("plan: scenario %d: needs a name and steps", i)
		}
	}
	if p.VictimWait <= 0 {
		p.VictimWait = confval.Duration(2 * time.Minute)
	}
	return p, nil
}

// DriverLine is one line of the driver's log protocol. The key of Event is
// unusual on purpose: no other log line carries it.
type DriverLine struct {
	// Event is "ready" (every victim answered), "step", "done" or "error".
	Event    string `json:"harrierSimulate"`
	Scenario string `json:"scenario,omitempty"`
	// Step counts from 1.
	Step int `json:"step,omitempty"`
	// Sent is when the step's request was sent (the attacker pod's clock).
	Sent   time.Time `json:"sent,omitzero"`
	Status int       `json:"status,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// parseDriverLine returns the protocol line in a log line, if it is one.
func parseDriverLine(line []byte) (DriverLine, bool) {
	var d DriverLine
	if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("{")) || json.Unmarshal(line, &d) != nil || d.Event == "" {
		return DriverLine{}, false
	}
	return d, true
}

// Drive plays plan: it waits until every victim's page answers, then sends
// each step through its victim's vulnerable endpoint, one at a time,
// writing a DriverLine per step to out. It only ever requests the victims'
// addresses.
func Drive(ctx context.Context, plan ClusterPlan, podIP netip.Addr, client *http.Client, out io.Writer) error {
	enc := json.NewEncoder(out)
	deadline := time.Now().Add(plan.VictimWait.Std())
	for _, s := range plan.Scenarios {
		page := fmt.Sprintf("http://%s/index.html", hostPort(s.Victim))
		for {
			r := fetch(ctx, client, page)
			if r.Error == "" && r.Status == http.StatusOK {
				break
			}
			if err := context.Cause(ctx); err != nil {
				return err
			}
			if time.Now().After(deadline) {
				err := fmt.Errorf("victim %s (%s) never answered: status %d %s", s.Name, page, r.Status, r.Error)
				_ = enc.Encode(DriverLine{Event: "error", Scenario: s.Name, Error: err.Error()})
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := enc.Encode(DriverLine{Event: "ready"}); err != nil {
		return err
	}
	for _, s := range plan.Scenarios {
		for i, cmd := range s.Steps {
			cmd = strings.ReplaceAll(cmd, attackerPodIP, podIP.String())
			sent := time.Now()
			r := fetch(ctx, client, "http://"+hostPort(s.Victim)+injectPath(cmd))
			if err := context.Cause(ctx); err != nil {
				return err
			}
			if err := enc.Encode(DriverLine{Event: "step", Scenario: s.Name, Step: i + 1, Sent: sent, Status: r.Status, Error: r.Error}); err != nil {
				return err
			}
		}
	}
	return enc.Encode(DriverLine{Event: "done"})
}

// victimAddr reads a plan's victim: IP (port victimPort) or IP:PORT.
func victimAddr(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, victimPort), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("victim %q is not an IP address (with or without a port)", s)
	}
	return ap, nil
}

// hostPort is the victim's web server address (IPv6 in brackets).
func hostPort(victim string) string {
	ap, err := victimAddr(victim)
	if err != nil {
		return victim // ParsePlan refused it already
	}
	return ap.String()
}

// inPod checks the environment the simulator's pod specs set: the cluster
// roles listen on the pod's network and must not run anywhere else.
func inPod() (netip.Addr, error) {
	if os.Getenv(namespaceEnv) == "" {
		return netip.Addr{}, fmt.Errorf("not started by harrier simulate's pod spec (%s is not set)", namespaceEnv)
	}
	ip, err := netip.ParseAddr(os.Getenv(podIPEnv))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not started by harrier simulate's pod spec (%s: %w)", podIPEnv, err)
	}
	return ip, nil
}

// ServeClusterAttacker is the attacker pod: the miner download and
// threat-intel host (8000) and the fake pool (3333) on the pod's network,
// and the driver playing the plan at planPath. It keeps serving after the
// plan until ctx ends (the simulator deletes the pod).
func ServeClusterAttacker(ctx context.Context, planPath, miner string, out io.Writer, log *slog.Logger) error {
	podIP, err := inPod()
	if err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	b, err := os.ReadFile(planPath)
	if err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	plan, err := ParsePlan(b)
	if err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	srv := fakeServices{ctx: ctx, wg: &wg, log: log}
	if err := srv.http(":8000", srv.downloads(miner)); err != nil {
		return err
	}
	if err := srv.pool(":3333"); err != nil {
		return err
	}
	if err := Drive(ctx, plan, podIP, &http.Client{Timeout: 60 * time.Second}, out); err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	<-ctx.Done()
	return nil
}

// ServeVictimSidecar runs in the victim pod, sharing its network
// namespace: the fake metadata service on 169.254.169.254:80 (an address
// the init container put on the pod's loopback) and the pod's only DNS
// server on 127.0.0.1:53, answering the test domain with answer and
// NXDOMAIN otherwise, never forwarding. Nothing it serves leaves the pod.
func ServeVictimSidecar(ctx context.Context, answer netip.Addr, log *slog.Logger) error {
	if _, err := inPod(); err != nil {
		return fmt.Errorf("victim sidecar: %w", err)
	}
	if !answer.Is4() {
		return fmt.Errorf("victim sidecar: --answer %v is not an IPv4 address", answer)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	srv := fakeServices{ctx: ctx, wg: &wg, log: log}
	if err := srv.http(metadataIP+":80", srv.metadata()); err != nil {
		return err
	}
	if err := srv.dns("127.0.0.1:53", func(netip.Addr) netip.Addr { return answer }); err != nil {
		return err
	}
	log.Info("victim sidecar serving", "metadata", metadataIP+":80", "dns", "127.0.0.1:53", "answer", answer.String())
	<-ctx.Done()
	return nil
}
