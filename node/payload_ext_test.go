package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/payloadtest"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/node"
	"github.com/herald-io/herald/service"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The tests of this file publish JSON payloads by every path into a whole
// node (or a core and a bridge) and read them back with every reader,
// asserting that the text each reader gets is the published text,
// compacted, token for token.

const (
	payloadSecret = "payload-test-secret-0123456789abcdef"
	adminKey      = "payload-admin-key-0123456789"
	bridgeKey     = "payload-bridge-key-0123456789"
)

var (
	protojsonOpts = protojson.MarshalOptions{UseProtoNames: true}
	protojsonIn   = protojson.UnmarshalOptions{}
)

// payloadShape is a deployment to test: the embedded default (serve, one
// process) or the production shape (a core with API keys and a bridge that
// authenticates to it, on the memory or the Redis engine).
type payloadShape struct {
	name  string
	split bool
	redis bool
}

var payloadShapes = []payloadShape{
	{"serve-memory", false, false},
	{"split-keys-memory", true, false},
	{"split-keys-redis", true, true},
}

// payloadEnv is how a test reaches a running shape.
type payloadEnv struct {
	core  *node.Node
	grpc  heraldv1.HeraldServiceClient // the core, with the admin key when keys are on
	rest  string                       // the core's REST base URL
	key   string                       // API key for REST; "" when keys are off
	ws    string                       // the bridge's WebSocket URL
	token string                       // a browser token
}

func payloadConfig() config.Config {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Bridge.JWTSecret = payloadSecret
	cfg.Bridge.RequestRate = 100000 // the tests read history after every publication
	feed := config.DefaultNamespace("feed")
	feed.AllowPublish = true
	feed.HistorySize = 1000
	cfg.Namespaces = []config.Namespace{feed}
	return cfg
}

func startPayloadShape(t testing.TB, sh payloadShape) *payloadEnv {
	t.Helper()
	cfg := payloadConfig()
	if sh.redis {
		r := redistest.Start(t)
		cfg.Engine = "redis"
		cfg.Redis.Addrs = []string{r.Addr}
		cfg.Redis.Prefix = fmt.Sprintf("payload%d", time.Now().UnixNano())
	}
	env := &payloadEnv{}
	start := func(cfg config.Config, mode node.Mode) *node.Node {
		n, err := node.Start(context.Background(), cfg, mode, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = n.Shutdown(ctx)
		})
		return n
	}
	var core, bridge *node.Node
	if sh.split {
		cfg.APIKeys = []config.APIKey{{Name: "admin", Key: adminKey}, {Name: "bridge", Key: bridgeKey, Scopes: []string{"bridge"}}}
		core = start(cfg, node.Core)
		bcfg := cfg
		bcfg.APIKeys = nil
		bcfg.Bridge.Core = core.GRPCAddr.String()
		bcfg.Bridge.CoreAPIKey = bridgeKey
		bridge = start(bcfg, node.BridgeOnly)
		env.key = adminKey
	} else {
		core = start(cfg, node.Serve)
		bridge = core
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if env.key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(apiKey(env.key)))
	}
	cc, err := grpc.NewClient(core.GRPCAddr.String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	env.grpc = heraldv1.NewHeraldServiceClient(cc)
	env.core = core
	env.rest = "http://" + core.HTTPAddr.String()
	env.ws = "ws://" + bridge.HTTPAddr.String() + "/ws"
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(payloadSecret))
	if err != nil {
		t.Fatal(err)
	}
	env.token = tok
	return env
}

// restClient makes the tests' REST calls (not the streams).
var restClient = &http.Client{Timeout: 10 * time.Second}

type apiKey string

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}
func (apiKey) RequireTransportSecurity() bool { return false }

// restDo sends a REST request to the core and returns its status and body.
func (e *payloadEnv) restDo(t testing.TB, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.rest+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if e.key != "" {
		req.Header.Set("Authorization", "Bearer "+e.key)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := restClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// got is what a reader received as a publication's payload: the JSON
// text, or the bytes of a binary payload.
type got struct {
	json   string
	binary []byte
	isJSON bool
}

func (g got) String() string {
	if g.isJSON {
		return "json " + g.json
	}
	return fmt.Sprintf("binary %q", g.binary)
}

// wirePub is a publication as protobuf JSON, its payload kept as text.
type wirePub struct {
	Channel string          `json:"channel"`
	Offset  string          `json:"offset"`
	Data    json.RawMessage `json:"data"`
	Binary  []byte          `json:"binary"`
	JSON    *string         `json:"json"`
	RawJSON []byte          `json:"raw_json"`
}

func (p wirePub) got(t testing.TB) got {
	t.Helper()
	switch {
	case p.Data != nil:
		return got{json: string(p.Data), isJSON: true}
	case p.Binary != nil:
		return got{binary: p.Binary}
	}
	t.Fatalf("publication without data or binary: %+v", p)
	return got{}
}

func pubGot(t testing.TB, p *heraldv1.Publication) got {
	t.Helper()
	switch v := p.Payload.(type) {
	case *heraldv1.Publication_Json:
		return got{json: v.Json, isJSON: true}
	case *heraldv1.Publication_RawJson:
		return got{json: string(v.RawJson), isJSON: true}
	case *heraldv1.Publication_Binary:
		return got{binary: v.Binary}
	}
	t.Fatalf("publication payload %T (%v), want json, raw_json or binary", p.Payload, p)
	return got{}
}

// browser is a WebSocket client of the bridge, reading raw messages.
type browser struct {
	t     testing.TB
	ws    *websocket.Conn
	proto bool
	id    uint32
	jsonQ [][]byte                // herald.json frames not yet consumed
	protQ []*heraldv1.ServerFrame // herald.proto frames not yet consumed
}

func dialBrowser(t testing.TB, env *payloadEnv, subprotocol string) *browser {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{subprotocol}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(env.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	b := &browser{t: t, ws: ws, proto: subprotocol == "herald.proto"}
	b.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: env.token}}}, "")
	return b
}

// readMessage reads one message into the queues; in herald.json every
// message must be valid UTF-8 and every line one JSON value.
func (b *browser) readMessage() {
	b.t.Helper()
	_ = b.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, msg, err := b.ws.ReadMessage()
	if err != nil {
		b.t.Fatalf("browser (proto=%v): read: %v", b.proto, err)
	}
	if !b.proto {
		if mt != websocket.TextMessage || !utf8.Valid(msg) {
			b.t.Fatalf("herald.json message is not valid UTF-8 text (type %d): %q", mt, msg)
		}
		for _, line := range bytes.Split(msg, []byte("\n")) {
			if !json.Valid(line) {
				b.t.Fatalf("frame is not JSON: %q", line)
			}
			b.jsonQ = append(b.jsonQ, line)
		}
		return
	}
	for len(msg) > 0 {
		n, l := protowire.ConsumeVarint(msg)
		if l < 0 || int(n) > len(msg)-l {
			b.t.Fatal("bad length prefix")
		}
		fr := &heraldv1.ServerFrame{}
		if err := proto.Unmarshal(msg[l:l+int(n)], fr); err != nil {
			b.t.Fatal(err)
		}
		b.protQ = append(b.protQ, fr)
		msg = msg[l+int(n):]
	}
}

// sendRaw sends one client message as it is.
func (b *browser) sendRaw(msg []byte) {
	b.t.Helper()
	mt := websocket.TextMessage
	if b.proto {
		mt = websocket.BinaryMessage
	}
	if err := b.ws.WriteMessage(mt, msg); err != nil {
		b.t.Fatal(err)
	}
}

// sendJSON sends a herald.json frame whose text is given: "%d" is the id.
func (b *browser) sendJSON(format string) uint32 {
	b.id++
	b.sendRaw([]byte(strings.Replace(format, "%d", strconv.Itoa(int(b.id)), 1)))
	return b.id
}

// sendProto sends a herald.proto frame (its bytes without the length).
func (b *browser) sendProto(frame []byte) {
	b.sendRaw(append(protowire.AppendVarint(nil, uint64(len(frame))), frame...))
}

// request sends fr and returns the reply with its id; with wantErr "",
// an error reply fails the test.
func (b *browser) request(fr *heraldv1.ClientFrame, wantErr string) *heraldv1.ServerFrame {
	b.t.Helper()
	b.id++
	fr.Id = b.id
	if b.proto {
		raw, err := proto.Marshal(fr)
		if err != nil {
			b.t.Fatal(err)
		}
		b.sendProto(raw)
	} else {
		raw, err := (protojsonOpts).Marshal(fr)
		if err != nil {
			b.t.Fatal(err)
		}
		b.sendRaw(raw)
	}
	r := b.reply(b.id)
	if wantErr == "" && r.GetError() != nil {
		b.t.Fatalf("%v: %v", fr, r)
	}
	return r
}

// reply returns the reply to id, decoded (herald.json replies through
// protojson: for publications use replyRaw).
func (b *browser) reply(id uint32) *heraldv1.ServerFrame {
	b.t.Helper()
	if b.proto {
		for {
			for i, fr := range b.protQ {
				if fr.Id == id || fr.Id == 0 && fr.GetError() != nil {
					b.protQ = append(b.protQ[:i], b.protQ[i+1:]...)
					return fr
				}
			}
			b.readMessage()
		}
	}
	raw := b.replyRaw(id)
	fr := &heraldv1.ServerFrame{}
	if err := protojsonIn.Unmarshal(raw, fr); err != nil {
		b.t.Fatalf("reply %s: %v", raw, err)
	}
	return fr
}

// replyRaw returns the text of the herald.json reply to id.
func (b *browser) replyRaw(id uint32) []byte {
	b.t.Helper()
	prefix := []byte(fmt.Sprintf(`{"id":%d,`, id))
	for {
		for i, f := range b.jsonQ {
			// An error about a frame whose id could not be read has none.
			if bytes.HasPrefix(f, prefix) || bytes.HasPrefix(f, []byte(`{"error":`)) {
				b.jsonQ = append(b.jsonQ[:i], b.jsonQ[i+1:]...)
				return f
			}
		}
		b.readMessage()
	}
}

// nextPub returns the payload of the next publication push of channel.
func (b *browser) nextPub(channel string) got {
	b.t.Helper()
	for {
		if b.proto {
			for i, fr := range b.protQ {
				if p := fr.GetPub(); p != nil && p.Channel == channel {
					b.protQ = append(b.protQ[:i], b.protQ[i+1:]...)
					return pubGot(b.t, p)
				}
			}
		} else {
			for i, f := range b.jsonQ {
				var fr struct {
					Pub *wirePub `json:"pub"`
				}
				if err := json.Unmarshal(f, &fr); err != nil {
					b.t.Fatalf("%s: %v", f, err)
				}
				if fr.Pub != nil && fr.Pub.Channel == channel {
					b.jsonQ = append(b.jsonQ[:i], b.jsonQ[i+1:]...)
					return fr.Pub.got(b.t)
				}
			}
		}
		b.readMessage()
	}
}

// lastInHistory reads the channel's newest publication with a history
// frame.
func (b *browser) lastInHistory(channel string) got {
	b.t.Helper()
	if b.proto {
		r := b.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: channel, Limit: 1, Reverse: true}}}, "")
		if r.GetError() != nil || len(r.GetHistory().GetPublications()) != 1 {
			b.t.Fatalf("history: %v", r)
		}
		return pubGot(b.t, r.GetHistory().GetPublications()[0])
	}
	id := b.sendJSON(`{"id":%d,"history":{"channel":"` + channel + `","limit":1,"reverse":true}}`)
	raw := b.replyRaw(id)
	var fr struct {
		History *struct {
			Publications []wirePub `json:"publications"`
		} `json:"history"`
	}
	if err := json.Unmarshal(raw, &fr); err != nil || fr.History == nil || len(fr.History.Publications) != 1 {
		b.t.Fatalf("history reply %s: %v", raw, err)
	}
	return fr.History.Publications[0].got(b.t)
}

func (b *browser) subscribe(channel string) {
	b.t.Helper()
	r := b.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: channel}}}, "")
	if r.GetSubscribe() == nil {
		b.t.Fatalf("subscribe %s: %v", channel, r)
	}
}

// restStream is the REST gateway's NDJSON Subscribe stream, read by a
// goroutine of its own so that a read can time out.
type restStream struct {
	t     testing.TB
	lines chan []byte // closed at the end of the stream
	err   error       // why it ended; set before lines closes
}

func (e *payloadEnv) restSubscribe(t testing.TB, channelPath string) *restStream {
	t.Helper()
	req, err := http.NewRequest("GET", e.rest+"/v1/channels/"+channelPath+"/subscribe", nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.key != "" {
		req.Header.Set("Authorization", "Bearer "+e.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("REST subscribe %s: %d %s", channelPath, resp.StatusCode, b)
	}
	s := &restStream{t: t, lines: make(chan []byte, 16)}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			s.lines <- append([]byte(nil), sc.Bytes()...)
		}
		s.err = sc.Err()
		close(s.lines)
	}()
	if line := s.line(); !bytes.Contains(line, []byte(`"subscribed"`)) {
		t.Fatalf("REST subscribe: first line %s", line)
	}
	return s
}

func (s *restStream) line() []byte {
	s.t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			s.t.Fatalf("REST stream ended: %v", s.err)
		}
		return l
	case <-time.After(10 * time.Second):
		s.t.Fatal("REST stream: nothing within 10s")
	}
	return nil
}

// nextPub returns the payload of the stream's next publication line.
func (s *restStream) nextPub() got {
	s.t.Helper()
	for {
		line := s.line()
		var l struct {
			Result *struct {
				Publication *wirePub `json:"publication"`
			} `json:"result"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			s.t.Fatalf("REST stream line %s: %v", line, err)
		}
		if l.Result != nil && l.Result.Publication != nil {
			return l.Result.Publication.got(s.t)
		}
	}
}

// grpcStream is a gRPC Subscribe stream or one SubscribeMany subscription,
// in the default payload format.
type grpcStream struct {
	t      testing.TB
	events chan grpcEvent
}

type grpcEvent struct {
	ev  *heraldv1.SubscribeResponse
	err error
}

// newGRPCStream reads recv in a goroutine of its own, so that a read can
// time out.
func newGRPCStream(t testing.TB, recv func() (*heraldv1.SubscribeResponse, error)) *grpcStream {
	s := &grpcStream{t: t, events: make(chan grpcEvent, 16)}
	go func() {
		for {
			ev, err := recv()
			s.events <- grpcEvent{ev, err}
			if err != nil {
				return
			}
		}
	}()
	return s
}

func (s *grpcStream) next() (*heraldv1.SubscribeResponse, error) {
	select {
	case e := <-s.events:
		return e.ev, e.err
	case <-time.After(10 * time.Second):
		return nil, errors.New("nothing within 10s")
	}
}

func (e *payloadEnv) grpcSubscribe(t testing.TB, channel string) *grpcStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := e.grpc.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: channel})
	if err != nil {
		t.Fatal(err)
	}
	s := newGRPCStream(t, st.Recv)
	if ev, err := s.next(); err != nil || ev.GetSubscribed() == nil {
		t.Fatalf("subscribe: %v %v", ev, err)
	}
	return s
}

func (e *payloadEnv) grpcSubscribeMany(t testing.TB, channel string) *grpcStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := e.grpc.SubscribeMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&heraldv1.SubscribeManyRequest{Id: 7, Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channel: channel}}}); err != nil {
		t.Fatal(err)
	}
	next := func() (*heraldv1.SubscribeResponse, error) {
		r, err := st.Recv()
		if err != nil {
			return nil, err
		}
		if r.GetEnded() != nil {
			return nil, fmt.Errorf("ended: %v", r.GetEnded())
		}
		return r.GetEvent(), nil
	}
	s := newGRPCStream(t, next)
	if ev, err := s.next(); err != nil || ev.GetSubscribed() == nil {
		t.Fatalf("subscribe many: %v %v", ev, err)
	}
	return s
}

func (s *grpcStream) nextPub() got {
	s.t.Helper()
	for {
		ev, err := s.next()
		if err != nil {
			s.t.Fatal(err)
		}
		if p := ev.GetPublication(); p != nil {
			if _, ok := p.Payload.(*heraldv1.Publication_Json); !ok && p.GetBinary() == nil {
				s.t.Fatalf("default format delivered %T, want json", p.Payload)
			}
			return pubGot(s.t, p)
		}
	}
}

// readers are every reader of a channel.
type readers struct {
	t         testing.TB
	env       *payloadEnv
	channel   string
	wsJSON    *browser
	wsProto   *browser
	grpcSub   *grpcStream
	grpcMany  *grpcStream
	restSub   *restStream
	positions uint64 // publications in the channel so far
}

func openReaders(t testing.TB, env *payloadEnv, channel string) *readers {
	r := &readers{t: t, env: env, channel: channel}
	r.wsJSON = dialBrowser(t, env, "herald.json")
	r.wsJSON.subscribe(channel)
	r.wsProto = dialBrowser(t, env, "herald.proto")
	r.wsProto.subscribe(channel)
	r.grpcSub = env.grpcSubscribe(t, channel)
	r.grpcMany = env.grpcSubscribeMany(t, channel)
	r.restSub = env.restSubscribe(t, channel)
	return r
}

// use makes every reader report to t (a fuzz target's readers outlive
// each input's t).
func (r *readers) use(t testing.TB) {
	r.t = t
	r.wsJSON.t, r.wsProto.t, r.grpcSub.t, r.grpcMany.t, r.restSub.t = t, t, t, t, t
}

// expect checks that every reader's next publication, and the channel's
// newest one in every history, is want.
func (r *readers) expect(what string, want got) {
	r.t.Helper()
	r.positions++
	check := func(reader string, g got) {
		r.t.Helper()
		if g.isJSON != want.isJSON || g.json != want.json || !bytes.Equal(g.binary, want.binary) {
			r.t.Errorf("%s: %s read %v\n want %v", what, reader, g, want)
		}
	}
	check("WebSocket herald.json", r.wsJSON.nextPub(r.channel))
	check("WebSocket herald.proto", r.wsProto.nextPub(r.channel))
	check("gRPC Subscribe", r.grpcSub.nextPub())
	check("gRPC SubscribeMany", r.grpcMany.nextPub())
	check("REST Subscribe stream", r.restSub.nextPub())
	check("WebSocket herald.json history", r.wsJSON.lastInHistory(r.channel))
	check("WebSocket herald.proto history", r.wsProto.lastInHistory(r.channel))

	res, err := r.env.grpc.History(context.Background(), &heraldv1.HistoryRequest{Channel: r.channel, Limit: 1, Reverse: true})
	if err != nil || len(res.Publications) != 1 {
		r.t.Fatalf("gRPC History: %v %v", res, err)
	}
	check("gRPC History", pubGot(r.t, res.Publications[0]))
	if res.Position.Offset != r.positions {
		r.t.Fatalf("%s: the channel is at offset %d, want %d (something else was stored)", what, res.Position.Offset, r.positions)
	}

	code, body := r.env.restDo(r.t, "GET", "/v1/channels/"+r.channel+"/history?limit=1&reverse=true", "")
	var h struct {
		Publications []wirePub `json:"publications"`
	}
	if code != 200 || json.Unmarshal(body, &h) != nil || len(h.Publications) != 1 {
		r.t.Fatalf("REST history: %d %s", code, body)
	}
	check("REST History", h.Publications[0].got(r.t))
}

// publishPath publishes JSON text one way; it returns nil when the
// publication was acknowledged and a description of the refusal
// otherwise. ok reports whether the refusal was the right one for bad
// input (INVALID_ARGUMENT, HTTP 400, error frame 100/110).
type publishPath struct {
	name string
	// skip says whether text cannot be sent this way at all.
	skip    func(text string) bool
	publish func(r *readers, text string) (refused string, ok bool)
}

func grpcRefusal(err error) (string, bool) {
	if err == nil {
		return "", true
	}
	return err.Error(), status.Code(err) == codes.InvalidArgument
}

func itemRefusal(e *heraldv1.Error) (string, bool) {
	if e == nil {
		return "", true
	}
	return e.Code + ": " + e.Message, e.Code == "invalid_argument"
}

func restRefusal(code int, body []byte) (string, bool) {
	if code == 200 {
		return "", true
	}
	return fmt.Sprintf("HTTP %d %s", code, body), code == http.StatusBadRequest
}

func frameRefusal(fr *heraldv1.ServerFrame) (string, bool) {
	if e := fr.GetError(); e != nil {
		return fmt.Sprintf("error %d %s", e.Code, e.Message), e.Code == 100 || e.Code == 110
	}
	if fr.GetPublish() == nil {
		return fmt.Sprintf("reply %v", fr), false
	}
	return "", true
}

// protoPublishFrame encodes a herald.proto publish frame by hand, so that
// its json may be any bytes (proto.Marshal refuses a string that is not
// UTF-8; a client in another language may not).
func protoPublishFrame(id uint32, channel, text string) []byte {
	var pf []byte
	pf = protowire.AppendTag(pf, 1, protowire.BytesType)
	pf = protowire.AppendString(pf, channel)
	pf = protowire.AppendTag(pf, 5, protowire.BytesType)
	pf = protowire.AppendString(pf, text)
	var fr []byte
	fr = protowire.AppendTag(fr, 1, protowire.VarintType)
	fr = protowire.AppendVarint(fr, uint64(id))
	fr = protowire.AppendTag(fr, 6, protowire.BytesType)
	return protowire.AppendBytes(fr, pf)
}

var publishPaths = []publishPath{
	{name: "gRPC Publish json", skip: func(s string) bool { return !utf8.ValidString(s) }, publish: func(r *readers, text string) (string, bool) {
		_, err := r.env.grpc.Publish(context.Background(), &heraldv1.PublishRequest{Channel: r.channel, Payload: &heraldv1.PublishRequest_Json{Json: text}})
		return grpcRefusal(err)
	}},
	{name: "gRPC Publish raw_json", publish: func(r *readers, text string) (string, bool) {
		_, err := r.env.grpc.Publish(context.Background(), &heraldv1.PublishRequest{Channel: r.channel, Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(text)}})
		return grpcRefusal(err)
	}},
	{name: "gRPC PublishStream", publish: func(r *readers, text string) (string, bool) {
		st, err := r.env.grpc.PublishStream(context.Background())
		if err != nil {
			r.t.Fatal(err)
		}
		req := &heraldv1.PublishRequest{Channel: r.channel, Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(text)}}
		if utf8.ValidString(text) {
			req.Payload = &heraldv1.PublishRequest_Json{Json: text}
		}
		if err := st.Send(&heraldv1.PublishStreamRequest{Publish: req, Sequence: 1}); err != nil {
			r.t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			r.t.Fatal(err)
		}
		_ = st.CloseSend()
		return itemRefusal(resp.GetError())
	}},
	{name: "gRPC Broadcast", publish: func(r *readers, text string) (string, bool) {
		req := &heraldv1.BroadcastRequest{Channels: []string{r.channel}, Payload: &heraldv1.BroadcastRequest_RawJson{RawJson: []byte(text)}}
		if utf8.ValidString(text) {
			req.Payload = &heraldv1.BroadcastRequest_Json{Json: text}
		}
		resp, err := r.env.grpc.Broadcast(context.Background(), req)
		if err != nil {
			return grpcRefusal(err)
		}
		return itemRefusal(resp.Results[0].GetError())
	}},
	{name: "REST publish data", publish: func(r *readers, text string) (string, bool) {
		return restRefusal(r.env.restDo(r.t, "POST", "/v1/channels/"+r.channel+"/publish", `{"data":`+text+`,"tags":{"via":"rest"}}`))
	}},
	{name: "REST publish raw_json", publish: func(r *readers, text string) (string, bool) {
		return restRefusal(r.env.restDo(r.t, "POST", "/v1/channels/"+r.channel+"/publish", `{"raw_json":"`+base64.StdEncoding.EncodeToString([]byte(text))+`"}`))
	}},
	{name: "REST broadcast data", publish: func(r *readers, text string) (string, bool) {
		code, body := r.env.restDo(r.t, "POST", "/v1/broadcast", `{"channels":["`+r.channel+`"],"data":`+text+`}`)
		if code != 200 {
			return restRefusal(code, body)
		}
		var res struct {
			Results []struct {
				Error *heraldv1.Error `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(body, &res); err != nil || len(res.Results) != 1 {
			r.t.Fatalf("broadcast: %s", body)
		}
		return itemRefusal(res.Results[0].Error)
	}},
	// A herald.json frame is one line: text with raw newlines (outside
	// strings: the only place valid JSON has them) is sent with spaces.
	{name: "browser herald.json publish", skip: func(s string) bool { return strings.ContainsAny(s, "\n\r") && !json.Valid([]byte(s)) }, publish: func(r *readers, text string) (string, bool) {
		text = strings.NewReplacer("\n", " ", "\r", " ").Replace(text)
		if !utf8.ValidString(text) {
			// RFC 6455 8.1: a text message that is not UTF-8 fails the
			// connection (close 1007) before any frame in it is decoded;
			// on a connection of its own, since it ends.
			b := dialBrowser(r.t, r.env, "herald.json")
			b.sendJSON(`{"id":%d,"publish":{"channel":"` + r.channel + `","data":` + text + `}}`)
			_ = b.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err := b.ws.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						return fmt.Sprintf("close %d %s", ce.Code, ce.Text), ce.Code == 1007
					}
					return err.Error(), false
				}
			}
		}
		id := r.wsJSON.sendJSON(`{"id":%d,"publish":{"channel":"` + r.channel + `","data":` + text + `}}`)
		raw := r.wsJSON.replyRaw(id)
		fr := &heraldv1.ServerFrame{}
		if err := protojsonIn.Unmarshal(raw, fr); err != nil {
			r.t.Fatalf("%s: %v", raw, err)
		}
		return frameRefusal(fr)
	}},
	{name: "browser herald.proto publish", publish: func(r *readers, text string) (string, bool) {
		r.wsProto.id++
		id := r.wsProto.id
		r.wsProto.sendProto(protoPublishFrame(id, r.channel, text))
		return frameRefusal(r.wsProto.reply(id))
	}},
}

// TestJSONPayloadsExactOnEveryPath publishes the awkward-JSON corpus by
// every publish path and reads it with every reader (WebSocket herald.json
// bytes and herald.proto, gRPC Subscribe and SubscribeMany in the default
// format, the REST NDJSON stream, gRPC, REST and browser history), on the
// memory and Redis engines, in serve mode and split with API keys: every
// reader gets the compacted input token for token. Invalid UTF-8 and
// invalid JSON are refused on every path with the documented error,
// nothing is stored, and the readers (bystanders) go on receiving.
func TestJSONPayloadsExactOnEveryPath(t *testing.T) {
	for _, sh := range payloadShapes {
		t.Run(sh.name, func(t *testing.T) {
			env := startPayloadShape(t, sh)
			r := openReaders(t, env, "feed:exact")
			for _, path := range publishPaths {
				for _, tc := range payloadtest.Corpus {
					if path.skip != nil && path.skip(tc.In) {
						continue
					}
					if refused, _ := path.publish(r, tc.In); refused != "" {
						t.Fatalf("%s %s: refused: %s", path.name, tc.Name, refused)
					}
					r.expect(path.name+" "+tc.Name, got{json: tc.Want, isJSON: true})
				}
				for _, tc := range payloadtest.Invalid {
					if path.skip != nil && path.skip(tc.In) {
						continue
					}
					refused, ok := path.publish(r, tc.In)
					if refused == "" {
						t.Fatalf("%s %s: %q was accepted", path.name, tc.Name, tc.In)
					}
					if !ok {
						t.Errorf("%s %s: refused with %s, want invalid argument (HTTP 400, error 100/110; close 1007 for a text frame that is not UTF-8)", path.name, tc.Name, refused)
					}
				}
				// Nothing refused was stored or delivered: the next
				// publication every reader gets is this one.
				sentinel := fmt.Sprintf(`{"after":%q}`, path.name)
				if refused, _ := publishPaths[1].publish(r, sentinel); refused != "" {
					t.Fatal(refused)
				}
				r.expect(path.name+" after refusals", got{json: sentinel, isJSON: true})
			}
		})
	}
}

// TestInvalidUTF8FromRESTIsRefused is the reproduction: a raw_json
// that is not UTF-8, posted to REST, is 400, is not stored, and a browser
// on the channel stays connected and receives what follows.
func TestInvalidUTF8FromRESTIsRefused(t *testing.T) {
	env := startPayloadShape(t, payloadShapes[0])
	br := dialBrowser(t, env, "herald.json")
	br.subscribe("feed:poison")
	code, body := env.restDo(t, "POST", "/v1/channels/feed:poison/publish", `{"raw_json":"eyJhIjoi/yJ9"}`)
	if code != http.StatusBadRequest || !bytes.Contains(body, []byte("UTF-8")) {
		t.Fatalf("invalid UTF-8: HTTP %d %s, want 400 naming UTF-8", code, body)
	}
	res, err := env.grpc.History(context.Background(), &heraldv1.HistoryRequest{Channel: "feed:poison", Limit: 10})
	if err != nil || len(res.Publications) != 0 {
		t.Fatalf("history after the refusal: %v %v", res, err)
	}
	if code, body := env.restDo(t, "POST", "/v1/channels/feed:poison/publish", `{"data":{"fine":true}}`); code != 200 {
		t.Fatalf("publish: %d %s", code, body)
	}
	if g := br.nextPub("feed:poison"); g.json != `{"fine":true}` {
		t.Fatalf("browser got %v", g)
	}
}

// TestRESTBodyPayloadErrors: a REST body with two payload fields or a
// repeated data key is 400 (which would be meant?).
func TestRESTBodyPayloadErrors(t *testing.T) {
	env := startPayloadShape(t, payloadShapes[0])
	for _, body := range []string{
		`{"data":1,"data":2}`,
		`{"data":1,"binary":"AA=="}`,
		`{"data":1,"json":"2"}`,
		`{"json":"{\"a\":"}`,
		`{"data":{"a":1},"unknown":1}`,
		`[{"data":1}]`,
	} {
		if code, resp := env.restDo(t, "POST", "/v1/channels/feed:x/publish", body); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d %s, want 400", body, code, resp)
		}
		if code, resp := env.restDo(t, "POST", "/v1/broadcast", strings.Replace(body, `{`, `{"channels":["feed:x"],`, 1)); code != http.StatusBadRequest {
			t.Errorf("broadcast %s: HTTP %d %s, want 400", body, code, resp)
		}
	}
	if code, resp := env.restDo(t, "POST", "/v1/channels/feed:x/publish", `{"json":"{\"big\":12345678901234567891}"}`); code != 200 {
		t.Fatalf("json over REST: %d %s", code, resp)
	}
	code, body := env.restDo(t, "GET", "/v1/channels/feed:x/history", "")
	if code != 200 || !bytes.Contains(body, []byte(`"data":{"big":12345678901234567891}`)) {
		t.Fatalf("history: %d %s", code, body)
	}
}

// TestEmptyValueRefusedEverywhere: a google.protobuf.Value with no kind set
// (what protobufjs and Python send for a mis-built Value), at the top or
// nested, is refused by Publish, PublishStream, Broadcast and a browser's
// herald.proto publish, with a message that says how to send JSON; nothing
// is stored.
func TestEmptyValueRefusedEverywhere(t *testing.T) {
	env := startPayloadShape(t, payloadShapes[0])
	nested := structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("x"), {}}})
	br := dialBrowser(t, env, "herald.proto")
	for name, v := range map[string]*structpb.Value{"top": {}, "nested": nested} {
		check := func(path, msg string) {
			t.Helper()
			if !strings.Contains(msg, "no kind set") || !strings.Contains(msg, "`json`") || !strings.Contains(msg, "REST") {
				t.Errorf("%s %s: %q, want a message that says the Value is empty and how to send JSON", name, path, msg)
			}
		}
		_, err := env.grpc.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "feed:v", Payload: &heraldv1.PublishRequest_Data{Data: v}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s Publish: %v", name, err)
		}
		check("Publish", status.Convert(err).Message())
		st, err := env.grpc.PublishStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Send(&heraldv1.PublishStreamRequest{Publish: &heraldv1.PublishRequest{Channel: "feed:v", Payload: &heraldv1.PublishRequest_Data{Data: v}}})
		resp, err := st.Recv()
		if err != nil || resp.GetError().GetCode() != "invalid_argument" {
			t.Fatalf("%s PublishStream: %v %v", name, resp, err)
		}
		check("PublishStream", resp.GetError().GetMessage())
		_, err = env.grpc.Broadcast(context.Background(), &heraldv1.BroadcastRequest{Channels: []string{"feed:v"}, Payload: &heraldv1.BroadcastRequest_Data{Data: v}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s Broadcast: %v", name, err)
		}
		check("Broadcast", status.Convert(err).Message())
		r := br.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Publish{Publish: &heraldv1.PublishFrame{Channel: "feed:v", Payload: &heraldv1.PublishFrame_Data{Data: v}}}}, "x")
		if r.GetError().GetCode() != 110 {
			t.Fatalf("%s browser: %v", name, r)
		}
		check("browser", r.GetError().GetMessage())
	}
	res, err := env.grpc.History(context.Background(), &heraldv1.HistoryRequest{Channel: "feed:v", Limit: 10})
	if err != nil || len(res.Publications) != 0 || res.Position.Offset != 0 {
		t.Fatalf("something was stored: %v %v", res, err)
	}
}

// TestRESTChannelWithSlash: a valid channel name with `/`, percent-encoded
// in the path, reaches publish, history, presence and subscribe.
func TestRESTChannelWithSlash(t *testing.T) {
	env := startPayloadShape(t, payloadShapes[0])
	const path = "feed:a%2Fb"
	stream := env.restSubscribe(t, path)
	code, body := env.restDo(t, "POST", "/v1/channels/"+path+"/publish", `{"data":{"n":1}}`)
	if code != 200 {
		t.Fatalf("publish: %d %s", code, body)
	}
	if g := stream.nextPub(); g.json != `{"n":1}` {
		t.Fatalf("REST stream got %v", g)
	}
	code, body = env.restDo(t, "GET", "/v1/channels/"+path+"/history", "")
	if code != 200 || !bytes.Contains(body, []byte(`"channel":"feed:a/b"`)) {
		t.Fatalf("history: %d %s", code, body)
	}
	for _, p := range []string{"/presence", "/presence/stats"} {
		if code, body := env.restDo(t, "GET", "/v1/channels/"+path+p, ""); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	res, err := env.grpc.History(context.Background(), &heraldv1.HistoryRequest{Channel: "feed:a/b", Limit: 10})
	if err != nil || len(res.Publications) != 1 {
		t.Fatalf("gRPC history of feed:a/b: %v %v", res, err)
	}
	// A literal / still separates segments: no such route.
	if code, _ := env.restDo(t, "POST", "/v1/channels/feed:a/b/publish", `{"data":1}`); code != http.StatusNotFound {
		t.Fatalf("unencoded slash: %d, want 404", code)
	}
}

// TestResumeWithoutEpochNotRecovered: a resume whose since has an offset
// but no epoch is never recovered, on gRPC Subscribe, SubscribeMany and
// the WebSocket (subscribe and personal_since): recovered=false, the
// current position, and only live publications after it.
func TestResumeWithoutEpochNotRecovered(t *testing.T) {
	env := startPayloadShape(t, payloadShapes[0])
	for i := 1; i <= 3; i++ {
		for _, ch := range []string{"feed:e", "user:ann"} {
			if _, err := env.grpc.Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: &heraldv1.PublishRequest_Json{Json: strconv.Itoa(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	since := &heraldv1.StreamPosition{Offset: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := env.grpc.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: "feed:e", Since: since})
	if err != nil {
		t.Fatal(err)
	}
	first, err := sub.Recv()
	if err != nil || first.GetSubscribed() == nil || first.GetSubscribed().Recovered || first.GetSubscribed().GetPosition().GetOffset() != 3 {
		t.Fatalf("Subscribe: %v %v; want recovered=false at offset 3", first, err)
	}
	many, err := env.grpc.SubscribeMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = many.Send(&heraldv1.SubscribeManyRequest{Id: 1, Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channel: "feed:e", Since: since}}})
	m, err := many.Recv()
	if sd := m.GetEvent().GetSubscribed(); err != nil || sd == nil || sd.Recovered || sd.GetPosition().GetOffset() != 3 {
		t.Fatalf("SubscribeMany: %v %v; want recovered=false at offset 3", m, err)
	}
	for _, sp := range []string{"herald.json", "herald.proto"} {
		br := dialBrowser(t, env, sp)
		r := br.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: "feed:e", Since: since}}}, "")
		if sd := r.GetSubscribe(); sd == nil || sd.Recovered || sd.GetPosition().GetOffset() != 3 {
			t.Fatalf("%s subscribe: %v; want recovered=false at offset 3", sp, r)
		}
	}
	// personal_since without an epoch.
	d := websocket.Dialer{Subprotocols: []string{"herald.proto"}}
	ws, _, err := d.Dial(env.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pb := &browser{t: t, ws: ws, proto: true}
	pb.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: env.token, PersonalSince: since}}}, "")
	var pushed *heraldv1.SubscribedFrame
	for pushed == nil {
		for i, fr := range pb.protQ {
			if s := fr.GetSubscribed(); s != nil && s.Channel == "user:ann" {
				pushed = s
				pb.protQ = append(pb.protQ[:i], pb.protQ[i+1:]...)
				break
			}
		}
		if pushed == nil {
			pb.readMessage()
		}
	}
	if pushed.Recovered || pushed.GetPosition().GetOffset() != 3 {
		t.Fatalf("personal_since without epoch: %v; want recovered=false at offset 3", pushed)
	}
	// Only live publications follow: the next one is offset 4.
	if _, err := env.grpc.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "feed:e", Payload: &heraldv1.PublishRequest_Json{Json: "4"}}); err != nil {
		t.Fatal(err)
	}
	if ev, err := sub.Recv(); err != nil || ev.GetPublication().GetOffset() != 4 {
		t.Fatalf("Subscribe after the resume: %v %v, want offset 4 (no replay)", ev, err)
	}
	if m, err := many.Recv(); err != nil || m.GetEvent().GetPublication().GetOffset() != 4 {
		t.Fatalf("SubscribeMany after the resume: %v %v, want offset 4 (no replay)", m, err)
	}
}

// TestInvalidStoredPayloadDeliveredAsBinary: a publication whose JSON
// payload is not valid UTF-8 (only possible for data stored before the
// core checked payloads: here written into the engine directly, in Redis)
// never poisons a text frame: browsers get it as binary, live, in a
// resume and in history, stay connected and receive what follows in the
// same channel; gRPC and REST readers get it as binary too.
func TestInvalidStoredPayloadDeliveredAsBinary(t *testing.T) {
	for _, sh := range []payloadShape{payloadShapes[0], payloadShapes[2]} {
		t.Run(sh.name, func(t *testing.T) {
			env := startPayloadShape(t, sh)
			const ch = "feed:old"
			r := openReaders(t, env, ch)
			bad := []byte("{\"a\":\"\xff\"}")
			pub := &heraldv1.Publication{Channel: ch, Payload: &heraldv1.Publication_RawJson{RawJson: bad}, TimeUnixMs: time.Now().UnixMilli()}
			before := metricValue(t, env, "herald_ws_invalid_payloads_total")
			res, err := env.core.Core().Engine().Publish(context.Background(), pub, service.PublishOptions{HistorySize: 1000, HistoryTTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			r.expect("stored invalid UTF-8", got{binary: bad})
			if _, err := env.grpc.Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: &heraldv1.PublishRequest_Json{Json: `{"next":1}`}}); err != nil {
				t.Fatal(err)
			}
			r.expect("the publication after it", got{json: `{"next":1}`, isJSON: true})
			if after := metricValue(t, env, "herald_ws_invalid_payloads_total"); after <= before {
				t.Errorf("herald_ws_invalid_payloads_total %v → %v, want it counted", before, after)
			}
			// A resume from before it replays it as binary, then the next.
			for _, sp := range []string{"herald.json", "herald.proto"} {
				br := dialBrowser(t, env, sp)
				since := &heraldv1.StreamPosition{Offset: res.Position.Offset - 1, Epoch: res.Position.Epoch}
				rep := br.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeFrame{Channel: ch, Since: since}}}, "")
				if !rep.GetSubscribe().GetRecovered() {
					t.Fatalf("%s resume: %v", sp, rep)
				}
				if g := br.nextPub(ch); g.isJSON || !bytes.Equal(g.binary, bad) {
					t.Errorf("%s resume: %v, want the bytes as binary", sp, g)
				}
				if g := br.nextPub(ch); g.json != `{"next":1}` {
					t.Errorf("%s resume: then %v", sp, g)
				}
			}
		})
	}
}

// metricValue reads a counter from the /metrics of the node that runs the
// bridge (the sum over its label values).
func metricValue(t *testing.T, env *payloadEnv, name string) float64 {
	t.Helper()
	resp, err := http.Get(strings.TrimSuffix(strings.Replace(env.ws, "ws://", "http://", 1), "/ws") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += f
		}
	}
	return sum
}
