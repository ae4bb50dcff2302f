package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/syncbuf"
	"github.com/herald-io/herald/node"
)

// logBuffer collects a node's log lines.
type logBuffer struct{ syncbuf.Buffer }

// lines returns the log lines containing every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func startLogged(t *testing.T, mode node.Mode, edit func(*config.Config)) (*node.Node, *logBuffer) {
	t.Helper()
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	lb := &logBuffer{}
	n, err := node.Start(context.Background(), cfg, mode, slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
		if t.Failed() {
			t.Logf("log of %s:\n%s", n.HTTPAddr, lb.String())
		}
	})
	return n, lb
}

// TestServeWithAPIKeysServesBrowsers is the README's `herald serve
// --api-keys admin=…`: with API keys configured, the in-process bridge
// authenticates to its own core with a key of its own, so a browser's
// connect, subscribe, publish, history and presence work, and a
// publication made with the user's key reaches it. (On main the subscribe
// answered error 200 "internal error".) The bridge's key is never logged.
func TestServeWithAPIKeysServesBrowsers(t *testing.T) {
	const key = "admin-key-0123456789"
	n, lb := startLogged(t, node.Serve, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "admin", Key: key}}
	})
	ws := dialWS(t, n)
	ws.request(t, `{"id":1,"connect":{}}`, "connect")
	ws.request(t, `{"id":2,"subscribe":{"channel":"chat:lobby"}}`, "subscribe")
	// The publication may come before or after the publish reply.
	_ = ws.conn.WriteMessage(1, []byte(`{"id":3,"publish":{"channel":"chat:lobby","data":{"n":1}}}`))
	for replied, got := false, false; !replied || !got; {
		f := ws.frame(t)
		replied = replied || strings.HasPrefix(f, `{"id":3,"publish"`)
		got = got || strings.Contains(f, `"pub"`) && strings.Contains(f, `"n":1`)
		if strings.Contains(f, `"error"`) {
			t.Fatalf("browser publish: %s", f)
		}
	}
	if code, body := httpDo(t, "POST", "http://"+n.HTTPAddr.String()+"/v1/channels/chat:lobby/publish", `{"data":{"n":2}}`,
		"Authorization", "Bearer "+key, "Content-Type", "application/json"); code != 200 {
		t.Fatalf("REST publish with the key: %d %s", code, body)
	}
	if p := ws.pub(t); p.Data["n"] != float64(2) {
		t.Fatalf("backend publication: %+v", p)
	}
	ws.request(t, `{"id":4,"history":{"channel":"chat:lobby","limit":10}}`, "history")
	ws.request(t, `{"id":5,"presence":{"channel":"chat:lobby"}}`, "presence")
	if code, body := httpDo(t, "GET", "http://"+n.HTTPAddr.String()+"/readyz", ""); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	// The in-process bridge's key lets nobody else in: REST without a key
	// is still refused.
	if code, _ := httpDo(t, "GET", "http://"+n.HTTPAddr.String()+"/v1/info", ""); code != http.StatusUnauthorized {
		t.Fatalf("REST without a key: %d, want 401", code)
	}
	if l := lb.lines("refuses"); len(l) > 0 {
		t.Fatalf("refusal logged: %v", l)
	}
	if strings.Contains(lb.String(), "herald-serve-bridge") {
		t.Fatalf("the bridge's key name reached the log:\n%s", lb.String())
	}
}

// TestBridgeRefusedByCore: a split bridge whose core refuses it (a wrong
// --core-api-key, none, or a key without the bridge scope) logs at ERROR
// what is wrong and what to set, once however many browser requests fail,
// answers /readyz 503 with the reason, and browsers get error 201
// (unavailable, temporary), never 200 "internal error". Once the core
// accepts it (a bridge with the right key), /readyz is 200.
func TestBridgeRefusedByCore(t *testing.T) {
	const bridgeKey = "bridge-key-0123456789"
	const publishKey = "publish-key-0123456789"
	core := startNode(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "edge", Key: bridgeKey, Scopes: []string{"bridge"}}, {Name: "pub", Key: publishKey, Scopes: []string{"publish"}}}
	})
	for _, tc := range []struct {
		name, key, fix string
	}{
		{"wrong key", "wrong-key-0123456789", "set bridge.core_api_key"},
		{"no key", "", "set bridge.core_api_key"},
		{"no bridge scope", publishKey, "the bridge scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br, lb := startLogged(t, node.BridgeOnly, func(c *config.Config) {
				c.Bridge.Core = core.GRPCAddr.String()
				c.Bridge.CoreAPIKey = tc.key
			})
			ready := "http://" + br.HTTPAddr.String() + "/readyz"
			// Not ready from the start (connecting, then refused): wait
			// for the refusal's own answer.
			waitUntil(t, "readyz 503 naming the refusal", func() bool {
				code, body := httpDo(t, "GET", ready, "")
				return code == 503 && strings.Contains(body, "refuses this bridge")
			})
			if code, body := httpDo(t, "GET", ready, ""); code != 503 || !strings.Contains(body, "refuses this bridge") || !strings.Contains(body, tc.fix) {
				t.Fatalf("/readyz: %d %q, want 503 naming the refusal and %q", code, body, tc.fix)
			}
			for i := range 5 {
				ws := dialWS(t, br)
				ws.request(t, `{"id":1,"connect":{}}`, "connect")
				_ = ws.conn.WriteMessage(1, []byte(fmt.Sprintf(`{"id":2,"subscribe":{"channel":"chat:r%d"}}`, i)))
				f := ws.frame(t)
				for !strings.HasPrefix(f, `{"id":2`) {
					f = ws.frame(t)
				}
				if !strings.Contains(f, `"code":201`) || !strings.Contains(f, `"temporary":true`) {
					t.Fatalf("subscribe on a refused bridge: %s, want error 201, temporary", f)
				}
				_ = ws.conn.WriteMessage(1, []byte(`{"id":3,"publish":{"channel":"chat:lobby","data":1}}`))
				for f = ws.frame(t); !strings.HasPrefix(f, `{"id":3`); f = ws.frame(t) {
				}
				if !strings.Contains(f, `"code":201`) {
					t.Fatalf("publish on a refused bridge: %s, want error 201", f)
				}
			}
			errs := lb.lines("level=ERROR", "refuses this bridge")
			if len(errs) != 1 || !strings.Contains(errs[0], tc.fix) {
				t.Fatalf("ERROR lines about the refusal: %d %v, want exactly one saying %q", len(errs), errs, tc.fix)
			}
			if strings.Contains(lb.String(), bridgeKey) || tc.key != "" && strings.Contains(lb.String(), tc.key) {
				t.Fatal("a key reached the log")
			}
		})
	}
	t.Run("right key", func(t *testing.T) {
		br, lb := startLogged(t, node.BridgeOnly, func(c *config.Config) {
			c.Bridge.Core = core.GRPCAddr.String()
			c.Bridge.CoreAPIKey = bridgeKey
		})
		ws := dialWS(t, br)
		ws.request(t, `{"id":1,"connect":{}}`, "connect")
		ws.request(t, `{"id":2,"subscribe":{"channel":"chat:ok"}}`, "subscribe")
		if code, body := httpDo(t, "GET", "http://"+br.HTTPAddr.String()+"/readyz", ""); code != 200 {
			t.Fatalf("/readyz: %d %s", code, body)
		}
		if l := lb.lines("refuses"); len(l) > 0 {
			t.Fatalf("refusal logged: %v", l)
		}
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestBridgeWithUnresponsiveCore: a bridge whose core address accepts TCP
// and never answers (a wrong port, a hung process) is not ready (its gRPC
// connection stays CONNECTING, which readiness took for up), and its
// shutdown finishes within its deadline (the bridge's session call waited
// for the connection, up to gRPC's 20 s connect timeout, before the
// shutdown could end).
func TestBridgeWithUnresponsiveCore(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	dialed := make(chan struct{}, 1)
	go func() { // accepts and holds, says nothing
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			select {
			case dialed <- struct{}{}:
			default:
			}
		}
	}()
	br, _ := startLogged(t, node.BridgeOnly, func(c *config.Config) { c.Bridge.Core = hole.Addr().String() })
	// The client connects for a call (it is lazy): from here on a call
	// waits for the connection.
	select {
	case <-dialed:
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge never dialled its core")
	}
	if code, body := httpDo(t, "GET", "http://"+br.HTTPAddr.String()+"/readyz", ""); code != 503 || !strings.Contains(body, "core unavailable") {
		t.Fatalf("/readyz with an unresponsive core: %d %q, want 503 core unavailable", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := br.Shutdown(ctx); err != nil || ctx.Err() != nil {
		t.Fatalf("shutdown: %v (deadline: %v)", err, ctx.Err())
	}
}
