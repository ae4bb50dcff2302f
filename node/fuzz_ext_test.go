package node_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
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
