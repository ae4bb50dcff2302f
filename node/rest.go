package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
func newGatewayMux(m *gatewayMarshaler) *runtime.ServeMux {
	return runtime.NewServeMux(
		methodNotAllowed, // methods.go
		runtime.WithMarshalerOption(runtime.MIMEWildcard, m),
		runtime.WithUnescapingMode(runtime.UnescapingModeAllExceptReserved),
	)
}

// restAPI is the REST API: the gateway, with a shortcut for the call made
// most, POST /v1/channels/{channel}/publish (one per notification, for
// most backends). The shortcut does what the gateway's generated handler
// does for it (the same body decoding, the same call to the core through
// the same client, the gateway's own functions writing the answer or the
// error) without the gateway's routing and its general per-request work
// (a context with every forwarded header as metadata, of which the core
// reads only authorization). Requests it is not sure of (an escaped or
// unusual path, a Grpc-Timeout or method-override header) go to the
// gateway. TestRESTPublishAsTheGateway and FuzzRESTPublishAsTheGateway
// send the same requests both ways and compare the answers.
type restAPI struct {
	gw     *runtime.ServeMux
	m      *gatewayMarshaler
	client heraldv1.HeraldServiceClient
	direct atomic.Bool // the shortcut is on (tests turn it off to compare)
}

func newRESTAPI(gw *runtime.ServeMux, m *gatewayMarshaler, client heraldv1.HeraldServiceClient) *restAPI {
	a := &restAPI{gw: gw, m: m, client: client}
	a.direct.Store(true)
	return a
}

func (a *restAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if channel, ok := publishChannel(r); ok && a.direct.Load() {
		a.publish(w, r, channel)
		return
	}
	a.gw.ServeHTTP(w, r)
}

// publishChannel returns the channel of a publish the shortcut takes: a
// POST to /v1/channels/{channel}/publish written without escapes, and no
// header that changes what the gateway does with it.
func publishChannel(r *http.Request) (string, bool) {
	if r.Method != http.MethodPost || r.URL.RawPath != "" || r.Header.Get("Grpc-Timeout") != "" || r.Header.Get("X-HTTP-Method-Override") != "" {
		return "", false
	}
	ch, ok := strings.CutPrefix(r.URL.Path, "/v1/channels/")
	if !ok {
		return "", false
	}
	ch, ok = strings.CutSuffix(ch, "/publish")
	if !ok || ch == "" || strings.ContainsAny(ch, "/%") {
		return "", false
	}
	return ch, true
}

// publish is the gateway's handler of Publish (gen/herald/v1, request_ and
// forward_HeraldService_Publish_0), less its routing and annotation: the
// call carries the request's Authorization values as the gateway
// forwards them, the only metadata the core reads.
func (a *restAPI) publish(w http.ResponseWriter, r *http.Request, channel string) {
	ctx := r.Context()
	var md runtime.ServerMetadata
	var pairs []string
	for _, v := range r.Header.Values("Authorization") {
		if metadataText(v) {
			pairs = append(pairs, "authorization", v)
		}
	}
	if len(pairs) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(pairs...))
	}
	var req heraldv1.PublishRequest
	var err error
	if derr := a.m.NewDecoder(r.Body).Decode(&req); derr != nil && !errors.Is(derr, io.EOF) {
		err = status.Errorf(codes.InvalidArgument, "%v", derr)
	}
	var resp *heraldv1.PublishResponse
	if err == nil {
		req.Channel = channel
		resp, err = a.client.Publish(ctx, &req, grpc.Header(&md.HeaderMD), grpc.Trailer(&md.TrailerMD))
	}
	ctx = runtime.NewServerMetadataContext(ctx, md)
	if err != nil {
		runtime.HTTPError(ctx, a.gw, a.m, w, r, err)
		return
	}
	runtime.ForwardResponseMessage(ctx, a.gw, a.m, w, r, resp, a.gw.GetForwardResponseOptions()...)
}

// metadataText reports whether v may be a gRPC metadata value (printable
// ASCII), which is what the gateway forwards.
func metadataText(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
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
	case *heraldv1.PublishResponse:
		// The answer to every publish: written directly, as protojson
		// writes it.
		return appendPublishResponse(make([]byte, 0, 64+len(v.GetPosition().GetEpoch())), v), nil
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
	var body []byte
	if rb, ok := r.(*readBodyBytes); ok { // read by the front door already
		body = rb.unread()
	} else {
		var err error
		if body, err = io.ReadAll(r); err != nil {
			return err
		}
	}
	if len(payload.TrimSpace(body)) == 0 {
		return io.EOF
	}
	if text, ok := onlyData(body); ok {
		// The body is {"data": <valid JSON>} and nothing else, what
		// nearly every publish sends: the same request as below, without
		// taking the body apart.
		setJSON(msg, text)
		return nil
	}
	return m.decodeGeneral(body, msg)
}

// decodeGeneral is decodePublish's general path, for any body: the
// `data` member taken out by payload.Extract, the rest read by protojson.
func (m *gatewayMarshaler) decodeGeneral(body []byte, msg proto.Message) error {
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
	case *heraldv1.BroadcastRequest:
		if msg.Payload != nil {
			return errTwoPayloads
		}
	}
	setJSON(msg, text)
	return nil
}

// setJSON sets a Publish or Broadcast request's payload to JSON text.
func setJSON(msg proto.Message, text []byte) {
	switch msg := msg.(type) {
	case *heraldv1.PublishRequest:
		msg.Payload = &heraldv1.PublishRequest_Json{Json: string(text)}
	case *heraldv1.BroadcastRequest:
		msg.Payload = &heraldv1.BroadcastRequest_Json{Json: string(text)}
	}
}

// onlyData returns the compacted value V of a body that is exactly
// {"data": V} (whitespace allowed around the tokens, the key written
// without escapes), with V valid JSON; ok is false for any other body,
// which then takes the general path (and gets its errors). A valid V
// between `{"data":` and the last `}` makes the body one object with that
// one member, so nothing else can hide in it.
func onlyData(body []byte) (text []byte, ok bool) {
	b := payload.TrimSpace(body)
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, false
	}
	b = bytes.TrimLeft(b[1:len(b)-1], " \t\r\n")
	k, ok := bytes.CutPrefix(b, []byte(`"data"`))
	if !ok {
		return nil, false
	}
	v, ok := bytes.CutPrefix(bytes.TrimLeft(k, " \t\r\n"), []byte(":"))
	if !ok {
		return nil, false
	}
	text, err := payload.Compact(payload.TrimSpace(v))
	if err != nil || len(text) == 0 {
		return nil, false
	}
	return text, true
}

// appendPublishResponse appends r as protobuf JSON with proto field names,
// byte for byte what protojson writes (TestPublishResponseJSON).
func appendPublishResponse(b []byte, r *heraldv1.PublishResponse) []byte {
	b = append(b, '{')
	if p := r.GetPosition(); p != nil {
		b = append(b, `"position":{`...)
		if p.Offset != 0 {
			b = append(b, `"offset":"`...)
			b = strconv.AppendUint(b, p.Offset, 10)
			b = append(b, '"')
		}
		if p.Epoch != "" {
			if p.Offset != 0 {
				b = append(b, ',')
			}
			b = append(b, `"epoch":`...)
			b = payload.AppendString(b, p.Epoch)
		}
		b = append(b, '}')
	}
	if r.Duplicate {
		if r.Position != nil {
			b = append(b, ',')
		}
		b = append(b, `"duplicate":true`...)
	}
	return append(b, '}')
}
