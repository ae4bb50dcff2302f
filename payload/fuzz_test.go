package payload_test

import (
	"bytes"
	"encoding/json"
	"io"
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

// tokens decodes JSON text into its token stream, numbers as written.
func tokens(t *testing.T, text []byte) []any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var out []any
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("tokens of %q: %v", text, err)
		}
		out = append(out, tok)
	}
}

func sameTokens(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzCompact: whatever the input, Compact either refuses it or returns
// valid UTF-8 JSON without newlines whose tokens (numbers as written) are
// the input's, and compacting it again changes nothing.
func FuzzCompact(f *testing.F) {
	for _, tc := range payloadtest.Corpus {
		f.Add([]byte(tc.In))
	}
	for _, tc := range payloadtest.Invalid {
		f.Add([]byte(tc.In))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := payload.Compact(in)
		if err != nil {
			if utf8.Valid(in) && json.Valid(in) {
				t.Fatalf("refused valid JSON %q: %v", in, err)
			}
			return
		}
		if !utf8.Valid(in) || !json.Valid(in) {
			t.Fatalf("accepted %q", in)
		}
		if !utf8.Valid(out) || !json.Valid(out) || bytes.ContainsAny(out, "\n\r") {
			t.Fatalf("Compact(%q) = %q", in, out)
		}
		if !sameTokens(tokens(t, in), tokens(t, out)) {
			t.Fatalf("Compact(%q) = %q changed the tokens", in, out)
		}
		again, _ := payload.Compact(out)
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q → %q", out, again)
		}
		// As a stored publication, it is written exactly; stored as it was
		// sent (by an older version), it is written as valid JSON with the
		// same tokens and no newline.
		want := append(append([]byte(`{"channel":"c","data":`), out...), '}')
		b, ok := payload.AppendPublication(nil, &heraldv1.Publication{Channel: "c", Payload: &heraldv1.Publication_RawJson{RawJson: out}})
		if !ok || !bytes.Equal(b, want) {
			t.Fatalf("AppendPublication of %q: %s", out, b)
		}
		b, ok = payload.AppendPublication(nil, &heraldv1.Publication{Channel: "c", Payload: &heraldv1.Publication_RawJson{RawJson: in}})
		if !ok || bytes.ContainsAny(b, "\n\r") || !utf8.Valid(b) || !sameTokens(tokens(t, b), tokens(t, want)) {
			t.Fatalf("AppendPublication of %q: %s", in, b)
		}
	})
}

// FuzzExtract: the member taken out, put back, gives an object with the
// same members as the input.
func FuzzExtract(f *testing.F) {
	f.Add([]byte(`{"data":{"b":1,"a":12345678901234567891},"idempotency_key":"k"}`), false)
	f.Add([]byte(`{"id":4,"publish":{"channel":"chat:a","data":{"x":[1,true,null]}}}`), true)
	f.Add([]byte(`{"id":4,"publish":{"channel":"chat:a","data":1,"data":2}}`), true)
	f.Add([]byte(`{"data":`), false)
	f.Fuzz(func(t *testing.T, in []byte, nested bool) {
		path := []string{"data"}
		if nested {
			path = []string{"publish", "data"}
		}
		rest, value, err := payload.Extract(in, path...)
		if err != nil {
			return
		}
		if !json.Valid(in) {
			t.Fatalf("Extract accepted %q", in)
		}
		if !json.Valid(rest) || value != nil && !json.Valid(value) {
			t.Fatalf("Extract(%q) = %q, %q", in, rest, value)
		}
		var whole, back map[string]any
		if err := unmarshalNumbers(in, &whole); err != nil {
			t.Fatal(err)
		}
		if err := unmarshalNumbers(rest, &back); err != nil {
			t.Fatal(err)
		}
		into := back
		for _, p := range path[:len(path)-1] {
			m, ok := into[p].(map[string]any)
			if !ok {
				into = nil
				break
			}
			into = m
		}
		if value != nil {
			if into == nil {
				t.Fatalf("Extract(%q) found a value off the path", in)
			}
			var v any
			if err := unmarshalNumbers(value, &v); err != nil {
				t.Fatal(err)
			}
			into[path[len(path)-1]] = v
		}
		a, _ := json.Marshal(whole)
		b, _ := json.Marshal(back)
		if !bytes.Equal(a, b) {
			t.Fatalf("Extract(%q): put back %s, want %s", in, b, a)
		}
	})
}

// unmarshalNumbers is json.Unmarshal keeping numbers as their text
// (json.Number): a payload may hold numbers no float64 holds (1e700,
// 12345678901234567891), and the comparison must not refuse or round them.
func unmarshalNumbers(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// FuzzFromValue: any Value that decodes from protobuf either is refused or
// becomes valid JSON that decodes into the same Value.
func FuzzFromValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,"x",null,true,{"b":-0.5}]}`, `1e300`, `"é\u2028"`} {
		v := &structpb.Value{}
		if err := protojson.Unmarshal([]byte(s), v); err != nil {
			f.Fatal(err)
		}
		b, _ := proto.Marshal(v)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		v := &structpb.Value{}
		if (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(in, v) != nil {
			return
		}
		text, err := payload.FromValue(v)
		if err != nil {
			return
		}
		if !utf8.Valid(text) || !json.Valid(text) {
			t.Fatalf("FromValue(%v) = %q", v, text)
		}
		// The text decodes into a Value that converts to the same text
		// (the Value itself may differ in what JSON cannot say: unknown
		// enum numbers of null_value).
		back := &structpb.Value{}
		if err := protojson.Unmarshal(text, back); err != nil {
			t.Fatalf("FromValue(%v) = %s, which does not decode: %v", v, text, err)
		}
		if again, err := payload.FromValue(back); err != nil || !bytes.Equal(again, text) {
			t.Fatalf("FromValue(%v) = %s, but its decoding converts to %s (%v)", v, text, again, err)
		}
	})
}

// FuzzCheck: Check accepts exactly what utf8.Valid and json.Valid both
// accept, nesting limit included.
func FuzzCheck(f *testing.F) {
	for _, tc := range payloadtest.Corpus {
		f.Add([]byte(tc.In))
	}
	for _, tc := range payloadtest.Invalid {
		f.Add([]byte(tc.In))
	}
	for _, s := range []string{`{"a":[1,{"b":null}],"c":"\u00e9"}`, `[1,]`, `{"a" 1}`, `{"a":1,}`, `01`, `1.`, `1e`, `-`, `1e+`, `"\u12"`, `"\x"`, `tru`, `nulll`, `[}`, `{]`, `{"a":1]`, "\"\xef\xbf\xbd\"", "\"\xf4\x90\x80\x80\""} {
		f.Add([]byte(s))
	}
	f.Add([]byte(strings.Repeat("[", 64) + "{}" + strings.Repeat("]", 64))) // past the validator's first stack
	f.Fuzz(func(t *testing.T, in []byte) {
		want := utf8.Valid(in) && json.Valid(in)
		if got := payload.Check(in) == nil; got != want {
			t.Fatalf("Check(%q) accepts=%v, utf8.Valid && json.Valid = %v", in, got, want)
		}
	})
}
