package analytics

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// rulesVersion fingerprints what an engine runs: the running rules (every
// setting but where it was read from), by ID, and the lists and macros
// their conditions and detectors draw on, by name. Two agents with the
// same version detect the same way; a changed list item, severity or
// exception changes it. 16 hex digits of SHA-256.
func rulesVersion(running []*Rule, rs *RuleSet) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	sorted := slices.SortedFunc(slices.Values(running), func(a, b *Rule) int { return strings.Compare(a.ID, b.ID) })
	for _, r := range sorted {
		c := *r
		c.File, c.Line, c.Source = "", 0, ""
		_ = enc.Encode(c) // plain data: encoding does not fail
	}
	for _, name := range slices.Sorted(maps.Keys(rs.lists)) {
		_ = enc.Encode([]any{"list", name, rs.lists[name].items})
	}
	for _, name := range slices.Sorted(maps.Keys(rs.macros)) {
		_ = enc.Encode([]any{"macro", name, rs.macros[name].condition})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// RulesVersion fingerprints the rules this engine runs (see rulesVersion).
func (e *Engine) RulesVersion() string { return e.rulesVersion }
