package payload_test

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/payloadtest"
	"github.com/herald-io/herald/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestCompactCorpus(t *testing.T) {
	for _, tc := range payloadtest.Corpus {
		t.Run(tc.Name, func(t *testing.T) {
			got, err := payload.Compact([]byte(tc.In))
			if err != nil {
				t.Fatalf("Compact(%q): %v", tc.In, err)
			}
			if string(got) != tc.Want {
				t.Fatalf("Compact(%q) = %q, want %q", tc.In, got, tc.Want)
			}
			if bytes.ContainsAny(got, "\n\r") {
				t.Fatalf("compact text has a newline: %q", got)
			}
		})
	}
}

func TestCheckRefusesInvalid(t *testing.T) {
	for _, tc := range payloadtest.Invalid {
		t.Run(tc.Name, func(t *testing.T) {
			if err := payload.Check([]byte(tc.In)); err == nil {
				t.Fatalf("Check(%q) accepted it", tc.In)
			}
			if _, err := payload.Compact([]byte(tc.In)); err == nil {
				t.Fatalf("Compact(%q) accepted it", tc.In)
			}
		})
	}
	err := payload.Check([]byte("{\"a\":\"\xff\"}"))
	if err == nil || !strings.Contains(err.Error(), "UTF-8") || !strings.Contains(err.Error(), "offset 6") {
		t.Fatalf("invalid UTF-8: %v, want a message naming UTF-8 and the offset", err)
	}
	err = payload.Check([]byte(`{"a":}`))
	if err == nil || !strings.Contains(err.Error(), "not valid JSON") || !strings.Contains(err.Error(), "offset 5") {
		t.Fatalf("invalid JSON: %v, want a message with the offset", err)
	}
}

func TestCompactReturnsCompactTextItself(t *testing.T) {
	in := []byte(`{"a":"x y"}`)
	out, err := payload.Compact(in)
	if err != nil || &out[0] != &in[0] {
		t.Fatalf("Compact copied text that was compact already (err %v)", err)
	}
}

func TestFromValue(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{"b": 1, "a": []any{true, nil, "é\n\u2028"}, "n": 1e21, "m": 1e-7, "z": math.Copysign(0, -1)})
	for _, tc := range []struct {
		v    *structpb.Value
		want string
	}{
		{structpb.NewNullValue(), `null`},
		{structpb.NewBoolValue(false), `false`},
		{structpb.NewNumberValue(12345678901234567891), `12345678901234567000`},
		{structpb.NewNumberValue(0.1), `0.1`},
		{structpb.NewNumberValue(-1.5e300), `-1.5e+300`},
		{structpb.NewStringValue(`<&>"`), `"<&>\""`},
		{structpb.NewStructValue(s), `{"a":[true,null,"é\u000a\u2028"],"b":1,"m":1e-7,"n":1e+21,"z":-0}`},
		{structpb.NewListValue(&structpb.ListValue{}), `[]`},
		{structpb.NewStructValue(&structpb.Struct{}), `{}`},
	} {
		got, err := payload.FromValue(tc.v)
		if err != nil || string(got) != tc.want {
			t.Errorf("FromValue(%v) = %s, %v; want %s", tc.v, got, err, tc.want)
		}
		if err == nil && !json.Valid(got) {
			t.Errorf("FromValue(%v) = %s: not valid JSON", tc.v, got)
		}
	}
}

// TestFromValueRefusesEmptyValues: a Value with no kind set, at the top or
// nested, is refused with a message that says where and how to send JSON.
func TestFromValueRefusesEmptyValues(t *testing.T) {
	nested := &structpb.Value{Kind: &structpb.Value_StructValue{StructValue: &structpb.Struct{Fields: map[string]*structpb.Value{
		"items": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(1), {}}}),
	}}}}
	for _, tc := range []struct {
		name  string
		v     *structpb.Value
		where string
	}{
		{"top", &structpb.Value{}, "top-level Value"},
		{"nested", nested, "Value at .items[1]"},
		{"nil-entry", structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{nil}}), "Value at [0]"},
		{"nan", structpb.NewNumberValue(math.NaN()), "top-level Value"},
		{"inf", &structpb.Value{Kind: &structpb.Value_StructValue{StructValue: &structpb.Struct{Fields: map[string]*structpb.Value{"a b": structpb.NewNumberValue(math.Inf(1))}}}}, `Value at ."a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := payload.FromValue(tc.v)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range []string{tc.where, "nothing was published", "`json`", "REST"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestExtract(t *testing.T) {
	for _, tc := range []struct {
		in, rest, value string
		path            []string
	}{
		{`{"data":{"b":1,"a":12345678901234567891},"idempotency_key":"k"}`, `{"idempotency_key":"k"}`, `{"b":1,"a":12345678901234567891}`, []string{"data"}},
		{`{ "x" : 1 , "data" : [ 1.0 ] }`, `{"x":1}`, `[ 1.0 ]`, []string{"data"}},
		{`{"x":1}`, `{"x":1}`, ``, []string{"data"}},
		{`{}`, `{}`, ``, []string{"data"}},
		{`{"id":3,"publish":{"channel":"c","data":{"z":1e400}}}`, `{"id":3,"publish":{"channel":"c"}}`, `{"z":1e400}`, []string{"publish", "data"}},
		{`{"id":3,"publish":5}`, `{"id":3,"publish":5}`, ``, []string{"publish", "data"}},
		{`{"data":"\u00e9\n"}`, `{}`, `"\u00e9\n"`, []string{"data"}},
		{"{\"data\":\"\xff\"}", `{}`, "\"\xff\"", []string{"data"}},
	} {
		rest, value, err := payload.Extract([]byte(tc.in), tc.path...)
		if err != nil || string(rest) != tc.rest || string(value) != tc.value {
			t.Errorf("Extract(%s, %v) = %s, %s, %v; want %s, %s", tc.in, tc.path, rest, value, err, tc.rest, tc.value)
		}
	}
	for _, in := range []string{`{"data":1,"data":2}`, `{"publish":{"data":1,"data":2}}`, `[1]`, `{"a":1`, `{"a":1}x`, `{"a":1}{}`, ``, `{"a":}`} {
		if _, _, err := payload.Extract([]byte(in), "publish", "data"); err == nil {
			if _, _, err := payload.Extract([]byte(in), "data"); err == nil {
				t.Errorf("Extract(%s) accepted it", in)
			}
		}
	}
}

// TestAppendPublicationExact: JSON payloads as stored (compact) in any
// field come out as `"data":` with their exact text, and the rest decodes
// like protojson. Text stored uncompacted by an older version comes out
// valid and without newlines.
func TestAppendPublicationExact(t *testing.T) {
	for _, tc := range payloadtest.Corpus {
		for _, stored := range []string{tc.Want, tc.In} {
			for _, pub := range []*heraldv1.Publication{
				{Channel: "c", Offset: 7, Epoch: "e", Payload: &heraldv1.Publication_RawJson{RawJson: []byte(stored)}, TimeUnixMs: 5},
				{Channel: "c", Offset: 7, Epoch: "e", Payload: &heraldv1.Publication_Json{Json: stored}, TimeUnixMs: 5},
			} {
				b, ok := payload.AppendPublication(nil, pub)
				if !ok {
					t.Fatalf("%s: reported invalid", tc.Name)
				}
				if bytes.ContainsAny(b, "\n\r") || !json.Valid(b) {
					t.Fatalf("%s: %q", tc.Name, b)
				}
				if stored != tc.Want {
					var buf bytes.Buffer
					_ = json.Compact(&buf, b)
					b = buf.Bytes()
				}
				want := `{"channel":"c","offset":"7","epoch":"e","data":` + tc.Want + `,"time_unix_ms":"5"}`
				if string(b) != want {
					t.Errorf("%s:\n got %s\nwant %s", tc.Name, b, want)
				}
			}
		}
	}
	pub := &heraldv1.Publication{
		Channel: "bin", Offset: 1 << 60, Epoch: "e\u2028\"\\\x01", Payload: &heraldv1.Publication_Binary{Binary: []byte{0, 255, 10, 13}},
		Tags:      map[string]string{"k": "v", "ü": "\n\t"},
		Publisher: &heraldv1.ClientInfo{Client: "c1", User: "u", Info: structpb.NewStringValue("i")},
	}
	b, _ := payload.AppendPublication(nil, pub)
	var got heraldv1.Publication
	if err := protojson.Unmarshal(b, &got); err != nil || !proto.Equal(&got, pub) {
		t.Fatalf("%s decodes to %v (%v), want %v", b, &got, err, pub)
	}
}

// TestAppendPublicationInvalidAsBinary: stored text that is not valid JSON
// in UTF-8 is written as binary, losslessly, and reported.
func TestAppendPublicationInvalidAsBinary(t *testing.T) {
	bad := []byte("{\"a\":\"\xff\"}")
	b, ok := payload.AppendPublication(nil, &heraldv1.Publication{Channel: "c", Payload: &heraldv1.Publication_RawJson{RawJson: bad}})
	if ok || !utf8.Valid(b) {
		t.Fatalf("ok=%v, %q", ok, b)
	}
	var got heraldv1.Publication
	if err := protojson.Unmarshal(b, &got); err != nil || !bytes.Equal(got.GetBinary(), bad) {
		t.Fatalf("%s: %v, binary %q", b, err, got.GetBinary())
	}
	pub, ok := payload.Lossless(&heraldv1.Publication{Channel: "c", Payload: &heraldv1.Publication_RawJson{RawJson: bad}})
	if ok || !bytes.Equal(pub.GetBinary(), bad) {
		t.Fatalf("Lossless: ok=%v %v", ok, pub)
	}
	good := &heraldv1.Publication{Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`1`)}}
	if p, ok := payload.Lossless(good); !ok || p != good {
		t.Fatal("Lossless changed a valid publication")
	}
}

func TestAppendMessage(t *testing.T) {
	pub := &heraldv1.Publication{Channel: "c", Offset: 1, Epoch: "e", Payload: &heraldv1.Publication_Json{Json: `{"b":12345678901234567891,"a":1}`}}
	for _, tc := range []struct {
		m    proto.Message
		want string
	}{
		{&heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Publication{Publication: pub}}, `{"publication":{"channel":"c","offset":"1","epoch":"e","data":{"b":12345678901234567891,"a":1}}}`},
		{&heraldv1.HistoryResponse{Publications: []*heraldv1.Publication{pub, pub}}, `{"publications":[{"channel":"c","offset":"1","epoch":"e","data":{"b":12345678901234567891,"a":1}},{"channel":"c","offset":"1","epoch":"e","data":{"b":12345678901234567891,"a":1}}]}`},
		{&heraldv1.HistoryResponse{}, `{}`},
		{&heraldv1.ServerFrame{Id: 7, Body: &heraldv1.ServerFrame_History{History: &heraldv1.HistoryResponse{Publications: []*heraldv1.Publication{pub}}}}, `{"id":7,"history":{"publications":[{"channel":"c","offset":"1","epoch":"e","data":{"b":12345678901234567891,"a":1}}]}}`},
		{&heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pub{Pub: pub}}, `{"pub":{"channel":"c","offset":"1","epoch":"e","data":{"b":12345678901234567891,"a":1}}}`},
	} {
		b, err := payload.AppendMessage(nil, tc.m)
		if err != nil || string(b) != tc.want {
			t.Errorf("AppendMessage(%v) = %s, %v\nwant %s", tc.m, b, err, tc.want)
		}
	}
	// Positions and other messages go through protojson: compare decoded.
	h := &heraldv1.HistoryResponse{Publications: []*heraldv1.Publication{pub}, Position: &heraldv1.StreamPosition{Offset: 9, Epoch: "e"}}
	b, err := payload.AppendMessage(nil, h)
	var got heraldv1.HistoryResponse
	if err != nil || protojson.Unmarshal(b, &got) != nil || !proto.Equal(got.Position, h.Position) || len(got.Publications) != 1 {
		t.Fatalf("%s: %v", b, err)
	}
}

// TestCheckDepthLimit: Check's nesting limit is encoding/json's, exactly.
func TestCheckDepthLimit(t *testing.T) {
	for _, d := range []int{9999, 10000, 10001} {
		for _, in := range []string{
			strings.Repeat("[", d) + strings.Repeat("]", d),
			strings.Repeat("[", d-1) + "{}" + strings.Repeat("]", d-1),
			strings.Repeat(`{"a":`, d) + "1" + strings.Repeat("}", d),
			strings.Repeat(`[{"a":`, d/2) + "[]" + strings.Repeat("}]", d/2),
		} {
			if got, want := payload.Check([]byte(in)) == nil, json.Valid([]byte(in)); got != want {
				t.Errorf("depth %d, %.12s…: Check accepts=%v, json.Valid=%v", d, in, got, want)
			}
		}
	}
}

// TestTrimSpace: JSON's four whitespace bytes go, nothing else does.
func TestTrimSpace(t *testing.T) {
	for in, want := range map[string]string{
		" \t\r\n{}\n\r\t ": "{}",
		"\f{}":             "\f{}",
		"{}\v":             "{}\v",
		"\u00a0{}\u0085":   "\u00a0{}\u0085",
		"":                 "",
		" 1 2 ":            "1 2",
	} {
		if got := string(payload.TrimSpace([]byte(in))); got != want {
			t.Errorf("TrimSpace(%q) = %q, want %q", in, got, want)
		}
	}
}
