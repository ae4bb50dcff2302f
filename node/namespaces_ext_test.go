package node_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/node"
)

// TestSplitBridgeUsesTheCoresNamespaces: a split bridge configured with no
// namespaces of its own (only the default "chat") resolves channels with
// its core's, which the core sends on the bridge's session, with API keys
// on. A namespace only the core has works from the browser: a
// subscription there is recoverable (the core keeps history for it) and
// shows in the core's presence; one only the bridge had is refused, as the
// core would refuse it. A namespace of the core that asks hooks the bridge
// does not have is refused with a reason, and the bridge says why at
// ERROR.
func TestSplitBridgeUsesTheCoresNamespaces(t *testing.T) {
	const bridgeKey = "bridge-key-0123456789"
	const adminKey = "admin-key-01234567890"
	core := startNode(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "edge", Key: bridgeKey, Scopes: []string{"bridge"}}, {Name: "admin", Key: adminKey}}
		c.Namespaces = []config.Namespace{
			{Name: "news", HistorySize: 10, HistoryTTL: config.Duration(time.Minute), AllowSubscribe: true, AllowAnonymous: true},
			{Name: "room", Presence: true, AllowSubscribe: true, AllowAnonymous: true},
			{Name: "hooked", SubscribeHook: true},
		}
		c.Hooks.HTTPURL = "http://127.0.0.1:9/hooks" // the core never calls it
	})
	br, lb := startLogged(t, node.BridgeOnly, func(c *config.Config) {
		c.Bridge.Core = core.GRPCAddr.String()
		c.Bridge.CoreAPIKey = bridgeKey
	})
	waitUntil(t, "the bridge took the core's namespaces", func() bool {
		return len(lb.lines("differ from the core's")) > 0
	})
	diff := strings.Join(lb.lines("differ from the core's"), "\n")
	for _, want := range []string{`\"chat\" only in this bridge's configuration`, `\"news\" only in the core's`} {
		if !strings.Contains(diff, want) {
			t.Fatalf("the differences logged: %s\nwant %s", diff, want)
		}
	}
	if l := lb.lines("level=ERROR", "no hooks configured", "namespace=hooked"); len(l) != 1 {
		t.Fatalf("ERROR lines about the hooked namespace: %v, want one", l)
	}

	ws := dialWS(t, br)
	ws.request(t, `{"id":1,"connect":{}}`, "connect")
	if f := ws.request(t, `{"id":2,"subscribe":{"channel":"news:a"}}`, "subscribe"); !strings.Contains(f, `"recoverable":true`) {
		t.Fatalf("subscribe to news:a: %s, want recoverable (history_size 10 on the core)", f)
	}
	ws.request(t, `{"id":3,"subscribe":{"channel":"room:r"}}`, "subscribe")
	waitUntil(t, "the core's presence of room:r shows the browser", func() bool {
		code, body := httpDo(t, "GET", "http://"+core.HTTPAddr.String()+"/v1/channels/room:r/presence", "", "Authorization", "Bearer "+adminKey)
		return code == 200 && strings.Contains(body, `"clients"`) && strings.Contains(body, `"client"`)
	})
	for _, tc := range []struct{ frame, want string }{
		{`{"id":4,"subscribe":{"channel":"chat:x"}}`, `unknown namespace \"chat\"`},
		{`{"id":5,"subscribe":{"channel":"hooked:x"}}`, `no hooks configured`},
	} {
		_ = ws.conn.WriteMessage(1, []byte(tc.frame))
		id := tc.frame[:strings.Index(tc.frame, ",")]
		f := ws.frame(t)
		for !strings.HasPrefix(f, id) {
			f = ws.frame(t)
		}
		if !strings.Contains(f, `"error"`) || !strings.Contains(f, tc.want) {
			t.Fatalf("%s: %s, want an error saying %s", tc.frame, f, tc.want)
		}
	}
	// The backend's publication reaches the browser through the namespace
	// only the core had.
	if code, body := httpDo(t, "POST", "http://"+core.HTTPAddr.String()+"/v1/channels/news:a/publish", `{"data":{"n":1}}`,
		"Authorization", "Bearer "+adminKey); code != 200 {
		t.Fatalf("REST publish: %d %s", code, body)
	}
	if p := ws.pub(t); p.Data["n"] != float64(1) {
		t.Fatalf("publication: %+v", p)
	}
}

// TestSplitBridgeTakesChangedNamespacesFromARestartedCore: the core
// restarts on the same address with a namespace added and another one's
// history turned off; the bridge's session reconnects, the bridge logs
// the differences and resolves with the new namespaces: the new namespace
// works from the browser, and a new channel of the changed one is not
// recoverable.
func TestSplitBridgeTakesChangedNamespacesFromARestartedCore(t *testing.T) {
	addr := freeAddr(t)
	news := config.Namespace{Name: "news", HistorySize: 10, HistoryTTL: config.Duration(time.Minute), AllowSubscribe: true, AllowAnonymous: true}
	_, stop := startCoreOn(t, addr, news)
	br, lb := startLogged(t, node.BridgeOnly, func(c *config.Config) {
		c.Bridge.Core = addr
		c.Bridge.CoreAPIKey = splitBridgeKey
	})
	waitUntil(t, "the bridge took the first core's namespaces", func() bool { return len(lb.lines("differ from the core's")) > 0 })
	ws := dialWS(t, br)
	ws.request(t, `{"id":1,"connect":{}}`, "connect")
	if f := ws.request(t, `{"id":2,"subscribe":{"channel":"news:a"}}`, "subscribe"); !strings.Contains(f, `"recoverable":true`) {
		t.Fatalf("subscribe to news:a: %s", f)
	}

	stop()
	news.HistorySize = 0
	startCoreOn(t, addr, news, config.Namespace{Name: "sports", AllowSubscribe: true, AllowAnonymous: true})
	waitUntil(t, "the bridge took the restarted core's namespaces", func() bool { return len(lb.lines("the core's namespaces changed")) > 0 })
	changed := strings.Join(lb.lines("the core's namespaces changed"), "\n")
	for _, want := range []string{`\"news\": history_size 10 → 0`, `\"sports\" only in the core's now`} {
		if !strings.Contains(changed, want) {
			t.Fatalf("the differences logged: %s\nwant %s", changed, want)
		}
	}
	ws2 := dialWS(t, br)
	ws2.request(t, `{"id":1,"connect":{}}`, "connect")
	ws2.request(t, `{"id":2,"subscribe":{"channel":"sports:x"}}`, "subscribe")
	if f := ws2.request(t, `{"id":3,"subscribe":{"channel":"news:b"}}`, "subscribe"); strings.Contains(f, `"recoverable":true`) {
		t.Fatalf("subscribe to a new channel of news after history was turned off: %s, want it not recoverable", f)
	}
}

// TestSplitBridgeBeforeItsCoreAnswers: a split bridge whose core is not
// up yet does not refuse a channel of a namespace only the core may have:
// it is temporarily unavailable (error 201, the client retries), and once
// the core comes up with that namespace the same subscribe works; a
// namespace the core does not have either is then refused (105).
func TestSplitBridgeBeforeItsCoreAnswers(t *testing.T) {
	addr := freeAddr(t)
	br, lb := startLogged(t, node.BridgeOnly, func(c *config.Config) {
		c.Bridge.Core = addr
		c.Bridge.CoreAPIKey = splitBridgeKey
	})
	ws := dialWS(t, br)
	ws.request(t, `{"id":1,"connect":{}}`, "connect")
	reply := func(id int, channel string) string {
		t.Helper()
		_ = ws.conn.WriteMessage(1, []byte(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, id, channel)))
		prefix := fmt.Sprintf(`{"id":%d,`, id)
		for {
			if f := ws.frame(t); strings.HasPrefix(f, prefix) {
				return f
			}
		}
	}
	if f := reply(2, "news:a"); !strings.Contains(f, `"code":201`) || !strings.Contains(f, `"temporary":true`) || !strings.Contains(f, "not yet received its core's namespaces") {
		t.Fatalf("subscribe before the core answered: %s, want error 201, temporary, saying why", f)
	}

	startCoreOn(t, addr, config.Namespace{Name: "news", AllowSubscribe: true, AllowAnonymous: true})
	waitUntil(t, "the bridge took the core's namespaces", func() bool { return len(lb.lines("differ from the core's")) > 0 })
	if f := reply(3, "news:a"); !strings.Contains(f, `"subscribe"`) || strings.Contains(f, `"error"`) {
		t.Fatalf("subscribe once the core answered: %s", f)
	}
	if f := reply(4, "nowhere:a"); !strings.Contains(f, `"code":105`) {
		t.Fatalf("subscribe to a namespace the core does not have: %s, want 105", f)
	}
}

// freeAddr returns a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

const splitBridgeKey = "bridge-key-0123456789"

// startCoreOn starts a core whose gRPC listener is addr, with namespaces
// ns and a key (splitBridgeKey) for bridges; stop shuts it down (again at
// the test's end, harmlessly).
func startCoreOn(t *testing.T, addr string, ns ...config.Namespace) (core *node.Node, stop func()) {
	t.Helper()
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = addr, "127.0.0.1:0"
	cfg.APIKeys = []config.APIKey{{Name: "edge", Key: splitBridgeKey, Scopes: []string{"bridge"}}}
	cfg.Namespaces = ns
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	}
	t.Cleanup(stop)
	return n, stop
}
