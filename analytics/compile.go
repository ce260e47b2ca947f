package analytics

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"

	"github.com/harrier-sec/harrier/api"
)

// compiledRule is a rule ready to run: a native guard that answers the cheap
// part of the condition without CEL, and the CEL program for the rest (nil
// when the guard answers the whole condition exactly).
type compiledRule struct {
	rule    *Rule
	guard   guard
	program cel.Program
	output  []outputPart
	rate    *rateCounter
}

// rateCounter counts a threshold rule's matches per group.
type rateCounter struct {
	th     *Threshold
	by     []*field
	groups map[string]*rateGroup
}

type rateGroup struct {
	start    time.Time
	n        int
	evidence []*api.Event
}

const maxRateGroups = 4096

// observe counts one match and returns the evidence when the threshold is
// reached (once per window and group).
func (r *rateCounter) observe(c *evalContext, now time.Time, maxEvidence int) []*api.Event {
	var b strings.Builder
	for _, f := range r.by {
		fmt.Fprint(&b, f.value(c), "|")
	}
	key := b.String()
	g := r.groups[key]
	if g == nil || now.Sub(g.start) > r.th.Window {
		if g == nil && len(r.groups) >= maxRateGroups {
			clear(r.groups)
		}
		g = &rateGroup{start: now}
		r.groups[key] = g
	}
	g.n++
	if len(g.evidence) < maxEvidence {
		g.evidence = append(g.evidence, c.ev)
	} else {
		copy(g.evidence, g.evidence[1:])
		g.evidence[len(g.evidence)-1] = c.ev
	}
	if g.n == r.th.Count {
		return g.evidence
	}
	return nil
}

// guard is a native, allocation-free test derived from a condition.
type guard func(*evalContext) bool

// newCELEnv declares every field and Harrier's helper functions.
func newCELEnv(fields map[string]*field) (*cel.Env, error) {
	opts := []cel.EnvOption{}
	for _, f := range fields {
		opts = append(opts, cel.Variable(f.name, f.celType()))
	}
	strList := cel.ListType(cel.StringType)
	stringListOp := func(id string, test func(s, item string) bool) cel.EnvOption {
		return cel.Function(id, cel.MemberOverload("string_"+id+"_list", []*cel.Type{cel.StringType, strList}, cel.BoolType,
			cel.BinaryBinding(func(lhs, rhs ref.Val) ref.Val {
				s, ok := lhs.(types.String)
				if !ok {
					return types.MaybeNoSuchOverloadErr(lhs)
				}
				return types.Bool(anyItem(rhs, func(item string) bool { return test(string(s), item) }))
			})))
	}
	opts = append(opts,
		stringListOp("startsWithAny", strings.HasPrefix),
		stringListOp("endsWithAny", strings.HasSuffix),
		stringListOp("containsAny", strings.Contains),
		stringListOp("inCIDR", func(ip, cidr string) bool {
			a, err := netip.ParseAddr(ip)
			p, perr := netip.ParsePrefix(cidr)
			return err == nil && perr == nil && p.Contains(a.Unmap())
		}),
		cel.Function("hasAny", cel.MemberOverload("list_hasAny_list", []*cel.Type{strList, strList}, cel.BoolType,
			cel.BinaryBinding(func(lhs, rhs ref.Val) ref.Val {
				want := map[string]bool{}
				anyItem(rhs, func(s string) bool { want[s] = true; return false })
				return types.Bool(anyItem(lhs, func(s string) bool { return want[s] }))
			}))),
		cel.Function("basename", cel.Overload("basename_string", []*cel.Type{cel.StringType}, cel.StringType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				s, ok := v.(types.String)
				if !ok {
					return types.MaybeNoSuchOverloadErr(v)
				}
				return types.String(baseName(string(s)))
			}))),
	)
	return cel.NewEnv(opts...)
}

// anyItem walks a CEL list of strings until test says true.
func anyItem(l ref.Val, test func(string) bool) bool {
	lister, ok := l.(traits.Lister)
	if !ok {
		return false
	}
	it := lister.Iterator()
	for it.HasNext() == types.True {
		if s, ok := it.Next().(types.String); ok && test(string(s)) {
			return true
		}
	}
	return false
}

// compileRule turns a loaded rule into a runnable one.
func compileRule(env *cel.Env, rs *RuleSet, fields map[string]*field, r *Rule) (*compiledRule, error) {
	out, err := parseOutput(r.Output, fields)
	if err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	cr := &compiledRule{rule: r, output: out}
	if r.Condition == "" {
		return cr, nil
	}
	if th := r.Threshold; th != nil {
		cr.rate = &rateCounter{th: th, groups: map[string]*rateGroup{}}
		for _, name := range th.By {
			f := fields[name]
			if f == nil {
				return nil, fmt.Errorf("threshold.by: unknown field %q", name)
			}
			cr.rate.by = append(cr.rate.by, f)
		}
	}
	text, err := rs.expand(r.Condition)
	if err != nil {
		return nil, fmt.Errorf("condition: %w", err)
	}
	checked, iss := env.Compile(text)
	if iss.Err() != nil {
		return nil, fmt.Errorf("condition: %w", iss.Err())
	}
	if !checked.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("condition: must be a boolean expression, is %s", checked.OutputType())
	}
	native := checked.NativeRep()
	g := guardBuilder{refs: native.ReferenceMap(), fields: fields}
	guardFn, exact := g.of(native.Expr())
	if g.err != nil {
		return nil, fmt.Errorf("condition: %w", g.err)
	}
	cr.guard = guardFn
	if !exact {
		prg, err := env.Program(checked, cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			return nil, fmt.Errorf("condition: %w", err)
		}
		cr.program = prg
	}
	return cr, nil
}

// matches runs the rule on the current event.
func (cr *compiledRule) matches(c *evalContext) (bool, error) {
	if cr.guard != nil && !cr.guard(c) {
		return false, nil
	}
	if cr.program == nil {
		return cr.guard != nil, nil
	}
	v, _, err := cr.program.Eval(c)
	if err != nil {
		return false, err
	}
	b, ok := v.(types.Bool)
	return ok && bool(b), nil
}

// guardBuilder derives a native guard from a checked CEL expression. A guard
// is a necessary condition of the expression; "exact" says it is also
// sufficient, in which case CEL never runs for the rule. Only shapes whose
// native meaning is certain are translated: comparisons of a field with
// literals, the string helpers with literal arguments, and &&, || and ! of
// those. Anything else is left to CEL.
type guardBuilder struct {
	refs   map[int64]*ast.ReferenceInfo
	fields map[string]*field
	err    error
}

func (g *guardBuilder) field(e ast.Expr) *field {
	if e.Kind() != ast.IdentKind && e.Kind() != ast.SelectKind {
		return nil
	}
	ref, ok := g.refs[e.ID()]
	if !ok || ref.Name == "" {
		return nil
	}
	return g.fields[ref.Name]
}

func literalString(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}

func literalStrings(e ast.Expr) ([]string, bool) {
	if e.Kind() != ast.ListKind {
		return nil, false
	}
	var out []string
	for _, el := range e.AsList().Elements() {
		s, ok := literalString(el)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func literalInts(e ast.Expr) (map[int64]struct{}, bool) {
	if e.Kind() != ast.ListKind {
		return nil, false
	}
	out := map[int64]struct{}{}
	for _, el := range e.AsList().Elements() {
		if el.Kind() != ast.LiteralKind {
			return nil, false
		}
		n, ok := el.AsLiteral().(types.Int)
		if !ok {
			return nil, false
		}
		out[int64(n)] = struct{}{}
	}
	return out, true
}

func (g *guardBuilder) of(e ast.Expr) (guard, bool) {
	if f := g.field(e); f != nil && f.typ == boolField {
		return f.flag, true
	}
	if e.Kind() == ast.LiteralKind {
		if b, ok := e.AsLiteral().(types.Bool); ok {
			return func(*evalContext) bool { return bool(b) }, true
		}
		return nil, false
	}
	if e.Kind() != ast.CallKind {
		return nil, false
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalAnd:
		l, lx := g.of(args[0])
		r, rx := g.of(args[1])
		switch {
		case l != nil && r != nil:
			return func(c *evalContext) bool { return l(c) && r(c) }, lx && rx
		case l != nil:
			return l, false
		case r != nil:
			return r, false
		}
		return nil, false
	case operators.LogicalOr:
		l, lx := g.of(args[0])
		r, rx := g.of(args[1])
		if l == nil || r == nil {
			return nil, false
		}
		return func(c *evalContext) bool { return l(c) || r(c) }, lx && rx
	case operators.LogicalNot:
		if inner, exact := g.of(args[0]); inner != nil && exact {
			return func(c *evalContext) bool { return !inner(c) }, true
		}
		return nil, false
	case operators.Equals, operators.NotEquals:
		eq := g.equality(args[0], args[1])
		if eq == nil {
			eq = g.equality(args[1], args[0])
		}
		if eq == nil {
			return nil, false
		}
		if call.FunctionName() == operators.NotEquals {
			return func(c *evalContext) bool { return !eq(c) }, true
		}
		return eq, true
	case operators.Less, operators.LessEquals, operators.Greater, operators.GreaterEquals:
		return g.intCompare(call.FunctionName(), args[0], args[1])
	case operators.In:
		f := g.field(args[0])
		if f != nil && f.typ == intField {
			nums, ok := literalInts(args[1])
			if !ok {
				return nil, false
			}
			get := f.num
			return func(c *evalContext) bool { _, ok := nums[get(c)]; return ok }, true
		}
		items, ok := literalStrings(args[1])
		if f == nil || f.typ != stringField || !ok {
			return nil, false
		}
		set := make(map[string]struct{}, len(items))
		for _, s := range items {
			set[s] = struct{}{}
		}
		get := f.str
		return func(c *evalContext) bool { _, ok := set[get(c)]; return ok }, true
	}
	if !call.IsMemberFunction() || len(args) != 1 {
		return nil, false
	}
	f := g.field(call.Target())
	if f == nil {
		return nil, false
	}
	name := call.FunctionName()
	if f.typ == listField && name == "hasAny" {
		items, ok := literalStrings(args[0])
		if !ok {
			return nil, false
		}
		set := make(map[string]struct{}, len(items))
		for _, s := range items {
			set[s] = struct{}{}
		}
		get := f.list
		return func(c *evalContext) bool {
			for _, s := range get(c) {
				if _, ok := set[s]; ok {
					return true
				}
			}
			return false
		}, true
	}
	if f.typ != stringField {
		return nil, false
	}
	get := f.str
	if lit, ok := literalString(args[0]); ok {
		switch name {
		case "startsWith":
			return func(c *evalContext) bool { return strings.HasPrefix(get(c), lit) }, true
		case "endsWith":
			return func(c *evalContext) bool { return strings.HasSuffix(get(c), lit) }, true
		case "contains":
			return func(c *evalContext) bool { return strings.Contains(get(c), lit) }, true
		case "matches":
			re, err := regexp.Compile(lit)
			if err != nil {
				g.err = fmt.Errorf("regular expression %q: %w", lit, err)
				return nil, false
			}
			return func(c *evalContext) bool { return re.MatchString(get(c)) }, true
		}
		return nil, false
	}
	items, ok := literalStrings(args[0])
	if !ok {
		return nil, false
	}
	switch name {
	case "startsWithAny":
		return func(c *evalContext) bool { return hasAnyAffix(get(c), items, strings.HasPrefix) }, true
	case "endsWithAny":
		return func(c *evalContext) bool { return hasAnyAffix(get(c), items, strings.HasSuffix) }, true
	case "containsAny":
		return func(c *evalContext) bool { return hasAnyAffix(get(c), items, strings.Contains) }, true
	case "inCIDR":
		var prefixes []netip.Prefix
		for _, s := range items {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				g.err = fmt.Errorf("inCIDR: %w", err)
				return nil, false
			}
			prefixes = append(prefixes, p)
		}
		return func(c *evalContext) bool { return addrIn(get(c), prefixes) }, true
	}
	return nil, false
}

func hasAnyAffix(s string, items []string, test func(s, item string) bool) bool {
	for _, it := range items {
		if test(s, it) {
			return true
		}
	}
	return false
}

func addrIn(ip string, prefixes []netip.Prefix) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// equality compares field f (left) with a literal (right).
func (g *guardBuilder) equality(left, right ast.Expr) guard {
	f := g.field(left)
	if f == nil || right.Kind() != ast.LiteralKind {
		return nil
	}
	switch v := right.AsLiteral().(type) {
	case types.String:
		if f.typ != stringField {
			return nil
		}
		get, want := f.str, string(v)
		return func(c *evalContext) bool { return get(c) == want }
	case types.Int:
		if f.typ != intField {
			return nil
		}
		get, want := f.num, int64(v)
		return func(c *evalContext) bool { return get(c) == want }
	case types.Bool:
		if f.typ != boolField {
			return nil
		}
		get, want := f.flag, bool(v)
		return func(c *evalContext) bool { return get(c) == want }
	}
	return nil
}

func (g *guardBuilder) intCompare(op string, left, right ast.Expr) (guard, bool) {
	f := g.field(left)
	if f == nil || f.typ != intField || right.Kind() != ast.LiteralKind {
		return nil, false
	}
	v, ok := right.AsLiteral().(types.Int)
	if !ok {
		return nil, false
	}
	get, n := f.num, int64(v)
	switch op {
	case operators.Less:
		return func(c *evalContext) bool { return get(c) < n }, true
	case operators.LessEquals:
		return func(c *evalContext) bool { return get(c) <= n }, true
	case operators.Greater:
		return func(c *evalContext) bool { return get(c) > n }, true
	}
	return func(c *evalContext) bool { return get(c) >= n }, true
}

// outputPart is a piece of an output template: literal text or a field.
type outputPart struct {
	text  string
	field *field
}

// parseOutput splits "read {file.path} as {proc.name}" into parts.
func parseOutput(tmpl string, fields map[string]*field) ([]outputPart, error) {
	var parts []outputPart
	for tmpl != "" {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			parts = append(parts, outputPart{text: tmpl})
			break
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return nil, errors.New("unclosed {")
		}
		name := tmpl[i+1 : i+j]
		f := fields[name]
		if f == nil {
			return nil, fmt.Errorf("unknown field {%s}", name)
		}
		if i > 0 {
			parts = append(parts, outputPart{text: tmpl[:i]})
		}
		parts = append(parts, outputPart{field: f})
		tmpl = tmpl[i+j+1:]
	}
	return parts, nil
}

func renderOutput(parts []outputPart, c *evalContext) string {
	var b strings.Builder
	for _, p := range parts {
		if p.field == nil {
			b.WriteString(p.text)
			continue
		}
		fmt.Fprint(&b, p.field.value(c))
	}
	return b.String()
}

// kindIndex returns the rules that can match each kind.
func kindIndex(rules []*compiledRule) map[api.EventKind][]*compiledRule {
	idx := map[api.EventKind][]*compiledRule{}
	for _, r := range rules {
		for _, k := range r.rule.Kinds {
			idx[k] = append(idx[k], r)
		}
	}
	return idx
}
