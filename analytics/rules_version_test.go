package analytics

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRulesVersion: the same rules give the same version wherever their
// file lives; a patch that changes what runs (a list item, a disabled
// rule, a severity) gives another.
func TestRulesVersion(t *testing.T) {
	version := func(content string) string {
		t.Helper()
		var files []string
		if content != "" {
			p := filepath.Join(t.TempDir(), "site.yaml")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		}
		rs, err := LoadRules(files...)
		if err != nil {
			t.Fatal(err)
		}
		e, err := NewEngine(Config{}, rs, Options{})
		if err != nil {
			t.Fatal(err)
		}
		v := e.RulesVersion()
		if len(v) != 16 {
			t.Fatalf("version %q: want 16 hex digits", v)
		}
		return v
	}
	builtin := version("")
	t.Logf("built-in rules version %s", builtin)
	if again := version(""); again != builtin {
		t.Errorf("the built-in rules twice: %s then %s", builtin, again)
	}
	custom := "rules:\n  - id: site-tool\n    name: Site tool\n    severity: low\n    kinds: [exec]\n    condition: proc.name == \"site-tool\"\n"
	a, b := version(custom), version(custom) // two temp directories
	if a != b || a == builtin {
		t.Errorf("one custom rule from two paths: %s and %s (built-in alone %s)", a, b, builtin)
	}
	for name, patch := range map[string]string{
		"list item":     "lists:\n  - name: shells\n    items: [fancysh]\n    append: true\n",
		"disabled rule": "rules:\n  - id: web-shell\n    enabled: false\n",
		"severity":      "rules:\n  - id: web-shell\n    severity: low\n",
	} {
		if v := version(patch); v == builtin {
			t.Errorf("%s patched: the version stays %s", name, v)
		}
	}
}
