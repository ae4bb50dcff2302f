package service_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/service"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// h2conn speaks HTTP/2 to a gRPC server frame by frame, so that a test can
// send part of a request and see whether the server answers before the
// rest. It records each stream's grpc-status and grpc-message, or -1 for
// a reset.
type h2conn struct {
	t      *testing.T
	addr   string
	c      net.Conn
	fr     *http2.Framer
	wmu    sync.Mutex
	mu     sync.Mutex
	status map[uint32]int
	msg    map[uint32]string
	acks   int // PING acknowledgements received
	next   uint32
}

// dialH2 connects to addr from the loopback address from (127.0.0.x).
func dialH2(t *testing.T, addr, from string) *h2conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h := &h2conn{t: t, addr: addr, c: c, fr: http2.NewFramer(c, c), status: map[uint32]int{}, msg: map[uint32]string{}, next: 1}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	h.write(func() error { return h.fr.WriteSettings() })
	go h.read()
	return h
}

func (h *h2conn) write(f func() error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := f(); err != nil {
		h.t.Error(err)
	}
}

func (h *h2conn) read() {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.write(h.fr.WriteSettingsAck)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				h.write(func() error { return h.fr.WritePing(true, f.Data) })
			} else {
				h.mu.Lock()
				h.acks++
				h.mu.Unlock()
			}
		case *http2.MetaHeadersFrame:
			if code := f.PseudoValue("status"); code != "" && code != "200" {
				h.t.Errorf("stream %d: HTTP status %s", f.StreamID, code)
			}
			h.mu.Lock()
			for _, hf := range f.Fields {
				switch hf.Name {
				case "grpc-status":
					h.status[f.StreamID], _ = strconv.Atoi(hf.Value)
				case "grpc-message":
					h.msg[f.StreamID] = hf.Value
				}
			}
			h.mu.Unlock()
		case *http2.RSTStreamFrame:
			h.mu.Lock()
			if _, ok := h.status[f.StreamID]; !ok {
				h.status[f.StreamID] = -1
			}
			h.mu.Unlock()
		}
	}
}

// open starts a call of method with the given authorization (none if
// empty) and sends data, the start of its request, without ending it.
func (h *h2conn) open(method, authorization string, data []byte) uint32 {
	id := h.next
	h.next += 2
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", h.addr}, {"content-type", "application/grpc"}, {"te", "trailers"}, {"authorization", authorization}} {
		if kv[1] != "" {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
	}
	h.write(func() error {
		return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
	})
	if len(data) > 0 {
		h.write(func() error { return h.fr.WriteData(id, false, data) })
	}
	return id
}

func (h *h2conn) finish(id uint32, data []byte) {
	h.write(func() error { return h.fr.WriteData(id, true, data) })
}

func (h *h2conn) reset(id uint32) {
	h.write(func() error { return h.fr.WriteRSTStream(id, http2.ErrCodeCancel) })
}

// sync returns once the server has read everything sent before it: it
// answers a PING after the frames ahead of it (grpc-go reads a
// connection's frames in order, and runs the tap as it reads HEADERS).
func (h *h2conn) sync() {
	h.t.Helper()
	h.mu.Lock()
	want := h.acks + 1
	h.mu.Unlock()
	h.write(func() error { return h.fr.WritePing(false, [8]byte{'s', 'y', 'n', 'c'}) })
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		h.mu.Lock()
		got := h.acks
		h.mu.Unlock()
		if got >= want {
			return
		}
		if time.Now().After(end) {
			h.t.Fatal("no PING acknowledgement in 5 s")
		}
	}
}

// message is stream id's grpc-message, as sent (gRPC percent-encodes
// only what is not printable ASCII).
func (h *h2conn) message(id uint32) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msg[id]
}

// answer waits up to d for stream id's grpc-status; ok is false if none came.
func (h *h2conn) answer(id uint32, d time.Duration) (code int, ok bool) {
	for end := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		h.mu.Lock()
		code, ok = h.status[id]
		h.mu.Unlock()
		if ok || time.Now().After(end) {
			return code, ok
		}
	}
}

// grpcMessage is m as a gRPC length-prefixed message.
func grpcMessage(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b))), b...)
}

// A call without a valid key is refused when its headers arrive, before
// its request is read: before, grpc-go read a unary call's whole request
// before the key was checked, so a client without a key could hold a
// goroutine and a flow-control window of memory per stream, on as many
// streams as it liked (one connection with 3,000 unfinished Publish
// requests held 3,000 goroutines and 215 MB of heap). Health and
// reflection stay open without a key, at most MaxKeylessStreams at once.
func TestCallsWithoutKeyRefusedBeforeTheirRequest(t *testing.T) {
	const key = "0123456789abcdef-secret"
	ts := startServer(t, testConfig(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "backend", Key: key}}
	}))
	addr := ts.conn.Target()
	pub := grpcMessage(t, &heraldv1.PublishRequest{Channel: "small:tap", Payload: jsonPayload(`{"a":1}`)})
	const publish = "/herald.v1.HeraldService/Publish"
	h := dialH2(t, addr, "127.0.0.1")

	// With the key, the server waits for the rest of the request: this
	// is the unfinished request the refusals below are about.
	keyed := h.open(publish, "Bearer "+key, pub[:8])
	h.sync()
	if code, ok := h.answer(keyed, 0); ok {
		t.Fatalf("an unfinished request with the key was answered (%d)", code)
	}
	h.finish(keyed, pub[8:])
	if code, ok := h.answer(keyed, 5*time.Second); !ok || code != 0 {
		t.Fatalf("the finished request with the key: status %d (answered %v), want 0", code, ok)
	}

	for _, auth := range []string{"", "Bearer wrong-key-0123456789", key} {
		id := h.open(publish, auth, pub[:8])
		if code, ok := h.answer(id, 5*time.Second); !ok || code != 16 {
			t.Errorf("authorization %q: status %d (answered %v), want 16 UNAUTHENTICATED before the request ends", auth, code, ok)
		}
	}

	// Health without a key: MaxKeylessStreamsPerIP unfinished calls
	// from one address are admitted, and one more is refused; another
	// address still gets a place, until MaxKeylessStreams are open in
	// all. Ending one admits another.
	const check = "/grpc.health.v1.Health/Check"
	hc := grpcMessage(t, &healthpb.HealthCheckRequest{})
	from := func(i int) string { return "127.0.0." + strconv.Itoa(i) }
	type heldCall struct {
		h  *h2conn
		id uint32
	}
	var held []heldCall
	hold := func(h *h2conn) {
		for range service.MaxKeylessStreamsPerIP {
			held = append(held, heldCall{h, h.open(check, "", hc[:2])})
		}
		h.sync() // all admitted before the next call, on any connection
	}
	served := func(h *h2conn, auth, what string) {
		t.Helper()
		id := h.open(check, auth, nil)
		h.finish(id, hc)
		if code, ok := h.answer(id, 5*time.Second); !ok || code != 0 {
			t.Fatalf("%s: status %d %q (answered %v), want 0", what, code, h.message(id), ok)
		}
	}
	refused := func(h *h2conn, want, what string) {
		t.Helper()
		id := h.open(check, "", hc[:2])
		code, ok := h.answer(id, 5*time.Second)
		if !ok || code != 8 || !strings.Contains(h.message(id), want) {
			t.Fatalf("%s: status %d %q (answered %v), want 8 RESOURCE_EXHAUSTED saying %q", what, code, h.message(id), ok, want)
		}
	}
	refusals := metricValue(t, "herald_limit_refusals_total", "limit", "keyless_grpc_streams")
	hold(h)
	refused(h, "from your address", "one keyless call more than an address may hold")
	other := dialH2(t, addr, from(250)) // not one of those that hold calls below
	served(other, "", "a keyless call from another address")
	for i := 2; len(held) < service.MaxKeylessStreams; i++ {
		hold(dialH2(t, addr, from(i)))
	}
	last := dialH2(t, addr, from(200))
	refused(last, "the most a node serves at once;", "one keyless call more than the node serves")
	if got := metricValue(t, "herald_limit_refusals_total", "limit", "keyless_grpc_streams") - refusals; got != 2 {
		t.Errorf("refusals counted: %v, want 2", got)
	}
	for _, c := range held {
		if code, ok := c.h.answer(c.id, 0); ok {
			t.Fatalf("an admitted unfinished health call was answered (%d)", code)
		}
	}
	served(last, "Bearer "+key, "health with the key while keyless calls are at the bound")
	held[0].h.reset(held[0].id)
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// grpc-go ends the reset stream, and its place is given back.
		id := last.open(check, "", nil)
		last.finish(id, hc)
		code, ok := last.answer(id, 5*time.Second)
		if ok && code == 0 {
			break
		}
		if !ok || code != 8 || time.Now().After(end) {
			t.Fatalf("after a keyless call was reset: status %d (answered %v), want 0", code, ok)
		}
	}
	for _, c := range held[1:] {
		c.h.reset(c.id)
	}

	// Calls that end normally give their place back: many more than the
	// bound, one after another, all served.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// The resets above give their places back as grpc-go ends
		// those streams.
		if _, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{}); err == nil {
			break
		} else if time.Now().After(end) {
			t.Fatalf("keyless health check after the resets: %v", err)
		}
	}
	for i := range 2 * service.MaxKeylessStreams {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			t.Fatalf("keyless health check %d: %v", i, err)
		}
	}
}

// A call's metadata is bounded at 1 MiB (grpc-go's default is 16 MiB,
// which HPACK references let a few KB on the wire decode to); the server
// says so in its SETTINGS, and grpc-go clients refuse to send more.
func TestHeaderListBounded(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	req := &heraldv1.PublishRequest{Channel: "small:headers", Payload: jsonPayload(`{}`)}
	for _, c := range []struct {
		size int
		ok   bool
	}{{100 << 10, true}, {service.MaxHeaderListSize + 1000, false}} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-big", strings.Repeat("a", c.size))
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := ts.client.Publish(ctx, req)
		cancel()
		if (err == nil) != c.ok {
			t.Errorf("%d bytes of metadata: err %v, want ok=%v", c.size, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "header list size") {
			t.Errorf("%d bytes of metadata: %v, want it to name the header list size", c.size, err)
		}
	}
}
