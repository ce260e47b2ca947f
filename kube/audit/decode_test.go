package audit

import (
	"strings"
	"testing"
)

const sampleEvent = `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"a1","stage":"ResponseComplete",` +
	`"requestURI":"/api/v1/namespaces/default/pods","verb":"create","user":{"username":"alice","groups":["dev","system:authenticated"]},` +
	`"sourceIPs":["10.0.0.7"],"userAgent":"kubectl/v1.37.2","objectRef":{"resource":"pods","namespace":"default","name":"web","apiVersion":"v1"},` +
	`"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Pod", "spec": {"containers":[{"image":"nginx"}]}},` +
	`"requestReceivedTimestamp":"2026-11-22T19:00:00.000000Z","stageTimestamp":"2026-11-22T19:00:00.010000Z",` +
	`"annotations":{"authorization.k8s.io/decision":"allow"}}`

func TestDecodeEvent(t *testing.T) {
	ev, err := Decoder{Node: "cp-1"}.DecodeEvent([]byte(sampleEvent))
	if err != nil {
		t.Fatal(err)
	}
	a := ev.GetAudit()
	if ev.GetNode() != "cp-1" || a.GetVerb() != "create" || a.GetUser() != "alice" || len(a.GetGroups()) != 2 ||
		a.GetResource() != "pods" || a.GetNamespace() != "default" || a.GetName() != "web" || a.GetCode() != 201 ||
		a.GetUserAgent() != "kubectl/v1.37.2" || a.GetSourceIps()[0] != "10.0.0.7" || a.GetDecision() != "allow" ||
		a.GetAuditId() != "a1" || a.GetRequestReceived().AsTime().Second() != 0 || ev.GetTime().AsTime().Nanosecond() != 10e6 {
		t.Fatalf("decoded %v", ev)
	}
	if a.GetRequestObject() != `{"kind":"Pod","spec":{"containers":[{"image":"nginx"}]}}` || a.GetObjectTruncated() {
		t.Fatalf("object %q truncated=%v", a.GetRequestObject(), a.GetObjectTruncated())
	}
}

func TestDecodeBounds(t *testing.T) {
	ev, err := Decoder{MaxObjectBytes: 10}.DecodeEvent([]byte(sampleEvent))
	if err != nil {
		t.Fatal(err)
	}
	if a := ev.GetAudit(); len(a.GetRequestObject()) != 10 || !a.GetObjectTruncated() {
		t.Fatalf("object %q truncated=%v", a.GetRequestObject(), a.GetObjectTruncated())
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in string
		list     bool
	}{
		{"not json", "{", false},
		{"wrong kind", `{"kind":"Pod","apiVersion":"v1"}`, false},
		{"list as event", `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}`, false},
		{"event as list", sampleEvent, true},
		{"items not a list", `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}`, true},
		{"bad time", `{"kind":"Event","apiVersion":"audit.k8s.io/v1","stageTimestamp":"yesterday"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.list {
				_, err = Decoder{}.DecodeList([]byte(tt.in))
			} else {
				_, err = Decoder{}.DecodeEvent([]byte(tt.in))
			}
			if err == nil {
				t.Fatal("no error")
			}
		})
	}
	evs, err := Decoder{}.DecodeList([]byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` + sampleEvent + `,` + sampleEvent + `]}`))
	if err != nil || len(evs) != 2 {
		t.Fatalf("list: %d events, %v", len(evs), err)
	}
}

func FuzzDecodeEventList(f *testing.F) {
	f.Add([]byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` + sampleEvent + `]}`))
	f.Add([]byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"requestObject":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := Decoder{MaxObjectBytes: 64}.DecodeList(b)
		if err != nil {
			return
		}
		for _, ev := range evs {
			if a := ev.GetAudit(); a == nil || len(a.GetRequestObject()) > 64 {
				t.Fatalf("bad event %v", ev)
			}
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(sampleEvent))
	f.Add([]byte(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","requestObject":"` + strings.Repeat("x", 100) + `"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Decoder{MaxObjectBytes: 64}.DecodeEvent(b)
		if err != nil {
			return
		}
		if a := ev.GetAudit(); a == nil || len(a.GetRequestObject()) > 64 || ev.GetTime() == nil {
			t.Fatalf("bad event %v", ev)
		}
	})
}
