package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var onlyDataSeeds = []string{
	`{"data":{"a":1}}`,
	` { "data" : [1, 2.50, "x"] } `,
	"{\n\"data\":\n{\"b\": {\"c\": 1e400}}\n}",
	`{"data":"text"}`,
	`{"data":null}`,
	`{"data":1,"data":2}`,
	`{"data":1},"x":{"y":2}`,
	`{"data":{"a":1}, "idempotency_key":"k"}`,
	`{"idempotency_key":"k","data":{}}`,
	`{"d\u0061ta":{}}`,
	`{"data":}`,
	`{"data":{"a":"\xff"}}`,
	`{"data":{"a":1}`,
	`{"data" {"a":1}}`,
	`{"json":"{}","data":{}}`,
	// Not JSON whitespace (bytes.TrimSpace trims them): the shortcut
	// took these once, the general path refuses them.
	"{\"data\":0\f}",
	"\v{\"data\":1}",
	"{\"data\":1}\u00a0",
	"{\"data\":\u00851}",
}

// TestOnlyDataIsTheGeneralPath: whenever the shortcut takes a body, the
// general path makes the same request of it without an error.
func TestOnlyDataIsTheGeneralPath(t *testing.T) {
	for _, body := range onlyDataSeeds {
		checkOnlyData(t, []byte(body))
	}
	if _, ok := onlyData([]byte(`{"data":{"a":1}}`)); !ok {
		t.Fatal("the shortcut does not take the commonest body")
	}
}

func FuzzOnlyData(f *testing.F) {
	for _, s := range onlyDataSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkOnlyData(t, body) })
}

func checkOnlyData(t *testing.T, body []byte) {
	t.Helper()
	text, ok := onlyData(body)
	if !ok {
		return
	}
	m := newGatewayMarshaler()
	var got, want heraldv1.PublishRequest
	setJSON(&got, text)
	if err := m.decodeGeneral(body, &want); err != nil {
		t.Fatalf("%q: the shortcut took it, the general path says %v", body, err)
	}
	if !proto.Equal(&got, &want) {
		t.Fatalf("%q: the shortcut made %v, the general path %v", body, &got, &want)
	}
}

// TestDecodePublishTakesTheFrontDoorsBytes: a body the front door read is
// decoded from its bytes, as a body read anew would be.
func TestDecodePublishTakesTheFrontDoorsBytes(t *testing.T) {
	m := newGatewayMarshaler()
	for _, body := range []string{`{"data":{"a":1}}`, `{"idempotency_key":"k","data":[1]}`, `{"json":"{}","data":{}}`, ``} {
		var a, b heraldv1.PublishRequest
		errA := m.NewDecoder(&readBodyBytes{Reader: bytes.NewReader([]byte(body)), b: []byte(body)}).Decode(&a)
		errB := m.NewDecoder(strings.NewReader(body)).Decode(&b)
		if (errA == nil) != (errB == nil) || errors.Is(errA, io.EOF) != errors.Is(errB, io.EOF) || !proto.Equal(&a, &b) {
			t.Fatalf("%q: from the front door's bytes %v, %v; read anew %v, %v", body, &a, errA, &b, errB)
		}
	}
}

// TestPublishResponseJSON: the publish answer written directly is what
// protojson writes (but for protojson's random spaces).
func TestPublishResponseJSON(t *testing.T) {
	m := newGatewayMarshaler()
	for _, r := range []*heraldv1.PublishResponse{
		{},
		{Duplicate: true},
		{Position: &heraldv1.StreamPosition{}},
		{Position: &heraldv1.StreamPosition{Offset: 1}},
		{Position: &heraldv1.StreamPosition{Epoch: "e"}},
		{Position: &heraldv1.StreamPosition{Offset: 18446744073709551615, Epoch: "ab12cd34"}, Duplicate: true},
		{Position: &heraldv1.StreamPosition{Offset: 7, Epoch: "quote \" back \\ é \u2028"}},
	} {
		got, err := m.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var w bytes.Buffer
		if err := json.Compact(&w, want); err != nil {
			t.Fatal(err)
		}
		var g bytes.Buffer
		if err := json.Compact(&g, got); err != nil {
			t.Fatalf("%v: not JSON: %s", r, got)
		}
		if g.String() != w.String() {
			var back heraldv1.PublishResponse
			if err := protojson.Unmarshal(got, &back); err != nil || !proto.Equal(&back, r) {
				t.Fatalf("%v: wrote %s, protojson writes %s", r, got, want)
			}
		}
	}
}
