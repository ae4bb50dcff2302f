package web_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The wire formats of herald.js checked against the server's own
// encoding, under Node: Go encodes server frames with the generated code
// (and herald.json with the bridge's encoder, payload.AppendMessage);
// herald.js decodes them (testdata/formats.mjs) into the objects protojson
// gives for the same frames; herald.js encodes client frames that
// proto.Unmarshal reads back as protojson reads their JSON; and one
// scripted session per format through the public API gives the same
// publications, replies and events in both.

const maxUint64 = math.MaxUint64

// protoMessage is fr as the bridge writes it in herald.proto: its length
// as a varint, then the frame.
func protoMessage(t *testing.T, fr proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(fr)
	if err != nil {
		t.Fatal(err)
	}
	return append(protowire.AppendVarint(nil, uint64(len(b))), b...)
}

// jsonMessage is fr as the bridge writes it in herald.json.
func jsonMessage(t *testing.T, fr *heraldv1.ServerFrame) string {
	t.Helper()
	b, err := payload.AppendMessage(nil, fr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func value(t *testing.T, v any) *structpb.Value {
	t.Helper()
	x, err := structpb.NewValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func pos(offset uint64, epoch string) *heraldv1.StreamPosition {
	return &heraldv1.StreamPosition{Offset: offset, Epoch: epoch}
}

// awkwardPublications cover every payload kind, with what is hard to
// carry: integers beyond 2^53 and 1e400 in JSON text, key order, unicode
// (escapes, astral, U+2028, NUL), empty and high bytes, a Value, tags,
// the publisher's info, and times (a real one, 0, int64's extremes).
func awkwardPublications(t *testing.T, channel string, first uint64, epoch string) []*heraldv1.Publication {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	info := value(t, map[string]any{"name": "Ann", "roles": []any{"admin", 1.5, true, nil}, "é": map[string]any{}})
	pubs := []*heraldv1.Publication{
		{Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{"id":12345678901234567891,"z":1,"a":[1.0,-0,1e400],"n":null}`)}, TimeUnixMs: 1700000000123,
			Tags: map[string]string{"kind": "msg", "ключ": "значение 😀"}},
		{Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{"text":"h\u00e9llo é 😀 \ud83d\ude00 ` + "\u2028" + `","nul":"\u0000","__proto__":{"x":1}}`)},
			Publisher: &heraldv1.ClientInfo{Client: "2f9c6a1e04b7d3a8", User: "42", Info: info}, TimeUnixMs: math.MaxInt64},
		{Payload: &heraldv1.Publication_Binary{Binary: []byte{}}},
		{Payload: &heraldv1.Publication_Binary{Binary: all}, TimeUnixMs: -1},
		{Payload: &heraldv1.Publication_Json{Json: `["json",{"b":2,"a":1}]`}, TimeUnixMs: math.MinInt64},
		{Payload: &heraldv1.Publication_Data{Data: value(t, map[string]any{"z": []any{1.0, "x", false}, "a": nil, "m": 1e300})}, TimeUnixMs: 1},
	}
	for i, p := range pubs {
		p.Channel, p.Offset, p.Epoch = channel, first+uint64(i), epoch
	}
	return pubs
}

// serverFrames are one of every ServerFrame body (the publications
// above among them), with awkward ids and numbers.
func serverFrames(t *testing.T) []struct {
	name string
	fr   *heraldv1.ServerFrame
} {
	pubs := awkwardPublications(t, "chat:x", 9007199254740993, "9f1c2a7b")
	client := &heraldv1.ClientInfo{Client: "7d0e5b2a9c3f1e64", User: "43", Info: value(t, map[string]any{"name": "Bo"})}
	type c = struct {
		name string
		fr   *heraldv1.ServerFrame
	}
	cases := []c{
		{"error", &heraldv1.ServerFrame{Id: 3, Body: &heraldv1.ServerFrame_Error{Error: &heraldv1.ErrorFrame{Code: 108, Message: `too many "requests" ✓`, Temporary: true}}}},
		{"connect", &heraldv1.ServerFrame{Id: 1, Body: &heraldv1.ServerFrame_Connect{Connect: &heraldv1.ConnectedFrame{
			Client: "2f9c6a1e04b7d3a8", User: "42", ExpiresIn: 3599, Version: "v1.2.3", PingInterval: 25, SessionToken: "5e0c.XqT9"}}}},
		{"refresh", &heraldv1.ServerFrame{Id: math.MaxUint32, Body: &heraldv1.ServerFrame_Refresh{Refresh: &heraldv1.RefreshedFrame{ExpiresIn: math.MaxUint32}}}},
		{"subscribe", &heraldv1.ServerFrame{Id: 4, Body: &heraldv1.ServerFrame_Subscribe{Subscribe: &heraldv1.SubscribedFrame{
			Channel: "chat:lobby", Position: pos(maxUint64, "ép😀"), Recovered: true, Recoverable: true}}}},
		{"subscribe, empty epoch", &heraldv1.ServerFrame{Id: 5, Body: &heraldv1.ServerFrame_Subscribe{Subscribe: &heraldv1.SubscribedFrame{Channel: "c", Position: pos(0, "")}}}},
		{"unsubscribe", &heraldv1.ServerFrame{Id: 6, Body: &heraldv1.ServerFrame_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribedFrame{Channel: "chat:lobby"}}}},
		{"publish", &heraldv1.ServerFrame{Id: 7, Body: &heraldv1.ServerFrame_Publish{Publish: &heraldv1.PublishResponse{Position: pos(1<<63, "e1"), Duplicate: true}}}},
		{"history", &heraldv1.ServerFrame{Id: 8, Body: &heraldv1.ServerFrame_History{History: &heraldv1.HistoryResponse{Publications: pubs, Position: pos(9007199254740998, "9f1c2a7b")}}}},
		{"history, empty", &heraldv1.ServerFrame{Id: 9, Body: &heraldv1.ServerFrame_History{History: &heraldv1.HistoryResponse{}}}},
		{"presence", &heraldv1.ServerFrame{Id: 10, Body: &heraldv1.ServerFrame_Presence{Presence: &heraldv1.PresenceResponse{Clients: []*heraldv1.ClientInfo{client, {Client: "anon"}}}}}},
		{"presence_stats", &heraldv1.ServerFrame{Id: 11, Body: &heraldv1.ServerFrame_PresenceStats{PresenceStats: &heraldv1.PresenceStatsResponse{Clients: 3, Users: 2}}}},
		{"pong", &heraldv1.ServerFrame{Id: 12, Body: &heraldv1.ServerFrame_Pong{Pong: &heraldv1.PingFrame{}}}},
		{"join", &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Join{Join: &heraldv1.PresenceEvent{Channel: "chat:lobby", Client: client}}}},
		{"leave", &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Leave{Leave: &heraldv1.PresenceEvent{Channel: "chat:lobby", Client: client}}}},
		{"unsubscribed", &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Unsubscribed{Unsubscribed: &heraldv1.UnsubscribedFrame{Channel: "chat:lobby", Reason: "unsubscribed by the server"}}}},
		{"disconnect", &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Disconnect{Disconnect: &heraldv1.DisconnectFrame{Code: 4006, Reason: "server shutting down; reconnect", Reconnect: true, ReconnectDelayMs: 1830}}}},
		{"subscribed", &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Subscribed{Subscribed: &heraldv1.SubscribedFrame{Channel: "user:42", Position: pos(17, "9f1c2a7b"), Recovered: true, Recoverable: true}}}},
	}
	for _, p := range pubs {
		cases = append(cases, c{"pub " + string(p.ProtoReflect().WhichOneof(p.ProtoReflect().Descriptor().Oneofs().ByName("payload")).Name()), &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pub{Pub: p}}})
	}
	// A newer server's fields, of every wire type, at the top and inside
	// the publication, its publisher and the publisher's info; and a known
	// field number with another wire type (mismatched, so unknown too: Go
	// does the same).
	future := proto.CloneOf(pubs[1])
	unknown := func(m proto.Message, varintField protowire.Number) {
		var b []byte
		if varintField > 0 {
			b = protowire.AppendTag(b, varintField, protowire.BytesType)
			b = protowire.AppendBytes(b, []byte{0xff, 0xff})
		}
		b = protowire.AppendTag(b, 100, protowire.VarintType)
		b = protowire.AppendVarint(b, maxUint64)
		b = protowire.AppendTag(b, 101, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, 1)
		b = protowire.AppendTag(b, 102, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte("later"))
		b = protowire.AppendTag(b, 103, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 7)
		b = protowire.AppendTag(b, 104, protowire.StartGroupType)
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 5)
		b = protowire.AppendTag(b, 104, protowire.EndGroupType)
		m.ProtoReflect().SetUnknown(b)
	}
	unknown(future, 2)                // offset
	unknown(future.Publisher, 0)      // all strings
	unknown(future.Publisher.Info, 1) // null_value
	withUnknown := &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pub{Pub: future}}
	unknown(withUnknown, 1) // id
	cases = append(cases, c{"unknown fields", withUnknown})
	return cases
}

// mergedFrames are messages that hold one frame written in two parts,
// as protobuf allows (a later oneof member replaces the earlier one, a
// message field appearing twice is merged): what proto.Unmarshal makes
// of them is what herald.js must.
func mergedFrames(t *testing.T) []struct {
	name string
	msg  []byte
	want *heraldv1.ServerFrame
} {
	parts := [][2]*heraldv1.ServerFrame{
		{{Id: 3, Body: &heraldv1.ServerFrame_Error{Error: &heraldv1.ErrorFrame{Code: 104}}}, {Body: &heraldv1.ServerFrame_Pong{Pong: &heraldv1.PingFrame{}}}},
		{{Body: &heraldv1.ServerFrame_Pub{Pub: &heraldv1.Publication{Channel: "c", Offset: 5, Payload: &heraldv1.Publication_Data{Data: value(t, map[string]any{"a": 1.0})}, Tags: map[string]string{"a": "1"}}}},
			{Body: &heraldv1.ServerFrame_Pub{Pub: &heraldv1.Publication{Epoch: "e", Payload: &heraldv1.Publication_Binary{Binary: []byte{1}}, Tags: map[string]string{"b": "2"}}}}},
	}
	var out []struct {
		name string
		msg  []byte
		want *heraldv1.ServerFrame
	}
	for i, p := range parts {
		a, _ := proto.Marshal(p[0])
		b, _ := proto.Marshal(p[1])
		body := append(a, b...)
		want := &heraldv1.ServerFrame{}
		if err := proto.Unmarshal(body, want); err != nil {
			t.Fatal(err)
		}
		out = append(out, struct {
			name string
			msg  []byte
			want *heraldv1.ServerFrame
		}{[]string{"a later oneof member replaces", "a message in two parts merges"}[i], append(protowire.AppendVarint(nil, uint64(len(body))), body...), want})
	}
	return out
}

// normalized is protojson's view of m (proto names), as generic JSON.
func normalized(t *testing.T, m proto.Message) any {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

type decodeResult struct {
	Name   string `json:"name"`
	Frames []any  `json:"frames"`
	Errors []any  `json:"errors"`
}

// apiSession is what testdata/formats.mjs records of a scripted session.
type apiSession map[string]any

// TestFormats runs testdata/formats.mjs under Node against frames Go
// encodes, and checks: every ServerFrame decodes alone, packed and from
// an HTTP stream in small chunks into what protojson makes of it (fields
// unknown to the client skipped); damage in a message loses only what is
// after it; client frames decode with proto.Unmarshal into what protojson
// reads from their JSON, and encoding refuses what uint64/uint32/bytes
// cannot hold; and a session through the public API gives identical
// publications (data parsed from the exact text, binary as Uint8Array,
// timeUnixMs), replies and events in herald.json and herald.proto, and
// sends the same requests in both. Damaged messages never make the
// decoder throw (3000 seeded mutations); an unknown format is refused.
func TestFormats(t *testing.T) {
	nodeBin, _ := needNode(t)
	cases := serverFrames(t)

	type message struct {
		Name    string `json:"name"`
		Message []byte `json:"message"` // base64 in JSON
	}
	job := struct {
		Decode    []message                    `json:"decode"`
		Packed    []byte                       `json:"packed"`
		Malformed []message                    `json:"malformed"`
		API       map[string]map[string]string `json:"api"`
	}{API: map[string]map[string]string{"json": {}, "protobuf": {}}}
	var packed []byte
	for _, c := range cases {
		m := protoMessage(t, c.fr)
		job.Decode = append(job.Decode, message{c.name, m})
		packed = append(append(packed, m...), 0) // a heartbeat after each
	}
	job.Packed = packed
	merged := mergedFrames(t)
	for _, m := range merged {
		job.Decode = append(job.Decode, message{m.name, m.msg})
	}
	good := protoMessage(t, cases[1].fr)
	job.Malformed = []message{
		{"truncated", append(slices.Clone(good), good[:len(good)-1]...)},
		{"bad frame between good ones", append(append(slices.Clone(good), 3, 0xff, 0xff, 0xff), good...)},
		{"bad tag", append(slices.Clone(good), 2, 0x00, 0x01)},
		{"varint beyond 64 bits", append(slices.Clone(good), 11, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02)},
		{"group never ended", append(slices.Clone(good), 3, 0xa3, 0x06, 0x08)},
		{"text field longer than the frame", append(slices.Clone(good), 3, 0x1a, 0x05, 'x')},
	}
	apiFrames := apiSessionFrames(t)
	for name, fr := range apiFrames {
		var js []string
		var pb []byte
		for _, f := range fr {
			js = append(js, jsonMessage(t, f))
			pb = append(pb, protoMessage(t, f)...)
		}
		job.API["json"][name] = strings.Join(js, "\n")
		job.API["protobuf"][name] = base64.StdEncoding.EncodeToString(pb)
	}

	in, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	herald, err := filepath.Abs("herald.js")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, filepath.Join("testdata", "formats.mjs"), herald)
	cmd.Stdin = bytes.NewReader(in)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("node testdata/formats.mjs: %v\n%s", err, stderr.String())
	}
	var out struct {
		Decoded      []decodeResult                       `json:"decoded"`
		Packed       decodeResult                         `json:"packed"`
		Streamed     decodeResult                         `json:"streamed"`
		Malformed    []decodeResult                       `json:"malformed"`
		Encoded      []struct{ Name, JSON, Proto string } `json:"encoded"`
		EncodeErrors []string                             `json:"encodeErrors"`
		Options      []string                             `json:"options"`
		Fuzz         struct {
			Runs, Frames, Errors int
			Thrown               []string
		} `json:"fuzz"`
		API map[string]apiSession `json:"api"`
	}
	if err := json.Unmarshal(stdout, &out); err != nil {
		t.Fatalf("node printed %.300s: %v", stdout, err)
	}

	t.Run("decode", func(t *testing.T) {
		var all []any
		for i, c := range cases {
			want := normalized(t, c.fr)
			all = append(all, want)
			got := out.Decoded[i]
			if len(got.Errors) > 0 || len(got.Frames) != 1 || !reflect.DeepEqual(got.Frames[0], want) {
				t.Errorf("%s: herald.js decoded %s (errors %v)\nprotojson: %s", c.name, mustJSON(got.Frames), got.Errors, mustJSON(want))
			}
		}
		for i, m := range merged {
			want := normalized(t, m.want)
			got := out.Decoded[len(cases)+i]
			if len(got.Errors) > 0 || len(got.Frames) != 1 || !reflect.DeepEqual(got.Frames[0], want) {
				t.Errorf("%s: herald.js decoded %s (errors %v)\nproto.Unmarshal: %s", m.name, mustJSON(got.Frames), got.Errors, mustJSON(want))
			}
		}
		for _, r := range []struct {
			name string
			got  decodeResult
		}{{"packed", out.Packed}, {"streamed in chunks", out.Streamed}} {
			if len(r.got.Errors) > 0 || !reflect.DeepEqual(r.got.Frames, all) {
				t.Errorf("%s: %d frames (errors %v), want the %d frames in order", r.name, len(r.got.Frames), r.got.Errors, len(all))
			}
		}
		goodJSON := normalized(t, cases[1].fr)
		for _, m := range out.Malformed {
			want := []any{goodJSON}
			if m.Name == "bad frame between good ones" {
				want = append(want, goodJSON)
			}
			if len(m.Errors) != 1 || !reflect.DeepEqual(m.Frames, want) {
				t.Errorf("%s: frames %s, errors %v; want the good frames and one error", m.Name, mustJSON(m.Frames), m.Errors)
			}
		}
	})

	t.Run("encode", func(t *testing.T) {
		if len(out.Encoded) == 0 {
			t.Fatal("nothing encoded")
		}
		for _, e := range out.Encoded {
			var want heraldv1.ClientFrame
			if err := protojson.Unmarshal([]byte(e.JSON), &want); err != nil {
				t.Errorf("%s: protojson cannot read %s: %v", e.Name, e.JSON, err)
				continue
			}
			got := decodeClientMessage(t, e.Name, e.Proto)
			if got != nil && !proto.Equal(got, &want) {
				t.Errorf("%s: proto.Unmarshal gives %v, protojson of %s gives %v", e.Name, got, e.JSON, &want)
			}
		}
		byName := map[string]*heraldv1.ClientFrame{}
		for _, e := range out.Encoded {
			byName[e.Name] = decodeClientMessage(t, e.Name, e.Proto)
		}
		if got := byName["connect"].GetConnect().GetPersonalSince().GetOffset(); got != maxUint64 {
			t.Errorf("personal_since offset %d, want 2^64-1", got)
		}
		if got := byName["subscribeNumber"].GetSubscribe().GetSince().GetOffset(); got != 1<<60 {
			t.Errorf("since offset from the number 2**60: %d", got)
		}
		if b := byName["publishEmptyBinary"].GetPublish().GetPayload(); b == nil {
			t.Error("an empty binary payload was not sent (a oneof member is sent even when empty)")
		}
		if got := byName["publishJSON"].GetPublish().GetJson(); got != `{"id":12345678901234567891,"z":1,"a":"é😀`+"\u2028"+`"}` {
			t.Errorf("json text %q, not the exact text", got)
		}
		if v := byName["publishNullValue"].GetPublish().GetData(); v == nil || v.GetKind() == nil {
			t.Errorf("data null sent as %v, want a Value with null_value", v)
		}
		for i, e := range out.EncodeErrors {
			if !strings.Contains(e, "herald:") {
				t.Errorf("bad client frame %d was encoded (%s), want an error", i, e)
			}
		}
	})

	t.Run("damaged bytes", func(t *testing.T) {
		f := out.Fuzz
		t.Logf("%d damaged messages: %d frames decoded, %d errors reported", f.Runs, f.Frames, f.Errors)
		if f.Runs != 3000 || len(f.Thrown) > 0 || f.Errors == 0 {
			t.Errorf("decode threw on %d of %d damaged messages (first: %v), reported %d errors", len(f.Thrown), f.Runs, f.Thrown[:min(1, len(f.Thrown))], f.Errors)
		}
	})

	t.Run("option", func(t *testing.T) {
		want := []string{`Error: herald: format must be "json" or "protobuf", not "xml"`, `Error: herald: format must be "json" or "protobuf", not "proto"`, "ok", "ok"}
		if !slices.Equal(out.Options, want) {
			t.Errorf("new Herald with format xml, proto, undefined, absent: %q, want %q", out.Options, want)
		}
	})

	t.Run("api", func(t *testing.T) {
		j, p := out.API["json"], out.API["protobuf"]
		if j == nil || p == nil {
			t.Fatalf("sessions missing: %v", out.API)
		}
		checkSession(t, "json", j)
		checkSession(t, "protobuf", p)
		sentJ, sentP := j["sent"], p["sent"]
		for _, k := range []string{"sent", "format", "binaryType", "protocol"} {
			delete(j, k)
			delete(p, k)
		}
		delete(j["connected"].(map[string]any), "format")
		delete(p["connected"].(map[string]any), "format")
		if !reflect.DeepEqual(j, p) {
			for k := range j {
				if !reflect.DeepEqual(j[k], p[k]) {
					t.Errorf("%s differs:\n json:     %s\n protobuf: %s", k, mustJSON(j[k]), mustJSON(p[k]))
				}
			}
		}
		// The same requests on the wire.
		fj := clientFramesOf(t, "json", sentJ)
		fp := clientFramesOf(t, "protobuf", sentP)
		if len(fj) != len(fp) {
			t.Fatalf("%d frames sent in json, %d in protobuf", len(fj), len(fp))
		}
		for i := range fj {
			if !proto.Equal(fj[i], fp[i]) {
				t.Errorf("frame %d: json sent %v, protobuf sent %v", i+1, fj[i], fp[i])
			}
		}
		if got := fp[2].GetSubscribe().GetSince().GetOffset(); got != 1<<60 {
			t.Errorf("resume offset 2**60 sent as %d", got)
		}
		if got := fp[7].GetPublish().GetJson(); got != `{"id":12345678901234567891,"k":[1.0,-0]}` {
			t.Errorf("raw publish sent %q", got)
		}
	})
}

// decodeClientMessage reads one herald.proto client message (base64)
// holding one frame.
func decodeClientMessage(t *testing.T, name, b64 string) *heraldv1.ClientFrame {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	n, l := protowire.ConsumeVarint(b)
	if l < 0 || n != uint64(len(b)-l) {
		t.Errorf("%s: length prefix %d for %d bytes", name, n, len(b)-l)
		return nil
	}
	var fr heraldv1.ClientFrame
	if err := proto.Unmarshal(b[l:], &fr); err != nil {
		t.Errorf("%s: proto.Unmarshal: %v", name, err)
		return nil
	}
	return &fr
}

// clientFramesOf decodes what a session sent, as the bridge does (a
// herald.json publish's `data` is its exact text, compacted), with JSON
// payload text compacted in both formats so that they compare.
func clientFramesOf(t *testing.T, format string, sent any) []*heraldv1.ClientFrame {
	t.Helper()
	list, _ := sent.([]any)
	var frames []*heraldv1.ClientFrame
	for i, s := range list {
		m, _ := s.(string)
		var fr *heraldv1.ClientFrame
		if format == "protobuf" {
			fr = decodeClientMessage(t, "sent", m)
		} else {
			rest, data, err := payload.Extract([]byte(m), "publish", "data")
			if err != nil {
				t.Fatalf("json frame %d %s: %v", i+1, m, err)
			}
			fr = &heraldv1.ClientFrame{}
			if err := protojson.Unmarshal(rest, fr); err != nil {
				t.Fatalf("json frame %d %s: %v", i+1, m, err)
			}
			if data != nil {
				fr.GetPublish().Payload = &heraldv1.PublishFrame_Json{Json: string(data)}
			}
		}
		if fr == nil {
			continue
		}
		if pf := fr.GetPublish(); pf != nil && pf.GetJson() != "" {
			c, err := payload.Compact([]byte(pf.GetJson()))
			if err != nil {
				t.Fatalf("%s frame %d: %v", format, i+1, err)
			}
			pf.Payload = &heraldv1.PublishFrame_Json{Json: string(c)}
		}
		frames = append(frames, fr)
	}
	return frames
}

// apiSessionFrames are the server's side of formats.mjs's session, by the
// name the script delivers them under; each entry is one message.
func apiSessionFrames(t *testing.T) map[string][]*heraldv1.ServerFrame {
	pubs := awkwardPublications(t, "chat:x", 11, "e1")
	dup := proto.CloneOf(pubs[1]) // replayed: dropped by the client
	sf := func(id uint32, body any) *heraldv1.ServerFrame {
		fr := &heraldv1.ServerFrame{Id: id}
		switch b := body.(type) {
		case *heraldv1.ConnectedFrame:
			fr.Body = &heraldv1.ServerFrame_Connect{Connect: b}
		case *heraldv1.SubscribedFrame:
			if id == 0 {
				fr.Body = &heraldv1.ServerFrame_Subscribed{Subscribed: b}
			} else {
				fr.Body = &heraldv1.ServerFrame_Subscribe{Subscribe: b}
			}
		case *heraldv1.ErrorFrame:
			fr.Body = &heraldv1.ServerFrame_Error{Error: b}
		case *heraldv1.Publication:
			fr.Body = &heraldv1.ServerFrame_Pub{Pub: b}
		case *heraldv1.HistoryResponse:
			fr.Body = &heraldv1.ServerFrame_History{History: b}
		case *heraldv1.PresenceResponse:
			fr.Body = &heraldv1.ServerFrame_Presence{Presence: b}
		case *heraldv1.PresenceStatsResponse:
			fr.Body = &heraldv1.ServerFrame_PresenceStats{PresenceStats: b}
		case *heraldv1.PublishResponse:
			fr.Body = &heraldv1.ServerFrame_Publish{Publish: b}
		case *heraldv1.PingFrame:
			fr.Body = &heraldv1.ServerFrame_Pong{Pong: b}
		case *heraldv1.UnsubscribedFrame:
			fr.Body = &heraldv1.ServerFrame_Unsubscribed{Unsubscribed: b}
		case *heraldv1.DisconnectFrame:
			fr.Body = &heraldv1.ServerFrame_Disconnect{Disconnect: b}
		default:
			t.Fatalf("no frame for %T", body)
		}
		return fr
	}
	join := &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Join{Join: &heraldv1.PresenceEvent{Channel: "chat:x", Client: pubs[1].Publisher}}}
	leave := &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Leave{Leave: &heraldv1.PresenceEvent{Channel: "chat:x", Client: &heraldv1.ClientInfo{Client: "anon"}}}}
	pubFrames := []*heraldv1.ServerFrame{}
	for i, p := range pubs {
		pubFrames = append(pubFrames, sf(0, p))
		if i == 2 {
			pubFrames = append(pubFrames, sf(0, dup))
		}
	}
	personal := proto.CloneOf(pubs[0])
	personal.Channel, personal.Offset, personal.Epoch = "user:u", 1, "pe"
	return map[string][]*heraldv1.ServerFrame{
		"connect":        {sf(1, &heraldv1.ConnectedFrame{Client: "c1", User: "u", ExpiresIn: 0, Version: "v1", PingInterval: 25})},
		"subscribe":      {sf(2, &heraldv1.SubscribedFrame{Channel: "chat:x", Position: pos(10, "e1"), Recoverable: true})},
		"subscribeBig":   {sf(3, &heraldv1.ErrorFrame{Code: 104, Message: `not allowed to subscribe to "chat:big"`})},
		"pubs":           pubFrames,
		"personal":       {sf(0, &heraldv1.SubscribedFrame{Channel: "user:u", Position: pos(0, "pe"), Recoverable: true}), sf(0, personal)},
		"presenceEvents": {join, leave},
		"history":        {sf(4, &heraldv1.HistoryResponse{Publications: pubs, Position: pos(16, "e1")})},
		"presence":       {sf(5, &heraldv1.PresenceResponse{Clients: []*heraldv1.ClientInfo{pubs[1].Publisher, {Client: "anon"}}})},
		"stats":          {sf(6, &heraldv1.PresenceStatsResponse{Clients: 2, Users: 1})},
		"publish7":       {sf(7, &heraldv1.PublishResponse{Position: pos(17, "e1")})},
		"publish8":       {sf(8, &heraldv1.PublishResponse{Position: pos(17, "e1"), Duplicate: true})},
		"publish9":       {sf(9, &heraldv1.PublishResponse{Position: pos(18, "e1")})},
		"publish10":      {sf(10, &heraldv1.PublishResponse{Position: pos(19, "e1")})},
		"pong":           {sf(11, &heraldv1.PingFrame{})},
		"error":          {sf(12, &heraldv1.ErrorFrame{Code: 110, Message: "data: not JSON", Temporary: false})},
		"unsubscribed":   {sf(0, &heraldv1.UnsubscribedFrame{Channel: "chat:x", Reason: "by the backend"})},
		"disconnect":     {sf(0, &heraldv1.DisconnectFrame{Code: 4005, Reason: "banned", Reconnect: false})},
	}
}

// checkSession checks what a session of one format recorded against what
// the server sent.
func checkSession(t *testing.T, format string, s apiSession) {
	t.Helper()
	fail := func(what string, got any) { t.Errorf("%s: %s: %s", format, what, mustJSON(got)) }
	if errs, _ := s["errors"].([]any); len(errs) > 0 {
		fail("client errors", errs)
	}
	wantProtocol, wantBinary := "herald.json", any(nil)
	if format == "protobuf" {
		wantProtocol, wantBinary = "herald.proto", "arraybuffer"
	}
	if s["protocol"] != wantProtocol || s["binaryType"] != wantBinary || s["format"] != format {
		t.Errorf("%s: subprotocol %v, binaryType %v, format %v", format, s["protocol"], s["binaryType"], s["format"])
	}
	pubs, _ := s["pubs"].([]any)
	var offsets []float64
	for _, p := range pubs {
		offsets = append(offsets, p.(map[string]any)["offset"].(float64))
	}
	if !slices.Equal(offsets, []float64{11, 12, 13, 14, 15, 16}) {
		fail("publications (each once, the replayed 12 dropped)", offsets)
	}
	if len(pubs) != 6 {
		return
	}
	p := func(i int) map[string]any { return pubs[i].(map[string]any) }
	checks := []struct {
		what string
		got  any
		want any
	}{
		{"big integer, key order and 1e400 (JSON.parse of the exact text)", p(0)["dataText"], `{"id":12345678901234567000,"z":1,"a":[1,0,null],"n":null}`},
		{"time", p(0)["timeUnixMs"], float64(1700000000123)},
		{"tags", p(0)["tags"], map[string]any{"kind": "msg", "ключ": "значение 😀"}},
		{"unicode and __proto__ as a key", p(1)["dataText"], `{"text":"héllo é 😀 😀 ` + "\u2028" + `","nul":"\u0000","__proto__":{"x":1}}`},
		{"publisher", p(1)["publisher"], map[string]any{"client": "2f9c6a1e04b7d3a8", "user": "42", "info": map[string]any{"name": "Ann", "roles": []any{"admin", 1.5, true, nil}, "é": map[string]any{}}}},
		{"time beyond 2^53 (the nearest double)", p(1)["timeUnixMs"], float64(math.MaxInt64)},
		{"empty binary", p(2)["binary"], ""},
		{"binary's data", p(2)["data"], nil},
		{"time 0 (unknown)", p(2)["timeUnixMs"], float64(0)},
		{"every byte", p(3)["binary"], base64.StdEncoding.EncodeToString(func() []byte {
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}())},
		{"negative time", p(3)["timeUnixMs"], float64(-1)},
		{"a json payload", p(4)["dataText"], `["json",{"b":2,"a":1}]`},
		{"a Value payload (sorted keys)", p(5)["dataText"], `{"a":null,"m":1e+300,"z":[1,"x",false]}`},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %s: got %s, want %s", format, c.what, mustJSON(c.got), mustJSON(c.want))
		}
	}
	if hist, _ := s["history"].(map[string]any); !reflect.DeepEqual(hist["publications"], s["pubs"]) {
		fail("history (want the publications as pushed)", hist)
	}
	if e := mustJSON(s["subErrors"]); e != `[{"code":104,"message":"not allowed to subscribe to \"chat:big\""}]` {
		fail("refused subscription", s["subErrors"])
	}
	if e := mustJSON(s["refused"]); e != `{"code":110,"message":"data: not JSON","temporary":false}` {
		fail("error reply", s["refused"])
	}
	if s["rawError"] != "SyntaxError" {
		fail("raw publish of text that is not JSON", s["rawError"])
	}
	if e := mustJSON(s["published"]); e != `[{"duplicate":false,"epoch":"e1","offset":17},{"duplicate":true,"epoch":"e1","offset":17},{"duplicate":false,"epoch":"e1","offset":18},{"duplicate":false,"epoch":"e1","offset":19}]` {
		fail("publish results", s["published"])
	}
	if e := mustJSON(s["states"]); e != `["connecting","connected","disconnected 4005"]` {
		fail("states", s["states"])
	}
}

// formatNames are herald.js's wire formats (its `format` option); the
// browser tests run on each.
var formatNames = []string{"json", "protobuf"}
