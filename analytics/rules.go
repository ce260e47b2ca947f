package analytics

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/harrier-sec/harrier/api"
)

// A rule file is YAML with three optional sections:
//
//	lists:   named string lists, usable in conditions by name
//	macros:  named CEL sub-conditions, usable in conditions by name
//	rules:   detections (a CEL condition, or a built-in Go detector), or
//	         patches of existing ones (id plus enabled/severity/exceptions)
//
// Files are read in order after the built-in rules; a later file can extend a
// list (append: true), replace a macro, replace a rule (same id, with a
// condition) or patch one (same id, no condition).

// builtinRules are the detections shipped in the binary.
//
//go:embed rules/builtin.yaml
var builtinRules []byte

// Rule is one detection after loading: its metadata and what triggers it.
type Rule struct {
	ID          string
	Name        string
	Description string
	Remediation string
	Severity    api.Severity
	// SeveritySet: a rule file set the severity. A detector whose alerts
	// take their severity from the event (admission-violation: the failed
	// check's) keeps an operator's choice instead.
	SeveritySet bool
	Mitre       []*api.Mitre
	// Kinds are the event kinds the condition can match (rules only).
	Kinds []api.EventKind
	// Condition is the CEL expression as written; Detector names a built-in
	// Go detector instead.
	Condition string
	Detector  string
	// Output is a one-line summary template with {field} placeholders.
	Output     string
	Tags       []string
	Enabled    bool
	Exceptions []Exception
	// Threshold turns the rule into a rate: it fires when its condition
	// matched Count times within Window for the same By fields.
	Threshold *Threshold
	// File and Line are where the rule was defined; Source says so as
	// file:line and adds where it was patched.
	File   string
	Line   int
	Source string
}

// Exception suppresses a rule's match when every field it sets matches.
// Values are globs (path.Match syntax); a path value ending in "/" is a prefix.
type Exception struct {
	Name       string   `yaml:"name"`
	Namespaces []string `yaml:"namespaces"`
	Images     []string `yaml:"images"`
	Containers []string `yaml:"containers"`
	Processes  []string `yaml:"processes"`
	Paths      []string `yaml:"paths"`
}

// Threshold is a rule's rate condition.
type Threshold struct {
	Count  int           `yaml:"count"`
	Window time.Duration `yaml:"window"`
	// By are field names grouping the count (default: container.id, proc.pid).
	By []string `yaml:"by"`
}

// list and macro are named building blocks of conditions.
type list struct {
	items  []string
	source string
}

type macro struct {
	condition string
	source    string
}

// RuleSet is every rule, list and macro after loading all files, in
// definition order. It is not compiled yet; NewEngine compiles it.
type RuleSet struct {
	Rules  []*Rule
	lists  map[string]*list
	macros map[string]*macro
}

// RuleError is one rejected entry of a rule file.
type RuleError struct {
	File   string
	Line   int
	RuleID string
	Err    error
}

func (e *RuleError) Error() string {
	where := e.File
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	if e.RuleID != "" {
		return fmt.Sprintf("%s: rule %q: %v", where, e.RuleID, e.Err)
	}
	return fmt.Sprintf("%s: %v", where, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// Problems flattens errors as LoadRules and NewEngine return them (joined)
// into one error per rejected entry.
func Problems(errs ...error) []error {
	var out []error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			out = append(out, j.Unwrap()...)
			continue
		}
		out = append(out, err)
	}
	return out
}

// LoadRules reads the built-in rules and then each file in order. Bad
// entries are skipped and reported (each a *RuleError, joined); everything
// else is loaded, so one typo never disarms the rest.
func LoadRules(files ...string) (*RuleSet, error) {
	rs := newRuleSet()
	var errs []error
	errs = append(errs, rs.add("builtin:rules.yaml", builtinRules)...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, &RuleError{File: f, Err: fmt.Errorf("read rule file: %w", err)})
			continue
		}
		errs = append(errs, rs.add(f, b)...)
	}
	return rs, errors.Join(errs...)
}

func newRuleSet() *RuleSet {
	return &RuleSet{lists: map[string]*list{}, macros: map[string]*macro{}}
}

// Rule returns the rule with the given id, or nil.
func (rs *RuleSet) Rule(id string) *Rule {
	for _, r := range rs.Rules {
		if r.ID == id {
			return r
		}
	}
	return nil
}

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	namePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,63}$`)
)

// reservedNames may not name a list or macro: they are field roots, CEL
// keywords or functions, and expanding them would change a condition's meaning.
func reservedNames() map[string]bool {
	m := map[string]bool{
		"true": true, "false": true, "null": true, "in": true, "as": true, "break": true, "const": true,
		"continue": true, "else": true, "for": true, "function": true, "if": true, "import": true, "let": true,
		"loop": true, "package": true, "namespace": true, "return": true, "var": true, "void": true, "while": true,
		"size": true, "has": true, "all": true, "exists": true, "exists_one": true, "map": true, "filter": true,
		"int": true, "uint": true, "double": true, "string": true, "bytes": true, "bool": true, "type": true, "dyn": true,
		"matches": true, "duration": true, "timestamp": true,
	}
	for name := range newFields() {
		m[strings.SplitN(name, ".", 2)[0]] = true
	}
	return m
}

// add parses one file and merges it, returning the problems found.
func (rs *RuleSet) add(file string, data []byte) []error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []error{&RuleError{File: file, Err: fmt.Errorf("not valid YAML: %w", err)}}
	}
	if len(doc.Content) == 0 {
		return nil // an empty file is a valid, empty rule file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return []error{&RuleError{File: file, Line: top.Line, Err: errors.New("a rule file is a mapping with lists, macros and rules")}}
	}
	var errs []error
	bad := func(line int, id string, format string, args ...any) {
		errs = append(errs, &RuleError{File: file, Line: line, RuleID: id, Err: fmt.Errorf(format, args...)})
	}
	sections := map[string]*yaml.Node{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case "lists", "macros", "rules":
			if v.Kind != yaml.SequenceNode && !(v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
				bad(v.Line, "", "%s must be a list", k.Value)
				continue
			}
			sections[k.Value] = v
		default:
			bad(k.Line, "", "unknown section %q (want lists, macros, rules)", k.Value)
		}
	}
	reserved := reservedNames()
	if s := sections["lists"]; s != nil {
		for _, n := range s.Content {
			var l struct {
				Name   string   `yaml:"name"`
				Items  []string `yaml:"items"`
				Append bool     `yaml:"append"`
			}
			if err := decodeStrict(n, &l, "name", "items", "append"); err != nil {
				bad(n.Line, "", "list: %v", err)
				continue
			}
			switch {
			case !namePattern.MatchString(l.Name):
				bad(n.Line, "", "list name %q: use lower-case letters, digits and _", l.Name)
			case reserved[l.Name]:
				bad(n.Line, "", "list name %q is reserved (a field root or CEL word)", l.Name)
			case rs.macros[l.Name] != nil:
				bad(n.Line, "", "list name %q is already a macro", l.Name)
			case l.Append && rs.lists[l.Name] == nil:
				bad(n.Line, "", "list %q: append to a list that does not exist", l.Name)
			case l.Append:
				rs.lists[l.Name].items = append(rs.lists[l.Name].items, l.Items...)
			default:
				rs.lists[l.Name] = &list{items: l.Items, source: fmt.Sprintf("%s:%d", file, n.Line)}
			}
		}
	}
	if s := sections["macros"]; s != nil {
		for _, n := range s.Content {
			var m struct {
				Name      string `yaml:"name"`
				Condition string `yaml:"condition"`
			}
			if err := decodeStrict(n, &m, "name", "condition"); err != nil {
				bad(n.Line, "", "macro: %v", err)
				continue
			}
			switch {
			case !namePattern.MatchString(m.Name):
				bad(n.Line, "", "macro name %q: use lower-case letters, digits and _", m.Name)
			case reserved[m.Name]:
				bad(n.Line, "", "macro name %q is reserved (a field root or CEL word)", m.Name)
			case rs.lists[m.Name] != nil:
				bad(n.Line, "", "macro name %q is already a list", m.Name)
			case strings.TrimSpace(m.Condition) == "":
				bad(n.Line, "", "macro %q: empty condition", m.Name)
			default:
				rs.macros[m.Name] = &macro{condition: m.Condition, source: fmt.Sprintf("%s:%d", file, n.Line)}
			}
		}
	}
	if s := sections["rules"]; s != nil {
		for _, n := range s.Content {
			if err := rs.addRule(file, n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// ruleYAML is a rule entry as written.
type ruleYAML struct {
	ID          string      `yaml:"id"`
	Name        string      `yaml:"name"`
	Description string      `yaml:"description"`
	Remediation string      `yaml:"remediation"`
	Severity    string      `yaml:"severity"`
	Mitre       []mitreYAML `yaml:"mitre"`
	Kinds       []string    `yaml:"kinds"`
	Condition   string      `yaml:"condition"`
	Detector    string      `yaml:"detector"`
	Output      string      `yaml:"output"`
	Tags        []string    `yaml:"tags"`
	Enabled     *bool       `yaml:"enabled"`
	Exceptions  []Exception `yaml:"exceptions"`
	Threshold   *Threshold  `yaml:"threshold"`
}

type mitreYAML struct {
	Tactic      string `yaml:"tactic"`
	TechniqueID string `yaml:"technique_id"`
	Technique   string `yaml:"technique"`
}

func ruleKeys() []string {
	return []string{"id", "name", "description", "remediation", "severity", "mitre", "kinds", "condition",
		"detector", "output", "tags", "enabled", "exceptions", "threshold"}
}

func (rs *RuleSet) addRule(file string, n *yaml.Node) error {
	var y ruleYAML
	if err := decodeStrict(n, &y, ruleKeys()...); err != nil {
		return &RuleError{File: file, Line: n.Line, RuleID: idOf(n), Err: err}
	}
	fail := func(format string, args ...any) error {
		return &RuleError{File: file, Line: n.Line, RuleID: y.ID, Err: fmt.Errorf(format, args...)}
	}
	if !idPattern.MatchString(y.ID) {
		return fail("id %q: use 1-64 lower-case letters, digits, '.', '_' or '-'", y.ID)
	}
	for i, e := range y.Exceptions {
		if e.empty() {
			return fail("exceptions[%d]: sets no field, so it would silence every match", i)
		}
	}
	source := fmt.Sprintf("%s:%d", file, n.Line)
	existing := rs.Rule(y.ID)
	if y.Condition == "" && y.Detector == "" {
		// A patch: change an existing rule's switches, never its logic.
		if existing == nil {
			return fail("no rule with this id to patch, and no condition to define one")
		}
		if y.Name != "" || y.Description != "" || len(y.Kinds) > 0 || len(y.Mitre) > 0 || y.Output != "" || y.Threshold != nil {
			return fail("a patch (no condition) may only set enabled, severity, tags and exceptions")
		}
		if y.Severity != "" {
			s, err := api.ParseSeverity(y.Severity)
			if err != nil {
				return fail("severity: %w", err)
			}
			existing.Severity, existing.SeveritySet = s, true
		}
		if y.Enabled != nil {
			existing.Enabled = *y.Enabled
		}
		existing.Tags = append(existing.Tags, y.Tags...)
		existing.Exceptions = append(existing.Exceptions, y.Exceptions...)
		existing.Source += ", patched at " + source
		return nil
	}
	if y.Condition != "" && y.Detector != "" {
		return fail("set either condition or detector, not both")
	}
	// A built-in detection's name, severity and MITRE techniques come from
	// the catalogue in api unless the entry sets them.
	builtin, isBuiltin := api.LookupDetection(api.DetectionID(y.ID))
	if y.Name == "" && isBuiltin {
		y.Name = builtin.Name
	}
	if y.Name == "" {
		return fail("name is required")
	}
	sev := builtin.Severity
	if y.Severity != "" || !isBuiltin {
		var err error
		if sev, err = api.ParseSeverity(y.Severity); err != nil {
			return fail("severity: %w", err)
		}
	}
	r := &Rule{
		ID: y.ID, Name: y.Name, Description: y.Description, Remediation: y.Remediation, Severity: sev, SeveritySet: y.Severity != "",
		Condition: y.Condition, Detector: y.Detector, Output: y.Output, Tags: y.Tags,
		Enabled: y.Enabled == nil || *y.Enabled, Exceptions: y.Exceptions, Threshold: y.Threshold, File: file, Line: n.Line, Source: source,
	}
	if th := y.Threshold; th != nil {
		if y.Condition == "" {
			return fail("threshold: only rules with a condition count matches")
		}
		if th.Count < 2 || th.Window <= 0 {
			return fail("threshold: count must be at least 2 and window positive (e.g. 10s)")
		}
		if len(th.By) == 0 {
			th.By = []string{"container.id", "proc.pid"}
		}
	}
	for _, m := range y.Mitre {
		if m.Tactic == "" {
			return fail("mitre: tactic is required")
		}
		r.Mitre = append(r.Mitre, &api.Mitre{Tactic: m.Tactic, TechniqueId: m.TechniqueID, Technique: m.Technique})
	}
	if len(y.Mitre) == 0 && isBuiltin {
		r.Mitre = builtin.Mitre
	}
	if y.Condition != "" {
		if len(y.Kinds) == 0 {
			return fail("kinds is required: the event kinds the condition applies to (%s)", strings.Join(api.KindNames(), ", "))
		}
		for _, k := range y.Kinds {
			kind, err := api.ParseKind(k)
			if err != nil {
				return fail("kinds: %w", err)
			}
			r.Kinds = append(r.Kinds, kind)
		}
	} else if len(y.Kinds) > 0 {
		return fail("kinds: a detector chooses its own event kinds")
	}
	if existing != nil {
		*existing = *r
		return nil
	}
	rs.Rules = append(rs.Rules, r)
	return nil
}

func (e Exception) empty() bool {
	return len(e.Namespaces)+len(e.Images)+len(e.Containers)+len(e.Processes)+len(e.Paths) == 0
}

// decodeStrict decodes a mapping node, rejecting keys not in allowed:
// yaml.v3 only offers KnownFields on a Decoder, not on a Node, and we want
// the offending key's own line.
func decodeStrict(n *yaml.Node, out any, allowed ...string) error {
	if n.Kind != yaml.MappingNode {
		return errors.New("must be a mapping")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(allowed, k.Value) {
			return fmt.Errorf("line %d: unknown field %q (allowed: %s)", k.Line, k.Value, strings.Join(allowed, ", "))
		}
	}
	if err := n.Decode(out); err != nil {
		return err
	}
	return nil
}

// idOf digs the id out of a rule entry that failed to decode, for the message.
func idOf(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "id" {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// expand replaces list and macro names in a condition by their CEL text.
// It works on tokens, so names inside string literals and member names
// after a '.' are left alone.
func (rs *RuleSet) expand(cond string) (string, error) {
	return rs.expandDepth(cond, 0)
}

const maxMacroDepth = 16

func (rs *RuleSet) expandDepth(cond string, depth int) (string, error) {
	if depth > maxMacroDepth {
		return "", fmt.Errorf("macros nest deeper than %d (a macro that uses itself?)", maxMacroDepth)
	}
	var b strings.Builder
	for i := 0; i < len(cond); {
		c := cond[i]
		switch {
		case c == '"' || c == '\'':
			end, err := skipString(cond, i)
			if err != nil {
				return "", err
			}
			b.WriteString(cond[i:end])
			i = end
		case isIdentStart(c):
			j := i + 1
			for j < len(cond) && isIdentPart(cond[j]) {
				j++
			}
			word := cond[i:j]
			// String prefixes r"..." b'...' belong to the literal.
			if j < len(cond) && (cond[j] == '"' || cond[j] == '\'') && len(word) <= 2 && strings.Trim(strings.ToLower(word), "rb") == "" {
				end, err := skipString(cond, j)
				if err != nil {
					return "", err
				}
				b.WriteString(cond[i:end])
				i = end
				continue
			}
			member := i > 0 && prevNonSpace(cond, i) == '.'
			switch {
			case member:
				b.WriteString(word)
			case rs.macros[word] != nil:
				inner, err := rs.expandDepth(rs.macros[word].condition, depth+1)
				if err != nil {
					return "", fmt.Errorf("macro %s: %w", word, err)
				}
				b.WriteString("(" + inner + ")")
			case rs.lists[word] != nil:
				items, err := rs.listItems(word, 0)
				if err != nil {
					return "", err
				}
				b.WriteString(listLiteral(items))
			default:
				b.WriteString(word)
			}
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

// listLiteral writes a list as CEL: integers when every item is one (ports,
// request numbers), strings otherwise.
func listLiteral(items []string) string {
	ints := len(items) > 0
	for _, it := range items {
		if _, err := strconv.ParseInt(it, 0, 64); err != nil {
			ints = false
			break
		}
	}
	parts := make([]string, len(items))
	for i, it := range items {
		if ints {
			n, _ := strconv.ParseInt(it, 0, 64)
			parts[i] = strconv.FormatInt(n, 10)
		} else {
			parts[i] = strconv.Quote(it)
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// listItems flattens a list whose items may name other lists.
func (rs *RuleSet) listItems(name string, depth int) ([]string, error) {
	if depth > maxMacroDepth {
		return nil, fmt.Errorf("list %s: lists nest deeper than %d", name, maxMacroDepth)
	}
	var out []string
	for _, it := range rs.lists[name].items {
		if rs.lists[it] != nil && it != name {
			inner, err := rs.listItems(it, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, inner...)
			continue
		}
		out = append(out, it)
	}
	return out, nil
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isIdentPart(c byte) bool  { return isIdentStart(c) || c >= '0' && c <= '9' }

func prevNonSpace(s string, i int) byte {
	for i--; i >= 0; i-- {
		if s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
			return s[i]
		}
	}
	return 0
}

// skipString returns the index just past the CEL string literal at s[i],
// which may be single, double or triple quoted.
func skipString(s string, i int) (int, error) {
	q := s[i]
	if strings.HasPrefix(s[i:], strings.Repeat(string(q), 3)) {
		end := strings.Index(s[i+3:], strings.Repeat(string(q), 3))
		if end < 0 {
			return 0, errors.New("unterminated triple-quoted string")
		}
		return i + 3 + end + 3, nil
	}
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			return j + 1, nil
		case '\n':
			return 0, errors.New("unterminated string")
		}
	}
	return 0, errors.New("unterminated string")
}
