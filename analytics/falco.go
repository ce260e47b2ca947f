package analytics

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// FalcoAlert is an alert in Falco's JSON output shape, so that existing
// falcosidekick pipelines can take Harrier's alerts unchanged.
type FalcoAlert struct {
	UUID         string         `json:"uuid"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         string         `json:"time"`
	Source       string         `json:"source"`
	Hostname     string         `json:"hostname"`
	Tags         []string       `json:"tags"`
	OutputFields map[string]any `json:"output_fields"`
}

// ToFalco converts an alert. Field names follow Falco's (proc.name, fd.name,
// k8s.pod.name, ...); Harrier's own facts are under harrier.*.
func ToFalco(a *api.Alert) FalcoAlert {
	t := a.GetLastSeen().AsTime()
	p := a.GetProcess()
	c := a.GetContainer()
	fields := map[string]any{
		"evt.time":              t.UnixNano(),
		"proc.name":             procName(p),
		"proc.exe":              p.GetExe(),
		"proc.cmdline":          strings.Join(p.GetArgs(), " "),
		"proc.pid":              p.GetTgid(),
		"proc.ppid":             p.GetPpid(),
		"user.uid":              p.GetUid(),
		"container.id":          c.GetId(),
		"container.image":       c.GetImage(),
		"k8s.ns.name":           c.GetPodNamespace(),
		"k8s.pod.name":          c.GetPodName(),
		"harrier.alert_id":      a.GetId(),
		"harrier.detection_id":  a.GetDetectionId(),
		"harrier.count":         a.GetCount(),
		"harrier.first_seen":    a.GetFirstSeen().AsTime().Format(time.RFC3339Nano),
		"harrier.severity":      a.GetSeverity().Name(),
		"harrier.cluster":       a.GetCluster(),
		"harrier.container_rt":  c.GetRuntime(),
		"harrier.ancestor_exes": ancestorExes(a.GetAncestry()),
	}
	if ev := lastEvidence(a); ev != nil {
		fields["evt.type"] = ev.GetKind().ShortName()
		if fp := filePath(ev); fp != "" {
			fields["fd.name"] = fp
		}
		if r := remote(ev); r != nil {
			fields["fd.sip"], fields["fd.sport"] = r.GetIp(), r.GetPort()
		}
	}
	tags := []string{}
	for _, m := range a.GetMitre() {
		tags = append(tags, "mitre_"+strings.ToLower(strings.ReplaceAll(m.GetTactic(), " ", "_")))
		if m.GetTechniqueId() != "" {
			tags = append(tags, m.GetTechniqueId())
		}
	}
	for k := range a.GetTags() {
		tags = append(tags, k)
	}
	return FalcoAlert{
		UUID:         a.GetId(),
		Output:       fmt.Sprintf("%s %s: %s", t.Format("15:04:05.000000000"), a.GetSeverity().FalcoPriority(), a.GetSummary()),
		Priority:     a.GetSeverity().FalcoPriority(),
		Rule:         a.GetName(),
		Time:         t.Format(time.RFC3339Nano),
		Source:       "syscall",
		Hostname:     a.GetNode(),
		Tags:         tags,
		OutputFields: fields,
	}
}

// MarshalFalco renders an alert as one line of Falco JSON.
func MarshalFalco(a *api.Alert) ([]byte, error) {
	b, err := json.Marshal(ToFalco(a))
	if err != nil {
		return nil, fmt.Errorf("encode Falco alert: %w", err)
	}
	return b, nil
}

func lastEvidence(a *api.Alert) *api.Event {
	if ev := a.GetEvidence(); len(ev) > 0 {
		return ev[len(ev)-1]
	}
	return nil
}

func ancestorExes(anc []*api.Ancestor) []string {
	out := make([]string, 0, len(anc))
	for _, a := range anc {
		out = append(out, a.GetExe())
	}
	return out
}
