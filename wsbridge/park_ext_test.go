//go:build linux

package wsbridge_test

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/deploytest"
	"github.com/herald-io/herald/node"
	"github.com/herald-io/herald/wsbridge"
)

// settledGoroutines waits until the goroutine count holds still for a
// moment and returns it.
func settledGoroutines() int {
	g := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		if h := runtime.NumGoroutine(); h != g {
			g = h
			continue
		}
		break
	}
	return g
}

// TestIdleConnectionsParked checks that a connected, idle WebSocket holds
// no goroutine (its socket is parked in the bridge's poller), and that a
// parked connection still does everything: receives publications, wakes
// for what the client sends (requests, pongs, a close), again and again,
// and is cleaned up when either side ends it. It runs on plain sockets and
// in the production shape (TLS terminated by Herald, API keys, JWTs),
// where crypto/tls may hold frames the socket's readiness does not show.
func TestIdleConnectionsParked(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		n := startNode(t, testConfig(), node.Serve)
		be := backend(t, n, "")
		parkedScenario(t, be, n.Bridge().Stats, func(i int, subprotocol string) *client {
			return connect(t, n, subprotocol, token(t, fmt.Sprintf("p%d", i), time.Minute, nil))
		})
	})
	t.Run("production", func(t *testing.T) {
		d := deploytest.Start(t, deploytest.Shape{Production: true}, nil)
		parkedScenario(t, d.Backend(t), d.Bridge.Bridge().Stats, func(i int, subprotocol string) *client {
			ws := d.DialWS(t, subprotocol)
			c := &client{t: t, ws: ws, proto: ws.Subprotocol() == "herald.proto"}
			if r := c.request(connectFrame(d.Token(t, fmt.Sprintf("p%d", i), nil))); r.GetConnect() == nil {
				t.Fatalf("connect: %v", r)
			}
			return c
		})
	})
}

// parkedScenario runs TestIdleConnectionsParked with users p0, p1… that
// dial connects.
func parkedScenario(t *testing.T, be heraldv1.HeraldServiceClient, stats func() wsbridge.Stats, dial func(i int, subprotocol string) *client) {
	warm := dial(-1, "")
	warm.subscribe("chat:park", nil)
	publish(t, be, "chat:park", `0`)
	warm.nextPub("chat:park")

	before := settledGoroutines()
	const conns = 100
	cs := make([]*client, conns)
	for i := range cs {
		cs[i] = dial(i, []string{"", "herald.proto"}[i%2])
		cs[i].subscribe("chat:park", nil)
	}
	if per := float64(settledGoroutines()-before) / conns; per > 0.2 {
		t.Fatalf("%.2f goroutines per idle connection; want none (parked)", per)
	}

	for round := 1; round <= 3; round++ {
		// Deliveries to parked connections.
		publish(t, be, "chat:park", fmt.Sprintf(`{"round":%d}`, round))
		for i, c := range cs {
			if p := c.nextPub("chat:park"); p.Offset != uint64(round+1) {
				t.Fatalf("round %d, client %d: offset %d, want %d", round, i, p.Offset, round+1)
			}
		}
		// Each wakes for a request (two frames in one message, then one
		// frame split in two WebSocket fragments) and parks again.
		for i, c := range cs {
			a := &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}
			h := &heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: "chat:park"}}}
			c.send(a, h)
			c.waitFor("pong", func(f *heraldv1.ServerFrame) bool { return f.Id == a.Id && f.GetPong() != nil })
			if r := c.waitFor("history", func(f *heraldv1.ServerFrame) bool { return f.Id == h.Id }); len(r.GetHistory().GetPublications()) != round+1 {
				t.Fatalf("round %d, client %d: history %v", round, i, r)
			}
			// One frame whose bytes come in three writes, apart: the
			// reader wakes for one byte of the header, then waits for
			// the rest.
			fr := &heraldv1.ClientFrame{Id: uint32(1000 + round), Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}
			raw := maskedFrame(c, c.encode(fr))
			for _, part := range [][]byte{raw[:1], raw[1:4], raw[4:]} {
				if _, err := c.ws.NetConn().Write(part); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			c.waitFor("pong", func(f *heraldv1.ServerFrame) bool { return f.Id == fr.Id && f.GetPong() != nil })
			// Five messages in one write (under TLS, one record: the
			// reader must read the four left in crypto/tls before it
			// parks).
			var five []byte
			for k := range 5 {
				five = append(five, maskedFrame(c, c.encode(&heraldv1.ClientFrame{Id: uint32(2000 + 10*round + k), Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}))...)
			}
			if _, err := c.ws.NetConn().Write(five); err != nil {
				t.Fatal(err)
			}
			for k := range 5 {
				id := uint32(2000 + 10*round + k)
				c.waitFor("pong", func(f *heraldv1.ServerFrame) bool { return f.Id == id && f.GetPong() != nil })
			}
		}
		if per := float64(settledGoroutines()-before) / conns; per > 0.2 {
			t.Fatalf("round %d: %.2f goroutines per idle connection after requests", round, per)
		}
	}

	// The client ends half of them: each is noticed and cleaned up.
	conns0 := stats().Connections
	for _, c := range cs[:conns/2] {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
		c.expectClose(websocket.CloseNormalClosure)
	}
	eventually(t, "closed connections cleaned up", func() bool { return stats().Connections == conns0-conns/2 })

	// The bridge ends the other half while they are parked.
	for i := conns / 2; i < conns; i++ {
		if _, err := be.Disconnect(ctx(t), &heraldv1.DisconnectRequest{User: fmt.Sprintf("p%d", i), Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs[conns/2:] {
		c.expectClose(4005)
	}
	eventually(t, "cut connections cleaned up", func() bool { return stats().Connections == conns0-conns })
	if g := settledGoroutines(); g > before+5 {
		t.Fatalf("goroutines %d after every connection ended; %d before", g, before)
	}
}

// maskedFrame is one final client frame carrying msg, masked (RFC 6455
// 5.3), in c's message type.
func maskedFrame(c *client, msg []byte) []byte {
	op := byte(websocket.TextMessage)
	if c.proto {
		op = websocket.BinaryMessage
	}
	if len(msg) > 125 {
		panic("maskedFrame: long frames not needed here")
	}
	key := [4]byte{byte(rand.Uint32()), byte(rand.Uint32()), byte(rand.Uint32()), byte(rand.Uint32())}
	out := append([]byte{0x80 | op, 0x80 | byte(len(msg))}, key[:]...)
	for i, b := range msg {
		out = append(out, b^key[i%4])
	}
	return out
}

// TestIdleStreamsParked checks SSE and HTTP streams whose readers park
// (TestIdleReaderStack counts their goroutines): publications reach them,
// a client that goes is noticed and cleaned up, and the backend's
// disconnect ends a parked stream with its disconnect frame.
func TestIdleStreamsParked(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	const ch = "chat:park-streams"
	base := n.Bridge().Stats().Connections
	var cs []*streamClient
	for i := range 20 {
		user := fmt.Sprintf("s%d", i)
		var c *streamClient
		switch i % 3 {
		case 0:
			c = openSSE(t, httpBase(n), url.Values{"token": {token(t, user, time.Hour, nil)}, "channel": {ch}}, "")
			c.waitFor("subscribed", func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed().GetChannel() == ch })
		default:
			c = openStream(t, httpBase(n), i%3 == 2, connectFrame(token(t, user, time.Hour, nil)), subscribeFrame(ch, nil))
			c.waitFor("subscribe reply", func(f *heraldv1.ServerFrame) bool { return f.Id == 2 })
		}
		cs = append(cs, c)
	}
	// A stream's reader parks as soon as the stream is hijacked (its
	// client sends nothing more; TestIdleReaderStack counts that): these
	// deliveries go to parked streams.
	for round := 1; round <= 3; round++ {
		publish(t, be, ch, fmt.Sprint(round))
		for i, c := range cs {
			if p := c.nextPub(ch); p.Offset != uint64(round) {
				t.Fatalf("round %d, stream %d: offset %d", round, i, p.Offset)
			}
		}
	}
	if got := n.Bridge().Stats().Connections; got != base+20 {
		t.Fatalf("connections %d, want %d", got, base+20)
	}
	for _, c := range cs[:10] {
		c.close()
	}
	eventually(t, "streams the clients closed cleaned up", func() bool { return n.Bridge().Stats().Connections == base+10 })
	for i := 10; i < 20; i++ {
		if _, err := be.Disconnect(ctx(t), &heraldv1.DisconnectRequest{User: fmt.Sprintf("s%d", i), Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs[10:] {
		c.expectEnd(4005)
	}
	eventually(t, "disconnected streams cleaned up", func() bool { return n.Bridge().Stats().Connections == base })
}

// TestParkedConnectionsCut checks that a parked connection whose client
// never answers the bridge's close (it reads nothing more) is still cleaned
// up: closeGrace after the disconnect the socket is cut, and cut must
// start a reader for the parked connection to end it.
func TestParkedConnectionsCut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for closeGrace (5 s)")
	}
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	// A first connection that parks starts the poller.
	warm := connect(t, n, "", token(t, "warm", time.Hour, nil))
	warm.subscribe("chat:cut", nil)
	before := settledGoroutines()
	base := n.Bridge().Stats().Connections
	// A WebSocket that reads nothing after its connect reply.
	ws := connect(t, n, "", token(t, "mute-ws", time.Hour, nil))
	// An SSE stream on a raw socket that reads nothing after subscribed.
	rawSSE(t, n, "mute-sse", "chat:cut")
	if got := n.Bridge().Stats().Connections; got != base+2 {
		t.Fatalf("connections %d, want %d", got, base+2)
	}
	eventually(t, "both readers parked", func() bool { return runtime.NumGoroutine() <= before })
	for _, u := range []string{"mute-ws", "mute-sse"} {
		if _, err := be.Disconnect(ctx(t), &heraldv1.DisconnectRequest{User: u, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both cut and cleaned up after closeGrace", func() bool { return n.Bridge().Stats().Connections == base })
	_ = ws
}
