package hooks

import (
	"strings"
	"testing"

	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"google.golang.org/protobuf/proto"
)

// TestJSONPayloadsExact: in the HTTP form a JSON payload travels as
// `data`, its text exact (big integers, key order, escapes), both ways;
// `json` (a string) is accepted too, both at once is an error, and an
// unknown field is an error.
func TestJSONPayloadsExact(t *testing.T) {
	const text = `{"z":1,"id":12345678901234567891,"a":"\u00e9","f":1.0}`
	req := &hooksv1.PublishRequest{Session: &hooksv1.Session{Client: "c1", User: "ann"}, Channel: "room:1", Payload: &hooksv1.PublishRequest_Json{Json: text}}
	b, err := MarshalJSON(req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"data":`+text) || strings.Contains(string(b), `"json"`) {
		t.Fatalf("request JSON = %s, want data with the exact text", b)
	}
	var back hooksv1.PublishRequest
	if err := UnmarshalJSON(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.GetJson() != text || !proto.Equal(back.Session, req.Session) {
		t.Fatalf("round trip: %v", &back)
	}

	for _, tc := range []struct {
		name, body, want, err string
	}{
		{"data", `{"allow":{"data":{"b":2, "a":[1,2.50]},"tags":{"k":"v"}}}`, `{"b":2,"a":[1,2.50]}`, ""},
		{"json", `{"allow":{"json":"{\"b\":2}"}}`, `{"b":2}`, ""},
		{"as is", `{"allow":{}}`, "", ""},
		{"both", `{"allow":{"json":"1","data":2}}`, "", "not both"},
		{"unknown field", `{"allow":{"dta":2}}`, "", "dta"},
		{"bad data", `{"allow":{"data":[1,}}`, "", "invalid"},
		{"not an object", `[1]`, "", "object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m hooksv1.PublishResponse
			err := UnmarshalJSON([]byte(tc.body), &m)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := m.GetAllow().GetJson(); got != tc.want {
				t.Fatalf("json = %q, want %q", got, tc.want)
			}
		})
	}

	res := &hooksv1.RPCResponse{Decision: &hooksv1.RPCResponse_Result{Result: &hooksv1.RPCResult{Payload: &hooksv1.RPCResult_Json{Json: `[1,{"x":null}]`}}}}
	b, err = MarshalJSON(res)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.ReplaceAll(string(b), " ", ""); s != `{"result":{"data":[1,{"x":null}]}}` {
		t.Fatalf("RPC response JSON = %s", b)
	}
}
