package export

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// The fields of a Falco JSON alert (Falco's json_output, as its
// documentation "Falco Outputs: JSON output" and falcosidekick's Falco
// payload type list them); falcosidekick needs each of them.
var falcoRequired = []string{"time", "rule", "priority", "output", "output_fields", "source", "tags", "hostname"}

// Falco's priority names (falco.yaml: priority).
var falcoPriorities = []string{"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"}

func TestFalcoJSON(t *testing.T) {
	a := sampleAlert()
	a.Tags = map[string]string{"team": "soc", "canary": ""}
	b, err := EncodeFalco(a, "0.9.0")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range falcoRequired {
		if _, ok := m[f]; !ok {
			t.Errorf("required field %s missing", f)
		}
	}
	if !slices.Contains(falcoPriorities, m["priority"].(string)) {
		t.Errorf("priority %v is not one of Falco's", m["priority"])
	}
	if ts, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil || !ts.Equal(a.GetLastSeen().AsTime()) {
		t.Errorf("time %v: %v", m["time"], err)
	}
	want := map[string]any{
		"rule": "Sensitive file opened", "priority": "Error", "source": "syscall", "hostname": "node-a", "uuid": "node-a-42",
		"output": "05:31:00.123456000: Error cat read /etc/shadow in shop/web-0",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	of := m["output_fields"].(map[string]any)
	wantFields := map[string]any{
		"evt.time": float64(a.GetLastSeen().AsTime().UnixNano()), "proc.name": "cat", "proc.exepath": "/usr/bin/cat",
		"proc.cmdline": "cat /etc/shadow", "proc.pid": float64(4242), "proc.ppid": float64(1), "user.uid": float64(0),
		"container.id": "0123abcd", "container.name": "web", "container.image.repository": "nginx:1.27",
		"k8s.ns.name": "shop", "k8s.pod.name": "web-0", "k8s.pod.uid": "uid-1", "harrier.event.id": "node-a-42",
		"harrier.count": float64(3), "harrier.cluster": "prod",
	}
	for k, v := range wantFields {
		if of[k] != v {
			t.Errorf("output_fields[%s] = %v, want %v", k, of[k], v)
		}
	}
	if len(of) != len(wantFields) {
		t.Errorf("output_fields has %d fields, want %d: %v", len(of), len(wantFields), of)
	}
	tags, _ := json.Marshal(m["tags"])
	if string(tags) != `["canary","team=soc","T1552.001","mitre_credential_access"]` {
		t.Errorf("tags %s", tags)
	}
}

// The ECS fields every document must have (ECS field reference: the Base
// field set's @timestamp and ecs.version are "required"), then the ones
// Harrier fills, each with the value written from the sample.
var ecsRequired = []string{"@timestamp", "ecs.version"}

func TestECS(t *testing.T) {
	a := sampleAlert()
	a.Container.ImageDigest = "sha256:abc"
	a.Tags = map[string]string{"team": "soc"}
	b, err := EncodeECS(a, "0.9.0")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range ecsRequired {
		if v, ok := lookup(m, f); !ok || v == "" {
			t.Errorf("required field %s missing", f)
		}
	}
	want := map[string]string{
		"@timestamp": "2026-12-06T05:31:00.123456Z", "ecs.version": ecsVersion,
		"message":    "cat read /etc/shadow in shop/web-0",
		"event.kind": "alert", "event.category": `["intrusion_detection"]`, "event.type": `["info"]`, "event.id": "node-a-42",
		"event.start": "2026-12-06T05:30:00.123456Z", "event.end": "2026-12-06T05:31:00.123456Z", "event.severity": "73",
		"event.module": "harrier", "event.dataset": "harrier.head", "event.provider": "harrier",
		"rule.id": "sensitive-files", "rule.name": "Sensitive file opened", "rule.ruleset": "harrier", "rule.description": "A process read /etc/shadow.",
		"host.name": "node-a", "host.hostname": "node-a",
		"process.pid": "4242", "process.name": "cat", "process.executable": "/usr/bin/cat", "process.command_line": "cat /etc/shadow",
		"process.args": `["cat","/etc/shadow"]`, "process.args_count": "2", "process.parent.pid": "1", "process.user.id": "0", "user.id": "0",
		"container.id": "0123abcd", "container.name": "web", "container.runtime": "containerd", "container.image.name": "nginx:1.27",
		"container.image.hash.all": `["sha256:abc"]`,
		"orchestrator.type":        "kubernetes", "orchestrator.cluster.name": "prod", "orchestrator.namespace": "shop",
		"orchestrator.resource.type": "pod", "orchestrator.resource.name": "web-0", "orchestrator.resource.id": "uid-1",
		"threat.framework": "MITRE ATT&CK", "threat.technique.id": `["T1552.001"]`, "threat.technique.name": `["Credentials In Files"]`,
		"threat.tactic.name": `["Credential Access"]`,
		"observer.vendor":    "Harrier", "observer.product": "Harrier", "observer.version": "0.9.0", "observer.type": "ids",
		"labels.harrier_severity": "high", "labels.harrier_count": "3", "labels.team": "soc",
	}
	for path, w := range want {
		v, ok := lookup(m, path)
		got := ""
		if s, isStr := v.(string); isStr {
			got = s
		} else {
			j, _ := json.Marshal(v)
			got = string(j)
		}
		if !ok || got != w {
			t.Errorf("%s = %s, want %s", path, got, w)
		}
	}
	// Nothing but ECS field sets at the top level.
	for k := range m {
		if !slices.Contains([]string{"@timestamp", "ecs", "message", "event", "rule", "host", "process", "user", "container", "orchestrator", "threat", "observer", "labels"}, k) {
			t.Errorf("top-level field %s is not an ECS field set", k)
		}
	}
}

func FuzzEncodeFalcoECS(f *testing.F) {
	for _, s := range hostileSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, enc := range map[string]encoder{"falco": EncodeFalco, "ecs": EncodeECS} {
			b, err := enc(hostileAlert(s), s)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil || strings.ContainsAny(string(b), "\n\r") {
				t.Fatalf("%s: not one JSON line: %v", name, err)
			}
		}
	})
}
