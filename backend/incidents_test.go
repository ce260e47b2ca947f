package backend

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// story builds alerts for the grouping tests: where and when it happened
// and the process tree it came from.
type story struct {
	id, detection, node, container, pod, workload string
	at                                            time.Duration // after t0
	pid                                           uint32
	ancestry                                      []*api.Ancestor
	tactic                                        string
	sev                                           api.Severity
}

func (s story) alert() *api.Alert {
	node := cmp.Or(s.node, "node-1")
	a := &api.Alert{Id: s.id, DetectionId: cmp.Or(s.detection, "det-"+s.id), Name: s.id, Severity: s.sev, Node: node, Cluster: "edge",
		Count: 1, FirstSeen: timestamppb.New(t0.Add(s.at)), LastSeen: timestamppb.New(t0.Add(s.at)),
		Process:  &api.Process{Tgid: s.pid, Exe: "/bin/sh", Args: []string{"sh"}, StartTime: timestamppb.New(t0.Add(s.at))},
		Ancestry: s.ancestry}
	if a.Severity == 0 {
		a.Severity = api.Severity_SEVERITY_HIGH
	}
	if s.tactic != "" {
		a.Mitre = []*api.Mitre{{Tactic: s.tactic}}
	}
	if s.container != "" {
		a.Container = &api.Container{Runtime: "containerd", Id: s.container, Image: "img/" + s.container}
		if s.pod != "" {
			a.Container.PodName, a.Container.PodNamespace, a.Container.PodUid = s.pod, "shop", "uid-"+s.pod
		}
		if s.workload != "" {
			a.Container.WorkloadKind, a.Container.WorkloadName = "Deployment", s.workload
		}
	}
	return a
}

func anc(pid uint32, exe string, started time.Duration) *api.Ancestor {
	return &api.Ancestor{Pid: pid, Exe: exe, Args: []string{exe}, StartTime: timestamppb.New(t0.Add(started))}
}

// Container chains as the simulator's test makes them: the web server under
// runc under the test process that started every scenario (no hub: only the
// container boundary keeps two containers apart).
func inContainer(httpdPID, runcPID uint32) []*api.Ancestor {
	return []*api.Ancestor{anc(httpdPID, "/usr/sbin/httpd", -time.Minute), anc(runcPID, "/usr/bin/runc", -2*time.Minute),
		anc(900, "/tmp/go-build1/e2e.test", -time.Hour), anc(1, "/usr/lib/systemd/systemd", -48*time.Hour)}
}

func TestIncidentGrouping(t *testing.T) {
	sshd := anc(800, "/usr/sbin/sshd", -24*time.Hour)
	systemd := anc(1, "/usr/lib/systemd/systemd", -48*time.Hour)
	tests := []struct {
		name    string
		alerts  []story
		want    [][]string // alert IDs per incident
		window  time.Duration
		tactics []string // of the incident holding the first alert
	}{
		{"web shell in one container is one incident", []story{
			{id: "shell", container: "c1", pid: 101, ancestry: inContainer(100, 90), tactic: "Execution"},
			{id: "recon", container: "c1", pid: 102, at: time.Minute, ancestry: inContainer(100, 90), tactic: "Discovery"},
			{id: "download", container: "c1", pid: 103, at: 2 * time.Minute, ancestry: append([]*api.Ancestor{anc(101, "/bin/sh", 0)}, inContainer(100, 90)...), tactic: "Command and Control"},
			{id: "shadow", container: "c1", pid: 104, at: 3 * time.Minute, ancestry: inContainer(100, 90), tactic: "Credential Access"},
		}, [][]string{{"download", "recon", "shadow", "shell"}}, 0, []string{"Execution", "Credential Access", "Discovery", "Command and Control"}},
		{"two attacks on the same node under one parent process stay apart", []story{
			{id: "a1", container: "c1", pid: 101, ancestry: inContainer(100, 90)},
			{id: "b1", container: "c2", pid: 201, ancestry: inContainer(200, 190)},
			{id: "a2", container: "c1", pid: 102, at: time.Minute, ancestry: inContainer(100, 90)},
			{id: "b2", container: "c2", pid: 202, at: time.Minute, ancestry: inContainer(200, 190)},
		}, [][]string{{"a1", "a2"}, {"b1", "b2"}}, 0, nil},
		{"two SSH sessions on one host stay apart", []story{
			{id: "s1", pid: 301, ancestry: []*api.Ancestor{anc(300, "/bin/bash", -time.Minute), anc(299, "/usr/sbin/sshd", -2*time.Minute), sshd, systemd}},
			{id: "s2", pid: 401, at: time.Minute, ancestry: []*api.Ancestor{anc(400, "/bin/bash", -time.Minute), anc(399, "/usr/sbin/sshd", -2*time.Minute), sshd, systemd}},
			{id: "s1b", pid: 302, at: 2 * time.Minute, ancestry: []*api.Ancestor{anc(300, "/bin/bash", -time.Minute), anc(299, "/usr/sbin/sshd", -2*time.Minute), sshd, systemd}},
		}, [][]string{{"s1", "s1b"}, {"s2"}}, 0, nil},
		{"an escape to the host joins the container's incident by ancestry", []story{
			{id: "in", container: "c1", pid: 101, ancestry: inContainer(100, 90)},
			{id: "host", pid: 150, at: time.Minute, ancestry: append([]*api.Ancestor{anc(101, "/bin/sh", 0)}, inContainer(100, 90)...)},
		}, [][]string{{"host", "in"}}, 0, nil},
		{"the same container hours later is a new incident", []story{
			{id: "early", container: "c1", pid: 101, ancestry: inContainer(100, 90)},
			{id: "late", container: "c1", pid: 501, at: 3 * time.Hour, ancestry: inContainer(500, 490)},
		}, [][]string{{"early"}, {"late"}}, 0, nil},
		{"a longer window keeps them together", []story{
			{id: "early", container: "c1", pid: 101, ancestry: inContainer(100, 90)},
			{id: "late", container: "c1", pid: 501, at: 3 * time.Hour, ancestry: inContainer(500, 490)},
		}, [][]string{{"early", "late"}}, 4 * time.Hour, nil},
		{"an alert linking two incidents merges them", []story{
			{id: "x", container: "c1", pid: 101, ancestry: inContainer(100, 90)},
			{id: "y", container: "c2", pid: 201, ancestry: inContainer(200, 190)},
			// kubectl exec from c1's shell into c2 would not look like
			// this, but a process of c2 descending from c1's is the link.
			{id: "bridge", container: "c2", pid: 202, at: time.Minute, ancestry: append([]*api.Ancestor{anc(101, "/bin/sh", 0)}, inContainer(100, 90)...)},
		}, [][]string{{"bridge", "x", "y"}}, 0, nil},
		{"replicas of one workload are one incident; another workload is not", []story{
			{id: "r1", container: "c1", pod: "web-1", workload: "web", pid: 101, ancestry: inContainer(100, 90)},
			{id: "r2", container: "c2", pod: "web-2", workload: "web", pid: 201, at: time.Minute, ancestry: inContainer(200, 190)},
			{id: "db", container: "c3", pod: "db-0", workload: "db", pid: 301, at: time.Minute, ancestry: inContainer(300, 290)},
		}, [][]string{{"db"}, {"r1", "r2"}}, 0, nil},
		{"containers of one pod are one incident", []story{
			{id: "app", container: "c1", pod: "web-1", pid: 101, ancestry: inContainer(100, 90)},
			{id: "sidecar", container: "c2", pod: "web-1", pid: 201, ancestry: inContainer(200, 190)},
		}, [][]string{{"app", "sidecar"}}, 0, nil},
		{"same host process tree on two nodes stays apart", []story{
			{id: "n1", node: "node-1", pid: 101, ancestry: []*api.Ancestor{anc(100, "/bin/bash", 0)}},
			{id: "n2", node: "node-2", pid: 101, ancestry: []*api.Ancestor{anc(100, "/bin/bash", 0)}},
		}, [][]string{{"n1"}, {"n2"}}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t, BadgerConfig{IncidentWindow: tc.window})
			for i, st := range tc.alerts {
				mustIngest(t, s, "agent-"+st.node, &api.Batch{Records: []*api.Record{alertRec(uint64(i+1), st.alert())}})
			}
			got := incidentGroups(t, s)
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("incidents %v, want %v", got, tc.want)
			}
			if tc.tactics != nil {
				id, ok := s.IncidentOf(tc.alerts[0].id)
				if !ok {
					t.Fatal("first alert has no incident")
				}
				inc, err := s.Incident(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(inc.Tactics, tc.tactics) {
					t.Errorf("tactics %v, want %v", inc.Tactics, tc.tactics)
				}
			}
			// The same grouping comes back from the stored alerts.
			dir := s.cfg.Dir
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			re := openTestStore(t, BadgerConfig{Dir: dir, IncidentWindow: tc.window})
			if again := incidentGroups(t, re); !slices.EqualFunc(again, tc.want, slices.Equal) {
				t.Errorf("after reopen: incidents %v, want %v", again, tc.want)
			}
		})
	}
}

// incidentGroups lists each incident's alert IDs, sorted, incidents
// ordered by their first ID.
func incidentGroups(t *testing.T, s *BadgerStore) [][]string {
	t.Helper()
	incs, err := s.Incidents(context.Background(), IncidentQuery{Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, l := range incs {
		inc, err := s.Incident(context.Background(), l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if inc.Alerts != len(inc.AlertIDs) {
			t.Errorf("incident %s counts %d alerts, lists %d", inc.ID, inc.Alerts, len(inc.AlertIDs))
		}
		ids := slices.Clone(inc.AlertIDs)
		slices.Sort(ids)
		out = append(out, ids)
	}
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return out
}

func TestIncidentRankingAndRepeats(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	low := story{id: "low", container: "c9", pid: 901, sev: api.Severity_SEVERITY_LOW}.alert()
	mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{
		alertRec(1, low),
		alertRec(2, story{id: "crit", container: "c1", pid: 101, sev: api.Severity_SEVERITY_CRITICAL, tactic: "Execution"}.alert()),
		alertRec(3, story{id: "crit2", container: "c1", pid: 102, at: time.Minute, tactic: "Impact"}.alert()),
	}})
	// A repeat of the low alert counts, and does not add an alert.
	rep := story{id: "low", container: "c9", pid: 901, at: 5 * time.Minute, sev: api.Severity_SEVERITY_LOW}.alert()
	rep.Count = 7
	mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{alertRec(4, rep)}})

	incs, err := s.Incidents(context.Background(), IncidentQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(incs) != 2 {
		t.Fatalf("%d incidents, want 2: %+v", len(incs), incs)
	}
	top, bottom := incs[0], incs[1]
	// crit (40) + crit2 high (20) + one more tactic (10).
	if top.Score != 70 || top.Severity != api.Severity_SEVERITY_CRITICAL || top.Alerts != 2 {
		t.Errorf("top incident %+v, want score 70, critical, 2 alerts", top)
	}
	if bottom.Alerts != 1 || bottom.Events != 7 || !bottom.LastSeen.Equal(t0.Add(5*time.Minute)) || bottom.Score != 3 {
		t.Errorf("repeated alert's incident %+v, want 1 alert, 7 events, last seen +5m, score 3", bottom)
	}
	if !strings.HasPrefix(top.Title, "det-crit, det-crit2 on ") {
		t.Errorf("title %q", top.Title)
	}
	if got, err := s.Incidents(context.Background(), IncidentQuery{Severity: api.Severity_SEVERITY_HIGH}); err != nil || len(got) != 1 {
		t.Errorf("severity filter: %v %v", got, err)
	}
	if _, err := s.Incident(context.Background(), "inc-nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown incident: %v", err)
	}
}

// TestIncidentsWhileIngesting reads incidents, the alert list and the
// overview while alerts are ingested (run with -race).
func TestIncidentsWhileIngesting(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			a := story{id: "a" + strconv.Itoa(i), container: "c" + strconv.Itoa(i%5), pid: uint32(100 + i), at: time.Duration(i) * time.Second}.alert()
			if _, err := s.Ingest(ctx, "agent", &api.Batch{Records: []*api.Record{alertRec(uint64(i+1), a)}}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			incs, err := s.Incidents(ctx, IncidentQuery{})
			if err != nil || len(incs) != 5 {
				t.Fatalf("%d incidents (%v), want 5", len(incs), err)
			}
			return
		default:
		}
		if _, err := s.Incidents(ctx, IncidentQuery{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Alerts(ctx, AlertQuery{}); err != nil {
			t.Fatal(err)
		}
		_ = s.incidents.overview(t0.Add(-time.Hour), t0.Add(time.Hour), 12)
	}
}
