package wsbridge_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/protobuf/types/known/structpb"
)

func connectFrame(tok string) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: tok}}}
}

func TestConnectAuth(t *testing.T) {
	cfg := testConfig()
	n := startNode(t, cfg, node.Serve)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "u1"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	badSig, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u1"}).SignedString([]byte("another-secret"))
	tests := []struct {
		name  string
		token string
		close int
	}{
		{"bad signature", badSig, 4001},
		{"expired", token(t, "u1", -time.Minute, nil), 4002},
		{"alg none", none, 4001},
		{"missing sub", token(t, "", time.Minute, nil), 4001},
		{"garbage", "not.a.jwt", 4001},
		{"no token, anonymous off", "", 4001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := dial(t, n, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			c.send(connectFrame(tt.token))
			d := c.expectClose(tt.close)
			if d == nil || d.Reason == "" {
				t.Fatalf("no disconnect frame with a reason: %v", c.buf)
			}
		})
	}
	t.Run("ok", func(t *testing.T) {
		c := connect(t, n, "", token(t, "u1", time.Minute, nil))
		if c.ws.Subprotocol() != "" && c.ws.Subprotocol() != "herald.json" {
			t.Fatalf("subprotocol %q", c.ws.Subprotocol())
		}
		// The personal channel is subscribed without asking.
		s := c.waitFor("subscribed push", func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed() != nil })
		if s.Id != 0 || s.GetSubscribed().Channel != "user:u1" {
			t.Fatalf("personal subscription: %v", s)
		}
	})
	t.Run("first frame not connect", func(t *testing.T) {
		c, _, _ := dial(t, n, "", nil)
		c.send(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}})
		c.expectClose(4000)
	})
}

func TestConnectPublicKeys(t *testing.T) {
	rsaPath, ecPath, rk, ek := writeKeys(t)
	cfg := testConfig()
	cfg.Bridge.JWTSecret = ""
	cfg.Bridge.JWTPublicKeys = []string{rsaPath, ecPath}
	n := startNode(t, cfg, node.Serve)
	claims := jwt.MapClaims{"sub": "u9", "exp": time.Now().Add(time.Minute).Unix()}
	rs, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rk)
	es, _ := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ek)
	connect(t, n, "", rs)
	connect(t, n, "herald.proto", es)
	// HS256 signed with the RSA public key's PEM as secret: algorithm confusion.
	pemBytes := []byte(mustRead(t, rsaPath))
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(pemBytes)
	c, _, _ := dial(t, n, "", nil)
	c.send(connectFrame(hs))
	c.expectClose(4001)
}

func TestAnonymous(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.Anonymous = true
	n := startNode(t, cfg, node.Serve)
	c := connect(t, n, "", "")
	if r := c.subscribe("chat:lobby", nil); r.GetSubscribe() == nil {
		t.Fatalf("anonymous subscribe to chat (allow_anonymous): %v", r)
	}
	if r := c.subscribe("news:x", nil); r.GetError().GetCode() != 104 {
		t.Fatalf("anonymous subscribe to news: %v", r)
	}
}

func TestOrigin(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.AllowedOrigins = []string{"https://app.example.com"}
	n := startNode(t, cfg, node.Serve)
	_, resp, err := dial(t, n, "", http.Header{"Origin": {"https://evil.example.com"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("refused origin: err %v resp %v", err, resp)
	}
	if _, _, err := dial(t, n, "", http.Header{"Origin": {"https://app.example.com"}}); err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	// Default: the node's own origins (its listen address), from the
	// configuration, not from the request's Host.
	n2 := startNode(t, testConfig(), node.Serve)
	if _, _, err := dial(t, n2, "", http.Header{"Origin": {"http://" + n2.HTTPAddr.String()}}); err != nil {
		t.Fatalf("same host: %v", err)
	}
	if _, _, err := dial(t, n2, "", http.Header{"Origin": {"http://other.example"}}); err == nil {
		t.Fatal("other host accepted by default")
	}
}

// TestHTTPTransportsOrigin: the HTTP transports (/sse, /stream,
// /command) apply the WebSocket's Origin policy: a page of an origin not
// allowed gets 403 on the request and on its CORS preflight, before any
// session is made; an allowed origin is answered with CORS headers naming
// it (credentials allowed, for cookie sessions).
func TestHTTPTransportsOrigin(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.AllowedOrigins = []string{"https://app.example.com"}
	n := startNode(t, cfg, node.Serve)
	base := "http://" + n.HTTPAddr.String()
	for _, c := range []struct{ method, path, body string }{
		{http.MethodGet, "/sse?channel=chat:o", ""},
		{http.MethodPost, "/stream", `{"id":1,"connect":{}}`},
		{http.MethodPost, "/command", `{"session_token":"x","frames":[]}`},
		{http.MethodOptions, "/sse", ""},
		{http.MethodOptions, "/stream", ""},
		{http.MethodOptions, "/command", ""},
	} {
		for _, origin := range []string{"https://evil.example.com", "https://app.example.com"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, err := http.NewRequestWithContext(ctx, c.method, base+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Origin", origin)
			if c.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if c.method == http.MethodOptions {
				req.Header.Set("Access-Control-Request-Method", http.MethodPost)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				t.Fatalf("%s %s from %s: %v", c.method, c.path, origin, err)
			}
			allow := resp.Header.Get("Access-Control-Allow-Origin")
			_ = resp.Body.Close()
			cancel()
			if origin == "https://evil.example.com" {
				if resp.StatusCode != http.StatusForbidden || allow != "" {
					t.Errorf("%s %s from %s: %d, Access-Control-Allow-Origin %q; want 403 and none", c.method, c.path, origin, resp.StatusCode, allow)
				}
				continue
			}
			if resp.StatusCode == http.StatusForbidden || allow != origin {
				t.Errorf("%s %s from %s: %d, Access-Control-Allow-Origin %q; want it served to its origin", c.method, c.path, origin, resp.StatusCode, allow)
			}
			if c.method == http.MethodOptions && resp.StatusCode != http.StatusNoContent {
				t.Errorf("preflight %s from %s: %d, want 204", c.path, origin, resp.StatusCode)
			}
		}
	}
}

func TestSubscribeReceive(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	for _, sp := range []string{"", "herald.json", "herald.proto"} {
		t.Run("subprotocol="+sp, func(t *testing.T) {
			ch := "chat:room-" + strings.ReplaceAll(sp, ".", "-")
			c := connect(t, n, sp, token(t, "u1", time.Minute, nil))
			r := c.subscribe(ch, nil)
			if r.GetSubscribe().GetChannel() != ch || r.GetSubscribe().GetRecoverable() != true {
				t.Fatalf("subscribe reply: %v", r)
			}
			for i := 1; i <= 20; i++ {
				publish(t, be, ch, fmt.Sprintf(`{"n":%d,"text":"line\nbreak"}`, i))
			}
			_, err := be.Publish(ctx(t), &heraldv1.PublishRequest{Channel: ch, Payload: &heraldv1.PublishRequest_Binary{Binary: []byte{0, 1, 2}}, Tags: map[string]string{"k": "v\"q"}})
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 20; i++ {
				p := c.nextPub(ch)
				if p.Offset != uint64(i) {
					t.Fatalf("offset %d, want %d", p.Offset, i)
				}
				want := fmt.Sprintf(`{"n":%d,"text":"line\nbreak"}`, i)
				if got := jsonData(t, p); got != string(compact([]byte(want))) {
					t.Fatalf("payload %s, want %s", got, want)
				}
				if sp != "herald.proto" && p.GetData() == nil {
					t.Fatalf("JSON payload not in data: %v", p)
				}
			}
			p := c.nextPub(ch)
			if string(p.GetBinary()) != "\x00\x01\x02" || p.Tags["k"] != "v\"q" {
				t.Fatalf("binary publication: %v", p)
			}
		})
	}
}

func TestPackedRequests(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	for _, sp := range []string{"herald.json", "herald.proto"} {
		c := connect(t, n, sp, token(t, "u1", time.Minute, nil))
		a := &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}
		b := &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: "chat:packed"}}}
		c.send(a, b)
		c.waitFor("pong", func(f *heraldv1.ServerFrame) bool { return f.Id == a.Id && f.GetPong() != nil })
		c.waitFor("subscribe", func(f *heraldv1.ServerFrame) bool { return f.Id == b.Id && f.GetSubscribe() != nil })
	}
}

func TestPersonalChannel(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	tab1 := connect(t, n, "", token(t, "42", time.Minute, nil))
	tab2 := connect(t, n, "herald.proto", token(t, "42", time.Minute, nil))
	other := connect(t, n, "", token(t, "43", time.Minute, nil))
	for _, c := range []*client{tab1, tab2, other} {
		c.waitFor("personal subscribed", func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed() != nil })
	}
	publish(t, be, "user:42", `{"hello":42}`)
	for _, c := range []*client{tab1, tab2} {
		if got := jsonData(t, c.nextPub("user:42")); got != `{"hello":42}` {
			t.Fatalf("got %s", got)
		}
	}
	// Another user's personal channel is not reachable without a claim.
	if r := other.subscribe("user:42", nil); r.GetError().GetCode() != 104 {
		t.Fatalf("subscribe to another user's channel: %v", r)
	}
}

func TestPermissions(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	c := connect(t, n, "", token(t, "u1", time.Minute, jwt.MapClaims{"channels": []string{"secret:*", "user:boss"}}))
	plain := connect(t, n, "", token(t, "u2", time.Minute, nil))
	tests := []struct {
		c       *client
		channel string
		code    uint32 // 0: allowed
	}{
		{c, "secret:team-a", 0},
		{c, "user:boss", 0},
		{plain, "secret:team-a", 104},
		{plain, "user:boss", 104},
		{plain, "news:today", 0},
		{plain, "unknown:x", 105},
		{plain, "bad channel!", 105},
		{plain, "", 105},
	}
	for _, tt := range tests {
		r := tt.c.subscribe(tt.channel, nil)
		if tt.code == 0 && r.GetSubscribe() == nil || tt.code != 0 && r.GetError().GetCode() != tt.code {
			t.Errorf("subscribe %q: got %v, want code %d", tt.channel, r, tt.code)
		}
	}
	pub := func(c *client, ch string) *heraldv1.ServerFrame {
		return c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Publish{Publish: &heraldv1.PublishFrame{
			Channel: ch, Payload: &heraldv1.PublishFrame_Data{Data: structpb.NewStringValue("hi")}}}})
	}
	c.subscribe("chat:lobby", nil)
	if r := pub(plain, "chat:lobby"); r.GetPublish().GetPosition().GetOffset() != 1 {
		t.Errorf("publish to chat: %v", r)
	}
	// The bridge names the publishing connection: subscribers see who.
	if p := c.nextPub("chat:lobby"); p.GetPublisher().GetUser() != "u2" || p.GetPublisher().GetClient() == "" {
		t.Errorf("publisher of a browser publication = %v, want user u2 and its client id", p.GetPublisher())
	}
	if r := pub(plain, "news:today"); r.GetError().GetCode() != 104 {
		t.Errorf("publish to news: %v", r)
	}
	r := plain.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Publish{Publish: &heraldv1.PublishFrame{Channel: "chat:lobby"}}})
	if r.GetError().GetCode() != 110 {
		t.Errorf("publish without payload: %v", r)
	}
}

func TestHistoryPresence(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	a := connect(t, n, "", token(t, "alice", time.Minute, jwt.MapClaims{"info": map[string]any{"name": "Alice"}}))
	a.subscribe("chat:hp", nil)
	for i := 1; i <= 3; i++ {
		publish(t, be, "chat:hp", fmt.Sprintf(`{"i":%d}`, i))
	}
	r := a.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: "chat:hp", Limit: 10}}})
	if h := r.GetHistory(); len(h.GetPublications()) != 3 || h.Publications[0].GetData() == nil || h.Position.Offset != 3 {
		t.Fatalf("history: %v", r)
	}
	if r := a.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: "nohist:x"}}}); r.GetError().GetCode() == 0 {
		t.Fatalf("history of nohist: %v", r)
	}
	// Join push, presence over the bridge and over gRPC.
	b := connect(t, n, "herald.proto", token(t, "bob", time.Minute, nil))
	b.subscribe("chat:hp", nil)
	j := a.waitFor("join", func(f *heraldv1.ServerFrame) bool { return f.GetJoin().GetClient().GetUser() == "bob" })
	if j.Id != 0 {
		t.Fatalf("join push with id: %v", j)
	}
	eventually(t, "gRPC presence of 2", func() bool {
		res, err := be.Presence(ctx(t), &heraldv1.PresenceRequest{Channel: "chat:hp"})
		return err == nil && len(res.Clients) == 2
	})
	res, _ := be.Presence(ctx(t), &heraldv1.PresenceRequest{Channel: "chat:hp"})
	var info string
	for _, ci := range res.Clients {
		if ci.User == "alice" {
			info = ci.GetInfo().GetStructValue().GetFields()["name"].GetStringValue()
		}
	}
	if info != "Alice" {
		t.Fatalf("info claim not in presence: %v", res)
	}
	r = a.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Presence{Presence: &heraldv1.PresenceFrame{Channel: "chat:hp"}}})
	if len(r.GetPresence().GetClients()) != 2 {
		t.Fatalf("presence frame: %v", r)
	}
	r = a.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_PresenceStats{PresenceStats: &heraldv1.PresenceFrame{Channel: "chat:hp"}}})
	if s := r.GetPresenceStats(); s.GetClients() != 2 || s.GetUsers() != 2 {
		t.Fatalf("presence_stats frame: %v", r)
	}
	// Unsubscribe → leave; closing → cleaned up.
	if r := b.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribeFrame{Channel: "chat:hp"}}}); r.GetUnsubscribe().GetChannel() != "chat:hp" {
		t.Fatalf("unsubscribe: %v", r)
	}
	a.waitFor("leave", func(f *heraldv1.ServerFrame) bool { return f.GetLeave().GetClient().GetUser() == "bob" })
	_ = a.ws.Close()
	eventually(t, "presence cleaned", func() bool {
		res, err := be.PresenceStats(ctx(t), &heraldv1.PresenceStatsRequest{Channel: "chat:hp"})
		return err == nil && res.Clients == 0
	})
}

func TestBackendCommands(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	t1 := connect(t, n, "", token(t, "u7", time.Minute, nil))
	t2 := connect(t, n, "herald.proto", token(t, "u7", time.Minute, nil))
	keep := connect(t, n, "", token(t, "u8", time.Minute, nil))
	for _, c := range []*client{t1, t2, keep} {
		c.subscribe("chat:cmd", nil)
	}
	if _, err := be.Unsubscribe(ctx(t), &heraldv1.UnsubscribeRequest{User: "u7", Channel: "chat:cmd"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{t1, t2} {
		c.waitFor("unsubscribed push", func(f *heraldv1.ServerFrame) bool { return f.GetUnsubscribed().GetChannel() == "chat:cmd" })
	}
	publish(t, be, "chat:cmd", `1`)
	keep.nextPub("chat:cmd")
	if _, err := be.Disconnect(ctx(t), &heraldv1.DisconnectRequest{User: "u7", Reason: "banned", Reconnect: false}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{t1, t2} {
		d := c.expectClose(4005)
		if d == nil || d.Reason != "banned" || d.Reconnect {
			t.Fatalf("disconnect frame: %v", d)
		}
	}
	if r := keep.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}); r.GetPong() == nil {
		t.Fatalf("other user affected: %v", r)
	}
}

func TestRecovery(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	watcher := connect(t, n, "", token(t, "w", time.Minute, nil)) // keeps the channel's upstream open
	watcher.subscribe("chat:rec", nil)
	for _, sp := range []string{"herald.json", "herald.proto"} {
		c := connect(t, n, sp, token(t, "u1", time.Minute, nil))
		c.subscribe("chat:rec", nil)
		last := publish(t, be, "chat:rec", `"before"`)
		if p := c.nextPub("chat:rec"); p.Offset != last.Offset {
			t.Fatalf("got %v", p)
		}
		_ = c.ws.Close()
		var want []uint64
		for i := 0; i < 5; i++ {
			want = append(want, publish(t, be, "chat:rec", fmt.Sprintf(`{"missed":%d}`, i)).Offset)
		}
		c = connect(t, n, sp, token(t, "u1", time.Minute, nil))
		r := c.subscribe("chat:rec", &heraldv1.StreamPosition{Offset: last.Offset, Epoch: last.Epoch})
		if !r.GetSubscribe().GetRecovered() {
			t.Fatalf("not recovered: %v", r)
		}
		after := publish(t, be, "chat:rec", `"after"`)
		want = append(want, after.Offset)
		for _, o := range want {
			if p := c.nextPub("chat:rec"); p.Offset != o {
				t.Fatalf("%s: got offset %d, want %d", sp, p.Offset, o)
			}
		}
		for _, f := range c.buf {
			if f.GetPub() != nil {
				t.Fatalf("duplicate: %v", f)
			}
		}
		// A position of another epoch cannot be recovered.
		c2 := connect(t, n, sp, token(t, "u1", time.Minute, nil))
		r = c2.subscribe("chat:rec", &heraldv1.StreamPosition{Offset: 1, Epoch: "other"})
		if s := r.GetSubscribe(); s == nil || s.Recovered || s.Position.Offset != after.Offset {
			t.Fatalf("wrong epoch: %v", r)
		}
	}
	// Resume with the channel's upstream closed (no other subscriber).
	c := connect(t, n, "", token(t, "u3", time.Minute, nil))
	c.subscribe("chat:rec2", nil)
	publish(t, be, "chat:rec2", `1`)
	// The last position received: that of the publication (a channel
	// without state reads as offset 0 of an empty epoch; its first
	// publication begins another).
	pos := c.nextPub("chat:rec2")
	_ = c.ws.Close()
	// Left: chat:rec and user:w (watcher), user:u1 (c2).
	eventually(t, "upstream of chat:rec2 closed", func() bool { return n.Bridge().Stats().Channels == 3 })
	p2 := publish(t, be, "chat:rec2", `2`)
	c = connect(t, n, "", token(t, "u3", time.Minute, nil))
	r := c.subscribe("chat:rec2", &heraldv1.StreamPosition{Offset: pos.Offset, Epoch: pos.Epoch})
	if !r.GetSubscribe().GetRecovered() {
		t.Fatalf("not recovered: %v", r)
	}
	if p := c.nextPub("chat:rec2"); p.Offset != p2.Offset {
		t.Fatalf("got %v", p)
	}
}

// TestPersonalResume drops a user's connection, publishes to user:U over
// gRPC, and reconnects with personal_since: the `subscribed` push says
// recovered and exactly the missed publications follow, in order, then
// live ones; with the upstream of user:U kept open by another tab and
// with it closed; and a position of another epoch gets recovered=false.
func TestPersonalResume(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	connectSince := func(sp, user string, since *heraldv1.StreamPosition) (*client, *heraldv1.SubscribedFrame) {
		t.Helper()
		c, _, err := dial(t, n, sp, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: token(t, user, time.Minute, nil), PersonalSince: since}}})
		if r.GetConnect() == nil {
			t.Fatalf("connect: got %v", r)
		}
		s := c.waitFor("personal subscribed", func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed().GetChannel() == "user:"+user })
		return c, s.GetSubscribed()
	}
	for _, tc := range []struct {
		name, sp string
		keeper   bool // another tab of the user keeps the upstream open
	}{
		{"json", "herald.json", false},
		{"proto", "herald.proto", false},
		{"json-kept", "herald.json", true},
		{"proto-kept", "herald.proto", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := "pr-" + tc.name
			ch := "user:" + user
			if tc.keeper {
				connectSince("", user, nil)
			}
			c, s := connectSince(tc.sp, user, nil)
			if s.Recovered {
				t.Fatalf("first connect without personal_since says recovered: %v", s)
			}
			last := publish(t, be, ch, `"before"`)
			if p := c.nextPub(ch); p.Offset != last.Offset {
				t.Fatalf("got %v", p)
			}
			_ = c.ws.Close()
			var want []uint64
			for i := 0; i < 5; i++ {
				want = append(want, publish(t, be, ch, fmt.Sprintf(`{"missed":%d}`, i)).Offset)
			}
			c, s = connectSince(tc.sp, user, last)
			if !s.Recovered || !s.Recoverable {
				t.Fatalf("not recovered: %v", s)
			}
			want = append(want, publish(t, be, ch, `"after"`).Offset)
			for _, o := range want {
				if p := c.nextPub(ch); p.Offset != o {
					t.Fatalf("got offset %d, want %d", p.Offset, o)
				}
			}
			for _, f := range c.buf {
				if f.GetPub() != nil {
					t.Fatalf("duplicate or extra: %v", f)
				}
			}
			// A position of another epoch cannot be recovered.
			_, s = connectSince(tc.sp, user, &heraldv1.StreamPosition{Offset: 1, Epoch: "other"})
			if s.Recovered || s.Position.GetOffset() != want[len(want)-1] {
				t.Fatalf("wrong epoch: %v", s)
			}
		})
	}
}
