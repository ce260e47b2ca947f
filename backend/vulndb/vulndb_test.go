package vulndb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAndLookup(t *testing.T) {
	db, problems := Load("testdata")
	if db.Len() != 2 {
		t.Fatalf("%d images, want 2", db.Len())
	}
	if len(problems) != 2 {
		t.Fatalf("problems %v, want the two bad files", problems)
	}
	for _, p := range problems {
		if !strings.Contains(p.Error(), "garbage.json") && !strings.Contains(p.Error(), "not-a-report.json") {
			t.Errorf("problem does not name its file: %v", p)
		}
	}
	const nginxDigest = "sha256:4c0fdaa8b6341bfdeca5f18f7837462c80cff90527ee35ef185571e1c327beac"
	tests := []struct {
		name, ref, digest string
		want              string // the image's reference, "" for no match
	}{
		{"by repo digest", "nginx:whatever", "docker.io/library/nginx@" + nginxDigest, "nginx:1.25.3"},
		{"by digest in the reference", "nginx@" + nginxDigest, "", "nginx:1.25.3"},
		{"by image ID", "x", "sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6", "nginx:1.25.3"},
		{"by normalised reference", "docker.io/library/nginx:1.25.3", "", "nginx:1.25.3"},
		{"pullable digest", "", "docker-pullable://nginx@" + nginxDigest, "nginx:1.25.3"},
		{"grype by reference", "registry.site.lan/shop/api:2.3", "", "registry.site.lan/shop/api:2.3"},
		{"grype by repo digest", "", "registry.site.lan/shop/api@sha256:3333333333333333333333333333333333333333333333333333333333333333", "registry.site.lan/shop/api:2.3"},
		{"grype by manifest digest", "", "sha256:2222222222222222222222222222222222222222222222222222222222222222", "registry.site.lan/shop/api:2.3"},
		{"other tag", "nginx:1.27", "", ""},
		{"unknown digest falls back to reference", "nginx:1.25.3", "sha256:" + strings.Repeat("9", 64), "nginx:1.25.3"},
		{"nothing", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im, ok := db.Lookup(tt.ref, tt.digest)
			if tt.want == "" {
				if ok {
					t.Fatalf("matched %s", im.Reference)
				}
				return
			}
			if !ok || im.Reference != tt.want {
				t.Fatalf("got %v %v, want %s", im, ok, tt.want)
			}
		})
	}
	nginx, _ := db.Lookup("nginx:1.25.3", "")
	if c := nginx.Counts(); c[SeverityCritical] != 1 || c[SeverityHigh] != 1 || c[SeverityLow] != 1 {
		t.Errorf("counts %v", c)
	}
	worst := nginx.Worst(SeverityHigh)
	if len(worst) != 2 || worst[0].ID != "CVE-2023-45853" || worst[1].FixedVersion != "2.36-9+deb12u7" {
		t.Errorf("worst %+v", worst)
	}
	api, _ := db.Lookup("registry.site.lan/shop/api:2.3", "")
	if w := api.Worst(SeverityMedium); len(w) != 2 || w[0].ID != "CVE-2024-24790" || w[1].Title != "A flaw in the HTTP/2 server." || w[1].FixedVersion != "0.23.0" {
		t.Errorf("grype vulns %+v", w)
	}
}

func TestLoadMissingDirIsEmpty(t *testing.T) {
	db, problems := Load(filepath.Join(t.TempDir(), "none"))
	if db.Len() != 0 || len(problems) != 0 {
		t.Fatalf("%d images, problems %v", db.Len(), problems)
	}
	var nilDB *DB
	if _, ok := nilDB.Lookup("nginx", ""); ok || nilDB.Len() != 0 {
		t.Fatal("a nil database matched")
	}
}

func TestLoadTooBig(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "big.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxReportBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, problems := Load(dir); len(problems) != 1 || !strings.Contains(problems[0].Error(), "larger than") {
		t.Fatalf("problems %v", problems)
	}
}

func TestNormalizeRef(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                             "docker.io/library/nginx:latest",
		"nginx:1.25":                        "docker.io/library/nginx:1.25",
		"library/nginx:1.25":                "docker.io/library/nginx:1.25",
		"docker.io/nginx:1.25":              "docker.io/library/nginx:1.25",
		"index.docker.io/library/nginx":     "docker.io/library/nginx:latest",
		"bitnami/redis:7":                   "docker.io/bitnami/redis:7",
		"registry.site.lan:5000/app/api:v1": "registry.site.lan:5000/app/api:v1",
		"localhost/app":                     "localhost/app:latest",
		"Registry.Site/App:V1":              "registry.site/app:V1",
		"nginx@sha256:abc":                  "docker.io/library/nginx:latest",
		"":                                  "",
	} {
		if got := NormalizeRef(in); got != want {
			t.Errorf("NormalizeRef(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseReportRejects(t *testing.T) {
	for name, in := range map[string]string{
		"array":          `[]`,
		"empty object":   `{}`,
		"trivy fs scan":  `{"ArtifactName":"/src","ArtifactType":"filesystem","Results":[]}`,
		"trivy no image": `{"Results":[]}`,
		"grype dir scan": `{"matches":[],"source":{"type":"directory","target":"/src"}}`,
		"grype no image": `{"matches":[]}`,
		"wrong types":    `{"matches":{"a":1}}`,
	} {
		if _, err := ParseReport([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseReport(f *testing.F) {
	for _, name := range []string{"trivy-nginx.json", "grype-app.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"matches":[{"vulnerability":{"id":"x"}}],"source":{"target":"y"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		images, err := ParseReport(b)
		if err != nil {
			return
		}
		for _, im := range images {
			if im.Reference == "" && len(im.Digests) == 0 {
				t.Fatal("an image without reference or digest")
			}
			for _, d := range im.Digests {
				if digestOf(d) != d {
					t.Fatalf("digest %q not normalised", d)
				}
			}
		}
	})
}
