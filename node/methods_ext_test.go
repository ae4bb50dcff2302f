package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/herald-io/herald/config"
)

// TestRESTWrongMethodIs405: a method a REST route does not take is 405
// Method Not Allowed with an Allow header naming the methods it takes (the
// gateway's default is 501), in the gateway's JSON error shape; a path
// with no route stays 404. API keys are configured, as deployed.
func TestRESTWrongMethodIs405(t *testing.T) {
	const key = "methods-test-key-0123456789"
	n := startNode(t, func(c *config.Config) { c.APIKeys = []config.APIKey{{Name: "k", Key: key}} })
	base := "http://" + n.HTTPAddr.String()
	for _, tc := range []struct {
		method, path string
		want         int
		allow        string
	}{
		{"GET", "/v1/channels/news/publish", 405, "POST"},
		{"PUT", "/v1/channels/chat:lobby/publish", 405, "POST"},
		{"GET", "/v1/broadcast", 405, "POST"},
		{"DELETE", "/v1/info", 405, "GET"},
		{"POST", "/v1/channels/news/history", 405, "GET"},
		{"POST", "/v1/channels/news/presence/stats", 405, "GET"},
		{"GET", "/v1/users/42/disconnect", 405, "POST"},
		{"GET", "/v1/nothing-here", 404, ""},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Code    *int   `json:"code"`
			Message string `json:"message"`
		}
		derr := json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d, Allow %q; want %d, Allow %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), tc.want, tc.allow)
		}
		if derr != nil || body.Code == nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: body %+v (%v), content type %q: want the gateway's JSON error", tc.method, tc.path, body, derr, resp.Header.Get("Content-Type"))
		}
		if tc.want == 405 && (*body.Code != 12 || body.Message != "Method Not Allowed") {
			t.Errorf("%s %s: body %+v, want code 12 and \"Method Not Allowed\"", tc.method, tc.path, body)
		}
	}
}
