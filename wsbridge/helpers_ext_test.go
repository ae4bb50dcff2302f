package wsbridge_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

const secret = "test-secret-test-secret-test-secret"

// testConfig is a node configuration on loopback port 0 with HS256 tokens
// and a few namespaces:
//
//	chat:   subscribe, publish, history, presence with join/leave, anonymous
//	news:   subscribe, history; no browser publish; no anonymous
//	secret: only through a channels claim
//	nohist: no history, no presence
func testConfig() config.Config {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Bridge.JWTSecret = secret
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	chat := config.DefaultNamespace("chat")
	chat.AllowPublish, chat.AllowAnonymous = true, true
	news := config.DefaultNamespace("news")
	sec := config.DefaultNamespace("secret")
	sec.AllowSubscribe = false
	nohist := config.Namespace{Name: "nohist", AllowSubscribe: true, AllowPublish: true}
	cfg.Namespaces = []config.Namespace{chat, news, sec, nohist}
	return cfg
}

// startNode starts a node and shuts it down at the end of the test.
func startNode(t testing.TB, cfg config.Config, mode node.Mode) *node.Node {
	t.Helper()
	n, err := node.Start(context.Background(), cfg, mode, nil)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

// backend is a gRPC client of a node.
func backend(t testing.TB, n *node.Node, key string) heraldv1.HeraldServiceClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(key)))
	}
	cc, err := grpc.NewClient(n.GRPCAddr.String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return heraldv1.NewHeraldServiceClient(cc)
}

type bearer string

func (k bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}
func (k bearer) RequireTransportSecurity() bool { return false }

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// publish publishes a JSON payload through gRPC and returns its position.
func publish(t testing.TB, c heraldv1.HeraldServiceClient, channel, json string) *heraldv1.StreamPosition {
	t.Helper()
	res, err := c.Publish(ctx(t), &heraldv1.PublishRequest{Channel: channel, Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(json)}})
	if err != nil {
		t.Fatalf("publish %s: %v", channel, err)
	}
	return res.Position
}

// token signs an HS256 token for sub with extra claims.
func token(t testing.TB, sub string, ttl time.Duration, extra jwt.MapClaims) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(ttl).Unix()}
	if sub == "" {
		delete(claims, "sub")
	}
	for k, v := range extra {
		claims[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeKeys writes an RSA and an ECDSA public key as PEM files and returns
// their paths and private keys.
func writeKeys(t testing.TB) (rsaPath, ecPath string, rk *rsa.PrivateKey, ek *ecdsa.PrivateKey) {
	t.Helper()
	dir := t.TempDir()
	rk, _ = rsa.GenerateKey(rand.Reader, 2048)
	ek, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	write := func(name string, pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("rsa.pem", &rk.PublicKey), write("ec.pem", &ek.PublicKey), rk, ek
}

// client is a test WebSocket client reading synchronously.
type client struct {
	t     testing.TB
	ws    *websocket.Conn
	proto bool
	id    uint32
	buf   []*heraldv1.ServerFrame
	err   error // the read error that ended the connection
}

func wsURL(n *node.Node) string { return "ws://" + n.HTTPAddr.String() + "/ws" }

// dial opens a WebSocket with the given subprotocol ("" offers none).
func dial(t testing.TB, n *node.Node, subprotocol string, header http.Header) (*client, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if subprotocol != "" {
		d.Subprotocols = []string{subprotocol}
	}
	ws, resp, err := d.Dial(wsURL(n), header)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &client{t: t, ws: ws, proto: ws.Subprotocol() == "herald.proto"}, resp, nil
}

// connect dials and sends connect; it fails the test unless connected.
func connect(t testing.TB, n *node.Node, subprotocol, tok string) *client {
	t.Helper()
	c, _, err := dial(t, n, subprotocol, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: tok}}})
	if r.GetConnect() == nil {
		t.Fatalf("connect: got %v", r)
	}
	return c
}

func (c *client) encode(fr *heraldv1.ClientFrame) []byte {
	if c.proto {
		b, err := proto.Marshal(fr)
		if err != nil {
			c.t.Fatal(err)
		}
		return append(protowire.AppendVarint(nil, uint64(len(b))), b...)
	}
	b, err := protojson.Marshal(fr)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// sendRaw sends one WebSocket message.
func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	mt := websocket.TextMessage
	if c.proto {
		mt = websocket.BinaryMessage
	}
	if err := c.ws.WriteMessage(mt, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// send sends frames packed into one message and returns the ids given.
func (c *client) send(frames ...*heraldv1.ClientFrame) {
	c.t.Helper()
	var msg []byte
	for i, fr := range frames {
		if fr.Id == 0 {
			c.id++
			fr.Id = c.id
		}
		if i > 0 && !c.proto {
			msg = append(msg, '\n')
		}
		msg = append(msg, c.encode(fr)...)
	}
	c.sendRaw(msg)
}

// read reads one more message into buf; false when the connection ended.
func (c *client) read(timeout time.Duration) bool {
	c.t.Helper()
	if c.err != nil {
		return false
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	_, msg, err := c.ws.ReadMessage()
	if err != nil {
		c.err = err
		return false
	}
	if c.proto {
		for len(msg) > 0 {
			n, l := protowire.ConsumeVarint(msg)
			if l < 0 || int(n) > len(msg)-l {
				c.t.Fatalf("bad length prefix")
			}
			fr := &heraldv1.ServerFrame{}
			if err := proto.Unmarshal(msg[l:l+int(n)], fr); err != nil {
				c.t.Fatalf("bad server frame: %v", err)
			}
			c.buf = append(c.buf, fr)
			msg = msg[l+int(n):]
		}
		return true
	}
	for _, line := range bytes.Split(msg, []byte("\n")) {
		fr := &heraldv1.ServerFrame{}
		if err := protojson.Unmarshal(line, fr); err != nil {
			c.t.Fatalf("bad server frame %q: %v", line, err)
		}
		c.buf = append(c.buf, fr)
	}
	return true
}

// waitFor returns the first frame matching pred, reading as needed; other
// frames stay buffered in order.
func (c *client) waitFor(what string, pred func(*heraldv1.ServerFrame) bool) *heraldv1.ServerFrame {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for i, fr := range c.buf {
			if pred(fr) {
				c.buf = append(c.buf[:i], c.buf[i+1:]...)
				return fr
			}
		}
		if time.Now().After(deadline) || !c.read(time.Until(deadline)) {
			c.t.Fatalf("waiting for %s: %v (%d frames buffered)", what, c.err, len(c.buf))
		}
	}
}

// request sends a frame and returns the reply with its id.
func (c *client) request(fr *heraldv1.ClientFrame) *heraldv1.ServerFrame {
	c.t.Helper()
	c.send(fr)
	id := fr.Id
	return c.waitFor("reply", func(r *heraldv1.ServerFrame) bool { return r.Id == id })
}

func (c *client) subscribe(channel string, since *heraldv1.StreamPosition) *heraldv1.ServerFrame {
	c.t.Helper()
	return c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: channel, Since: since}}})
}

// nextPub returns the next publication push of channel.
func (c *client) nextPub(channel string) *heraldv1.Publication {
	c.t.Helper()
	return c.waitFor("publication in "+channel, func(f *heraldv1.ServerFrame) bool { return f.GetPub().GetChannel() == channel }).GetPub()
}

// expectClose reads until the connection ends and checks its close code.
func (c *client) expectClose(code int) *heraldv1.DisconnectFrame {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.read(time.Until(deadline)) {
	}
	var ce *websocket.CloseError
	if !errors.As(c.err, &ce) || ce.Code != code {
		c.t.Fatalf("want close %d, got %v (%d frames)", code, c.err, len(c.buf))
	}
	for _, fr := range c.buf {
		if d := fr.GetDisconnect(); d != nil {
			if int(d.Code) != code {
				c.t.Fatalf("disconnect frame code %d, close code %d", d.Code, code)
			}
			return d
		}
	}
	return nil
}

func jsonData(t testing.TB, p *heraldv1.Publication) string {
	t.Helper()
	switch v := p.Payload.(type) {
	case *heraldv1.Publication_Data:
		b, _ := protojson.Marshal(v.Data)
		return string(compact(b))
	case *heraldv1.Publication_RawJson:
		return string(compact(v.RawJson))
	}
	t.Fatalf("not a JSON payload: %v", p)
	return ""
}

func compact(b []byte) []byte {
	v := &structpb.Value{}
	if err := protojson.Unmarshal(b, v); err != nil {
		return b
	}
	out, _ := protojson.MarshalOptions{}.Marshal(v)
	return bytes.ReplaceAll(out, []byte(" "), nil)
}

// eventually polls cond until it holds, or fails after 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
