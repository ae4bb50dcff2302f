package hooks

import (
	"testing"

	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzAnswerJSON feeds the HTTP form's answers to every hook's decoder and
// checks: no panic; an answer that decodes and passes its hook's check
// encodes again and decodes to the same message (its JSON kept exactly).
func FuzzAnswerJSON(f *testing.F) {
	for _, s := range []string{
		`{"accept":{"user":"ann","info":{"a":1},"channels":["chat:*"],"subscribe":["room:1"],"expires_in":60}}`,
		`{"refuse":{"code":4403,"reason":"no","temporary":true}}`,
		`{"extend":{"expires_in":5}}`,
		`{"allow":{"info":{"role":"x"}}}`,
		`{"allow":{"data":{"id":12345678901234567891,"b":[1.0,-0]},"tags":{"k":"v"}}}`,
		`{"allow":{"json":"{\"a\":1}"}}`,
		`{"skip":{"offset":"42","epoch":"e"}}`,
		`{"result":{"data":null}}`, `{"result":{"binary":"AAEC"}}`, `{"error":{"code":1001}}`,
		`{"allow":{"data":1,"json":"2"}}`, `{}`, `[]`, `{"allow":{"data":}`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []struct {
			m     func() proto.Message
			check func(proto.Message) error
		}{
			{func() proto.Message { return &hooksv1.ConnectResponse{} }, func(m proto.Message) error { return checkConnect(m.(*hooksv1.ConnectResponse)) }},
			{func() proto.Message { return &hooksv1.RefreshResponse{} }, func(m proto.Message) error { return checkRefresh(m.(*hooksv1.RefreshResponse)) }},
			{func() proto.Message { return &hooksv1.SubscribeResponse{} }, func(m proto.Message) error { return checkSubscribe(m.(*hooksv1.SubscribeResponse)) }},
			{func() proto.Message { return &hooksv1.PublishResponse{} }, func(m proto.Message) error { return checkPublish(m.(*hooksv1.PublishResponse), 0) }},
			{func() proto.Message { return &hooksv1.RPCResponse{} }, func(m proto.Message) error { return checkRPC(m.(*hooksv1.RPCResponse), 0) }},
		} {
			m := c.m()
			if UnmarshalJSON(b, m) != nil || c.check(m) != nil {
				continue
			}
			out, err := MarshalJSON(m)
			if err != nil {
				t.Fatalf("%T %v: re-encoding: %v", m, m, err)
			}
			again := c.m()
			if err := UnmarshalJSON(out, again); err != nil {
				t.Fatalf("%T: %s does not decode: %v", m, out, err)
			}
			if err := c.check(again); err != nil || !proto.Equal(m, again) {
				t.Fatalf("%T: round trip %v → %s → %v (%v)", m, m, out, again, err)
			}
		}
	})
}
