package response

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// DryRunReport is what the policies would have done with past alerts.
type DryRunReport struct {
	// Alerts is how many alerts were replayed, from From to To (their
	// first sight).
	Alerts   int             `json:"alerts"`
	From     time.Time       `json:"from,omitzero"`
	To       time.Time       `json:"to,omitzero"`
	Policies []*PolicyDryRun `json:"policies"`
}

// PolicyDryRun is one policy's part of a dry run.
type PolicyDryRun struct {
	Policy string `json:"policy"`
	Mode   string `json:"mode"`
	// Alerts is how many alerts it took an action on (after the merge of
	// policies naming the same action).
	Alerts  int               `json:"alerts"`
	Actions []*ActionDryRun   `json:"actions,omitempty"`
	Refused map[string]int    `json:"refused,omitempty"` // by reason class: kubelet, runtime, kube-system, host-init, agent, target
	Breaker BreakerDryRun     `json:"breaker"`
	alerts  map[string]bool   // alert IDs counted in Alerts
	byKey   map[[2]string]int // action, mode -> index in Actions
}

// BreakerDryRun is what the policy's circuit breaker would have done.
type BreakerDryRun struct {
	Trips int `json:"trips"`
	// Audited are the actions only audited while it was open.
	Audited int `json:"audited"`
}

// ActionDryRun counts one action of a policy in one mode: how many times
// and on how many distinct targets.
type ActionDryRun struct {
	Action string `json:"action"`
	// Mode is enforce (it would have been done) or audit (only recorded).
	Mode  string `json:"mode"`
	Count int    `json:"count"`
	// Distinct targets: processes (node, PID, start time), containers,
	// pods, processes on the host, executables.
	Processes     int `json:"processes"`
	Containers    int `json:"containers"`
	Pods          int `json:"pods"`
	HostProcesses int `json:"hostProcesses"`
	Executables   int `json:"executables"`
	seen          map[string]bool
}

// DryRun replays alerts, oldest first, through the policies as the agent
// would: each alert once (the agent acts on an alert when it is new), the
// protected targets refused as far as the alerts tell (their processes
// are gone: a process that merely looked like a daemon is not caught), and
// each enforcing policy's circuit breaker timed by the alerts' first
// sight. Nothing is done.
func DryRun(f *File, alerts []*api.Alert) *DryRunReport {
	alerts = slices.Clone(alerts)
	slices.SortStableFunc(alerts, func(x, y *api.Alert) int { return alertTime(x).Compare(alertTime(y)) })
	rep := &DryRunReport{Alerts: len(alerts)}
	if len(alerts) > 0 {
		rep.From, rep.To = alertTime(alerts[0]), alertTime(alerts[len(alerts)-1])
	}
	byPolicy := map[string]*PolicyDryRun{}
	for _, p := range f.Policies {
		pr := &PolicyDryRun{Policy: p.Name, Mode: p.Mode, alerts: map[string]bool{}, byKey: map[[2]string]int{}}
		byPolicy[p.Name] = pr
		rep.Policies = append(rep.Policies, pr)
	}
	g := newGuard(OfflineProtection())
	for i, a := range alerts {
		for _, d := range f.Decide(a) {
			pr := byPolicy[d.Policy]
			id := a.GetId()
			if id == "" {
				id = "#" + strconv.Itoa(i)
			}
			pr.alerts[id] = true
			pr.Alerts = len(pr.alerts)
			ad := g.admit(f, a, d, alertTime(a))
			if v := ad.breaker; v != nil {
				if v.tripped {
					pr.Breaker.Trips++
				}
				if !v.enforce {
					pr.Breaker.Audited++
				}
			}
			if ad.refused != "" {
				pr.refuse(g.protect.Check(a).Class)
				continue
			}
			if targetMissing(a, d.Action) {
				pr.refuse("target")
				continue
			}
			pr.count(a, d.Action, ad.mode)
		}
	}
	return rep
}

// alertTime is when the agent would have acted on a: its first sight.
func alertTime(a *api.Alert) time.Time {
	if t := a.GetFirstSeen(); t != nil {
		return t.AsTime()
	}
	return a.GetLastSeen().AsTime()
}

// targetMissing says whether the responder would refuse action for want
// of a target in the alert.
func targetMissing(a *api.Alert, action string) bool {
	p := a.GetProcess()
	switch {
	case containerOnly(action):
		return a.GetContainer().GetId() == ""
	case p.GetTgid() == 0 || p.GetStartTime() == nil:
		return true
	case action == ActionQuarantine:
		return !strings.HasPrefix(p.GetExe(), "/")
	}
	return false
}

func (pr *PolicyDryRun) refuse(class string) {
	if pr.Refused == nil {
		pr.Refused = map[string]int{}
	}
	pr.Refused[class]++
}

func (pr *PolicyDryRun) count(a *api.Alert, action, mode string) {
	k := [2]string{action, mode}
	i, ok := pr.byKey[k]
	if !ok {
		i = len(pr.Actions)
		pr.byKey[k] = i
		pr.Actions = append(pr.Actions, &ActionDryRun{Action: action, Mode: mode, seen: map[string]bool{}})
	}
	ac := pr.Actions[i]
	ac.Count++
	c, p := a.GetContainer(), a.GetProcess()
	node := a.GetNode()
	once := func(key string, n *int) {
		if !ac.seen[key] {
			ac.seen[key] = true
			*n++
		}
	}
	if p.GetTgid() != 0 && !containerOnly(action) {
		once("p/"+node+"/"+strconv.Itoa(int(p.GetTgid()))+"/"+p.GetStartTime().AsTime().String(), &ac.Processes)
		if c.GetId() == "" {
			once("h/"+node+"/"+strconv.Itoa(int(p.GetTgid()))+"/"+p.GetStartTime().AsTime().String(), &ac.HostProcesses)
		}
	}
	if c.GetId() != "" {
		once("c/"+node+"/"+c.GetId(), &ac.Containers)
	}
	if c.GetPodName() != "" {
		once("pod/"+a.GetCluster()+"/"+c.GetPodNamespace()+"/"+c.GetPodName(), &ac.Pods)
	}
	if action == ActionQuarantine {
		once("x/"+node+"/"+p.GetExe(), &ac.Executables)
	}
}

// actionWords are each action's past tense and its object.
var actionWords = map[string][2]string{
	ActionKillProcessTree: {"killed", "process"},
	ActionBlockNetwork:    {"blocked the network of", "container"},
	ActionPauseContainer:  {"paused", "container"},
	ActionStopContainer:   {"stopped", "container"},
	ActionQuarantine:      {"quarantined", "executable"},
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "s") {
		return strconv.Itoa(n) + " " + noun + "es"
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// Sentence says what one action would have done: "would have killed 3
// processes in 2 pods".
func (ac *ActionDryRun) Sentence() string {
	w := actionWords[ac.Action]
	var n int
	switch w[1] {
	case "process":
		n = ac.Processes
	case "container":
		n = ac.Containers
	case "executable":
		n = ac.Executables
	}
	s := "would have " + w[0] + " " + plural(n, w[1])
	var where []string
	if ac.Pods > 0 {
		where = append(where, "in "+plural(ac.Pods, "pod"))
	}
	if w[1] != "container" && ac.HostProcesses > 0 && ac.HostProcesses != n {
		where = append(where, plural(ac.HostProcesses, "process")+" on the host")
	} else if w[1] != "container" && ac.HostProcesses > 0 {
		where = append(where, "on the host")
	}
	if len(where) > 0 {
		s += " " + strings.Join(where, ", ")
	}
	s += fmt.Sprintf(" (%s, %s)", ac.Action, plural(ac.Count, "alert"))
	if ac.Mode == ModeAudit {
		s = "audit only: " + s
	}
	return s
}

// Write prints the report for people.
func (rep *DryRunReport) Write(w io.Writer) error {
	var b strings.Builder
	if rep.Alerts == 0 {
		b.WriteString("no alerts to replay\n")
	} else {
		fmt.Fprintf(&b, "replayed %s from %s to %s\n", plural(rep.Alerts, "alert"),
			rep.From.UTC().Format(time.RFC3339), rep.To.UTC().Format(time.RFC3339))
	}
	for _, pr := range rep.Policies {
		fmt.Fprintf(&b, "%s (%s): %s matched\n", pr.Policy, pr.Mode, plural(pr.Alerts, "alert"))
		for _, ac := range pr.Actions {
			fmt.Fprintf(&b, "  %s\n", ac.Sentence())
		}
		classes := make([]string, 0, len(pr.Refused))
		for c := range pr.Refused {
			classes = append(classes, c)
		}
		slices.Sort(classes)
		for _, c := range classes {
			what := "protected target: " + c
			if c == "target" {
				what = "the alert names no target for the action"
			}
			fmt.Fprintf(&b, "  would have refused %s (%s)\n", plural(pr.Refused[c], "action"), what)
		}
		if pr.Breaker.Trips > 0 {
			fmt.Fprintf(&b, "  circuit breaker would have tripped %s; %s only audited while it was open\n",
				plural(pr.Breaker.Trips, "time"), plural(pr.Breaker.Audited, "action"))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
