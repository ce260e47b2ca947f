package analytics

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
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
	// names is, per event kind, what a matching event's proc.name must be.
	names map[api.EventKind]nameReq
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
	cr := &compiledRule{rule: r, output: out, names: map[api.EventKind]nameReq{}}
	for _, k := range r.Kinds {
		cr.names[k] = anyName
	}
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
	for _, k := range r.Kinds {
		cr.names[k] = g.nameReqOf(native.Expr(), k.ShortName())
	}
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
	if f.grams != nil && (name == "contains" || name == "containsAny") {
		if g := screenedContains(f, args[0]); g != nil {
			return g, true
		}
	}
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
			// Every match holds the expression's literal prefix: a search
			// for it (screened by byte pairs) is much cheaper than the
			// regular expression on the many values that lack it.
			if pre, _ := re.LiteralPrefix(); len(pre) >= 2 {
				grams, has := bigramsOf(pre), f.grams
				return func(c *evalContext) bool {
					s := get(c)
					if has != nil && !has(c).hasAll(grams) || !strings.Contains(s, pre) {
						return false
					}
					return re.MatchString(s)
				}, true
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
		m := newAffixMatcher(items, false)
		return func(c *evalContext) bool { return m.match(get(c)) }, true
	case "endsWithAny":
		m := newAffixMatcher(items, true)
		return func(c *evalContext) bool { return m.match(get(c)) }, true
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

// screenedContains is contains/containsAny on a field with byte pairs: a
// literal is searched for only when every pair of it occurs in the value.
// Exec rules test the command line for some sixty literals, nearly all
// absent; the screen answers most of them with a few bit tests.
func screenedContains(f *field, arg ast.Expr) guard {
	items, ok := literalStrings(arg)
	if !ok {
		lit, ok := literalString(arg)
		if !ok {
			return nil
		}
		items = []string{lit}
	}
	type screened struct {
		lit   string
		grams []uint16
	}
	lits := make([]screened, len(items))
	for i, it := range items {
		lits[i] = screened{lit: it, grams: bigramsOf(it)}
	}
	get, grams := f.str, f.grams
	return func(c *evalContext) bool {
		set := grams(c)
		for _, l := range lits {
			if set.hasAll(l.grams) && strings.Contains(get(c), l.lit) {
				return true
			}
		}
		return false
	}
}

// affixMatcher tests a value against many prefixes (or suffixes), trying
// only those that start (end) with the value's first (last) byte.
type affixMatcher struct {
	suffix bool
	empty  bool // "" is an item: everything matches
	byByte [256][]string
}

func newAffixMatcher(items []string, suffix bool) *affixMatcher {
	m := &affixMatcher{suffix: suffix}
	for _, it := range items {
		switch {
		case it == "":
			m.empty = true
		case suffix:
			m.byByte[it[len(it)-1]] = append(m.byByte[it[len(it)-1]], it)
		default:
			m.byByte[it[0]] = append(m.byByte[it[0]], it)
		}
	}
	return m
}

func (m *affixMatcher) match(s string) bool {
	if m.empty {
		return true
	}
	if s == "" {
		return false
	}
	if m.suffix {
		return hasAnyAffix(s, m.byByte[s[len(s)-1]], strings.HasSuffix)
	}
	return hasAnyAffix(s, m.byByte[s[0]], strings.HasPrefix)
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

// ruleIndex holds the rules of one event kind. Most exec rules can only match
// a few process names (proc.name in [...] somewhere every match must pass);
// with dozens of them, trying each rule's guard on every exec was the
// engine's main cost. byName lists, for each name some rule requires, the
// rules that can match a process of that name; other lists the rules that can
// match any other name. Both keep the rule file's order.
type ruleIndex struct {
	byName map[string][]*compiledRule
	other  []*compiledRule
}

// candidates are the rules that can match the current event.
func (ix *ruleIndex) candidates(c *evalContext) []*compiledRule {
	if ix == nil {
		return nil
	}
	if len(ix.byName) == 0 {
		return ix.other
	}
	if rs, ok := ix.byName[c.procNameValue()]; ok {
		return rs
	}
	return ix.other
}

// kindIndex returns the rules that can match each kind, indexed by the
// process names they require.
func kindIndex(rules []*compiledRule) map[api.EventKind]*ruleIndex {
	idx := map[api.EventKind]*ruleIndex{}
	var kinds []api.EventKind
	for _, r := range rules {
		for _, k := range r.rule.Kinds {
			if !slices.Contains(kinds, k) {
				kinds = append(kinds, k)
			}
		}
	}
	for _, k := range kinds {
		var all []*compiledRule
		names := map[string]bool{}
		for _, r := range rules {
			if !slices.Contains(r.rule.Kinds, k) {
				continue
			}
			all = append(all, r)
			for n := range r.names[k].names {
				names[n] = true
			}
		}
		if len(all) == 0 {
			continue
		}
		ix := &ruleIndex{byName: map[string][]*compiledRule{}}
		for _, r := range all {
			if r.names[k].admitsOther() {
				ix.other = append(ix.other, r)
			}
		}
		for n := range names {
			var rs []*compiledRule
			for _, r := range all {
				if r.names[k].admits(n) {
					rs = append(rs, r)
				}
			}
			ix.byName[n] = rs
		}
		idx[k] = ix
	}
	return idx
}

// nameReq is a necessary condition on proc.name that a rule's condition
// implies for one event kind: the name is in names or starts with one of
// prefixes. any means the condition does not restrict the name.
type nameReq struct {
	any      bool
	names    map[string]bool
	prefixes []string
}

var anyName = nameReq{any: true}

// admits says whether a process named n may match.
func (r nameReq) admits(n string) bool {
	return r.any || r.names[n] || hasAnyAffix(n, r.prefixes, strings.HasPrefix)
}

// admitsOther says whether a name outside names may match (any name, or
// names by prefix, which the rule's own guard then tests).
func (r nameReq) admitsOther() bool { return r.any || len(r.prefixes) > 0 }

// nameReqOf derives the requirement from a checked expression for events of
// the kind named kind. It must never be stricter than the expression: when
// in doubt it answers anyName.
func (g *guardBuilder) nameReqOf(e ast.Expr, kind string) nameReq {
	if v, ok := g.kindConst(e, kind); ok {
		if v {
			return anyName
		}
		return nameReq{} // never matches this kind
	}
	if e.Kind() != ast.CallKind {
		return anyName
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalAnd:
		l, r := g.nameReqOf(args[0], kind), g.nameReqOf(args[1], kind)
		switch {
		case l.any:
			return r
		case r.any:
			return l
		case len(l.prefixes) > 0 && len(r.prefixes) == 0:
			return r // exact names index better
		}
		return l
	case operators.LogicalOr:
		l, r := g.nameReqOf(args[0], kind), g.nameReqOf(args[1], kind)
		if l.any || r.any {
			return anyName
		}
		u := nameReq{names: map[string]bool{}, prefixes: append(slices.Clone(l.prefixes), r.prefixes...)}
		for n := range l.names {
			u.names[n] = true
		}
		for n := range r.names {
			u.names[n] = true
		}
		return u
	case operators.Equals:
		for _, p := range [][2]ast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
			if g.isProcName(p[0]) {
				if s, ok := literalString(p[1]); ok {
					return nameReq{names: map[string]bool{s: true}}
				}
			}
		}
	case operators.In:
		if g.isProcName(args[0]) {
			if items, ok := literalStrings(args[1]); ok {
				r := nameReq{names: map[string]bool{}}
				for _, s := range items {
					r.names[s] = true
				}
				return r
			}
		}
	case "startsWith", "startsWithAny":
		if call.IsMemberFunction() && len(args) == 1 && g.isProcName(call.Target()) {
			if s, ok := literalString(args[0]); ok {
				return nameReq{prefixes: []string{s}}
			}
			if items, ok := literalStrings(args[0]); ok {
				return nameReq{prefixes: items}
			}
		}
	}
	return anyName
}

func (g *guardBuilder) isProcName(e ast.Expr) bool {
	f := g.field(e)
	return f != nil && f.name == "proc.name"
}

// kindConst folds tests of the event kind (kind == "exec", kind != "open",
// and ! of them) to a constant for events of the kind named kind.
func (g *guardBuilder) kindConst(e ast.Expr, kind string) (value, known bool) {
	if e.Kind() != ast.CallKind {
		return false, false
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalNot:
		v, ok := g.kindConst(args[0], kind)
		return !v, ok
	case operators.Equals, operators.NotEquals:
		for _, p := range [][2]ast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
			if f := g.field(p[0]); f != nil && f.name == "kind" {
				if s, ok := literalString(p[1]); ok {
					return (s == kind) == (call.FunctionName() == operators.Equals), true
				}
			}
		}
	}
	return false, false
}
