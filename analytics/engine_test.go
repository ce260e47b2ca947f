package analytics

import (
	"testing"
)

func TestBuiltinRulesCompile(t *testing.T) {
	e := newTestEngine(t, Config{})
	if s := e.Stats(); s.RulesLoaded < 30 || s.RuleErrors != 0 {
		t.Fatalf("rules loaded %d, errors %d", s.RulesLoaded, s.RuleErrors)
	}
}
