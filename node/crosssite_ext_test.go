package node_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/node"
)

// rawDo sends a request with exactly the given headers (Host included)
// and returns the status, headers and body.
func rawDo(t *testing.T, method, url, body string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// historyLen returns how many publications a channel's history holds.
func historyLen(t *testing.T, base, channel string) int {
	t.Helper()
	code, body := httpDo(t, "GET", base+"/v1/channels/"+channel+"/history?limit=100", "")
	if code != 200 {
		t.Fatalf("history: %d %s", code, body)
	}
	var h struct {
		Publications []json.RawMessage `json:"publications"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("history: %v %s", err, body)
	}
	return len(h.Publications)
}

// TestRESTWritesNotCrossSite: on the keyless loopback default, no web page
// of another site can write over REST. A text/plain POST with
// Origin: http://evil.example to publish (which published on main, with
// no preflight) is refused, as is every POST route; simple-request content
// types (text/plain, forms, none) are 415 even without Origin, so a
// browser must preflight, and the preflight gets no CORS allowance.
// Backends (no Origin, JSON) and the node's own pages (Origin of
// 127.0.0.1 or localhost at its port) still write.
func TestRESTWritesNotCrossSite(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.HTTPAddr.String()
	_, port, _ := net.SplitHostPort(n.HTTPAddr.String())
	posts := []struct{ path, body string }{
		{"/v1/channels/chat:lobby/publish", `{"data":{"text":"forged"}}`},
		{"/v1/broadcast", `{"channels":["chat:lobby"],"data":"forged"}`},
		{"/v1/users/42/disconnect", `{"reason":"forged"}`},
		{"/v1/users/42/unsubscribe", `{"channel":"chat:lobby"}`},
	}
	for _, p := range posts {
		for _, tc := range []struct {
			name   string
			header map[string]string
			want   int
		}{
			{"text/plain from evil.example", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403},
			{"JSON from evil.example", map[string]string{"Origin": "http://evil.example", "Content-Type": "application/json"}, 403},
			{"JSON from another port", map[string]string{"Origin": "http://127.0.0.1:1", "Content-Type": "application/json"}, 403},
			{"null origin", map[string]string{"Origin": "null", "Content-Type": "application/json"}, 403},
			{"cross-site without Origin", map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, 403},
			{"text/plain", map[string]string{"Content-Type": "text/plain;charset=UTF-8"}, 415},
			{"form", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
			{"multipart", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, 415},
			{"no content type", map[string]string{}, 415},
		} {
			code, h, body := rawDo(t, "POST", base+p.path, p.body, tc.header)
			if code != tc.want || !strings.HasPrefix(h.Get("Content-Type"), "application/json") || !strings.Contains(body, `"message"`) {
				t.Errorf("POST %s, %s: %d %s, want %d with a JSON error", p.path, tc.name, code, body, tc.want)
			}
		}
		// The preflight a page would need gets no CORS allowance.
		code, h, _ := rawDo(t, "OPTIONS", base+p.path, "", map[string]string{
			"Origin": "http://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
		if code/100 == 2 || h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Methods") != "" {
			t.Errorf("preflight of %s: %d %v, want no CORS allowance", p.path, code, h)
		}
	}
	if got := historyLen(t, base, "chat:lobby"); got != 0 {
		t.Fatalf("%d forged publications in history", got)
	}
	for _, origin := range []string{"http://127.0.0.1:" + port, "http://localhost:" + port} {
		code, _, body := rawDo(t, "POST", base+"/v1/channels/chat:lobby/publish", `{"data":{"text":"console"}}`,
			map[string]string{"Origin": origin, "Content-Type": "application/json"})
		if code != 200 {
			t.Errorf("POST from the node's own page %s: %d %s", origin, code, body)
		}
	}
	code, _, body := rawDo(t, "POST", base+"/v1/channels/chat:lobby/publish", `{"data":{"text":"backend"}}`,
		map[string]string{"Content-Type": "application/json"})
	if code != 200 {
		t.Fatalf("backend POST: %d %s", code, body)
	}
	if got := historyLen(t, base, "chat:lobby"); got != 3 {
		t.Fatalf("history holds %d publications, want the 3 allowed ones", got)
	}
}

// TestDNSRebinding: a page of evil.example whose name was rebound to
// 127.0.0.1 sends Host: evil.example:PORT and Origin: http://evil.example:PORT,
// which agree. On main the WebSocket was accepted (101); now the keyless
// loopback node refuses it and every other request naming another host
// (403), and a node with API keys (no Host check) still refuses the
// WebSocket, its origin not being the node's. 127.0.0.1 and localhost
// still work.
func TestDNSRebinding(t *testing.T) {
	for _, keys := range []bool{false, true} {
		name := "keyless"
		if keys {
			name = "with keys"
		}
		t.Run(name, func(t *testing.T) {
			n := startNode(t, func(c *config.Config) {
				if keys {
					c.APIKeys = []config.APIKey{{Name: "k", Key: "rebind-key-0123456789"}}
				}
			})
			_, port, _ := net.SplitHostPort(n.HTTPAddr.String())
			evil := "evil.example:" + port
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			ws, resp, err := d.Dial("ws://"+n.HTTPAddr.String()+"/ws", http.Header{"Host": {evil}, "Origin": {"http://" + evil}})
			if err == nil {
				ws.Close()
				t.Fatal("rebinding WebSocket accepted")
			}
			if resp == nil || resp.StatusCode != 403 {
				t.Fatalf("rebinding WebSocket: %v %v, want 403", resp, err)
			}
			if !keys {
				for _, path := range []string{"/", "/herald.js", "/v1/info", "/v1/channels/chat:lobby/history"} {
					if code, _, _ := rawDo(t, "GET", "http://"+n.HTTPAddr.String()+path, "", map[string]string{"Host": evil}); code != 403 {
						t.Errorf("GET %s with Host %s: %d, want 403", path, evil, code)
					}
				}
			}
			for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port} {
				ws, _, err := d.Dial("ws://"+n.HTTPAddr.String()+"/ws", http.Header{"Host": {host}, "Origin": {"http://" + host}})
				if err != nil {
					t.Fatalf("WebSocket from the console at %s: %v", host, err)
				}
				ws.Close()
				if code, _, _ := rawDo(t, "GET", "http://"+n.HTTPAddr.String()+"/", "", map[string]string{"Host": host}); code != 200 {
					t.Errorf("console at %s: %d", host, code)
				}
			}
		})
	}
}

// TestPublicOrigins: a node reached as https://herald.example.com (a load
// balancer in front) accepts WebSockets from pages of that origin and of
// bridge.allowed_origins, and no other.
func TestPublicOrigins(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "k", Key: "public-key-0123456789"}}
		c.PublicOrigins = []string{"https://herald.example.com"}
		c.Bridge.AllowedOrigins = []string{"https://app.example.com"}
	})
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for origin, ok := range map[string]bool{
		"https://herald.example.com":     true,
		"https://HERALD.example.com:443": true,
		"https://app.example.com":        true,
		"http://herald.example.com":      false,
		"https://evil.example.com":       false,
	} {
		ws, _, err := d.Dial("ws://"+n.HTTPAddr.String()+"/ws", http.Header{"Host": {"herald.example.com"}, "Origin": {origin}})
		if (err == nil) != ok {
			t.Errorf("origin %s: err %v, want accepted=%v", origin, err, ok)
		}
		if ws != nil {
			ws.Close()
		}
	}
}

// TestRefusalsLogged: refused origins and hosts are logged at info with
// the origin and the option to set, a few times and then rate-limited,
// however many are refused.
func TestRefusalsLogged(t *testing.T) {
	n, lb := startLogged(t, node.Serve, nil)
	_, port, _ := net.SplitHostPort(n.HTTPAddr.String())
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for range 20 {
		if ws, _, err := d.Dial("ws://"+n.HTTPAddr.String()+"/ws", http.Header{"Origin": {"https://other.example"}}); err == nil {
			ws.Close()
			t.Fatal("accepted")
		}
		rawDo(t, "GET", "http://"+n.HTTPAddr.String()+"/", "", map[string]string{"Host": "rebound.example:" + port})
	}
	ws := lb.lines("level=INFO", "WebSocket refused", "origin=https://other.example", "bridge.allowed_origins")
	hosts := lb.lines("level=INFO", "HTTP request refused", "rebound.example", "public_origins")
	if len(ws) == 0 || len(ws) > 3 || len(hosts) == 0 || len(hosts) > 3 {
		t.Fatalf("%d origin and %d host refusal lines for 20 each, want 1-3 each:\n%s", len(ws), len(hosts), lb.String())
	}
}

// TestHeraldJSCORS: /herald.js and /herald.d.ts are public code that
// pages on other hosts import: they carry Access-Control-Allow-Origin: *.
// The console does not.
func TestHeraldJSCORS(t *testing.T) {
	n := startNode(t, nil)
	for path, want := range map[string]string{"/herald.js": "*", "/herald.d.ts": "*", "/": ""} {
		code, h, _ := rawDo(t, "GET", "http://"+n.HTTPAddr.String()+path, "", map[string]string{"Origin": "https://app.example.com"})
		if code != 200 || h.Get("Access-Control-Allow-Origin") != want {
			t.Errorf("GET %s: %d, Access-Control-Allow-Origin %q, want %q", path, code, h.Get("Access-Control-Allow-Origin"), want)
		}
	}
}
