package wsbridge_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
)

// rawWS is a WebSocket client written against RFC 6455 directly, so that
// a test sees every frame the server sends, control frames included
// (gorilla's client hides a second close frame behind the first).
type rawWS struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// rawFrame is one frame received.
type rawFrame struct {
	op      byte
	payload []byte
}

func (f rawFrame) closeCode() int {
	if f.op != 8 || len(f.payload) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(f.payload))
}

// dialRaw opens a WebSocket to n's /ws with the given subprotocol.
func dialRaw(t testing.TB, n *node.Node, subprotocol string) *rawWS {
	t.Helper()
	nc, err := net.DialTimeout("tcp", n.HTTPAddr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET /ws HTTP/1.1\r\nHost: " + n.HTTPAddr.String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n"
	if subprotocol != "" {
		req += "Sec-WebSocket-Protocol: " + subprotocol + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	return &rawWS{t: t, nc: nc, br: br}
}

// send sends one masked, final frame.
func (c *rawWS) send(op byte, payload []byte) {
	c.t.Helper()
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, x := range payload {
		b = append(b, x^mask[i%4])
	}
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawWS) sendClose(code int) {
	c.send(8, binary.BigEndian.AppendUint16(nil, uint16(code)))
}

// closeFrame is a masked close frame with code.
func closeFrame(code int) []byte {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	b := append([]byte{0x88, 0x80 | byte(len(p))}, mask[:]...)
	for i, x := range p {
		b = append(b, x^mask[i%4])
	}
	return b
}

// read reads one frame (io.EOF when the server closed the connection).
func (c *rawWS) read(timeout time.Duration) (rawFrame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return rawFrame{}, err
	}
	if h[1]&0x80 != 0 {
		return rawFrame{}, errors.New("the server masked a frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return rawFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return rawFrame{}, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return rawFrame{}, err
	}
	return rawFrame{op: h[0] & 0x0f, payload: p}, nil
}

// closeExchange reads until the server's close frame, answers it as a
// client does, then reads until the server ends the TCP connection. It
// returns the close frames received (the first one and any after the
// answer) and the data frames before the first.
func (c *rawWS) closeExchange() (closes []rawFrame, data []rawFrame) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("reading until the close: %v (%d close frames, %d data frames)", err, len(closes), len(data))
		}
		if f.op == 8 {
			closes = append(closes, f)
			break
		}
		if f.op == 1 || f.op == 2 {
			data = append(data, f)
		}
	}
	// Answer the close. A bridge that closed for what the client sent
	// (1002, 1003, 1007, 1009) stops reading and may have cut the
	// connection already: then the answer cannot be written, and nothing
	// more can come.
	if _, err := c.nc.Write(closeFrame(closes[0].closeCode())); err != nil {
		if isReset(err) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) {
			return closes, data
		}
		c.t.Fatalf("answering the close: %v", err)
	}
	for {
		f, err := c.read(time.Until(deadline))
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return closes, data
		}
		if err != nil {
			c.t.Fatalf("after answering the close: %v", err)
		}
		if f.op == 8 {
			closes = append(closes, f)
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestOneCloseFrame: after a close the bridge starts (4000 for a first
// frame that is not connect, 4005 for a backend Disconnect), the client's
// answering close frame gets no second close frame back: the bridge owns
// every frame it writes, and gorilla's default close handler does not echo
// behind it.
func TestOneCloseFrame(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	t.Run("4000", func(t *testing.T) {
		c := dialRaw(t, n, "herald.json")
		c.send(1, []byte(`{"id":1,"ping":{}}`))
		closes, _ := c.closeExchange()
		if len(closes) != 1 || closes[0].closeCode() != 4000 {
			t.Fatalf("close frames %v, want exactly one with 4000", closeCodes(closes))
		}
	})
	t.Run("4005", func(t *testing.T) {
		// The Disconnect reaches bridges whose control stream is attached.
		eventually(t, "the bridge attached to its core", func() bool {
			info, err := be.Info(ctx(t), &heraldv1.InfoRequest{})
			return err == nil && info.Bridges == 1
		})
		c := dialRaw(t, n, "herald.json")
		c.send(1, []byte(`{"id":1,"connect":{"token":"`+token(t, "kicked", time.Minute, nil)+`"}}`))
		if f, err := c.read(5 * time.Second); err != nil || f.op != 1 || !strings.Contains(string(f.payload), `"connect"`) {
			t.Fatalf("connect reply: %v %q", err, f.payload)
		}
		if _, err := be.Disconnect(ctx(t), &heraldv1.DisconnectRequest{User: "kicked", Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		closes, data := c.closeExchange()
		if len(closes) != 1 || closes[0].closeCode() != 4005 {
			t.Fatalf("close frames %v, want exactly one with 4005", closeCodes(closes))
		}
		if last := data[len(data)-1]; !strings.Contains(strings.ReplaceAll(string(last.payload), " ", ""), `"disconnect":{"code":4005`) {
			t.Fatalf("last data frame before the close: %q, want the disconnect push", last.payload)
		}
	})
	t.Run("client first", func(t *testing.T) {
		// A close the client starts is answered once, with its code.
		c := dialRaw(t, n, "herald.json")
		c.sendClose(1000)
		f, err := c.read(5 * time.Second)
		if err != nil || f.closeCode() != 1000 {
			t.Fatalf("answer to the client's close: %v %v", err, f)
		}
		if f, err := c.read(5 * time.Second); err == nil {
			t.Fatalf("after the close answer: frame %d %q, want the connection closed", f.op, f.payload)
		}
	})
}

func closeCodes(fs []rawFrame) []int {
	var out []int
	for _, f := range fs {
		out = append(out, f.closeCode())
	}
	return out
}

// TestClientMessageChecks: RFC 6455 for what a client sends. A text
// message that is not UTF-8 closes with 1007 (invalid payload data); a
// message of the other type than the subprotocol's (binary on herald.json,
// text on herald.proto) closes with 1003 (unsupported data); a broken
// frame (unmasked) closes with 1002. Each closes only the offender.
func TestClientMessageChecks(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	check := liveness(t, n, be, "bystander", "chat:wire")
	connected := func(t *testing.T, subprotocol string) *rawWS {
		c := dialRaw(t, n, subprotocol)
		msg := []byte(`{"id":1,"connect":{"token":"` + token(t, "u1", time.Minute, nil) + `"}}`)
		op := byte(1)
		if subprotocol == "herald.proto" {
			fr := &heraldv1.ClientFrame{Id: 1, Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: token(t, "u1", time.Minute, nil)}}}
			msg, op = (&client{t: t, proto: true}).encode(fr), 2
		}
		c.send(op, msg)
		if _, err := c.read(5 * time.Second); err != nil {
			t.Fatalf("connect: %v", err)
		}
		return c
	}
	for _, tc := range []struct {
		name, subprotocol string
		authed            bool
		op                byte
		payload           []byte
		want              int
	}{
		{"invalid UTF-8 before connect", "herald.json", false, 1, []byte("{\"id\":1,\"connect\":{\"name\":\"\xff\xfe\"}}"), 1007},
		{"invalid UTF-8 after connect", "herald.json", true, 1, []byte("{\"id\":2,\"ping\":{}}\n\"\xc3\x28\""), 1007},
		{"binary on herald.json", "herald.json", true, 2, []byte(`{"id":2,"ping":{}}`), 1003},
		{"binary on herald.json before connect", "herald.json", false, 2, []byte(`{"id":1,"connect":{}}`), 1003},
		{"text on herald.proto", "herald.proto", true, 1, []byte(`{"id":2,"ping":{}}`), 1003},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *rawWS
			if tc.authed {
				c = connected(t, tc.subprotocol)
			} else {
				c = dialRaw(t, n, tc.subprotocol)
			}
			c.send(tc.op, tc.payload)
			closes, _ := c.closeExchange()
			if len(closes) != 1 || closes[0].closeCode() != tc.want {
				t.Fatalf("close frames %v, want exactly one with %d", closeCodes(closes), tc.want)
			}
		})
	}
	t.Run("unmasked frame", func(t *testing.T) {
		c := connected(t, "herald.json")
		if _, err := c.nc.Write([]byte{0x81, 2, '{', '}'}); err != nil {
			t.Fatal(err)
		}
		closes, _ := c.closeExchange()
		if len(closes) != 1 || closes[0].closeCode() != 1002 {
			t.Fatalf("close frames %v, want exactly one with 1002", closeCodes(closes))
		}
	})
	check()
}
