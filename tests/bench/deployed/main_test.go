package main

import (
	"os"
	"slices"
	"testing"
)

func TestMetricSum(t *testing.T) {
	body := []byte(`# HELP harrier_sensor_queue_dropped_total x
harrier_sensor_queue_dropped_total{kind="exec"} 2
harrier_sensor_queue_dropped_total{kind="file_open"} 3.5
harrier_sensor_queue_dropped_total_extra 100
harrier_uplink_connected 1
`)
	if got := metricSum(body, "harrier_sensor_queue_dropped_total"); got != 5.5 {
		t.Errorf("dropped = %v, want 5.5", got)
	}
	if got := metricSum(body, "harrier_uplink_connected"); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
}

func TestAuditPID(t *testing.T) {
	status := "enabled 1\nfailure 1\npid 4242\nrate_limit 0\n"
	if got := auditPID(status); got != 4242 {
		t.Errorf("auditPID = %d, want 4242", got)
	}
	if got := auditPID("enabled 0\npid 0\n"); got != 0 {
		t.Errorf("auditPID = %d, want 0", got)
	}
}

func TestProcOfSelf(t *testing.T) {
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	m, err := procMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("memory %+v: want 0 < RSS <= peak", m)
	}
}

func TestRowsAndTargets(t *testing.T) {
	s := allStorms("/etc/shadow")[0] // exec: wall 1.05, CPU 1.10
	rep := &report{Monitors: []string{monNone, monAgent, monAuditd}}
	runs := []runRecord{
		{Monitor: monNone, Seconds: 1, WorkloadCPUSeconds: 1},
		{Monitor: monNone, Seconds: 1.2, WorkloadCPUSeconds: 1},
		{Monitor: monAgent, Seconds: 1.04, WorkloadCPUSeconds: 1, MonitorCPUSeconds: 0.2, IdleRSS: 40 << 20, PeakRSS: 60 << 20},
		{Monitor: monAgent, Seconds: 1.16, WorkloadCPUSeconds: 1, MonitorCPUSeconds: 0.2, IdleRSS: 40 << 20, PeakRSS: 70 << 20},
		{Monitor: monAuditd, Seconds: 2, WorkloadCPUSeconds: 2},
	}
	rep.add(s, runs)
	if len(rep.Rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rep.Rows))
	}
	agent := rep.Rows[1]
	if agent.Wall < 0.999 || agent.Wall > 1.001 {
		t.Errorf("agent wall ratio %v, want 1.00", agent.Wall)
	}
	if agent.CPU < 1.199 || agent.CPU > 1.201 {
		t.Errorf("agent CPU ratio %v, want 1.20", agent.CPU)
	}
	if !slices.Equal(agent.Misses, []string{"CPU > 1.10"}) {
		t.Errorf("agent misses %q, want the CPU target only", agent.Misses)
	}
	if agent.PeakRSS != 70<<20 {
		t.Errorf("peak RSS %d, want the highest", agent.PeakRSS)
	}
	if auditd := rep.Rows[2]; auditd.Targeted || len(auditd.Misses) > 0 {
		t.Errorf("auditd row is held to targets: %+v", auditd)
	}
	if rep.allPass() {
		t.Error("allPass with a miss")
	}
}

func TestCheckFiles(t *testing.T) {
	o, err := parseFlags([]string{"-storms", "open-etc,open-watched"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.storms) != 2 || o.monitors[0] != monNone {
		t.Fatalf("storms %v, monitors %v", o.storms, o.monitors)
	}
	if _, err := parseFlags([]string{"-watched-file", "/etc/debian_version"}, os.Stderr); err == nil {
		t.Error("an unwatched -watched-file was accepted")
	}
}
