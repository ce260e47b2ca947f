package simulate

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Report is the outcome of a simulation, like a test report.
type Report struct {
	Scenarios []ScenarioReport `json:"scenarios"`
	// Unexpected are alerts from the sandbox's containers that no
	// scenario explains.
	Unexpected []AlertRef `json:"unexpected"`
	// Notes say what was not checked and why.
	Notes []string `json:"notes,omitempty"`
	// Error says why the run stopped early; the report is partial then.
	Error string `json:"error,omitempty"`
}

// ScenarioReport is one scenario's alerts.
type ScenarioReport struct {
	Name      string        `json:"name"`
	Title     string        `json:"title"`
	Container string        `json:"container"` // the victim's container ID
	Alerts    []AlertResult `json:"alerts"`
}

// Roles of an alert in a scenario.
const (
	RoleExpected    = "expected"
	RoleExplained   = "explained"
	RoleClusterOnly = "cluster-only"
)

// AlertResult is one expected (or explained) alert of a scenario.
type AlertResult struct {
	Detection api.DetectionID `json:"detection"`
	Role      string          `json:"role"`
	Seen      bool            `json:"seen"`
	// Latency is from the behaviour (the request that caused it) to the
	// alert being visible at the backend API.
	Latency time.Duration `json:"latency_ns,omitempty"`
	Alert   *AlertRef     `json:"alert,omitempty"`
}

// AlertRef is the part of an alert the report shows.
type AlertRef struct {
	ID        string   `json:"id"`
	Detection string   `json:"detection"`
	Container string   `json:"container"`
	Exe       string   `json:"exe"`
	Args      []string `json:"args"`
	// Ancestry lists the ancestors' argv[0] (busybox applets share one
	// executable), parent first.
	Ancestry []string `json:"ancestry"`
	Summary  string   `json:"summary"`
}

func refOf(a *api.Alert) *AlertRef {
	r := &AlertRef{ID: a.GetId(), Detection: a.GetDetectionId(), Container: a.GetContainer().GetId(),
		Exe: a.GetProcess().GetExe(), Args: a.GetProcess().GetArgs(), Summary: a.GetSummary()}
	for _, an := range a.GetAncestry() {
		name := an.GetExe()
		if args := an.GetArgs(); len(args) > 0 {
			name = args[0]
		}
		r.Ancestry = append(r.Ancestry, name)
	}
	return r
}

// Missing counts expected alerts that were not seen.
func (r *Report) Missing() int {
	n := 0
	for _, s := range r.Scenarios {
		for _, a := range s.Alerts {
			if a.Role == RoleExpected && !a.Seen {
				n++
			}
		}
	}
	return n
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tEXPECTED ALERT\tSEEN\tLATENCY\tPROCESS")
	for _, s := range r.Scenarios {
		for _, a := range s.Alerts {
			seen, lat, proc := "no", "-", "-"
			switch {
			case a.Role == RoleClusterOnly:
				seen = "n/a (cluster only)"
			case a.Seen:
				seen = "yes"
				lat = a.Latency.Round(10 * time.Millisecond).String()
				proc = a.Alert.Exe
				if len(a.Alert.Args) > 0 {
					proc = a.Alert.Args[0]
				}
			case a.Role == RoleExplained:
				seen = "no (optional)"
			}
			name := a.Detection
			if a.Role == RoleExplained {
				name += " (also)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Title, name, seen, lat, proc)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(r.Unexpected) == 0 {
		fmt.Fprintln(w, "Unexpected alerts from the sandbox: none")
	} else {
		fmt.Fprintln(w, "Unexpected alerts from the sandbox:")
		for _, a := range r.Unexpected {
			fmt.Fprintf(w, "  %s in %s: %s (%s)\n", a.Detection, a.Container, a.Summary, strings.Join(a.Args, " "))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "Note:", n)
	}
	if r.Error != "" {
		fmt.Fprintln(w, "INCOMPLETE:", r.Error)
		return nil
	}
	if m := r.Missing(); m > 0 {
		fmt.Fprintf(w, "FAIL: %d expected alert(s) missing\n", m)
	} else {
		fmt.Fprintln(w, "PASS: every expected alert reached the backend")
	}
	return nil
}
