package wsbridge_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/hooktest"
	"github.com/herald-io/herald/node"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// These tests run a real application backend (internal/hooktest: gRPC and
// the HTTP form on loopback, cookie sessions) behind a real node, and
// drive it from real WebSocket, SSE and HTTP-stream clients.

var hookForms = []string{"grpc", "http"}

// hookConfig is testConfig with the hooks of s on (form "grpc" or "http")
// and a namespace room whose subscriptions and publications the backend
// decides (presence with join/leave, history).
func hookConfig(s *hooktest.Server, form string) config.Config {
	cfg := testConfig()
	room := config.DefaultNamespace("room")
	room.AllowSubscribe = false // the hook decides, not the option
	room.SubscribeHook, room.PublishHook = true, true
	cfg.Namespaces = append(cfg.Namespaces, room)
	h := &cfg.Hooks
	if form == "grpc" {
		h.GRPCAddr = s.GRPCAddr
	} else {
		h.HTTPURL = s.HTTPURL
	}
	h.Connect, h.Refresh = true, true
	h.RPCMethods = []string{"echo", "whoami", "fail", "denied", "binary", "missing.*"}
	h.Cookies = []string{"session"}
	h.Headers = []string{"X-App-Version"}
	return cfg
}

// eachForm runs body with a node whose hooks call s in each form.
func eachForm(t *testing.T, s *hooktest.Server, edit func(*config.Config), body func(t *testing.T, n *node.Node)) {
	for _, form := range hookForms {
		t.Run(form, func(t *testing.T) {
			cfg := hookConfig(s, form)
			if edit != nil {
				edit(&cfg)
			}
			body(t, startNode(t, cfg, node.Serve))
		})
	}
}

func cookieHeader(value string) http.Header {
	return http.Header{"Cookie": {"session=" + value + "; other=not-for-the-backend"}, "X-App-Version": {"7"}, "X-Secret": {"stays"}}
}

// dialCookie opens a WebSocket with the session cookie and sends connect
// (with tok); it returns the client and the reply or push that answered.
func dialCookie(t *testing.T, n *node.Node, subprotocol, cookie, tok string) (*client, *heraldv1.ServerFrame) {
	t.Helper()
	var h http.Header
	if cookie != "" {
		h = cookieHeader(cookie)
	}
	c, _, err := dial(t, n, subprotocol, h)
	if err != nil {
		t.Fatal(err)
	}
	c.send(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: tok, Name: "hooks-test/1"}}})
	return c, c.waitFor("the connect reply or a disconnect", func(f *heraldv1.ServerFrame) bool {
		return f.GetConnect() != nil || f.GetDisconnect() != nil
	})
}

func rpcFrame(method, json string) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Rpc{Rpc: &heraldv1.RPCFrame{Method: method, Payload: &heraldv1.RPCFrame_Json{Json: json}}}}
}

func publishJSON(channel, json string) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Publish{Publish: &heraldv1.PublishFrame{Channel: channel, Payload: &heraldv1.PublishFrame_Json{Json: json}}}}
}

func wantError(t *testing.T, fr *heraldv1.ServerFrame, code uint32, msg string, temporary bool) {
	t.Helper()
	e := fr.GetError()
	if e == nil || e.Code != code || !strings.Contains(e.Message, msg) || e.Temporary != temporary {
		t.Fatalf("got %v, want error %d %q (temporary %v)", fr, code, msg, temporary)
	}
}

// TestHookConnect: the connect hook decides who a browser is from its
// cookie; only the allowlisted cookie and header leave the bridge; a
// browser without a session is refused with the backend's reason; a JWT
// is still verified by the bridge (the backend is not asked), and an
// application close code passes through.
func TestHookConnect(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	ann := s.Login("ann")
	eachForm(t, s, nil, func(t *testing.T, n *node.Node) {
		c, r := dialCookie(t, n, "", ann, "")
		if r.GetConnect().GetUser() != "ann" {
			t.Fatalf("with the session cookie: %v", r)
		}
		c.waitFor("the personal channel", func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed().GetChannel() == "user:ann" })
		req := s.Last("connect").(*hooksv1.ConnectRequest)
		if got := req.Cookies; len(got) != 1 || got["session"] != ann {
			t.Errorf("cookies sent to the backend: %v, want only session", got)
		}
		if got := req.Headers; len(got) != 1 || len(got["x-app-version"].GetValues()) != 1 || got["x-app-version"].Values[0] != "7" {
			t.Errorf("headers sent to the backend: %v, want only x-app-version", got)
		}
		if ss := req.Session; ss.Transport != "websocket" || ss.Subprotocol != "herald.json" || ss.Client != r.GetConnect().Client || ss.RemoteAddr == "" || ss.Bridge == "" || req.Name != "hooks-test/1" {
			t.Errorf("session sent to the backend: %v, name %q", ss, req.Name)
		}

		// No session: the backend's refusal and reason.
		c, r = dialCookie(t, n, "", "", "")
		if d := r.GetDisconnect(); d == nil || d.Code != 4001 || d.Reason != "log in first" || d.Reconnect {
			t.Fatalf("without a session: %v", r)
		}
		c.expectClose(4001)

		// A JWT: verified by the bridge; the backend is not asked.
		before := s.Calls("connect")
		_, r = dialCookie(t, n, "", "", token(t, "jo", time.Hour, nil))
		if r.GetConnect().GetUser() != "jo" || s.Calls("connect") != before {
			t.Fatalf("JWT: %v, hook calls %d → %d", r, before, s.Calls("connect"))
		}
		// An opaque token where JWT keys are configured is a bad JWT.
		c, r = dialCookie(t, n, "", "", "opaque:bob")
		if r.GetDisconnect().GetCode() != 4001 || s.Calls("connect") != before {
			t.Fatalf("opaque token with JWT keys: %v, hook calls %d → %d", r, before, s.Calls("connect"))
		}
		c.expectClose(4001)

		// An application code, temporary: reconnect advised.
		s.Handle("connect", func(context.Context, proto.Message) (proto.Message, error) {
			return &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Refuse{Refuse: &hooksv1.Refusal{Code: 4403, Reason: "verify your e-mail", Temporary: true}}}, nil
		})
		defer s.Handle("connect", nil)
		c, r = dialCookie(t, n, "herald.proto", ann, "")
		if d := r.GetDisconnect(); d.GetCode() != 4403 || d.Reason != "verify your e-mail" || !d.Reconnect {
			t.Fatalf("application refusal: %v", r)
		}
		c.expectClose(4403)
	})
}

// TestHookConnectAccept: what Connect answers shapes the session: info in
// presence, grants (no subscribe hook asked), channels subscribed at once,
// and an anonymous accept.
func TestHookConnectAccept(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	s.Handle("connect", func(_ context.Context, m proto.Message) (proto.Message, error) {
		req := m.(*hooksv1.ConnectRequest)
		if req.Token == "guest" {
			return &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Accept{Accept: &hooksv1.ConnectAccept{}}}, nil
		}
		info, _ := structpb.NewStruct(map[string]any{"name": "Cy", "admin": true})
		acc := &hooksv1.ConnectAccept{User: "cy", Info: info, Channels: []string{"secret:*"}, Subscribe: []string{"room:secret-staff"}}
		return &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Accept{Accept: acc}}, nil
	})
	eachForm(t, s, func(c *config.Config) { c.Bridge.JWTSecret = "" }, func(t *testing.T, n *node.Node) {
		subs := s.Calls("subscribe")
		c, r := dialCookie(t, n, "", "", "")
		if r.GetConnect().GetUser() != "cy" {
			t.Fatalf("connect: %v", r)
		}
		c.waitFor("room:secret-staff subscribed at once", func(f *heraldv1.ServerFrame) bool {
			return f.GetSubscribed().GetChannel() == "room:secret-staff"
		})
		if r := c.subscribe("secret:plans", nil); r.GetSubscribe() == nil {
			t.Fatalf("granted channel: %v", r)
		}
		if s.Calls("subscribe") != subs {
			t.Fatal("the subscribe hook was asked about granted channels")
		}
		eventually(t, "cy in room:secret-staff's presence, with the connect info", func() bool {
			r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Presence{Presence: &heraldv1.PresenceFrame{Channel: "room:secret-staff"}}})
			cl := r.GetPresence().GetClients()
			return len(cl) == 1 && cl[0].User == "cy" && cl[0].GetInfo().GetStructValue().GetFields()["name"].GetStringValue() == "Cy"
		})
		// With no JWT key, every token goes to the hook: "guest" is
		// accepted anonymously.
		_, r = dialCookie(t, n, "", "", "guest")
		if cf := r.GetConnect(); cf == nil || cf.User != "" {
			t.Fatalf("anonymous accept: %v", r)
		}
	})
}

// TestHookRefresh: a session Connect gave an expiry is extended by the
// refresh hook when it expires (and when the browser sends refresh),
// and ends (4002, reconnect) once the backend says so.
func TestHookRefresh(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	s.SetExpiresIn(1)
	eachForm(t, s, nil, func(t *testing.T, n *node.Node) {
		user := "dee-" + t.Name()[len(t.Name())-4:]
		user = strings.ReplaceAll(user, "/", "")
		cookie := s.Login(user)
		refreshes := s.Calls("refresh")
		c, r := dialCookie(t, n, "", cookie, "")
		if r.GetConnect().GetExpiresIn() != 1 {
			t.Fatalf("connect: %v", r)
		}
		eventually(t, "two refreshes at expiry", func() bool { return s.Calls("refresh") >= refreshes+2 })
		if p := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}); p.GetPong() == nil {
			t.Fatalf("the refreshed session does not answer: %v", p)
		}
		req := s.Last("refresh").(*hooksv1.RefreshRequest)
		if req.Session.User != user || req.Token != "" {
			t.Fatalf("refresh request: %v", req)
		}
		// The browser's own refresh frame reaches the hook with its token.
		if r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Refresh{Refresh: &heraldv1.RefreshFrame{Token: "t2"}}}); r.GetRefresh().GetExpiresIn() != 1 {
			t.Fatalf("refresh frame: %v", r)
		}
		if req := s.Last("refresh").(*hooksv1.RefreshRequest); req.Token != "t2" {
			t.Fatalf("refresh frame's token: %v", req)
		}
		s.Logout(user)
		if d := c.expectClose(4002); d == nil || d.Reason != "logged out" || !d.Reconnect {
			t.Fatalf("after logout: %v", d)
		}
	})
}

// TestHookSubscribe: the subscribe hook allows or refuses channels of its
// namespace; the info it gives shows in that channel's presence and join
// events; reading a hooked channel needs a subscription; other
// namespaces keep their options.
func TestHookSubscribe(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	eachForm(t, s, nil, func(t *testing.T, n *node.Node) {
		a, _ := dialCookie(t, n, "", s.Login("ann"), "")
		b, _ := dialCookie(t, n, "herald.proto", s.Login("bob"), "")
		if r := a.subscribe("room:lobby", nil); r.GetSubscribe() == nil {
			t.Fatalf("room:lobby: %v", r)
		}
		if req := s.Last("subscribe").(*hooksv1.SubscribeRequest); req.Channel != "room:lobby" || req.Session.User != "ann" {
			t.Fatalf("subscribe request: %v", req)
		}
		if r := b.subscribe("room:lobby", nil); r.GetSubscribe() == nil {
			t.Fatalf("bob in room:lobby: %v", r)
		}
		join := a.waitFor("bob's join", func(f *heraldv1.ServerFrame) bool { return f.GetJoin().GetClient().GetUser() == "bob" }).GetJoin()
		if f := join.Client.GetInfo().GetStructValue().GetFields(); f["role"].GetStringValue() != "member" || f["room"].GetStringValue() != "lobby" {
			t.Fatalf("join info = %v, want the subscribe hook's", join.Client.GetInfo())
		}
		wantError(t, a.subscribe("room:secret-1", nil), 104, "not a member of secret-1", false)
		// Reading a hooked channel needs a subscription.
		wantError(t, a.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: "room:other"}}}), 104, "subscribe to", false)
		if r := a.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: "room:lobby"}}}); r.GetHistory() == nil {
			t.Fatalf("history of a subscribed hooked channel: %v", r)
		}
		// Other namespaces: their options, no hook call.
		calls := s.Calls("subscribe")
		if r := a.subscribe("news:1", nil); r.GetSubscribe() == nil || s.Calls("subscribe") != calls {
			t.Fatalf("news:1 (no hook): %v, calls %d → %d", r, calls, s.Calls("subscribe"))
		}
		wantError(t, a.subscribe("secret:x", nil), 104, "not allowed", false)
	})
}

// TestHookPublish: the publish hook allows (with tags), refuses with its
// code, replaces the data (exactly: a 20-digit integer survives), or
// skips (the browser gets the backend's position; nothing is published).
func TestHookPublish(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	eachForm(t, s, nil, func(t *testing.T, n *node.Node) {
		c, _ := dialCookie(t, n, "", s.Login("ann"), "")
		ch := "room:pub-" + t.Name()[strings.LastIndexByte(t.Name(), '/')+1:]
		if r := c.subscribe(ch, nil); r.GetSubscribe() == nil {
			t.Fatal(r)
		}
		r := c.request(publishJSON(ch, `{"text":"hi","n":1.50}`))
		if r.GetPublish().GetPosition().GetOffset() != 1 {
			t.Fatalf("allowed publish: %v", r)
		}
		pub := c.nextPub(ch)
		if f := pub.GetData().GetStructValue().GetFields(); f["text"].GetStringValue() != "hi" || pub.Tags["checked"] != "yes" || pub.GetPublisher().GetUser() != "ann" {
			t.Fatalf("allowed publication: %v", pub)
		}
		if req := s.Last("publish").(*hooksv1.PublishRequest); req.GetJson() != `{"text":"hi","n":1.50}` || req.Channel != ch {
			t.Fatalf("the backend got %v", req)
		}
		wantError(t, c.request(publishJSON(ch, `{"text":"refuse"}`)), 110, "that text is not allowed", false)
		if r := c.request(publishJSON(ch, `{"text":"skip"}`)); r.GetPublish().GetPosition().GetOffset() != 42 || r.GetPublish().GetPosition().GetEpoch() != "hooked" {
			t.Fatalf("skipped publish: %v", r)
		}
		// Replaced: read the frame's raw text to see the exact JSON.
		c.send(publishJSON(ch, `{"text":"replace me"}`))
		raw := readRawUntil(t, c, `"pub":`)
		if !strings.Contains(raw, `"data":{"text":"REPLACE ME","by":"ann","n":12345678901234567891}`) || !strings.Contains(raw, `"offset":"2"`) {
			t.Fatalf("replaced publication: %s (want offset 2: nothing was published for the refused and skipped ones)", raw)
		}
	})
}

// readRawUntil reads WebSocket messages, bypassing the client's decoding,
// until a line containing want, and returns that line.
func readRawUntil(t *testing.T, c *client, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = c.ws.SetReadDeadline(deadline)
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		for _, line := range bytes.Split(msg, []byte("\n")) {
			if bytes.Contains(line, []byte(want)) {
				return string(line)
			}
		}
	}
}

// TestHookRPC: an rpc frame reaches the backend with its exact JSON and
// its answer comes back on the same id, exact; the backend's errors keep
// their codes; the allowlist refuses other methods before any call; a
// backend error status is 203.
func TestHookRPC(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	eachForm(t, s, nil, func(t *testing.T, n *node.Node) {
		c, _ := dialCookie(t, n, "", s.Login("ann"), "")
		const text = `{"big":12345678901234567891,"f":1.0,"s":"\u00e9"}`
		c.sendRaw([]byte(`{"id":77,"rpc":{"method":"echo","data":` + text + `}}`))
		if raw := readRawUntil(t, c, `"id":77`); raw != `{"id":77,"rpc":{"data":`+text+`}}` {
			t.Fatalf("echo reply = %s", raw)
		}
		if req := s.Last("rpc").(*hooksv1.RPCRequest); req.GetJson() != text || req.Method != "echo" || req.Session.User != "ann" {
			t.Fatalf("the backend got %v", req)
		}
		r := c.request(rpcFrame("whoami", "null"))
		if d := r.GetRpc().GetData().GetStructValue().GetFields(); d["user"].GetStringValue() != "ann" || d["transport"].GetStringValue() != "websocket" {
			t.Fatalf("whoami: %v", r)
		}
		wantError(t, c.request(rpcFrame("fail", "{}")), 1001, "it failed", true)
		wantError(t, c.request(rpcFrame("denied", "{}")), 104, "not for you", false)
		calls := s.Calls("rpc")
		wantError(t, c.request(rpcFrame("admin.drop", "{}")), 104, `"admin.drop" is not allowed`, false)
		wantError(t, c.request(rpcFrame("bad method", "{}")), 110, "method", false)
		wantError(t, c.request(rpcFrame("echo", `{"a":`)), 110, "data", false)
		if s.Calls("rpc") != calls {
			t.Fatal("refused rpc frames reached the backend")
		}
		// An allowed method the backend does not know: its error status.
		wantError(t, c.request(rpcFrame("missing.one", "{}")), 203, "unavailable", true)

		// herald.proto: binary both ways, JSON as its text.
		p, _ := dialCookie(t, n, "herald.proto", s.Login("ann"), "")
		r = p.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Rpc{Rpc: &heraldv1.RPCFrame{Method: "echo", Payload: &heraldv1.RPCFrame_Binary{Binary: []byte{9, 0, 255}}}}})
		if !bytes.Equal(r.GetRpc().GetBinary(), []byte{9, 0, 255}) {
			t.Fatalf("binary echo: %v", r)
		}
		if r = p.request(rpcFrame("echo", text)); r.GetRpc().GetJson() != text {
			t.Fatalf("proto echo: %v", r)
		}
	})
	// Without rpc_methods, rpc frames are error 111.
	n := startNode(t, testConfig(), node.Serve)
	c := connect(t, n, "", token(t, "ann", time.Hour, nil))
	wantError(t, c.request(rpcFrame("echo", "{}")), 111, "rpc is off", false)
}

// TestHooksOnStreams: on SSE and on HTTP streaming, the connect hook sees
// the cookie of the GET or POST, and publish and rpc work through
// /command.
func TestHooksOnStreams(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	eachForm(t, s, nil, func(t *testing.T, n *node.Node) {
		base := httpBase(n)
		for _, tr := range []string{"sse", "http_stream"} {
			t.Run(tr, func(t *testing.T) {
				cookie := s.Login("sam")
				ch := "room:streams-" + tr
				var c *streamClient
				if tr == "sse" {
					c = openSSEHeader(t, base, url.Values{"channel": {ch}}, "", cookieHeader(cookie))
				} else {
					c = openStreamHeader(t, base, false, cookieHeader(cookie),
						&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{}}},
						&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: ch}}})
				}
				if u := c.connected().GetUser(); u != "sam" {
					t.Fatalf("connected as %q", u)
				}
				if req := s.Last("connect").(*hooksv1.ConnectRequest); req.Cookies["session"] != cookie || req.Session.Transport != tr {
					t.Fatalf("connect request: %v", req)
				}
				c.waitFor("the subscription", func(f *heraldv1.ServerFrame) bool {
					return f.GetSubscribed().GetChannel() == ch || f.GetSubscribe().GetChannel() == ch
				})
				r := c.request(publishJSON(ch, `{"text":"replace it"}`))
				if r.GetPublish().GetPosition().GetOffset() == 0 {
					t.Fatalf("publish: %v", r)
				}
				// (Decoded through a Value by this client: exactness is
				// TestHookPublish's.)
				if f := c.nextPub(ch).GetData().GetStructValue().GetFields(); f["text"].GetStringValue() != "REPLACE IT" || f["by"].GetStringValue() != "sam" {
					t.Fatalf("replaced publication: %v", f)
				}
				r = c.request(rpcFrame("whoami", "{}"))
				if d := r.GetRpc().GetData().GetStructValue().GetFields(); d["transport"].GetStringValue() != tr || d["user"].GetStringValue() != "sam" {
					t.Fatalf("whoami: %v", r)
				}
			})
		}
		// Without the cookie: refused with the backend's reason.
		c := openSSEHeader(t, base, nil, "", nil)
		if d := c.expectEnd(4001); d.Reason != "log in first" {
			t.Fatalf("SSE without a session: %v", d)
		}
	})
}

func hookMetric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			for k, v := range labels {
				found := false
				for _, l := range m.Label {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Counter != nil:
				return m.Counter.GetValue()
			}
		}
	}
	return -1
}

// TestHookFailures: a backend that is down, slower than hooks.timeout,
// or answering garbage gives browsers the documented error at once (rpc
// 203 or 204, connect close 4010 with reconnect); a browser on a JWT keeps
// receiving throughout; after circuit_failures failures the circuit opens
// (herald_hook_circuit_state 2) and calls fail without reaching the
// backend; once the backend is back a probe closes it (0).
func TestHookFailures(t *testing.T) {
	for _, form := range hookForms {
		t.Run(form, func(t *testing.T) {
			s := hooktest.Start(t, hooktest.Options{})
			cfg := hookConfig(s, form)
			cfg.Hooks.Timeout = config.Duration(300 * time.Millisecond)
			cfg.Hooks.CircuitFailures = 3
			cfg.Hooks.CircuitOpen = config.Duration(300 * time.Millisecond)
			n := startNode(t, cfg, node.Serve)
			backendName := s.GRPCAddr
			if form == "http" {
				backendName = s.HTTPURL
			}
			circuit := func() float64 {
				return hookMetric(t, "herald_hook_circuit_state", map[string]string{"backend": backendName})
			}
			be := backend(t, n, "")
			bystander := connect(t, n, "", token(t, "by", time.Hour, nil))
			if r := bystander.subscribe("chat:bystander", nil); r.GetSubscribe() == nil {
				t.Fatal(r)
			}
			seq := 0
			stillServed := func() {
				t.Helper()
				seq++
				publish(t, be, "chat:bystander", fmt.Sprintf(`{"n":%d}`, seq))
				if got := jsonData(t, bystander.nextPub("chat:bystander")); got != fmt.Sprintf(`{"n":%d}`, seq) {
					t.Fatalf("bystander got %s", got)
				}
			}
			c, _ := dialCookie(t, n, "", s.Login("ann"), "")

			// Slow: past the timeout, 204; connect 4010.
			s.SetDelay(time.Hour)
			wantError(t, c.request(rpcFrame("echo", "{}")), 204, "in time", true)
			stillServed()
			_, r := dialCookie(t, n, "", s.Login("ann"), "")
			if d := r.GetDisconnect(); d.GetCode() != 4010 || !d.Reconnect {
				t.Fatalf("connect to a slow backend: %v", r)
			}
			eventually(t, "the circuit to open after 2 timeouts and one more failure", func() bool {
				if circuit() == 2 {
					return true
				}
				c.request(rpcFrame("echo", "{}"))
				return false
			})
			s.SetDelay(0)
			calls := s.Calls("rpc")
			wantError(t, c.request(rpcFrame("echo", "{}")), 203, "unavailable", true)
			if s.Calls("rpc") != calls {
				t.Fatal("a call went through the open circuit")
			}
			stillServed()
			eventually(t, "the circuit to close after a good probe", func() bool {
				c.request(rpcFrame("echo", "{}"))
				return circuit() == 0
			})
			if r := c.request(rpcFrame("echo", `{"ok":1}`)); r.GetRpc() == nil {
				t.Fatalf("after recovery: %v", r)
			}

			// Garbage: 203, connect 4010.
			s.SetGarbage(true)
			wantError(t, c.request(rpcFrame("echo", "{}")), 203, "unavailable", true)
			_, r = dialCookie(t, n, "", s.Login("ann"), "")
			if r.GetDisconnect().GetCode() != 4010 {
				t.Fatalf("connect to a garbage backend: %v", r)
			}
			stillServed()
			s.SetGarbage(false)
			eventually(t, "the circuit to close again", func() bool {
				c.request(rpcFrame("echo", "{}"))
				return circuit() == 0
			})

			// Down: 203, connect 4010; back up: works.
			s.Down()
			wantError(t, c.request(publishJSON("room:x", `{"text":"hi"}`)), 203, "unavailable", true)
			_, r = dialCookie(t, n, "", s.Login("ann"), "")
			if d := r.GetDisconnect(); d.GetCode() != 4010 || !d.Reconnect {
				t.Fatalf("connect to a backend that is down: %v", r)
			}
			stillServed()
			s.Up()
			eventually(t, "connects again once the backend is up", func() bool {
				cc, r := dialCookie(t, n, "", s.Login("ann"), "")
				_ = cc.ws.Close()
				return r.GetConnect().GetUser() == "ann"
			})
			if v := hookMetric(t, "herald_hook_errors_total", map[string]string{"hook": "rpc", "code": "circuit_open"}); v < 1 {
				t.Fatalf("herald_hook_errors_total{rpc,circuit_open} = %v", v)
			}
			if v := hookMetric(t, "herald_ws_auth_failures_total", map[string]string{"reason": "hook_unavailable"}); v < 3 {
				t.Fatalf("herald_ws_auth_failures_total{hook_unavailable} = %v", v)
			}
		})
	}
}

// TestCommandsWaitForConnect: a command POSTed as soon as an SSE
// stream's `connect` event gives its session token is handled after the
// stream's own connect has finished (its channels subscribed), not beside
// it: requests of a session are handled one at a time. The subscribe hook
// makes the stream's channel slow to subscribe. (Before, the command's
// reply came first, and the race detector saw the two goroutines share
// the session's request state.)
func TestCommandsWaitForConnect(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	s.Handle("subscribe", func(ctx context.Context, m proto.Message) (proto.Message, error) {
		if m.(*hooksv1.SubscribeRequest).Channel == "room:slow" {
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		return &hooksv1.SubscribeResponse{Decision: &hooksv1.SubscribeResponse_Allow{Allow: &hooksv1.SubscribeAllow{}}}, nil
	})
	n := startNode(t, hookConfig(s, "grpc"), node.Serve)
	c := openSSEHeader(t, httpBase(n), url.Values{"channel": {"room:slow"}}, "", cookieHeader(s.Login("ann")))
	c.connected()
	c.command(httpBase(n), &heraldv1.ClientFrame{Id: 50, Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}})
	var order []string
	for len(order) < 2 {
		if !c.read(10 * time.Second) {
			t.Fatalf("stream ended: %v", c.err)
		}
		for _, fr := range c.buf {
			switch {
			case fr.GetSubscribed().GetChannel() == "room:slow":
				order = append(order, "subscribed")
			case fr.Id == 50:
				order = append(order, "pong")
			}
		}
		c.buf = nil
	}
	if order[0] != "subscribed" {
		t.Fatalf("order %v: the command was handled before the stream's connect had finished", order)
	}
}
