package analytics

import (
	"testing"

	"github.com/harrier-sec/harrier/api"
)

// FuzzLoadRules feeds arbitrary rule files through loading and compiling:
// every outcome is a rule set plus errors, never a panic.
func FuzzLoadRules(f *testing.F) {
	f.Add([]byte(builtinRules))
	f.Add([]byte("rules:\n  - id: x\n    name: X\n    severity: low\n    kinds: [exec]\n    condition: proc.name in my && m\nlists:\n  - {name: my, items: [a, '\"']}\nmacros:\n  - {name: m, condition: 'proc.cmdline.matches(\"(\")'}\n"))
	f.Add([]byte("macros:\n  - {name: a, condition: b}\n  - {name: b, condition: a}\nrules:\n  - {id: y, name: Y, severity: high, kinds: [open], condition: a}\n"))
	f.Add([]byte("lists:\n  - {name: l, items: [l, l]}\nrules:\n  - {id: z, name: Z, severity: info, kinds: [connect], condition: 'net.port in l', output: '{net.ip'}\n"))
	f.Add([]byte("rules: [{id: web-shell, enabled: false}, {id: q, name: Q, severity: low, kinds: [exec], condition: \"'''\"}]"))
	fields := newFields()
	env, err := newCELEnv(fields)
	if err != nil {
		f.Fatal(err)
	}
	ev := execEv("/bin/sh", []string{"sh", "-c", "id"}, parents("/usr/sbin/nginx"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs := newRuleSet()
		_ = rs.add("fuzz.yaml", data)
		c := &evalContext{fields: fields, supervisors: map[uint32]bool{}}
		for _, r := range rs.Rules {
			if r.Condition == "" {
				continue
			}
			cr, err := compileRule(env, rs, fields, r)
			if err != nil {
				continue
			}
			c.reset(ev, "exec")
			_, _ = cr.matches(c)
			_ = renderOutput(cr.output, c)
		}
	})
}

// FuzzRedact: masking never panics and never lengthens a secret-free arg.
func FuzzRedact(f *testing.F) {
	f.Add("password=hunter2", "--token")
	f.Add("https://u:p@h/x", "Bearer abc")
	r := newRedactor()
	f.Fuzz(func(t *testing.T, a, b string) {
		out, changed := r.redactArgs([]string{"x", a, b})
		if len(out) != 3 {
			t.Fatalf("redaction changed the argument count: %q", out)
		}
		if !changed && (out[1] != a || out[2] != b) {
			t.Fatal("unchanged result differs from input")
		}
		_ = r.redactEvent(&api.Event{Process: &api.Process{Args: []string{a, b}}})
	})
}
