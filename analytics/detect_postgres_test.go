package analytics

import (
	"slices"
	"strings"
	"testing"

	"github.com/harrier-sec/harrier/api"
)

func TestParseHBA(t *testing.T) {
	tests := []struct {
		conf         string
		trust, broad int
	}{
		{"local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust", 0, 0},
		{"host all all 10.0.0.0/8 scram-sha-256", 0, 0},
		{"host all all 10.0.0.0/8 trust", 1, 0},
		{"hostssl all all 0.0.0.0/0 scram-sha-256  # from anywhere", 0, 1},
		{"host all all ::/0 md5\nhost all all all reject", 0, 1},
		{"host all all all trust", 1, 1},
		{"host all all 0.0.0.0 0.0.0.0 trust", 1, 1},
		{"host all all 192.168.1.0 255.255.255.0 md5", 0, 0},
		{"# host all all 0.0.0.0/0 trust\n\n", 0, 0},
	}
	for _, tt := range tests {
		trust, broad := parseHBA(tt.conf)
		if len(trust) != tt.trust || len(broad) != tt.broad {
			t.Errorf("%q: trust %v broad %v, want %d and %d lines", tt.conf, trust, broad, tt.trust, tt.broad)
		}
	}
}

func TestExposedPostgres(t *testing.T) {
	cm := func(name, hba string) *api.Event {
		b := strings.ReplaceAll(hba, "\n", `\n`)
		return actorEv("alice", "create", "configmaps", "db", name, 201, 0, `{"kind":"ConfigMap","data":{"pg_hba.conf":"`+b+`"}}`)
	}
	sts := func(name, image, configMap, env string) *api.Event {
		obj := `{"kind":"StatefulSet","spec":{"selector":{"matchLabels":{"app":"` + name + `"}},"template":{"metadata":{"labels":{"app":"` + name + `","tier":"db"}},"spec":{"containers":[{"name":"pg","image":"` + image + `"` + env + `}],"volumes":[{"name":"cfg","configMap":{"name":"` + configMap + `"}}]}}}}`
		return actorEv("alice", "create", "statefulsets", "db", name, 201, 0, obj)
	}
	svc := func(name, typ, app string) *api.Event {
		return actorEv("alice", "create", "services", "db", name, 201, 0, `{"kind":"Service","spec":{"type":"`+typ+`","selector":{"app":"`+app+`"},"ports":[{"port":5432}]}}`)
	}
	trustHBA := "local all all trust\nhost all all 10.0.0.0/8 trust"
	broadHBA := "host all all 0.0.0.0/0 scram-sha-256"
	safeHBA := "local all all peer\nhost all all 10.0.0.0/8 scram-sha-256"
	tests := []struct {
		name    string
		events  []*api.Event
		want    []string
		summary string
	}{
		{"trust ConfigMap, StatefulSet, then the LoadBalancer",
			[]*api.Event{cm("pg-trust", trustHBA), sts("pg", "postgres:17", "pg-trust", ""), svc("pg-lb", "LoadBalancer", "pg")},
			[]string{"exposed-postgres-trust"}, "Service db/pg-lb exposes Postgres statefulsets pg (pg_hba.conf from ConfigMap pg-trust): host all all 10.0.0.0/8 trust"},
		{"the Service first, the ConfigMap last",
			[]*api.Event{svc("pg-np", "NodePort", "pg"), sts("pg", "docker.io/bitnami/postgresql:16", "pg-broad", ""), cm("pg-broad", broadHBA)},
			[]string{"exposed-postgres-broad-range"}, "host all all 0.0.0.0/0 scram-sha-256"},
		{"the official image told to trust everyone",
			[]*api.Event{sts("pg", "postgres:17", "none", `,"env":[{"name":"POSTGRES_HOST_AUTH_METHOD","value":"trust"}]`), svc("pg-lb", "LoadBalancer", "pg")},
			[]string{"exposed-postgres-trust", "exposed-postgres-broad-range"}, "POSTGRES_HOST_AUTH_METHOD=trust"},
		{"a ClusterIP service in front of trust",
			[]*api.Event{cm("pg-trust", trustHBA), sts("pg", "postgres:17", "pg-trust", ""), svc("pg", "ClusterIP", "pg")}, nil, ""},
		{"an exposed Postgres with a safe pg_hba.conf",
			[]*api.Event{cm("pg-safe", safeHBA), sts("pg", "postgres:17", "pg-safe", ""), svc("pg-lb", "LoadBalancer", "pg")}, nil, ""},
		{"the exposed service selects other pods",
			[]*api.Event{cm("pg-trust", trustHBA), sts("pg", "postgres:17", "pg-trust", ""), svc("web-lb", "LoadBalancer", "web")}, nil, ""},
		{"not Postgres",
			[]*api.Event{cm("pg-trust", trustHBA), sts("pg", "nginx:1.27", "pg-trust", ""), svc("pg-lb", "LoadBalancer", "pg")}, nil, ""},
		{"the risky ConfigMap replaced by a safe one before the Service",
			[]*api.Event{cm("pg-cfg", trustHBA), actorEv("alice", "update", "configmaps", "db", "pg-cfg", 200, 0,
				`{"kind":"ConfigMap","data":{"pg_hba.conf":"host all all 10.0.0.0/8 scram-sha-256"}}`),
				sts("pg", "postgres:17", "pg-cfg", ""), svc("pg-lb", "LoadBalancer", "pg")}, nil, ""},
		{"the exposed Service deleted before the workload",
			[]*api.Event{cm("pg-trust", trustHBA), svc("pg-lb", "LoadBalancer", "pg"),
				actorEv("alice", "delete", "services", "db", "pg-lb", 200, 0, ""), sts("pg", "postgres:17", "pg-trust", "")}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, Config{})
			var got []string
			var alerts []*api.Alert
			for _, ev := range tt.events {
				e.Process(ev, func(a *api.Alert) {
					if strings.HasPrefix(a.GetDetectionId(), "exposed-postgres") {
						got = append(got, a.GetDetectionId())
						alerts = append(alerts, a)
					}
				})
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("alerts %v, want %v", got, tt.want)
			}
			for _, a := range alerts {
				if !strings.Contains(a.GetSummary(), tt.summary) {
					t.Errorf("summary %q, want it to say %q", a.GetSummary(), tt.summary)
				}
				if len(a.GetEvidence()) < 2 || a.GetEvidence()[len(a.GetEvidence())-1].GetAudit().GetName() != tt.events[len(tt.events)-1].GetAudit().GetName() {
					t.Errorf("evidence %v: want the joined objects, the trigger last", a.GetEvidence())
				}
			}
		})
	}
}

func TestImageValueContains(t *testing.T) {
	images := []string{"postgres", "postgis", "spilo"}
	tests := []struct {
		name, raw string
		want      bool
	}{
		{"compact", `{"spec":{"containers":[{"name":"db","image":"postgres:16"}]}}`, true},
		{"second container", `{"spec":{"containers":[{"image":"busybox"},{"image":"registry.local/zalando/spilo-15:3.0"}]}}`, true},
		{"spaces around the colon", `{"image" :  "docker.io/library/postgres"}`, true},
		{"upper case, as the parse lowers it", `{"image":"PostGIS/postgis"}`, true},
		{"escaped value is left to the parse", `{"image":"p\u006fstgres"}`, true},
		{"escaped key is left to the parse", `{"im\u0061ge":"postgres"}`, true},
		{"other image", `{"spec":{"containers":[{"name":"postgres","image":"nginx:1.27","env":[{"name":"DB","value":"postgres"}]}]}}`, false},
		{"imagePullPolicy is not image", `{"imagePullPolicy":"postgres"}`, false},
		{"key in a string value", `{"metadata":{"annotations":{"note":"\"image\": \"postgres\""}},"image":"nginx"}`, false},
		{"no image", `{"kind":"ConfigMap","data":{"image":1}}`, false},
		{"truncated", `{"image":"postg`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := imageValueContains(tt.raw, images); got != tt.want {
				t.Errorf("imageValueContains(%s) = %v, want %v", tt.raw, got, tt.want)
			}
		})
	}
}
