package analytics

import (
	"encoding/json"
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

// FuzzAuditObjects: request objects from the API server's audit events (any
// JSON a client sent) through the control-plane detectors, the pg_hba
// parser and the learned anomalies included, never panic.
func FuzzAuditObjects(f *testing.F) {
	f.Add("configmaps", `{"kind":"ConfigMap","data":{"pg_hba.conf":"host all all 0.0.0.0 0.0.0.0 trust\nhost all all ::/0 md5"}}`)
	f.Add("statefulsets", `{"spec":{"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"image":"postgres","env":[{"name":"POSTGRES_HOST_AUTH_METHOD","value":"trust"}]}],"volumes":[{"configMap":{"name":"c"}},{"projected":{"sources":[{"configMap":{"name":"d"}}]}}]}}}}`)
	f.Add("services", `{"kind":"Service","spec":{"type":"LoadBalancer","selector":{"a":"b"}}}`)
	f.Add("pods", `{"spec":{"containers":[{"image":"registry.local:5000/a/b/c@sha256:00"},{"image":""}]}}`)
	e, err := NewEngine(Config{}, mustLoadRules(f), Options{Node: "n"})
	if err != nil {
		f.Fatal(err)
	}
	pg := newExposedPostgres(false, map[string]bool{"postgres": true, "postgis": true})
	f.Fuzz(func(t *testing.T, resource, object string) {
		for _, verb := range []string{"create", "update", "get"} {
			e.Process(auditEv(verb, resource, "ns", "x", object, func(a *api.Audit) { a.Code = 201 }), func(*api.Alert) {})
		}
		_, _ = parseHBA(object)
		_ = appendImageRepository(nil, object)
		// The Postgres screen only spares work: it never passes over an
		// object whose parse finds Postgres pods.
		var obj map[string]any
		if json.Unmarshal([]byte(object), &obj) == nil && pg.postgresPods(obj) != nil && !imageValueContains(object, pg.images) {
			t.Errorf("the screen passes over %s, whose parse finds Postgres pods", object)
		}
	})
}

func mustLoadRules(tb testing.TB) *RuleSet {
	rs, err := LoadRules()
	if err != nil {
		tb.Fatal(err)
	}
	return rs
}
