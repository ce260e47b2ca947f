package backend

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/api"
)

type inventoryResponse struct {
	Snapshots []struct {
		Cluster            string         `json:"cluster"`
		SnapshotID         string         `json:"snapshot_id"`
		Node               string         `json:"node"`
		Items              int            `json:"items"`
		Findings           int            `json:"findings"`
		Kinds              map[string]int `json:"kinds"`
		FindingsBySeverity map[string]int `json:"findings_by_severity"`
	} `json:"snapshots"`
	Items []struct {
		Cluster string `json:"cluster"`
		Item    struct {
			Object struct {
				Kind      string `json:"kind"`
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
			} `json:"object"`
			Node   string   `json:"node"`
			Images []string `json:"images"`
		} `json:"item"`
	} `json:"items"`
}

type findingsResponse struct {
	Findings []struct {
		ID        string `json:"id"`
		CheckID   string `json:"check_id"`
		Severity  string `json:"severity"`
		Cluster   string `json:"cluster"`
		FirstSeen string `json:"first_seen"`
		LastSeen  string `json:"last_seen"`
	} `json:"findings"`
}

type findingResponse struct {
	Finding struct {
		ID      string `json:"id"`
		Cluster string `json:"cluster"`
		Object  struct {
			Name string `json:"name"`
		} `json:"object"`
		Remediation string `json:"remediation"`
	} `json:"finding"`
}

func decodeJSON[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if r.code != 200 {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

func TestAPIInventory(t *testing.T) {
	ts := newTestServer(t)
	seedInventory(t, ts.store)

	all := decodeJSON[inventoryResponse](t, ts.authGet(t, "/api/v1/inventory"))
	if len(all.Snapshots) != 2 || all.Snapshots[0].Cluster != "edge" || all.Snapshots[0].SnapshotID != "e1" ||
		all.Snapshots[0].Items != 4 || all.Snapshots[0].Findings != 3 || all.Snapshots[0].Kinds["Deployment"] != 1 ||
		all.Snapshots[0].FindingsBySeverity["critical"] != 1 || all.Snapshots[0].Node != "leader-1" {
		t.Errorf("snapshots %+v", all.Snapshots)
	}
	if len(all.Items) != 5 {
		t.Errorf("items %d, want 5", len(all.Items))
	}
	tests := []struct {
		query string
		want  []string // cluster/name
	}{
		{"?cluster=lab", []string{"lab/web"}},
		{"?kind=Deployment&namespace=shop", []string{"edge/web", "lab/web"}},
		{"?name=7f9", []string{"edge/web-7f9-abc"}},
		{"?node=node-2", []string{"edge/web-7f9-abc"}},
		{"?image=kube-proxy", []string{"edge/proxy"}},
		{"?workloads=true&cluster=edge", []string{"edge/proxy", "edge/web"}},
		{"?limit=1", []string{"edge/proxy"}},
		{"?cluster=nowhere", nil},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			got := decodeJSON[inventoryResponse](t, ts.authGet(t, "/api/v1/inventory"+tc.query))
			var names []string
			for _, it := range got.Items {
				names = append(names, it.Cluster+"/"+it.Item.Object.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("got %v, want %v", names, tc.want)
			}
		})
	}
	lab := decodeJSON[inventoryResponse](t, ts.authGet(t, "/api/v1/inventory?cluster=lab"))
	if len(lab.Snapshots) != 1 || lab.Snapshots[0].Cluster != "lab" || lab.Items[0].Item.Images[0] != "nginx:1.25" {
		t.Errorf("cluster filter on snapshots: %+v", lab)
	}
}

func TestAPIFindings(t *testing.T) {
	ts := newTestServer(t)
	seedInventory(t, ts.store)
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"f-crit", "f-high", "f-high-lab", "f-low"}},
		{"?severity=high", []string{"f-crit", "f-high", "f-high-lab"}},
		{"?severity=SEVERITY_CRITICAL", []string{"f-crit"}},
		{"?cluster=lab", []string{"f-high-lab"}},
		{"?check=pss-privileged", []string{"f-crit", "f-high-lab"}},
		{"?namespace=shop&kind=deployment", []string{"f-high", "f-high-lab"}},
		{"?category=rbac", []string{"f-low"}},
		{"?limit=2", []string{"f-crit", "f-high"}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			got := decodeJSON[findingsResponse](t, ts.authGet(t, "/api/v1/findings"+tc.query))
			var ids []string
			for _, f := range got.Findings {
				ids = append(ids, f.ID)
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("got %v, want %v", ids, tc.want)
			}
		})
	}
	first := decodeJSON[findingsResponse](t, ts.authGet(t, "/api/v1/findings?limit=1")).Findings[0]
	if first.Severity != "SEVERITY_CRITICAL" || first.Cluster != "edge" || first.FirstSeen != "2026-11-22T16:00:00Z" {
		t.Errorf("protojson finding %+v", first)
	}

	wrapped := decodeJSON[findingResponse](t, ts.authGet(t, "/api/v1/findings/f-high-lab"))
	if wrapped.Finding.ID != "f-high-lab" || wrapped.Finding.Cluster != "lab" || wrapped.Finding.Object.Name != "web" ||
		wrapped.Finding.Remediation != "drop privileged" {
		t.Errorf("finding by ID %+v", wrapped)
	}
	if r := ts.authGet(t, "/api/v1/findings/nope"); r.code != 404 || !strings.Contains(r.body, `"finding not found"`) {
		t.Errorf("unknown finding: %d %s", r.code, r.body)
	}
}

func TestAPIInventoryBadParamsAndAuth(t *testing.T) {
	ts := newTestServer(t)
	seedInventory(t, ts.store)
	tests := []struct {
		path, param string
	}{
		{"/api/v1/inventory?namespace=Shop", "namespace"},
		{"/api/v1/inventory?kind=1deploy", "kind"},
		{"/api/v1/inventory?kind=apps/v1", "kind"},
		{"/api/v1/inventory?node=Node_1", "node"},
		{"/api/v1/inventory?workloads=maybe", "workloads"},
		{"/api/v1/inventory?limit=0", "limit"},
		{"/api/v1/inventory?severity=high", "severity"}, // not an inventory filter
		{"/api/v1/inventory?cluster=a%00b", "cluster"},
		{"/api/v1/findings?severity=extreme", "severity"},
		{"/api/v1/findings?namespace=-bad", "namespace"},
		{"/api/v1/findings?check=a%20b", "check"},
		{"/api/v1/findings?limit=5000", "limit"},
		{"/api/v1/findings?image=nginx", "image"}, // not a findings filter
		{"/api/v1/findings?kind=Pod&kind=Node", "kind"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := ts.authGet(t, tc.path)
			if r.code != 400 || !strings.Contains(r.body, `parameter \"`+tc.param+`\"`) {
				t.Errorf("%d %s, want 400 naming %q", r.code, r.body, tc.param)
			}
		})
	}
	for _, path := range []string{"/api/v1/inventory", "/api/v1/findings", "/api/v1/findings/f-crit"} {
		if r := ts.get(t, path, nil); r.code != 401 {
			t.Errorf("%s without token: %d", path, r.code)
		}
		if r := ts.get(t, path, map[string]string{"Authorization": "Bearer wrong"}); r.code != 401 {
			t.Errorf("%s with wrong token: %d", path, r.code)
		}
		if r := ts.authGet(t, path); r.code != 200 {
			t.Errorf("%s with token: %d", path, r.code)
		}
	}
}

func TestUIFindingsAndInventory(t *testing.T) {
	ts := newTestServer(t)
	seedInventory(t, ts.store)
	hostile := "<script>alert(1)</script>"
	evil := mkFinding("f-evil", "pss-privileged", api.Severity_SEVERITY_MEDIUM, "Pod", "shop", `"><img src=x onerror=alert(2)>`)
	evil.Detail, evil.Remediation, evil.Title = hostile, hostile, "<b>bold</b>"
	evilItem := mkItem("Deployment", "shop", hostile, "img/"+hostile)
	ingestChunks(t, ts.store, "leader-x", chunkRec(1, mkChunk("x<i>", "x1", 0, 1, t0, []*api.InventoryItem{evilItem}, []*api.Finding{evil})))
	bearer := map[string]string{"Authorization": "Bearer " + testToken}
	tests := []struct {
		name     string
		path     string
		wantCode int
		want     []string
		notWant  []string
	}{
		{"findings", "/findings", 200, []string{`class="sev sev-critical"`, "pss-privileged", "DaemonSet kube-system/proxy",
			"securityContext.privileged: true", "drop privileged", "2026-11-22 16:00:00Z", "&lt;script&gt;alert(1)&lt;/script&gt;",
			`href="/findings"`, `href="/inventory"`}, nil},
		{"findings filtered", "/findings?cluster=lab&severity=high", 200, []string{`<option value="lab" selected>`,
			`<option value="high" selected>`, "Deployment shop/web"}, []string{"kube-system/proxy", "rbac-wildcard"}},
		{"findings bad filter", "/findings?severity=urgent", 400, []string{`class="error"`, "severity"}, nil},
		{"inventory", "/inventory", 200, []string{"Objects per kind", "DaemonSet", "snapshot e1", "registry.k8s.io/kube-proxy:v1.31.0",
			"nginx:1.25", "x&lt;i&gt;", "img/&lt;script&gt;"}, []string{"web-7f9-abc"}},
		{"inventory filtered", "/inventory?cluster=edge&image=nginx", 200, []string{"nginx:1.27@sha256:abc"}, []string{"kube-proxy:v1.31.0", "nginx:1.25"}},
		{"inventory bad filter", "/inventory?namespace=NOPE", 400, []string{`class="error"`, "namespace"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.get(t, tc.path, bearer)
			if r.code != tc.wantCode {
				t.Fatalf("%d, want %d: %.300s", r.code, tc.wantCode, r.body)
			}
			if !strings.Contains(r.header.Get("Content-Security-Policy"), "default-src 'none'") {
				t.Errorf("headers %v", r.header)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(r.body, w) {
					t.Errorf("page has %q", w)
				}
			}
			for _, bad := range []string{"<script>", "<img", "<b>", "<i>"} {
				if strings.Contains(r.body, bad) {
					t.Errorf("page contains unescaped %q", bad)
				}
			}
		})
	}
	for _, path := range []string{"/findings", "/inventory"} {
		if r := ts.get(t, path, nil); r.code != 401 || !strings.Contains(r.body, `action="/login"`) {
			t.Errorf("%s without token: %d", path, r.code)
		}
	}
}
