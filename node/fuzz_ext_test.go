package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/payloadtest"
	"github.com/herald-io/herald/node"
)

// FuzzRESTPublish posts arbitrary bodies to the REST gateway's publish
// route of a real node, on arbitrary channel names: whatever the input,
// the answer is never a 5xx. The corpus is in testdata/fuzz/FuzzRESTPublish.
func FuzzRESTPublish(f *testing.F) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	base := "http://" + n.HTTPAddr.String() + "/v1/channels/"
	hc := &http.Client{Timeout: 10 * time.Second}
	f.Add("news", []byte(`{"data":{"text":"hi"}}`))
	f.Add("news", []byte(`{"binary":"AAEC","idempotency_key":"k","tags":{"a":"b"}}`))
	f.Fuzz(func(t *testing.T, channel string, body []byte) {
		req, err := http.NewRequest("POST", base+url.PathEscape(channel)+"/publish", bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json") // else every input is 415
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("channel %q body %q: HTTP %d", channel, body, resp.StatusCode)
		}
	})
}

// FuzzPublishPath drives the whole publish path of a real node: a payload
// in (fuzzed bytes, published as gRPC json or raw_json, REST raw_json or
// REST data), every subscriber's bytes out. Either the payload is refused
// everywhere (it is not valid JSON in UTF-8: INVALID_ARGUMENT or HTTP 400,
// nothing stored, nothing delivered: the next publication every reader
// gets is the one after), or every reader gets exactly its compacted text
// (encoding/json's Compact, an independent oracle): a WebSocket herald.json
// subscriber as valid UTF-8 text with that text as data, a herald.proto
// subscriber and gRPC subscribers byte for byte, and every history (gRPC,
// REST, browser). Seeded with the awkward-JSON corpus.
func FuzzPublishPath(f *testing.F) {
	env := startPayloadShape(f, payloadShapes[0])
	r := openReaders(f, env, "feed:fuzz")
	paths := []publishPath{publishPaths[0], publishPaths[1], publishPaths[5], publishPaths[4]}
	for via := range paths {
		for _, tc := range payloadtest.Corpus {
			f.Add([]byte(tc.In), uint8(via))
		}
		for _, tc := range payloadtest.Invalid {
			f.Add([]byte(tc.In), uint8(via))
		}
	}
	limit := payloadConfig().Limits.MaxPayload
	n := 0
	f.Fuzz(func(t *testing.T, in []byte, via uint8) {
		r.use(t)
		var want bytes.Buffer
		accept := utf8.Valid(in) && json.Valid(in) && json.Compact(&want, in) == nil && want.Len() <= limit
		path := paths[int(via)%len(paths)]
		if path.skip != nil && path.skip(string(in)) || path.name == "REST publish data" && !accept {
			path = paths[1] // raw_json carries any bytes
		}
		refused, ok := path.publish(r, string(in))
		switch {
		case accept && refused != "":
			t.Fatalf("%s %q: refused: %s", path.name, in, refused)
		case !accept && refused == "":
			t.Fatalf("%s %q: accepted", path.name, in)
		case !accept && !ok:
			t.Fatalf("%s %q: refused with %s, want invalid argument", path.name, in, refused)
		case accept:
			r.expect(path.name, got{json: want.String(), isJSON: true})
		default:
			n++
			sentinel := fmt.Sprintf(`{"refused":%d}`, n)
			if refused, _ := paths[1].publish(r, sentinel); refused != "" {
				t.Fatal(refused)
			}
			r.expect("after a refusal", got{json: sentinel, isJSON: true})
		}
	})
}
