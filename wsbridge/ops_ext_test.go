package wsbridge_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/protobuf/types/known/structpb"
)

// dialFrom opens a WebSocket from a given loopback source address
// (127.0.0.2 is another "IP" on Linux's loopback).
func dialFrom(n *node.Node, src string) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if src != "" {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		d.NetDialContext = nd.DialContext
	}
	return d.Dial(wsURL(n), nil)
}

// liveness subscribes a client to channel and returns a check that a new
// publication reaches it: the "other clients are unaffected" half of each
// limit test.
func liveness(t *testing.T, n *node.Node, be heraldv1.HeraldServiceClient, user, channel string) func() {
	c := connect(t, n, "", token(t, user, time.Minute, nil))
	last := c.subscribe(channel, nil).GetSubscribe().GetPosition().GetOffset()
	return func() {
		t.Helper()
		pos := publish(t, be, channel, `"still here"`)
		for last < pos.Offset { // every publication since the last check, in order
			p := c.nextPub(channel)
			if p.Offset != last+1 {
				t.Fatalf("bystander got offset %d after %d", p.Offset, last)
			}
			last = p.Offset
		}
	}
}

func TestMaxConnections(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.MaxConnections = 3
	n := startNode(t, cfg, node.Serve)
	be := backend(t, n, "")
	check := liveness(t, n, be, "bystander", "chat:full")
	connect(t, n, "", token(t, "a", time.Minute, nil))
	connect(t, n, "", token(t, "b", time.Minute, nil))
	_, resp, err := dialFrom(n, "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th connection: err %v, response %v; want 503 with Retry-After", err, resp)
	}
	check()
}

func TestMaxConnsPerIP(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.MaxConnsPerIP = 2
	n := startNode(t, cfg, node.Serve)
	be := backend(t, n, "")
	check := liveness(t, n, be, "bystander", "chat:ip") // from 127.0.0.1
	ws, _, err := dialFrom(n, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, resp, err := dialFrom(n, "127.0.0.1")
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("3rd connection from 127.0.0.1: err %v, response %v; want 429 with Retry-After", err, resp)
	}
	other, _, err := dialFrom(n, "127.0.0.2")
	if err != nil {
		t.Fatalf("another address is refused: %v", err)
	}
	_ = other.Close()
	check()
	// A closed connection gives its slot back.
	_ = ws.Close()
	eventually(t, "slot released", func() bool {
		c, _, err := dialFrom(n, "127.0.0.1")
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

func TestUserPublishRate(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.UserPublishRate = 2 // burst 4
	n := startNode(t, cfg, node.Serve)
	noisy := connect(t, n, "", token(t, "noisy", time.Minute, nil))
	// A second tab of the same user shares the bucket.
	noisy2 := connect(t, n, "herald.proto", token(t, "noisy", time.Minute, nil))
	quiet := connect(t, n, "", token(t, "quiet", time.Minute, nil))
	pub := func(c *client) *heraldv1.ServerFrame {
		return c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Publish{Publish: &heraldv1.PublishFrame{
			Channel: "chat:rate", Payload: &heraldv1.PublishFrame_Data{Data: structpb.NewNumberValue(1)}}}})
	}
	limited := 0
	for i := 0; i < 10; i++ {
		c := noisy
		if i%2 == 1 {
			c = noisy2
		}
		r := pub(c)
		if e := r.GetError(); e != nil {
			if e.Code != 108 || !e.Temporary {
				t.Fatalf("error %v, want 108 temporary", e)
			}
			limited++
		}
	}
	if limited < 5 {
		t.Fatalf("%d of 10 publishes limited; want at least 5 (rate 2/s, burst 4)", limited)
	}
	if r := pub(quiet); r.GetPublish() == nil {
		t.Fatalf("another user is limited: %v", r)
	}
}

// TestConnectionFlood opens connections as fast as it can (2000 attempts,
// 32 at a time) against an accept rate of 200/s and a cap of 300
// connections: the limits hold, a subscribed bystander keeps receiving, and
// goroutines return to their baseline afterwards.
func TestConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood")
	}
	cfg := testConfig()
	cfg.Bridge.AcceptRate, cfg.Bridge.AcceptBurst = 200, 200
	cfg.Bridge.MaxConnections = 300
	n := startNode(t, cfg, node.Serve)
	be := backend(t, n, "")
	check := liveness(t, n, be, "bystander", "chat:flood")
	check()
	time.Sleep(50 * time.Millisecond) // baseline noise settles; not a condition
	base := runtime.NumGoroutine()

	var ok, refused, other atomic.Int64
	var mu sync.Mutex
	var open []*websocket.Conn
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan struct{})
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				ws, resp, err := dialFrom(n, "")
				switch {
				case err == nil:
					ok.Add(1)
					mu.Lock()
					open = append(open, ws)
					mu.Unlock()
				case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
					refused.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	stopPub := make(chan struct{})
	pubDone := make(chan int)
	go func() { // the bystander's channel keeps flowing during the flood
		k := 0
		for {
			select {
			case <-stopPub:
				pubDone <- k
				return
			case <-time.After(20 * time.Millisecond):
				publish(t, be, "chat:flood", `1`)
				k++
			}
		}
	}()
	for i := 0; i < 2000 && time.Since(start) < 10*time.Second; i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	close(stopPub)
	sent := <-pubDone
	elapsed := time.Since(start)
	t.Logf("%d attempts in %v: %d accepted, %d refused (503), %d other", ok.Load()+refused.Load()+other.Load(), elapsed, ok.Load(), refused.Load(), other.Load())
	if other.Load() != 0 {
		t.Fatalf("%d attempts failed otherwise than with 503", other.Load())
	}
	// Burst 200 plus 200/s: the accepted count is bounded by the limiter.
	if max := int64(200 + 200*elapsed.Seconds() + 50); ok.Load() > max || ok.Load() > 300 {
		t.Fatalf("%d accepted in %v; the limits allow at most %d (and 300)", ok.Load(), elapsed, max)
	}
	if refused.Load() == 0 {
		t.Fatal("nothing was refused")
	}
	// The bystander got every publication of the flood, then a new one.
	check()
	t.Logf("bystander received %d publications during the flood", sent)
	for _, ws := range open {
		_ = ws.Close()
	}
	eventually(t, "flood connections gone", func() bool { return n.Bridge().Stats().Connections <= 1 })
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+5 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, baseline %d", runtime.NumGoroutine(), base)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGarbageClients sends random bytes, invalid JSON, oversized messages
// and a non-WebSocket request: each offender is answered or closed, the
// node stays up, and a bystander keeps receiving. (A client that never
// reads is TestSlowConsumer.)
func TestGarbageClients(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.MaxFrame = 4096
	n := startNode(t, cfg, node.Serve)
	be := backend(t, n, "")
	check := liveness(t, n, be, "bystander", "chat:garbage")
	random := func(k int) []byte {
		b := make([]byte, k)
		_, _ = rand.Read(b)
		return b
	}
	for _, sub := range []string{"", "herald.proto"} {
		for i, msg := range [][]byte{random(64), random(3000), []byte(`{"id":1,"connect":`), []byte(`{{{{`), bytes.Repeat([]byte{0xff}, 100)} {
			c, _, err := dial(t, n, sub, nil)
			if err != nil {
				t.Fatal(err)
			}
			mt := websocket.TextMessage
			if sub != "" || i == 0 || i == 1 {
				mt = websocket.BinaryMessage
			}
			// RFC 6455: a binary message on herald.json is unsupported
			// data (1003), a text message that is not UTF-8 invalid
			// payload data (1007); garbage of the right type is a
			// protocol violation (4000) or a failed connect (4001).
			want := []int{4000, 4001}
			switch {
			case sub == "" && mt == websocket.BinaryMessage:
				want = []int{1003}
			case mt == websocket.TextMessage && !utf8.Valid(msg):
				want = []int{1007}
			}
			_ = c.ws.WriteMessage(mt, msg)
			deadline := time.Now().Add(10 * time.Second)
			for c.read(time.Until(deadline)) {
			}
			if ce, ok := c.err.(*websocket.CloseError); !ok || !slices.Contains(want, ce.Code) {
				t.Fatalf("%q garbage %d: want close %v, got %v", sub, i, want, c.err)
			}
		}
		// An authenticated client sending garbage gets error frames
		// (garbage that is UTF-8 on herald.json: see above for the rest).
		c := connect(t, n, sub, token(t, "garbler", time.Minute, nil))
		garbage := random(200)
		if sub == "" {
			garbage = []byte(strings.ToValidUTF8(string(garbage), "?"))
		}
		c.sendRaw(garbage)
		if e := c.waitFor("error", func(f *heraldv1.ServerFrame) bool { return f.GetError() != nil }).GetError(); e.Code != 100 {
			t.Fatalf("error %v, want 100", e)
		}
		// A message over max_frame closes with 1009.
		c.sendRaw(bytes.Repeat([]byte("x"), 5000))
		c.expectClose(websocket.CloseMessageTooBig)
	}
	// Not a WebSocket at all.
	nc, err := net.Dial("tcp", n.HTTPAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = nc.Write(append([]byte("GET /ws HTTP/1.1\r\nHost: "+n.HTTPAddr.String()+"\r\n\r\n"), random(100)...))
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	k, _ := nc.Read(buf)
	_ = nc.Close()
	if !strings.HasPrefix(string(buf[:k]), "HTTP/1.1 400") {
		t.Fatalf("plain GET /ws: %q", buf[:k])
	}
	check()
}

func newCapture() (*slog.Logger, func() string) {
	var mu sync.Mutex
	var buf bytes.Buffer
	h := slog.NewTextHandler(&lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), func() string { mu.Lock(); defer mu.Unlock(); return buf.String() }
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestNoTokensInLogs runs connections with a valid, an expired, a forged
// and a malformed token through a debug logger and checks that the
// lifecycle is logged and no token (nor its signature) is.
func TestNoTokensInLogs(t *testing.T) {
	cfg := testConfig()
	cfg.APIKeys = []config.APIKey{{Name: "backend", Key: "backend-key-0123456789"}}
	log, output := newCapture()
	n, err := node.Start(context.Background(), cfg, node.Serve, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	}()
	good := token(t, "alice", time.Minute, nil)
	expired := token(t, "bob", -time.Minute, nil)
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "mallory"}).SignedString([]byte("not-the-secret"))
	malformed := "eyJhbGciOiJIUzI1NiJ9.not-a-token.sig-" + strings.Repeat("z", 20)
	c := connect(t, n, "", good)
	c.subscribe("chat:log", nil)
	_ = c.ws.Close()
	for _, tc := range []struct {
		tok  string
		code int
	}{{expired, 4002}, {forged, 4001}, {malformed, 4001}} {
		c, _, err := dial(t, n, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.send(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: tc.tok}}})
		c.expectClose(tc.code)
	}
	// A backend call with the key, and one with a wrong key.
	be := backend(t, n, "backend-key-0123456789")
	publish(t, be, "chat:log", `1`)
	_, _ = backend(t, n, "wrong-key-0123456789xyz").Info(ctx(t), &heraldv1.InfoRequest{})
	eventually(t, "connections closed", func() bool { return n.Bridge().Stats().Connections == 0 })
	out := output()
	for _, want := range []string{"connection opened", "msg=connected", "connect refused", "reason=expired_token", "reason=invalid_token", "connection closing"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	for _, secret := range []string{good, expired, forged, malformed, "backend-key-0123456789", "wrong-key-0123456789xyz", secret} {
		for _, part := range append(strings.Split(secret, "."), secret) {
			if len(part) >= 16 && strings.Contains(out, part) {
				t.Errorf("log contains a secret or token part %q", part)
			}
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}
