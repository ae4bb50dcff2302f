package wsbridge

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestPubJSONMatchesProtojson checks that the hand-built publication frame
// decodes into the same ServerFrame as protojson's encoding of the frame
// with the payload as `data`.
func TestPubJSONMatchesProtojson(t *testing.T) {
	pubs := []*heraldv1.Publication{
		{Channel: "chat:lobby", Offset: 5, Epoch: "ab12", Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{"a":[1,2,{"b":null}],"s":"x\"y"}`)}},
		{Channel: "c", Payload: &heraldv1.Publication_RawJson{RawJson: []byte("{\n  \"multi\": \"line\"\n}")}},
		{Channel: "bin", Offset: 1 << 60, Epoch: "e\u2028\"\\\x01", Payload: &heraldv1.Publication_Binary{Binary: []byte{0, 255, 10, 13}}},
		{Channel: "t", Offset: 2, Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`"str"`)}, Tags: map[string]string{"k": "v", "ü": "\n\t"}},
		{Channel: "p", Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`12.5`)},
			Publisher: &heraldv1.ClientInfo{Client: "c1", User: "u", Info: structpb.NewStringValue("i")}},
		{Channel: "empty", Payload: &heraldv1.Publication_Binary{Binary: []byte{}}},
		{Channel: "time", Offset: 3, TimeUnixMs: 1767225600123, Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{}`)}},
		{Channel: "oldtime", TimeUnixMs: -5, Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`1`)}},
	}
	for _, pub := range pubs {
		got := (&encodedPub{pub: pub}).bytes(formatJSON)
		if bytes.IndexByte(got, '\n') >= 0 {
			t.Errorf("%s: frame has a newline: %s", pub.Channel, got)
		}
		var decoded heraldv1.ServerFrame
		if err := protojson.Unmarshal(got, &decoded); err != nil {
			t.Fatalf("%s: %s does not decode: %v", pub.Channel, got, err)
		}
		want := proto.Clone(pub).(*heraldv1.Publication)
		if raw, ok := pub.Payload.(*heraldv1.Publication_RawJson); ok {
			v := &structpb.Value{}
			if err := protojson.Unmarshal(raw.RawJson, v); err != nil {
				t.Fatal(err)
			}
			want.Payload = &heraldv1.Publication_Data{Data: v}
		}
		wantFrame := &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pub{Pub: want}}
		b, _ := jsonOut.Marshal(wantFrame)
		var viaProtojson heraldv1.ServerFrame
		if err := protojson.Unmarshal(b, &viaProtojson); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&decoded, &viaProtojson) {
			t.Errorf("%s:\nhand-built %s\nprotojson  %s", pub.Channel, got, b)
		}
	}
}

// FuzzDecodeFrames feeds arbitrary messages to the frame decoder of both
// subprotocols: it must never panic, and every frame it accepts must have an
// id and a body and survive a round trip.
func FuzzDecodeFrames(f *testing.F) {
	seeds := []string{
		`{"id":1,"connect":{"token":"eyJ","name":"x"}}`,
		`{"id":2,"subscribe":{"channel":"chat:lobby","since":{"offset":"17","epoch":"ab"}}}` + "\n" + `{"id":3,"ping":{}}`,
		`{"id":4,"publish":{"channel":"chat:a","data":{"x":[1,true,null]}}}`,
		`{"id":5,"publish":{"channel":"chat:a","binary":"AAEC"}}`,
		`{"id":6,"history":{"channel":"c","limit":10,"reverse":true}}`,
		`{"id":7,"presence_stats":{"channel":"c"}}`,
		`{"id":8,"publish":{"channel":"chat:a","data":{"id":12345678901234567891,"b":1,"a":[1.0,-0,1e400]}}}`,
		`{"id":9,"publish":{"channel":"chat:a","data":1,"data":2}}`,
		`{"id":9,"publish":{"channel":"chat:a","data":1,"binary":"AA=="}}`,
		`{"id":10,"publish":{"channel":"chat:a","json":"{"a":1}"}}`,
		`{"id":1}`, `{`, `[]`, "\n\n", `{"id":"x","ping":{}}`,
		`{"id":11,"rpc":{"method":"profile.get","data":{"id":12345678901234567891}}}`,
		`{"id":12,"rpc":{"method":"m","binary":"AAEC"}}`,
		`{"id":13,"rpc":{"method":"m","data":1,"json":"2"}}`,
		`{"rpc":{"data":[1,2],"method":"m"},"id":14}` + "\n" + `{"id":15,"publish":{"channel":"c","data":{"rpc":1}}}`,
		`{"id":16,"publish":{"channel":"c","json":"not JSON"}}`, `{"id":17,"rpc":{"method":"m","json":"not JSON"}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
	}
	for _, fr := range []*heraldv1.ClientFrame{
		{Id: 1, Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: "t"}}},
		{Id: 9, Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: "chat:x"}}},
	} {
		b, _ := proto.Marshal(fr)
		f.Add(append([]byte{byte(len(b))}, b...), true)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, true)
	f.Fuzz(func(t *testing.T, msg []byte, binary bool) {
		format := formatJSON
		if binary {
			format = formatProto
		}
		decodeFrames(format, msg, func(fr *heraldv1.ClientFrame, err *requestError) bool {
			if err != nil {
				if err.code != ErrBadFrame {
					t.Fatalf("decode error with code %d", err.code)
				}
				return true
			}
			if fr.Id == 0 || fr.Body == nil {
				t.Fatalf("accepted a frame without id or body: %v", fr)
			}
			if !utf8.ValidString(fr.GetPublish().GetJson()) || !utf8.ValidString(fr.GetRpc().GetJson()) {
				return true // refused when handled (error 110); it cannot be encoded
			}
			// The text taken from `data` is valid JSON (a `json` string
			// member may hold anything: it is checked when handled, 110).
			viaData := format == formatJSON && !bytes.Contains(msg, []byte(`json`))
			if j := fr.GetPublish().GetJson(); viaData && j != "" && !json.Valid([]byte(j)) {
				t.Fatalf("a JSON frame gave invalid JSON text %q", j)
			}
			if j := fr.GetRpc().GetJson(); viaData && j != "" && !json.Valid([]byte(j)) {
				t.Fatalf("a JSON rpc frame gave invalid JSON text %q", j)
			}
			var b []byte
			if format == formatJSON {
				b, _ = protojson.Marshal(fr)
			} else {
				b, _ = proto.Marshal(fr)
				b = append(appendVarint(nil, uint64(len(b))), b...)
			}
			n := 0
			decodeFrames(format, b, func(again *heraldv1.ClientFrame, err *requestError) bool {
				if err != nil || !proto.Equal(fr, again) {
					t.Fatalf("round trip of %v: %v, %v", fr, again, err)
				}
				n++
				return true
			})
			if n != 1 {
				t.Fatalf("round trip gave %d frames", n)
			}
			return true
		})
	})
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// TestInvalidJSONPayloadBecomesBinary: a stored JSON payload that is not
// valid UTF-8 (data from before the core checked payloads) is encoded as
// binary in both subprotocols, never as text that would break a text frame,
// and counted once per encoding.
func TestInvalidJSONPayloadBecomesBinary(t *testing.T) {
	bad := []byte("{\"a\":\"\xff\"}")
	pub := &heraldv1.Publication{Channel: "c", Offset: 1, Epoch: "e", Payload: &heraldv1.Publication_RawJson{RawJson: bad}}
	ep := &encodedPub{pub: pub}
	js := ep.bytes(formatJSON)
	if !utf8.Valid(js) {
		t.Fatalf("JSON frame is not UTF-8: %q", js)
	}
	var fr heraldv1.ServerFrame
	if err := protojson.Unmarshal(js, &fr); err != nil || !bytes.Equal(fr.GetPub().GetBinary(), bad) {
		t.Fatalf("JSON frame %s: %v", js, err)
	}
	pb := ep.bytes(formatProto)
	fr.Reset()
	if err := proto.Unmarshal(pb[1:], &fr); err != nil || !bytes.Equal(fr.GetPub().GetBinary(), bad) || fr.GetPub().GetRawJson() != nil {
		t.Fatalf("protobuf frame: %v %v", &fr, err)
	}
	if ep.safe == pub || pub.GetRawJson() == nil {
		t.Fatal("the stored publication itself was changed, or not replaced")
	}
	if got := checkedPubs(nil, []*heraldv1.Publication{pub}); !bytes.Equal(got[0].GetBinary(), bad) || pub.GetRawJson() == nil {
		t.Fatalf("checkedPubs: %v (the original must stay as it is: %v)", got, pub)
	}
}

// TestRPCFramesExact: an rpc frame's data is taken as its exact JSON text
// (not through a Value), whatever else the frame holds, and a publish
// whose data mentions "rpc" stays a publish; the JSON reply carries the
// backend's text as data, and decodes as the frame protojson expects.
func TestRPCFramesExact(t *testing.T) {
	const text = `{"z":12345678901234567891,"a":1.0}`
	for _, line := range []string{
		`{"id":3,"rpc":{"method":"m","data":` + text + `}}`,
		`{"rpc":{"data":` + text + `,"method":"m"},"id":3}`,
	} {
		fr, err := decodeJSONFrame([]byte(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if got := fr.GetRpc().GetJson(); got != text || fr.GetRpc().GetMethod() != "m" || fr.Id != 3 {
			t.Fatalf("%s decoded as %v", line, fr)
		}
	}
	fr, err := decodeJSONFrame([]byte(`{"id":4,"publish":{"channel":"c","data":{"rpc":` + text + `}}}`))
	if err != nil || fr.GetPublish().GetJson() != `{"rpc":`+text+`}` {
		t.Fatalf("publish mentioning rpc: %v, %v", fr, err)
	}
	if _, err := decodeJSONFrame([]byte(`{"id":5,"rpc":{"method":"m","json":"1","data":2}}`)); err == nil {
		t.Fatal("an rpc frame with two payloads decoded")
	}
	out := encodeFrame(formatJSON, &heraldv1.ServerFrame{Id: 9, Body: &heraldv1.ServerFrame_Rpc{Rpc: &heraldv1.RPCResultFrame{Payload: &heraldv1.RPCResultFrame_Json{Json: text}}}})
	if string(out) != `{"id":9,"rpc":{"data":`+text+`}}` {
		t.Fatalf("reply = %s", out)
	}
	var back heraldv1.ServerFrame
	if err := protojson.Unmarshal(out, &back); err != nil || back.GetRpc().GetData() == nil {
		t.Fatalf("the reply does not decode as a ServerFrame: %v", err)
	}
}

// decodeJSONFrameGeneral is decodeJSONFrame without its shortcut for
// frames that cannot hold a publish: every frame taken apart by
// payload.Extract first.
func decodeJSONFrameGeneral(line []byte) (*heraldv1.ClientFrame, error) {
	fr, err := decodeJSONFrameAt(line, "publish")
	if err != nil {
		return nil, err
	}
	if _, isData := fr.GetRpc().GetPayload().(*heraldv1.RPCFrame_Data); isData {
		return decodeJSONFrameAt(line, "rpc")
	}
	return fr, nil
}

var shortcutSeeds = []string{
	`{"id":1,"connect":{"token":"a.b.c","name":"x"}}`,
	`{"id":2,"subscribe":{"channel":"chat:x","since":{"offset":"3","epoch":"e"}}}`,
	`{"id":1,"id":2,"connect":{}}`,
	`{"id":3,"presence_stats":{"channel":"c"},"presenceStats":{"channel":"c"}}`,
	`{"id":4,"connect":{},"subscribe":{}}`,
	`{"id":5,"history":{"channel":"c","limit":10}}`,
	`{"id":6,"ping":{}}`,
	`{"id":7,"unknown":{}}`,
	`[1,2]`,
	`{"id":8,"connect":{}`,
	`{"id":9,"connect":{"token":"x"}} trailing`,
	`{"id":10,"rpc":{"method":"m","data":{"z":12345678901234567891,"a":1.0}}}`,
	`{"id":11,"rpc":{"method":"m","json":"1","data":2}}`,
	`{"id":12,"rpc":{"method":"m","data":1},"rpc":{}}`,
}

// TestJSONFrameShortcut: a frame that skips payload.Extract (no publish in
// it) decodes as it does through Extract, or fails as it does there.
func TestJSONFrameShortcut(t *testing.T) {
	for _, s := range shortcutSeeds {
		checkShortcut(t, []byte(s))
	}
}

func FuzzJSONFrameShortcut(f *testing.F) {
	for _, s := range shortcutSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) { checkShortcut(t, line) })
}

func checkShortcut(t *testing.T, line []byte) {
	t.Helper()
	if bytes.IndexByte(line, '\\') >= 0 || bytes.Contains(line, publishKey) {
		return // not the shortcut's
	}
	got, gerr := decodeJSONFrame(line)
	want, werr := decodeJSONFrameGeneral(line)
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: shortcut error %v, general error %v", line, gerr, werr)
	}
	if gerr == nil && !proto.Equal(got, want) {
		t.Fatalf("%q: shortcut %v, general %v", line, got, want)
	}
}

// TestJSONFrameWhitespace: a frame line may have JSON whitespace around it
// (a "\r\n" line end, spaces), and nothing else: a form feed, a vertical
// tab or a no-break space makes it a bad frame, as it makes it bad JSON.
func TestJSONFrameWhitespace(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{" \t{\"id\":1,\"ping\":{}}\r", true},
		{"\f{\"id\":1,\"ping\":{}}", false},
		{"{\"id\":1,\"ping\":{}}\v", false},
		{"{\"id\":1,\"ping\":{}}\u00a0", false},
	} {
		var frames, bad int
		decodeFrames(formatJSON, []byte(tc.line), func(fr *heraldv1.ClientFrame, err *requestError) bool {
			if err != nil {
				bad++
			} else {
				frames++
			}
			return true
		})
		if tc.ok && (frames != 1 || bad != 0) || !tc.ok && (frames != 0 || bad != 1) {
			t.Errorf("%q: %d frames, %d bad; want ok=%v", tc.line, frames, bad, tc.ok)
		}
	}
}
