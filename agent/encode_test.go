package agent

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// TestRecordEncoder holds the spliced encoding to proto.Marshal's: every
// event decodes as the Record it stands for, with its ancestry in order,
// whether its ancestors' bytes come from the cache or not, and the event is
// left as it was.
func TestRecordEncoder(t *testing.T) {
	shell := &api.Ancestor{Pid: 10, Exe: "/bin/bash", Args: []string{"bash", "-c", "make"}, StartTime: timestamppb.New(timestamppb.Now().AsTime())}
	initA := &api.Ancestor{Pid: 1, Exe: "/sbin/init", Args: []string{"/sbin/init"}}
	proc := &api.Process{Pid: 20, Tgid: 20, Ppid: 10, Exe: "/usr/bin/make", Args: []string{"make", "all"}}
	tests := []struct {
		name string
		ev   *api.Event
	}{
		{"no ancestry", &api.Event{Seq: 1, Node: "n", Kind: api.EventKind_EVENT_KIND_EXEC, Process: proc,
			Detail: &api.Event_Exec{Exec: &api.Exec{Filename: "/usr/bin/make"}}}},
		{"ancestry", &api.Event{Seq: 2, Node: "n", Kind: api.EventKind_EVENT_KIND_EXEC, Process: proc, Ancestry: []*api.Ancestor{shell, initA},
			Detail: &api.Event_Exec{Exec: &api.Exec{Filename: "/usr/bin/make"}}}},
		{"cached ancestry, another event", &api.Event{Seq: 3, Node: "n", Kind: api.EventKind_EVENT_KIND_EXIT, Process: proc, Ancestry: []*api.Ancestor{shell, initA},
			Detail: &api.Event_Exit{Exit: &api.Exit{Code: 2}}}},
		{"same ancestor twice", &api.Event{Seq: 4, Node: "n", Kind: api.EventKind_EVENT_KIND_FORK, Process: proc, Ancestry: []*api.Ancestor{initA, initA},
			Container: &api.Container{Id: "abc", PodName: "web-1"}}},
		{"empty event", &api.Event{}},
	}
	enc, err := newRecordEncoder()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := proto.Clone(tt.ev)
			b, err := enc.encode(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			var got api.Record
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := &api.Record{Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: tt.ev}}
			if !proto.Equal(&got, want) {
				t.Errorf("decoded %v\nwant %v", &got, want)
			}
			if !proto.Equal(tt.ev, before) || len(tt.ev.Ancestry) != len(before.(*api.Event).Ancestry) {
				t.Errorf("event changed: %v, was %v", tt.ev, before)
			}
		})
	}
}
