package wsbridge_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/internal/tlstest"
	"github.com/herald-io/herald/node"
	"github.com/herald-io/herald/wsbridge"
	"google.golang.org/protobuf/types/known/structpb"
)

func subscribeFrame(channel string, since *heraldv1.StreamPosition) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: channel, Since: since}}}
}

func publishFrame(channel string, v *structpb.Value) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Publish{Publish: &heraldv1.PublishFrame{Channel: channel, Payload: &heraldv1.PublishFrame_Data{Data: v}}}}
}

// subscribedPush waits for the `subscribed` push of channel.
func (c *streamClient) subscribedPush(channel string) *heraldv1.SubscribedFrame {
	c.t.Helper()
	return c.waitFor("subscribed "+channel, func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed().GetChannel() == channel }).GetSubscribed()
}

// TestSSE: an EventSource-style client connects with its token in the
// URL, is subscribed to its personal channel and the URL's channels,
// receives publications as events whose ids resume every one of them, and
// after a reconnect with Last-Event-ID gets exactly what it missed, with
// recovered=true; an id of another stream resumes nothing.
func TestSSE(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	q := url.Values{"token": {token(t, "u1", time.Hour, nil)}, "channel": {"chat:sse", "news:sse"}, "name": {"test/1"}}
	c := openSSE(t, httpBase(n), q, "")
	cf := c.connected()
	if cf.User != "u1" || cf.SessionToken == "" || !strings.HasPrefix(cf.SessionToken, cf.Client+".") {
		t.Fatalf("connect: %v", cf)
	}
	for _, ch := range []string{"user:u1", "chat:sse", "news:sse"} {
		if s := c.subscribedPush(ch); !s.Recoverable || s.Recovered {
			t.Fatalf("%s: %v", ch, s)
		}
	}
	for i := 1; i <= 3; i++ {
		publish(t, be, "chat:sse", fmt.Sprintf(`{"n":%d}`, i))
	}
	publish(t, be, "user:u1", `{"p":1}`)
	for i := 1; i <= 3; i++ {
		if p := c.nextPub("chat:sse"); p.Offset != uint64(i) || jsonData(t, p) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("pub %d: %v", i, p)
		}
	}
	c.nextPub("user:u1")
	if c.lastID == "" {
		t.Fatal("no event id")
	}
	for _, ev := range c.events {
		if p := ev.frame.GetPub(); p != nil && !ev.hasID {
			t.Fatalf("publication event without an id: %+v", ev)
		}
	}
	last := c.lastID
	c.close()
	eventually(t, "the first stream gone", func() bool { return n.Bridge().Stats().Connections == 0 })

	// Missed while away: 4..6 on chat:sse, one on the personal channel.
	for i := 4; i <= 6; i++ {
		publish(t, be, "chat:sse", fmt.Sprintf(`{"n":%d}`, i))
	}
	publish(t, be, "user:u1", `{"p":2}`)
	c2 := openSSE(t, httpBase(n), q, last)
	c2.connected()
	if s := c2.subscribedPush("chat:sse"); !s.Recovered {
		t.Fatalf("chat:sse not recovered: %v", s)
	}
	if s := c2.subscribedPush("user:u1"); !s.Recovered {
		t.Fatalf("personal channel not recovered: %v", s)
	}
	for i := 4; i <= 6; i++ {
		if p := c2.nextPub("chat:sse"); p.Offset != uint64(i) {
			t.Fatalf("replay: offset %d, want %d", p.Offset, i)
		}
	}
	if p := c2.nextPub("user:u1"); jsonData(t, p) != `{"p":2}` {
		t.Fatalf("personal replay: %v", p)
	}
	publish(t, be, "chat:sse", `{"n":7}`)
	if p := c2.nextPub("chat:sse"); p.Offset != 7 {
		t.Fatalf("live after the replay: %v", p)
	}
	// Every publication once: nothing before 4 was replayed.
	for _, fr := range c2.buf {
		if p := fr.GetPub(); p != nil {
			t.Fatalf("unexpected publication %v", p)
		}
	}

	// The id of another stream (other channels) resumes nothing.
	q3 := url.Values{"token": {token(t, "u1", time.Hour, nil)}, "channel": {"chat:sse"}}
	c3 := openSSE(t, httpBase(n), q3, last)
	c3.connected()
	if s := c3.subscribedPush("chat:sse"); s.Recovered {
		t.Fatalf("resumed with another stream's id: %v", s)
	}
}

// TestSSECommands: a session on SSE subscribes, publishes, reads history
// and presence and unsubscribes through POST /command with its session
// token; replies come on the stream with the requests' ids. A POST without
// the right token, with a body in the wrong format, or too large, is
// refused with an HTTP status and disturbs nothing.
func TestSSECommands(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.MaxFrame = 2048
	n := startNode(t, cfg, node.Serve)
	be := backend(t, n, "")
	c := openSSE(t, httpBase(n), url.Values{"token": {token(t, "u2", time.Hour, nil)}}, "")
	c.connected()
	c.subscribedPush("user:u2")
	if r := c.request(subscribeFrame("chat:cmd", nil)); r.GetSubscribe() == nil {
		t.Fatalf("subscribe: %v", r)
	}
	r := c.request(publishFrame("chat:cmd", structpb.NewStringValue("from-sse")))
	if r.GetPublish().GetPosition().GetOffset() != 1 {
		t.Fatalf("publish: %v", r)
	}
	if p := c.nextPub("chat:cmd"); jsonData(t, p) != `"from-sse"` || p.GetPublisher().GetUser() != "u2" {
		t.Fatalf("own publication: %v", p)
	}
	h := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: "chat:cmd", Limit: 10}}})
	if len(h.GetHistory().GetPublications()) != 1 {
		t.Fatalf("history: %v", h)
	}
	eventually(t, "presence", func() bool {
		r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Presence{Presence: &heraldv1.PresenceFrame{Channel: "chat:cmd"}}})
		return len(r.GetPresence().GetClients()) == 1
	})
	// Several frames in one POST are handled in order.
	c.command(c.base, &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}},
		&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribeFrame{Channel: "chat:cmd"}}})
	c.waitFor("pong", func(f *heraldv1.ServerFrame) bool { return f.GetPong() != nil })
	c.waitFor("unsubscribe", func(f *heraldv1.ServerFrame) bool { return f.GetUnsubscribe() != nil })
	publish(t, be, "chat:cmd", `"after unsubscribe"`)

	post := func(auth, ct, body string) int {
		req, _ := http.NewRequest("POST", httpBase(n)+"/command", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ping := `{"id":99,"ping":{}}`
	for _, tc := range []struct {
		name, auth, ct, body string
		want                 int
	}{
		{"no token", "", "application/json", ping, 401},
		{"wrong secret", "Bearer " + c.connectedClient() + ".bogus", "application/json", ping, 401},
		{"protobuf for a JSON session", "Bearer " + c.token, "application/x-protobuf", "\x02\x08\x01", 415},
		{"too large", "Bearer " + c.token, "application/json", strings.Repeat(" ", 3000), 413},
		{"not UTF-8", "Bearer " + c.token, "application/json", "\xff", 400},
		{"empty", "Bearer " + c.token, "application/json", "", 400},
	} {
		if got := post(tc.auth, tc.ct, tc.body); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// Nothing of the above reached the session; it still works, and the
	// unsubscribed channel's publication did not come.
	if r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}); r.GetPong() == nil {
		t.Fatalf("ping after bad POSTs: %v", r)
	}
	for _, fr := range c.buf {
		if fr.GetPub() != nil || fr.Id == 99 {
			t.Fatalf("unexpected frame %v", fr)
		}
	}
}

func (c *streamClient) connectedClient() string {
	id, _, _ := strings.Cut(c.token, ".")
	return id
}

// TestHTTPStream: a fetch-style stream in both formats. The body's connect
// and subscribe are answered with their ids; publications follow as NDJSON
// lines or length-prefixed protobuf frames; commands work as on SSE. A
// body that does not begin with connect, or with a bad token, ends the
// stream with the WebSocket's close codes.
func TestHTTPStream(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprint("binary=", binary), func(t *testing.T) {
			user := fmt.Sprintf("hs-%v", binary)
			ch := "chat:hs-" + user
			c := openStream(t, httpBase(n), binary, connectFrame(token(t, user, time.Hour, nil)), subscribeFrame(ch, nil))
			cf := c.waitFor("connect reply", func(f *heraldv1.ServerFrame) bool { return f.Id == 1 }).GetConnect()
			if cf.GetUser() != user || cf.SessionToken == "" {
				t.Fatalf("connect: %v", cf)
			}
			c.token = cf.SessionToken
			if r := c.waitFor("subscribe reply", func(f *heraldv1.ServerFrame) bool { return f.Id == 2 }); r.GetSubscribe() == nil {
				t.Fatalf("subscribe: %v", r)
			}
			for i := 1; i <= 3; i++ {
				publish(t, be, ch, fmt.Sprint(i))
			}
			for i := 1; i <= 3; i++ {
				if p := c.nextPub(ch); p.Offset != uint64(i) || jsonData(t, p) != fmt.Sprint(i) {
					t.Fatalf("pub %d: %v", i, p)
				}
			}
			if r := c.request(publishFrame(ch, structpb.NewBoolValue(true))); r.GetPublish() == nil {
				t.Fatalf("publish: %v", r)
			}
			if p := c.nextPub(ch); jsonData(t, p) != "true" {
				t.Fatalf("own publication: %v", p)
			}
		})
	}
	t.Run("no connect", func(t *testing.T) {
		c := openStream(t, httpBase(n), false, subscribeFrame("chat:x", nil))
		c.expectEnd(4000)
	})
	t.Run("bad token", func(t *testing.T) {
		c := openStream(t, httpBase(n), true, connectFrame("not.a.jwt"))
		c.expectEnd(4001)
	})
}

// TestSSEHeartbeat: an idle SSE stream gets a comment line each
// ping_interval (and stays open: no pong is expected).
func TestSSEHeartbeat(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.PingInterval = config.Duration(100 * time.Millisecond)
	n := startNode(t, cfg, node.Serve)
	c := openSSE(t, httpBase(n), url.Values{"token": {token(t, "hb", time.Hour, nil)}}, "")
	c.connected()
	for c.comments < 5 {
		if !c.read(2*time.Second) && c.err != nil {
			t.Fatalf("stream ended after %d heartbeats: %v", c.comments, c.err)
		}
	}
}

// TestSSEDrain: a bridge shutting down ends each SSE stream with the
// `disconnect` frame (4006, reconnect, a jittered delay) as its last event,
// which sets `retry:` to that delay so that the browser's own reconnect
// waits as told.
func TestSSEDrain(t *testing.T) {
	n := startNodeNoCleanup(t, testConfig(), node.Serve)
	c := openSSE(t, httpBase(n), url.Values{"token": {token(t, "drain", time.Hour, nil)}, "channel": {"chat:drain"}}, "")
	c.connected()
	c.subscribedPush("chat:drain")
	go func() { _ = n.Shutdown(ctx(t)) }()
	d := c.expectEnd(4006)
	if !d.Reconnect || d.ReconnectDelayMs == 0 {
		t.Fatalf("disconnect: %v", d)
	}
	ev := c.events[len(c.events)-1]
	if ev.frame.GetDisconnect() == nil || ev.retry != int(max(d.ReconnectDelayMs, 500)) {
		t.Fatalf("last event %+v, want the disconnect with retry %d", ev, d.ReconnectDelayMs)
	}
}

// TestSSESlowReader: an SSE client that stops reading is cut off as a slow
// consumer (4004), its stream ends and its session is released, while
// another SSE client on the same channel receives every publication in
// order, at its own pace.
func TestSSESlowReader(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.QueueFrames = 64
	cfg.Bridge.QueueBytes = 64 << 10
	n := startNode(t, cfg, node.Serve)
	be := backend(t, n, "")
	const ch = "chat:slow-sse"
	// The slow reader: a raw connection that reads its headers and the
	// first events, then nothing.
	nc, br := rawSSE(t, n, "slow", ch)
	fast := openSSE(t, httpBase(n), url.Values{"token": {token(t, "fast", time.Hour, nil)}, "channel": {ch}}, "")
	fast.subscribedPush(ch)

	var fastGot atomic.Uint64
	done := make(chan error, 1)
	var target atomic.Uint64
	target.Store(1 << 62)
	go func() {
		var got uint64
		// It checks the target at least every 100ms: the last
		// publication may be the last frame that comes.
		for idle := time.Now(); got < target.Load(); {
			if !fast.read(100 * time.Millisecond) {
				if fast.err != nil || time.Since(idle) > 10*time.Second {
					done <- fmt.Errorf("fast reader after %d: %v", got, fast.err)
					return
				}
				continue
			}
			idle = time.Now()
			for _, fr := range fast.buf {
				if d := fr.GetDisconnect(); d != nil {
					done <- fmt.Errorf("fast reader disconnected after %d: %d %q", got, d.Code, d.Reason)
					return
				}
				if p := fr.GetPub(); p != nil {
					got++
					if p.Offset != got {
						done <- fmt.Errorf("fast reader: offset %d, want %d", p.Offset, got)
						return
					}
					fastGot.Store(got)
				}
			}
			fast.buf = fast.buf[:0]
		}
		done <- nil
	}()
	// The publisher keeps within 8 publications (32 KB, half of
	// queue_bytes) of the fast reader, before the cut and after it, so
	// that the fast session never has more than 9 of them queued however
	// late its writer runs: the test is about the reader that does not
	// read at all. Unpaced, publications reach the bridge in bursts (its
	// upstream stream hands over at once what the core sent while it
	// waited for a CPU), and 16 of 4 KB queued before the writer takes
	// them are over queue_bytes: a busy machine cut the fast reader too.
	var last uint64
	pace := func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); last > fastGot.Load()+8; time.Sleep(time.Millisecond) {
			select {
			case err := <-done:
				t.Fatalf("%v (bridge: %+v)", err, n.Bridge().Stats())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the fast reader is at %d of %d after 10s", fastGot.Load(), last)
			}
		}
	}
	payload := `"` + strings.Repeat("x", 4000) + `"`
	for i := 0; i < 20000 && n.Bridge().Stats().SlowConsumers == 0; i++ {
		last = publish(t, be, ch, payload).Offset
		pace()
	}
	if s := n.Bridge().Stats().SlowConsumers; s != 1 {
		t.Fatalf("slow consumers: %d", s)
	}
	// The slow reader reads again, to the end of its stream: the 4004
	// disconnect as its last event when the bridge's stuck write went
	// through before closeGrace (it does, since the reader drains its
	// socket now), or the connection's end if it was cut.
	type tail struct {
		last string // the last data line
		err  error
	}
	slowEnd := make(chan tail, 1)
	go func() {
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		var data string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				_ = nc.Close() // as a browser does at the end of a response
				slowEnd <- tail{data, err}
				return
			}
			if strings.HasPrefix(line, "data: ") {
				data = line
			}
		}
	}()
	for i := 0; i < 50; i++ {
		last = publish(t, be, ch, payload).Offset
		pace()
	}
	target.Store(last)
	if err := <-done; err != nil {
		t.Fatalf("%v (bridge: %+v)", err, n.Bridge().Stats())
	}
	if s := n.Bridge().Stats().SlowConsumers; s != 1 {
		t.Fatalf("slow consumers: %d, want 1 (the fast reader kept up)", s)
	}
	end := <-slowEnd
	if ne, ok := end.err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the slow reader's stream did not end within 30s: %v", end.err)
	}
	if s := strings.ReplaceAll(end.last, " ", ""); strings.Contains(s, `"disconnect"`) && !strings.Contains(s, `"code":4004`) {
		t.Fatalf("slow reader's last event: %.300s", s)
	}
	// Its session is released: only the fast reader's remains.
	_ = nc.Close()
	eventually(t, "the slow reader's session to end", func() bool { return n.Bridge().Stats().Connections == 1 })
}

// TestCommandsForwarded: behind a load balancer a command POST may reach
// a bridge that does not hold the session. Two bridges on one core, and
// two nodes (each core and bridge) on one Redis: the SSE stream is on
// bridge A, its commands go to bridge B, which forwards them through its
// core (and the engine, to A's core); the replies come on A's stream.
func TestCommandsForwarded(t *testing.T) {
	t.Run("two bridges on one core", func(t *testing.T) {
		const key = "core-api-key-0123456789"
		coreCfg := testConfig()
		coreCfg.APIKeys = []config.APIKey{{Name: "bridge", Key: key}}
		core := startNode(t, coreCfg, node.Core)
		bridgeCfg := testConfig()
		bridgeCfg.Bridge.Core = core.GRPCAddr.String()
		bridgeCfg.Bridge.CoreAPIKey = key
		a := startNode(t, bridgeCfg, node.BridgeOnly)
		b := startNode(t, bridgeCfg, node.BridgeOnly)
		testCommandsForwarded(t, a, b, backend(t, core, key))
	})
	t.Run("two nodes on one Redis", func(t *testing.T) {
		r := redistest.Start(t)
		cfg := testConfig()
		cfg.Engine = "redis"
		cfg.Redis.Addrs = []string{r.Addr}
		cfg.Redis.Prefix = fmt.Sprintf("fw%d", time.Now().UnixNano())
		a := startNode(t, cfg, node.Serve)
		b := startNode(t, cfg, node.Serve)
		testCommandsForwarded(t, a, b, backend(t, b, ""))
	})
}

func testCommandsForwarded(t *testing.T, a, b *node.Node, be heraldv1.HeraldServiceClient) {

	c := openSSE(t, httpBase(a), url.Values{"token": {token(t, "fw", time.Hour, nil)}}, "")
	c.connected()
	c.subscribedPush("user:fw")
	// B learns of nothing until its control stream is up; retry the first
	// request until its reply arrives.
	eventually(t, "bridge B's control stream", func() bool {
		fr := &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}
		if code := c.command(httpBase(b), fr); code != http.StatusAccepted {
			t.Fatalf("POST to bridge B: %d", code)
		}
		id := fr.Id
		for c.read(200 * time.Millisecond) {
		}
		for _, f := range c.buf {
			if f.Id == id && f.GetPong() != nil {
				return true
			}
		}
		return false
	})
	if r := c.requestVia(httpBase(b), subscribeFrame("chat:fw", nil)); r.GetSubscribe() == nil {
		t.Fatalf("subscribe through bridge B: %v", r)
	}
	publish(t, be, "chat:fw", `"x"`)
	if p := c.nextPub("chat:fw"); jsonData(t, p) != `"x"` {
		t.Fatalf("pub: %v", p)
	}
	// A wrong token forwarded through B is refused by A: no reply.
	bad := &streamClient{t: t, token: c.connectedClient() + ".wrong-secret"}
	if code := bad.command(httpBase(b), &heraldv1.ClientFrame{Id: 77, Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}); code != http.StatusAccepted {
		t.Fatalf("forwarded POST: %d", code)
	}
	if r := c.requestVia(httpBase(b), &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}); r.GetPong() == nil {
		t.Fatal(r)
	}
	for _, f := range c.buf {
		if f.Id == 77 {
			t.Fatalf("a command with a wrong token was handled: %v", f)
		}
	}
}

// TestTransportMetrics: each HTTP transport has its own metric families
// (herald_sse_*, herald_http_stream_*, by subprotocol): an open stream
// counts in its connections and its subscriptions gauges, frames written
// to it in frames_sent_total, and both gauges come back down when the
// browser goes away; the WebSocket's families do not move.
func TestTransportMetrics(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	m := func(name, sp string) float64 {
		return max(0, hookMetric(t, name, map[string]string{"subprotocol": sp}))
	}
	for _, tc := range []struct {
		prefix, sp string
		open       func() *streamClient
	}{
		{"herald_sse_", "herald.json", func() *streamClient {
			return openSSE(t, httpBase(n), url.Values{"token": {token(t, "m1", time.Hour, nil)}, "channel": {"chat:metrics"}}, "")
		}},
		{"herald_http_stream_", "herald.proto", func() *streamClient {
			return openStream(t, httpBase(n), true,
				&heraldv1.ClientFrame{Id: 1, Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: token(t, "m2", time.Hour, nil)}}},
				&heraldv1.ClientFrame{Id: 2, Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: "chat:metrics"}}})
		}},
	} {
		conns, subs, frames := m(tc.prefix+"connections", tc.sp), m(tc.prefix+"subscriptions", tc.sp), m(tc.prefix+"frames_sent_total", tc.sp)
		ws := m("herald_ws_connections", tc.sp)
		c := tc.open()
		c.connected()
		c.waitFor("subscribed to chat:metrics", func(f *heraldv1.ServerFrame) bool {
			return f.GetSubscribed().GetChannel() == "chat:metrics" || f.GetSubscribe().GetChannel() == "chat:metrics"
		})
		if got := m(tc.prefix+"connections", tc.sp) - conns; got != 1 {
			t.Errorf("%sconnections{%s} rose by %v with one stream open", tc.prefix, tc.sp, got)
		}
		if got := m(tc.prefix+"subscriptions", tc.sp) - subs; got != 2 { // chat:metrics and the personal channel
			t.Errorf("%ssubscriptions{%s} rose by %v, want 2 (a channel and the personal one)", tc.prefix, tc.sp, got)
		}
		if got := m(tc.prefix+"frames_sent_total", tc.sp) - frames; got < 2 {
			t.Errorf("%sframes_sent_total{%s} rose by %v after a connect and subscribes", tc.prefix, tc.sp, got)
		}
		if got := m("herald_ws_connections", tc.sp); got != ws {
			t.Errorf("herald_ws_connections{%s} moved (%v → %v) for an HTTP stream", tc.sp, ws, got)
		}
		c.close()
		deadline := time.Now().Add(10 * time.Second)
		for m(tc.prefix+"connections", tc.sp) != conns || m(tc.prefix+"subscriptions", tc.sp) != subs {
			if time.Now().After(deadline) {
				t.Fatalf("%s gauges %v, %v after the stream closed, want %v, %v", tc.prefix, m(tc.prefix+"connections", tc.sp), m(tc.prefix+"subscriptions", tc.sp), conns, subs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestSlowBodiesRefused: a POST to /stream or /command that announces a
// body and does not send it is answered 408 and closed once BodyTimeout
// (10 s) has passed, before any token is checked (it used to hold its
// connection for as long as the client liked). An HTTP stream opened
// normally outlives that timeout: the deadline is lifted once the connect
// frame is read, so a publication 11 s later still arrives.
func TestSlowBodiesRefused(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	for _, path := range []string{"/stream", "/command"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			nc, err := net.Dial("tcp", n.HTTPAddr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer a.b\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", path, n.HTTPAddr)
			_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatalf("no answer to a body that never came: %v", err)
			}
			if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
				t.Fatalf("answer %d (close %v), want 408 and the connection closed", resp.StatusCode, resp.Close)
			}
		})
	}
	// Over HTTP/1.1 the stream's connection is hijacked; over HTTP/2
	// (TLS) it stays the server's, whose reads the deadline would cut.
	f := tlstest.NewFiles(t)
	tcfg := testConfig()
	tcfg.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key}
	tn := startNode(t, tcfg, node.Serve)
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: f.ClientTLS(t, false), ForceAttemptHTTP2: true}}
	for _, tc := range []struct {
		name string
		hc   *http.Client
		base string
		want int
	}{
		{"stream outlives the body timeout/http1", http.DefaultClient, httpBase(n), 1},
		{"stream outlives the body timeout/http2", h2, "https://" + tn.HTTPAddr.String(), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const ch = "chat:long-stream"
			c := openStreamVia(t, tc.hc, tc.base, false, nil, connectFrame(token(t, "long", time.Hour, nil)), subscribeFrame(ch, nil))
			if c.resp.ProtoMajor != tc.want {
				t.Fatalf("the stream is over %s, want HTTP/%d", c.resp.Proto, tc.want)
			}
			if r := c.waitFor("subscribe reply", func(f *heraldv1.ServerFrame) bool { return f.Id == 2 }); r.GetSubscribe() == nil {
				t.Fatalf("subscribe: %v", r)
			}
			time.Sleep(wsbridge.BodyTimeout + time.Second) // the elapsed time is the condition: past the body deadline
			resp, err := tc.hc.Post(tc.base+"/v1/channels/"+ch+"/publish", "application/json", strings.NewReader(`{"data":1}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("REST publish: %s", resp.Status)
			}
			if p := c.nextPub(ch); p.Offset != 1 {
				t.Fatalf("after 11 s: %v", p)
			}
		})
	}
}
