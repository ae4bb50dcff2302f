package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// newGatewayMux returns the REST gateway's mux, before its handlers are
// registered.
//
// Path parameters are unescaped after the path is split into segments
// (UnescapingModeAllExceptReserved: a single-segment variable is unescaped
// entirely), so a channel name with a `/`, sent percent-encoded as `%2F`
// (encodeURIComponent), stays inside the {channel} segment and reaches the
// call as `/`. The default mode unescapes the whole path first, so such a
// name was split and matched no route (404).
func newGatewayMux() *runtime.ServeMux {
	return runtime.NewServeMux(
		methodNotAllowed, // methods.go
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newGatewayMarshaler()),
		runtime.WithUnescapingMode(runtime.UnescapingModeAllExceptReserved),
	)
}

// gatewayMarshaler is the REST gateway's JSON: protobuf JSON with proto
// field names, as runtime.JSONPb writes and reads it, except for JSON
// payloads, which go through as text and never through a
// google.protobuf.Value:
//
//   - In, the `data` of a Publish or Broadcast body is taken as the exact
//     text it has in the body and published as `json`, so its numbers and
//     key order arrive as sent. protojson would decode it into a Value
//     (numbers as doubles, keys sorted).
//   - Out, every publication (History, the Subscribe stream's `result`
//     lines) is written by payload.AppendPublication: a JSON payload as
//     `"data":` and its exact text.
type gatewayMarshaler struct {
	runtime.JSONPb
}

func newGatewayMarshaler() *gatewayMarshaler {
	return &gatewayMarshaler{JSONPb: runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
		UnmarshalOptions: protojson.UnmarshalOptions{},
	}}
}

// Marshal writes a message (a reply, an error) or a chunk of a stream
// (`{"result": message}`, `{"error": status}`).
func (m *gatewayMarshaler) Marshal(v any) ([]byte, error) {
	switch v := v.(type) {
	case proto.Message:
		return payload.AppendMessage(nil, v)
	case map[string]any:
		// runtime.ForwardResponseStream wraps each message of a stream.
		if msg, ok := v["result"].(proto.Message); ok && len(v) == 1 {
			b, err := payload.AppendMessage(append(make([]byte, 0, 256), `{"result":`...), msg)
			return append(b, '}'), err
		}
	}
	return m.JSONPb.Marshal(v)
}

// NewEncoder returns an Encoder that writes with Marshal.
func (m *gatewayMarshaler) NewEncoder(w io.Writer) runtime.Encoder {
	return runtime.EncoderFunc(func(v any) error {
		b, err := m.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	})
}

// NewDecoder returns a Decoder that reads Publish and Broadcast bodies with
// decodePublish, and everything else as runtime.JSONPb does.
func (m *gatewayMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		switch msg := v.(type) {
		case *heraldv1.PublishRequest:
			return utf8Error(m.decodePublish(r, msg))
		case *heraldv1.BroadcastRequest:
			return utf8Error(m.decodePublish(r, msg))
		}
		return m.JSONPb.NewDecoder(r).Decode(v)
	})
}

// utf8Error makes err's message valid UTF-8: it becomes the message of an
// INVALID_ARGUMENT status, and protojson quotes the bytes of a bad body as
// they are, which the gateway could then not marshal (HTTP 500; found by
// FuzzRESTPublish).
func utf8Error(err error) error {
	if err == nil || err == io.EOF || utf8.ValidString(err.Error()) {
		return err
	}
	return errors.New(strings.ToValidUTF8(err.Error(), "\uFFFD"))
}

var errTwoPayloads = errors.New("set only one payload: data (JSON), json (JSON text), raw_json or binary")

// decodePublish reads a Publish or Broadcast body: its `data` member is
// taken out as text (payload.Extract: a repeated key is refused), checked
// and compacted, and set as the request's `json`; the rest of the body is
// read by protojson as usual. An empty body is io.EOF, as for JSONPb (the
// gateway then calls with no payload, which the core refuses).
func (m *gatewayMarshaler) decodePublish(r io.Reader, msg proto.Message) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return io.EOF
	}
	rest, data, err := payload.Extract(body, "data")
	if err != nil {
		// A body that is not one JSON object: protojson's own words
		// about it, when it has some.
		if perr := m.UnmarshalOptions.Unmarshal(body, msg); perr != nil {
			return perr
		}
		return err
	}
	if err := m.UnmarshalOptions.Unmarshal(rest, msg); err != nil {
		return err
	}
	if data == nil {
		return nil
	}
	text, err := payload.Compact(data)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	switch msg := msg.(type) {
	case *heraldv1.PublishRequest:
		if msg.Payload != nil {
			return errTwoPayloads
		}
		msg.Payload = &heraldv1.PublishRequest_Json{Json: string(text)}
	case *heraldv1.BroadcastRequest:
		if msg.Payload != nil {
			return errTwoPayloads
		}
		msg.Payload = &heraldv1.BroadcastRequest_Json{Json: string(text)}
	}
	return nil
}
