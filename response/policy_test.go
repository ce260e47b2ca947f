package response

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/api"
)

const examplePolicies = `apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - name: kill-miners
    mode: enforce
    match:
      detections: [crypto-miner, miner-pool-connection]
      where: container
    actions: [kill-process-tree]
  - name: web-shells-in-shop
    mode: audit
    match:
      minSeverity: high
      namespaces: [shop]
      podLabels: {tier: web}
      images: ["registry.example/shop/*"]
    actions: [kill-process-tree]
  - name: host-critical
    mode: audit
    match:
      minSeverity: CRITICAL
      where: host
    actions: [kill-process-tree]
`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadRefuses(t *testing.T) {
	tests := []struct{ name, content, want string }{
		{"unknown field", strings.Replace(examplePolicies, "    mode: enforce", "    mode: enforce\n    modee: audit", 1), "modee"},
		{"unknown action", strings.Replace(examplePolicies, "actions: [kill-process-tree]", "actions: [reboot-node]", 1), `action "reboot-node": want one of kill-process-tree`},
		{"bad mode", strings.Replace(examplePolicies, "mode: enforce", "mode: block", 1), `mode "block"`},
		{"bad severity", strings.Replace(examplePolicies, "minSeverity: high", "minSeverity: severe", 1), `unknown severity "severe"`},
		{"matches everything", "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies:\n  - {name: all, mode: enforce, match: {}, actions: [kill-process-tree]}\n", "needs detections or minSeverity"},
		{"same name twice", examplePolicies + "  - {name: kill-miners, mode: audit, match: {minSeverity: low}, actions: [kill-process-tree]}\n", "name used twice"},
		{"host with labels", strings.Replace(examplePolicies, "      where: host", "      where: host\n      namespaces: [x]", 1), "where: host cannot match"},
		{"bad glob", strings.Replace(examplePolicies, `"registry.example/shop/*"`, `"registry.example/[shop"`, 1), "image glob"},
		{"wrong kind", strings.Replace(examplePolicies, "kind: ResponsePolicies", "kind: Rules", 1), `kind "Rules"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.content)
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("err %v, want one naming %s and %q", err, p, tc.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	f, err := Load(writeFile(t, examplePolicies))
	if err != nil {
		t.Fatal(err)
	}
	shop := &api.Container{Id: "c1", Image: "registry.example/shop/web:2", PodNamespace: "shop", Labels: map[string]string{"tier": "web"}}
	tests := []struct {
		name  string
		alert *api.Alert
		want  []Decision
	}{
		{"miner in a container", &api.Alert{DetectionId: "crypto-miner", Severity: api.Severity_SEVERITY_HIGH, Container: &api.Container{Id: "c2"}},
			[]Decision{{"kill-miners", ModeEnforce, ActionKillProcessTree}}},
		{"miner on the host", &api.Alert{DetectionId: "crypto-miner", Severity: api.Severity_SEVERITY_HIGH}, nil},
		{"high in shop web", &api.Alert{DetectionId: "web-shell", Severity: api.Severity_SEVERITY_HIGH, Container: shop},
			[]Decision{{"web-shells-in-shop", ModeAudit, ActionKillProcessTree}}},
		{"medium in shop web", &api.Alert{DetectionId: "web-shell", Severity: api.Severity_SEVERITY_MEDIUM, Container: shop}, nil},
		{"another label", &api.Alert{DetectionId: "web-shell", Severity: api.Severity_SEVERITY_HIGH,
			Container: &api.Container{Id: "c1", Image: shop.Image, PodNamespace: "shop", Labels: map[string]string{"tier": "db"}}}, nil},
		{"another registry", &api.Alert{DetectionId: "web-shell", Severity: api.Severity_SEVERITY_HIGH,
			Container: &api.Container{Id: "c1", Image: "docker.io/library/nginx:1", PodNamespace: "shop", Labels: map[string]string{"tier": "web"}}}, nil},
		{"miner in shop web: enforce wins", &api.Alert{DetectionId: "crypto-miner", Severity: api.Severity_SEVERITY_HIGH, Container: shop},
			[]Decision{{"kill-miners", ModeEnforce, ActionKillProcessTree}}},
		{"critical on the host", &api.Alert{DetectionId: "rootkit", Severity: api.Severity_SEVERITY_CRITICAL},
			[]Decision{{"host-critical", ModeAudit, ActionKillProcessTree}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := f.Decide(tc.alert); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
