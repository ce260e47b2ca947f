package export

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Falco-compatible JSON: the shape of Falco's json_output (time, rule,
// priority, output, output_fields, source, tags, hostname), so
// falcosidekick and the tools that read Falco's alerts read Harrier's.
// output_fields uses Falco's field names where one exists.

// EncodeFalco writes the alert as one Falco JSON alert.
func EncodeFalco(a *api.Alert, _ string) ([]byte, error) {
	last := a.GetLastSeen().AsTime()
	if a.GetLastSeen() == nil {
		last = a.GetFirstSeen().AsTime()
	}
	p, c := a.GetProcess(), a.GetContainer()
	fields := map[string]any{
		"evt.time":         last.UnixNano(),
		"harrier.event.id": a.GetId(),
		"harrier.count":    a.GetCount(),
	}
	set := func(k string, v any) {
		switch x := v.(type) {
		case string:
			if x == "" {
				return
			}
		case uint32:
			if x == 0 {
				return
			}
		}
		fields[k] = v
	}
	if p != nil {
		set("proc.name", p.GetComm())
		set("proc.exepath", p.GetExe())
		set("proc.cmdline", strings.TrimSpace(p.GetComm()+" "+strings.Join(argsAfterFirst(p.GetArgs()), " ")))
		set("proc.pid", p.GetTgid())
		set("proc.ppid", p.GetPpid())
		fields["user.uid"] = p.GetUid()
	}
	set("container.id", c.GetId())
	set("container.name", c.GetName())
	set("container.image.repository", c.GetImage())
	set("container.image.digest", c.GetImageDigest())
	set("k8s.ns.name", c.GetPodNamespace())
	set("k8s.pod.name", c.GetPodName())
	set("k8s.pod.uid", c.GetPodUid())
	set("harrier.cluster", a.GetCluster())
	tags := []string{}
	for _, k := range slices.Sorted(maps.Keys(a.GetTags())) {
		if v := a.GetTags()[k]; v != "" {
			tags = append(tags, k+"="+v)
		} else {
			tags = append(tags, k)
		}
	}
	for _, m := range a.GetMitre() {
		if m.GetTechniqueId() != "" {
			tags = append(tags, m.GetTechniqueId())
		}
		if m.GetTactic() != "" {
			tags = append(tags, "mitre_"+strings.ReplaceAll(strings.ToLower(m.GetTactic()), " ", "_"))
		}
	}
	prio := a.GetSeverity().FalcoPriority()
	rule := firstNonEmpty(a.GetName(), a.GetDetectionId())
	// Falco's output starts with the event's time and priority.
	output := fmt.Sprintf("%s: %s %s", last.UTC().Format("15:04:05.000000000"), prio, firstNonEmpty(a.GetSummary(), a.GetDescription(), rule))
	b, err := json.Marshal(map[string]any{
		"uuid":          a.GetId(),
		"time":          last.UTC().Format(time.RFC3339Nano),
		"rule":          rule,
		"priority":      prio,
		"output":        output,
		"output_fields": fields,
		"source":        "syscall",
		"tags":          tags,
		"hostname":      a.GetNode(),
	})
	if err != nil {
		return nil, fmt.Errorf("falco json: %w", err)
	}
	return b, nil
}

// argsAfterFirst is argv without argv[0] (Falco's proc.cmdline is the
// process name followed by its arguments).
func argsAfterFirst(args []string) []string {
	if len(args) == 0 {
		return nil
	}
	return args[1:]
}

// ECS: Elastic Common Schema 8.x, as an alert (event.kind alert) of
// category intrusion_detection. ecsVersion is the ECS release the mapping
// follows.
const ecsVersion = "8.17.0"

// ecsSeverity is event.severity: the CEF-like 0-100 scale Elastic's
// detection rules use (low 21, medium 47, high 73, critical 99).
func ecsSeverity(s api.Severity) int {
	switch s {
	case api.Severity_SEVERITY_INFO:
		return 1
	case api.Severity_SEVERITY_LOW:
		return 21
	case api.Severity_SEVERITY_MEDIUM:
		return 47
	case api.Severity_SEVERITY_HIGH:
		return 73
	case api.Severity_SEVERITY_CRITICAL:
		return 99
	}
	return 0
}

// EncodeECS writes the alert as one ECS document.
func EncodeECS(a *api.Alert, version string) ([]byte, error) {
	first, last := a.GetFirstSeen().AsTime(), a.GetLastSeen().AsTime()
	if a.GetLastSeen() == nil {
		last = first
	}
	sev := strings.ToLower(strings.TrimPrefix(a.GetSeverity().String(), "SEVERITY_"))
	doc := map[string]any{
		"@timestamp": last.UTC().Format(time.RFC3339Nano),
		"ecs":        map[string]any{"version": ecsVersion},
		"message":    firstNonEmpty(a.GetSummary(), a.GetDescription(), a.GetName()),
		"event": map[string]any{
			"kind": "alert", "category": []string{"intrusion_detection"}, "type": []string{"info"},
			"id": a.GetId(), "start": first.UTC().Format(time.RFC3339Nano), "end": last.UTC().Format(time.RFC3339Nano),
			"severity": ecsSeverity(a.GetSeverity()), "module": "harrier", "dataset": "harrier.head", "provider": "harrier",
		},
		"rule": map[string]any{
			"id": a.GetDetectionId(), "name": firstNonEmpty(a.GetName(), a.GetDetectionId()), "ruleset": "harrier",
		},
		"observer": map[string]any{"vendor": productVendor, "product": productName, "version": version, "type": "ids"},
		"labels":   map[string]any{"harrier_severity": sev, "harrier_count": a.GetCount()},
	}
	if d := a.GetDescription(); d != "" {
		doc["rule"].(map[string]any)["description"] = d
	}
	if n := a.GetNode(); n != "" {
		doc["host"] = map[string]any{"name": n, "hostname": n}
	}
	if p := a.GetProcess(); p != nil {
		proc := map[string]any{"pid": p.GetTgid(), "name": p.GetComm(), "user": map[string]any{"id": fmt.Sprint(p.GetUid())}}
		if p.GetExe() != "" {
			proc["executable"] = p.GetExe()
		}
		if len(p.GetArgs()) > 0 {
			proc["args"] = p.GetArgs()
			proc["args_count"] = len(p.GetArgs())
			proc["command_line"] = strings.Join(p.GetArgs(), " ")
		}
		if p.GetPpid() != 0 {
			proc["parent"] = map[string]any{"pid": p.GetPpid()}
		}
		doc["process"] = proc
		doc["user"] = map[string]any{"id": fmt.Sprint(p.GetUid())}
	}
	if c := a.GetContainer(); c.GetId() != "" {
		ct := map[string]any{"id": c.GetId(), "name": c.GetName(), "runtime": c.GetRuntime()}
		if c.GetImage() != "" {
			img := map[string]any{"name": c.GetImage()}
			if c.GetImageDigest() != "" {
				img["hash"] = map[string]any{"all": []string{c.GetImageDigest()}}
			}
			ct["image"] = img
		}
		doc["container"] = ct
	}
	if c := a.GetContainer(); c.GetPodName() != "" || a.GetCluster() != "" {
		o := map[string]any{"type": "kubernetes"}
		if a.GetCluster() != "" {
			o["cluster"] = map[string]any{"name": a.GetCluster()}
		}
		if c.GetPodName() != "" {
			o["namespace"] = c.GetPodNamespace()
			o["resource"] = map[string]any{"type": "pod", "name": c.GetPodName(), "id": c.GetPodUid()}
		}
		doc["orchestrator"] = o
	}
	if len(a.GetMitre()) > 0 {
		var techIDs, techNames, tactics []string
		for _, m := range a.GetMitre() {
			techIDs = append(techIDs, m.GetTechniqueId())
			techNames = append(techNames, m.GetTechnique())
			if m.GetTactic() != "" {
				tactics = append(tactics, m.GetTactic())
			}
		}
		th := map[string]any{"framework": "MITRE ATT&CK", "technique": map[string]any{"id": techIDs, "name": techNames}}
		if len(tactics) > 0 {
			th["tactic"] = map[string]any{"name": tactics}
		}
		doc["threat"] = th
	}
	// Harrier's tags are key=value: ECS labels.
	labels := doc["labels"].(map[string]any)
	for k, v := range a.GetTags() {
		labels[k] = v
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("ecs: %w", err)
	}
	return b, nil
}
