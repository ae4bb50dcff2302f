package hooks

import (
	"errors"
	"fmt"

	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The HTTP form's JSON: protobuf JSON with proto field names, except that
// a JSON payload (`json`, a string holding JSON text) is written as
// `data`, the JSON itself, its text exact: a backend in any language
// reads it as part of the document, and Herald never takes it through a
// google.protobuf.Value. When reading, either spelling is accepted (not
// both). Unknown fields are an error: a misspelt field in an answer (say
// `"usr"` in `accept`) must not pass as an absent one.

var (
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}
	jsonIn  = protojson.UnmarshalOptions{}
)

// payloadPath returns where m holds its JSON payload: the members from
// the top object to the one with `json`/`data` ([] for the top), and the
// current text; ok is false for messages without one.
func payloadPath(m proto.Message) (path []string, text *string, ok bool) {
	switch m := m.(type) {
	case *hooksv1.PublishRequest:
		if p, isJSON := m.Payload.(*hooksv1.PublishRequest_Json); isJSON {
			return nil, &p.Json, true
		}
		return nil, nil, true
	case *hooksv1.RPCRequest:
		if p, isJSON := m.Payload.(*hooksv1.RPCRequest_Json); isJSON {
			return nil, &p.Json, true
		}
		return nil, nil, true
	case *hooksv1.PublishResponse:
		if p, isJSON := m.GetAllow().GetPayload().(*hooksv1.PublishAllow_Json); isJSON {
			return []string{"allow"}, &p.Json, true
		}
		return []string{"allow"}, nil, true
	case *hooksv1.RPCResponse:
		if p, isJSON := m.GetResult().GetPayload().(*hooksv1.RPCResult_Json); isJSON {
			return []string{"result"}, &p.Json, true
		}
		return []string{"result"}, nil, true
	}
	return nil, nil, false
}

// setJSON sets the JSON payload of m (read as `data`) to text.
func setJSON(m proto.Message, text string) error {
	both := errors.New("set data (JSON) or json (JSON text), not both")
	switch m := m.(type) {
	case *hooksv1.PublishRequest:
		if m.Payload != nil {
			return both
		}
		m.Payload = &hooksv1.PublishRequest_Json{Json: text}
	case *hooksv1.RPCRequest:
		if m.Payload != nil {
			return both
		}
		m.Payload = &hooksv1.RPCRequest_Json{Json: text}
	case *hooksv1.PublishResponse:
		a := m.GetAllow()
		if a == nil {
			return errors.New("data outside allow")
		}
		if a.Payload != nil {
			return both
		}
		a.Payload = &hooksv1.PublishAllow_Json{Json: text}
	case *hooksv1.RPCResponse:
		r := m.GetResult()
		if r == nil {
			return errors.New("data outside result")
		}
		if r.Payload != nil {
			return both
		}
		r.Payload = &hooksv1.RPCResult_Json{Json: text}
	}
	return nil
}

// MarshalJSON encodes a hook request or response in the HTTP form.
func MarshalJSON(m proto.Message) ([]byte, error) {
	path, text, ok := payloadPath(m)
	if !ok || text == nil {
		return jsonOut.Marshal(m)
	}
	data := []byte(*text)
	if payload.Check(data) != nil {
		// Not JSON: left as the `json` string, for the reader to refuse.
		return jsonOut.Marshal(m)
	}
	cp := proto.Clone(m)
	_, t, _ := payloadPath(cp)
	*t = ""
	clearJSON(cp)
	out, err := jsonOut.Marshal(cp)
	if err != nil {
		return nil, err
	}
	return withMember(out, path, "data", data)
}

// clearJSON removes the JSON payload of m (which has one).
func clearJSON(m proto.Message) {
	switch m := m.(type) {
	case *hooksv1.PublishRequest:
		m.Payload = nil
	case *hooksv1.RPCRequest:
		m.Payload = nil
	case *hooksv1.PublishResponse:
		m.GetAllow().Payload = nil
	case *hooksv1.RPCResponse:
		m.GetResult().Payload = nil
	}
}

// UnmarshalJSON decodes a hook request or response of the HTTP form into
// m, strictly; a `data` payload is kept as its exact text, compacted.
func UnmarshalJSON(b []byte, m proto.Message) error {
	path, _, ok := payloadPath(m)
	if !ok {
		return jsonIn.Unmarshal(b, m)
	}
	rest, data, err := payload.Extract(b, append(path, "data")...)
	if err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if err := jsonIn.Unmarshal(rest, m); err != nil {
		return err
	}
	if data == nil {
		return nil
	}
	text, err := payload.Compact(data)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return setJSON(m, string(text))
}

// withMember returns obj (one JSON object) with member key = value added
// in the object at path (created when absent).
func withMember(obj []byte, path []string, key string, value []byte) ([]byte, error) {
	if len(path) == 0 {
		return appendMember(obj, key, value)
	}
	rest, sub, err := payload.Extract(obj, path[0])
	if err != nil {
		return nil, err
	}
	if sub == nil {
		sub = []byte("{}")
	}
	if sub, err = withMember(sub, path[1:], key, value); err != nil {
		return nil, err
	}
	return appendMember(rest, path[0], sub)
}

// appendMember adds member key = value at the end of obj.
func appendMember(obj []byte, key string, value []byte) ([]byte, error) {
	obj = payload.TrimSpace(obj)
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, errors.New("not a JSON object")
	}
	out := make([]byte, 0, len(obj)+len(key)+len(value)+4)
	out = append(out, payload.TrimSpace(obj[:len(obj)-1])...)
	if len(out) > 1 {
		out = append(out, ',')
	}
	out = payload.AppendString(out, key)
	out = append(out, ':')
	out = append(out, value...)
	return append(out, '}'), nil
}
