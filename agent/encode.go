package agent

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// maxCachedAncestors bounds recordEncoder's cache; past it the cache starts
// over. A node's live ancestors (shells, supervisors, shims) are far fewer.
const maxCachedAncestors = 4096

// recordEncoder marshals raw events as spool records (api.Record, class
// EVENT). The sensor shares each process's Ancestor message between the
// events of all its descendants (proc.Cache.AncestorChain), so each one is
// marshaled once, cached by pointer and spliced into every event that
// carries it: on an exec storm the ancestry is most of an event's bytes and
// of the cost of encoding it. The bytes decode as proto.Marshal's would. It
// is used by the pipeline goroutine only.
type recordEncoder struct {
	anc           map[*api.Ancestor][]byte
	prefix        []byte // a Record of class EVENT without its payload
	eventField    protowire.Number
	ancestryField protowire.Number
}

func newRecordEncoder() (*recordEncoder, error) {
	prefix, err := proto.Marshal(&api.Record{Class: api.RecordClass_RECORD_CLASS_EVENT})
	if err != nil {
		return nil, err
	}
	return &recordEncoder{
		anc:           map[*api.Ancestor][]byte{},
		prefix:        prefix,
		eventField:    (&api.Record{}).ProtoReflect().Descriptor().Fields().ByName("event").Number(),
		ancestryField: (&api.Event{}).ProtoReflect().Descriptor().Fields().ByName("ancestry").Number(),
	}, nil
}

// encode returns ev as a marshaled Record. ev is left as it was; it is
// changed (its Ancestry field) while encode runs, so nothing else may read
// it meanwhile.
func (e *recordEncoder) encode(ev *api.Event) ([]byte, error) {
	anc := ev.Ancestry
	var ancBuf [8][]byte
	encoded := ancBuf[:0]
	ancLen := 0
	for _, a := range anc {
		b, ok := e.anc[a]
		if !ok {
			var err error
			if b, err = proto.Marshal(a); err != nil {
				return nil, fmt.Errorf("marshal ancestor: %w", err)
			}
			if len(e.anc) >= maxCachedAncestors {
				clear(e.anc)
			}
			e.anc[a] = b
		}
		encoded = append(encoded, b)
		ancLen += protowire.SizeTag(e.ancestryField) + protowire.SizeBytes(len(b))
	}
	ev.Ancestry = nil
	defer func() { ev.Ancestry = anc }()
	bodyLen := proto.Size(ev) + ancLen
	out := make([]byte, 0, len(e.prefix)+protowire.SizeTag(e.eventField)+protowire.SizeVarint(uint64(bodyLen))+bodyLen)
	out = append(out, e.prefix...)
	out = protowire.AppendTag(out, e.eventField, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(bodyLen))
	// Size just filled the size cache; the event's own goroutine is the
	// only one using it.
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(out, ev)
	if err != nil {
		return nil, fmt.Errorf("marshal event: %w", err)
	}
	// A repeated field's elements may follow the other fields: decoders
	// append them in the order they come.
	for _, b := range encoded {
		out = protowire.AppendTag(out, e.ancestryField, protowire.BytesType)
		out = protowire.AppendBytes(out, b)
	}
	return out, nil
}
