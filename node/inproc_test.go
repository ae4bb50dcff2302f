package node

import (
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestHandOverCoversEveryField: the link's fast path gives the receiver
// every field of the message it knows, so that a field added to the proto
// and forgotten there does not vanish in `herald serve` only.
func TestHandOverCoversEveryField(t *testing.T) {
	for _, src := range []proto.Message{
		&heraldv1.SubscribeManyResponse{},
		&heraldv1.PublishResponse{},
	} {
		full := populate(src.ProtoReflect())
		dst := src.ProtoReflect().New().Interface()
		if !handOver(dst, full) {
			t.Fatalf("%T: not handed over", src)
		}
		if !proto.Equal(dst, full) {
			t.Fatalf("%T: handed over %v, want %v", src, dst, full)
		}
	}
	if handOver(&heraldv1.HistoryResponse{}, &heraldv1.HistoryResponse{}) {
		t.Fatal("handOver claims a type it does not know")
	}
}

// populate returns a copy of m's type with every field set (for a oneof,
// the last member), nested messages populated too.
func populate(m protoreflect.Message) proto.Message {
	out := m.New()
	fields := out.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.IsList() || fd.IsMap():
			continue // none in the messages handed over
		case fd.Kind() == protoreflect.MessageKind:
			out.Set(fd, protoreflect.ValueOfMessage(populate(out.NewField(fd).Message()).ProtoReflect()))
		case fd.Kind() == protoreflect.BoolKind:
			out.Set(fd, protoreflect.ValueOfBool(true))
		case fd.Kind() == protoreflect.StringKind:
			out.Set(fd, protoreflect.ValueOfString("s"))
		case fd.Kind() == protoreflect.BytesKind:
			out.Set(fd, protoreflect.ValueOfBytes([]byte("b")))
		case fd.Kind() == protoreflect.Uint64Kind:
			out.Set(fd, protoreflect.ValueOfUint64(7))
		case fd.Kind() == protoreflect.Uint32Kind:
			out.Set(fd, protoreflect.ValueOfUint32(7))
		case fd.Kind() == protoreflect.Int64Kind:
			out.Set(fd, protoreflect.ValueOfInt64(7))
		case fd.Kind() == protoreflect.EnumKind:
			out.Set(fd, protoreflect.ValueOfEnum(1))
		}
	}
	return out.Interface()
}
