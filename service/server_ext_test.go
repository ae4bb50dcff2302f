package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/memory"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/service"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// testServer is a core on a real loopback gRPC listener.
type testServer struct {
	core   *service.Server
	client heraldv1.HeraldServiceClient
	conn   *grpc.ClientConn
	gs     *grpc.Server
}

func testConfig(t testing.TB, edit func(*config.Config)) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Namespaces = []config.Namespace{
		{Name: "small", HistorySize: 3, HistoryTTL: config.Duration(time.Minute)},
		{Name: "none", HistorySize: 0},
		{Name: "room", HistorySize: 1000, HistoryTTL: config.Duration(time.Minute), Presence: true, JoinLeave: true},
	}
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startServer(t testing.TB, cfg config.Config) *testServer {
	t.Helper()
	return startServerOn(t, cfg, memory.New(memory.OptionsFrom(cfg.Limits)))
}

// startServerOn is startServer on an engine of the caller's.
func startServerOn(t testing.TB, cfg config.Config, engine service.Engine) *testServer {
	t.Helper()
	core := service.New(cfg, engine, nil)
	ctx, cancel := context.WithCancel(context.Background())
	if err := core.Start(ctx); err != nil {
		t.Fatal(err)
	}
	gs := service.NewGRPCServer(cfg, core, health.NewServer(), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		core.Close()
		gs.Stop()
		cancel()
		_ = engine.Close()
	})
	return &testServer{core: core, client: heraldv1.NewHeraldServiceClient(conn), conn: conn, gs: gs}
}

func jsonPayload(s string) *heraldv1.PublishRequest_RawJson {
	return &heraldv1.PublishRequest_RawJson{RawJson: []byte(s)}
}

func (ts *testServer) publish(t testing.TB, channel, body string) *heraldv1.StreamPosition {
	t.Helper()
	resp, err := ts.client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: channel, Payload: jsonPayload(body)})
	if err != nil {
		t.Fatalf("publish %s: %v", channel, err)
	}
	return resp.Position
}

// sub is an open Subscribe stream.
type sub struct {
	stream     grpc.ServerStreamingClient[heraldv1.SubscribeResponse]
	subscribed *heraldv1.Subscribed
	cancel     context.CancelFunc
}

func (ts *testServer) subscribe(t testing.TB, req *heraldv1.SubscribeRequest) *sub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if req.PayloadFormat == heraldv1.PayloadFormat_PAYLOAD_FORMAT_UNSPECIFIED {
		req.PayloadFormat = heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW
	}
	stream, err := ts.client.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("subscribe %s: %v", req.Channel, err)
	}
	if first.GetSubscribed() == nil {
		t.Fatalf("first message is %v, want subscribed", first)
	}
	return &sub{stream: stream, subscribed: first.GetSubscribed(), cancel: cancel}
}

// next returns the next publication, failing on anything else.
func (s *sub) next(t testing.TB) *heraldv1.Publication {
	t.Helper()
	for {
		ev, err := s.stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if p := ev.GetPublication(); p != nil {
			return p
		}
	}
}

func TestPublishSubscribeOrderConcurrentPublishers(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	const publishers, each = 8, 200
	subs := []*sub{
		ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:order"}),
		ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:order"}),
	}
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := ts.client.Publish(context.Background(), &heraldv1.PublishRequest{
					Channel: "room:order", Payload: jsonPayload(fmt.Sprintf(`{"p":%d,"i":%d}`, p, i)),
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for si, s := range subs {
		lastByPublisher := map[string]int{}
		for want := uint64(1); want <= publishers*each; want++ {
			p := s.next(t)
			if p.Offset != want {
				t.Fatalf("subscriber %d: offset %d, want %d", si, p.Offset, want)
			}
			var pub, i int
			if _, err := fmt.Sscanf(string(p.GetRawJson()), `{"p":%d,"i":%d}`, &pub, &i); err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprint(pub)
			if prev, ok := lastByPublisher[key]; ok && i != prev+1 {
				t.Fatalf("subscriber %d: publisher %d's message %d after %d", si, pub, i, prev)
			}
			lastByPublisher[key] = i
		}
	}
}

// TestJSONPayloadFormats: by default JSON payloads come as their text in
// `json` (exact), with PAYLOAD_FORMAT_RAW as the same text in `raw_json`,
// with PAYLOAD_FORMAT_VALUE as a Value in `data`; binary is binary in all.
func TestJSONPayloadFormats(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	open := func(f heraldv1.PayloadFormat) grpc.ServerStreamingClient[heraldv1.SubscribeResponse] {
		stream, err := ts.client.Subscribe(context.Background(), &heraldv1.SubscribeRequest{Channel: "news", PayloadFormat: f})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		return stream
	}
	def := open(heraldv1.PayloadFormat_PAYLOAD_FORMAT_UNSPECIFIED)
	raw := open(heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW)
	val := open(heraldv1.PayloadFormat_PAYLOAD_FORMAT_VALUE)
	v, _ := structpb.NewValue(map[string]any{"text": "hi", "n": 2})
	if _, err := ts.client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "news", Payload: &heraldv1.PublishRequest_Data{Data: v}}); err != nil {
		t.Fatal(err)
	}
	ts.publish(t, "news", `{"id":12345678901234567891,"b":[1.0,"two"],"a":1e400}`)
	bin := []byte{0, 1, 2, 255}
	if _, err := ts.client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "news", Payload: &heraldv1.PublishRequest_Binary{Binary: bin}}); err != nil {
		t.Fatal(err)
	}
	read := func(stream grpc.ServerStreamingClient[heraldv1.SubscribeResponse]) []*heraldv1.Publication {
		var got []*heraldv1.Publication
		for len(got) < 3 {
			ev, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ev.GetPublication())
		}
		return got
	}
	// A Value is converted to text once, keys sorted.
	const first, second = `{"n":2,"text":"hi"}`, `{"id":12345678901234567891,"b":[1.0,"two"],"a":1e400}`
	got := read(def)
	if got[0].GetJson() != first || got[1].GetJson() != second {
		t.Errorf("default format: %q, %q; want %q, %q", got[0].GetJson(), got[1].GetJson(), first, second)
	}
	if b := got[2].GetBinary(); string(b) != string(bin) {
		t.Errorf("binary payload = %v, want %v", b, bin)
	}
	got = read(raw)
	if string(got[0].GetRawJson()) != first || string(got[1].GetRawJson()) != second || string(got[2].GetBinary()) != string(bin) {
		t.Errorf("raw format: %v", got)
	}
	got = read(val)
	if m := got[0].GetData().GetStructValue().AsMap(); m["text"] != "hi" || m["n"] != 2.0 {
		t.Errorf("value format: first payload = %v, want the published object", m)
	}
	// 1e400 is no double: that payload stays text.
	if got[1].GetJson() != second || string(got[2].GetBinary()) != string(bin) {
		t.Errorf("value format: %v", got[1:])
	}
}

func TestResumeSeamNoGapNoDuplicate(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	const ch = "room:seam"
	var pos *heraldv1.StreamPosition
	for i := 0; i < 50; i++ {
		pos = ts.publish(t, ch, fmt.Sprint(i))
	}
	// Publish continuously while subscribers resume, so that publications
	// land between the registration, the history read and the live feed.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ts.publish(t, ch, fmt.Sprint(1000+i))
		}
	}()
	for round := 0; round < 20; round++ {
		since := &heraldv1.StreamPosition{Offset: uint64(round * 2), Epoch: pos.Epoch}
		s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, Since: since})
		if !s.subscribed.Recovered {
			t.Fatalf("round %d: recovered = false, want true", round)
		}
		for want := since.Offset + 1; want <= since.Offset+120; want++ {
			if p := s.next(t); p.Offset != want {
				t.Fatalf("round %d: offset %d, want %d", round, p.Offset, want)
			}
		}
		s.cancel()
	}
	close(stop)
	wg.Wait()
}

func TestRecoveryRefused(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	for i, tc := range []struct {
		name   string
		offset uint64
		epoch  string // "" means the channel's
		want   bool
	}{
		{"other epoch", 9, "deadbeef", false},
		{"older than history", 2, "", false},
		{"future offset", 99, "", false},
		{"within history", 7, "", true},
		{"at the top", 10, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := fmt.Sprintf("small:x%d", i) // keeps 3 publications
			var pos *heraldv1.StreamPosition
			for i := 0; i < 10; i++ {
				pos = ts.publish(t, ch, fmt.Sprint(i))
			}
			since := &heraldv1.StreamPosition{Offset: tc.offset, Epoch: tc.epoch}
			if since.Epoch == "" {
				since.Epoch = pos.Epoch
			}
			s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, Since: since})
			if s.subscribed.Recovered != tc.want {
				t.Fatalf("recovered = %v, want %v", s.subscribed.Recovered, tc.want)
			}
			if s.subscribed.Position.Offset != 10 || s.subscribed.Position.Epoch != pos.Epoch {
				t.Fatalf("position = %v, want 10@%s", s.subscribed.Position, pos.Epoch)
			}
			if tc.want {
				for want := tc.offset + 1; want <= 10; want++ {
					if p := s.next(t); p.Offset != want {
						t.Fatalf("offset %d, want %d", p.Offset, want)
					}
				}
			}
			// Live publications follow in every case.
			ts.publish(t, ch, `"live"`)
			if p := s.next(t); string(p.GetRawJson()) != `"live"` || p.Offset != 11 {
				t.Fatalf("live publication = %d %s", p.Offset, p.GetRawJson())
			}
		})
	}
}

func TestIdempotentPublish(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "news"})
	req := &heraldv1.PublishRequest{Channel: "news", Payload: jsonPayload(`"once"`), IdempotencyKey: "order-42"}
	first, err := ts.client.Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := ts.client.Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !second.Duplicate || second.Position.Offset != first.Position.Offset {
		t.Fatalf("first %v, retry %v: want the same position, retry marked duplicate", first, second)
	}
	ts.publish(t, "news", `"after"`)
	if p := s.next(t); string(p.GetRawJson()) != `"once"` {
		t.Fatalf("got %s", p.GetRawJson())
	}
	if p := s.next(t); string(p.GetRawJson()) != `"after"` {
		t.Fatalf("got %s, want the publication after the retried one (nothing delivered twice)", p.GetRawJson())
	}
	// The key is per channel.
	other, err := ts.client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "room:a", Payload: jsonPayload(`1`), IdempotencyKey: "order-42"})
	if err != nil || other.Duplicate {
		t.Fatalf("same key on another channel: %v %v", other, err)
	}
}

func TestPublishStreamAcksInOrder(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	stream, err := ts.client.PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	go func() {
		for i := 0; i < n; i++ {
			req := &heraldv1.PublishStreamRequest{Sequence: uint64(i), Publish: &heraldv1.PublishRequest{Channel: "news", Payload: jsonPayload(fmt.Sprint(i))}}
			if i%1000 == 999 {
				req.Publish.Channel = "bad channel" // a per-message error
			}
			if err := stream.Send(req); err != nil {
				t.Error(err)
				return
			}
		}
		_ = stream.CloseSend()
	}()
	var last uint64
	for i := 0; i < n; i++ {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Sequence != uint64(i) {
			t.Fatalf("ack %d has sequence %d", i, resp.Sequence)
		}
		if i%1000 == 999 {
			if resp.GetError().GetCode() != "invalid_argument" {
				t.Fatalf("ack %d: %v, want invalid_argument", i, resp)
			}
			continue
		}
		off := resp.GetOk().GetPosition().GetOffset()
		if off != last+1 {
			t.Fatalf("ack %d: offset %d after %d", i, off, last)
		}
		last = off
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after the last ack: %v, want EOF", err)
	}
}

func TestBroadcast(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	a := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:a"})
	b := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:b"})
	resp, err := ts.client.Broadcast(context.Background(), &heraldv1.BroadcastRequest{
		Channels: []string{"room:a", "nope:x", "room:b"}, Payload: &heraldv1.BroadcastRequest_RawJson{RawJson: []byte(`{"all":true}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 3 || resp.Results[0].GetOk() == nil || resp.Results[1].GetError().GetCode() != "invalid_argument" || resp.Results[2].GetOk() == nil {
		t.Fatalf("results = %v", resp.Results)
	}
	for _, s := range []*sub{a, b} {
		if p := s.next(t); string(p.GetRawJson()) != `{"all":true}` {
			t.Fatalf("got %s", p.GetRawJson())
		}
	}
}

func TestInvalidInput(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Limits.MaxPayload = 100 })
	ts := startServer(t, cfg)
	ctx := context.Background()
	ok := jsonPayload(`1`)
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"empty channel", func() error { _, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Payload: ok}); return err }, "empty"},
		{"bad character", func() error {
			_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: "a b", Payload: ok})
			return err
		}, "forbidden character"},
		{"too long", func() error {
			_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: strings.Repeat("a", 256), Payload: ok})
			return err
		}, "limit is 255"},
		{"unknown namespace", func() error {
			_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: "nope:x", Payload: ok})
			return err
		}, "unknown namespace"},
		{"no payload", func() error { _, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: "news"}); return err }, "payload is required"},
		{"invalid raw json", func() error {
			_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: "news", Payload: jsonPayload(`{`)})
			return err
		}, "not valid JSON"},
		{"oversized payload", func() error {
			_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: "news", Payload: &heraldv1.PublishRequest_Binary{Binary: make([]byte, 101)}})
			return err
		}, "limit is 100"},
		{"long idempotency key", func() error {
			_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: "news", Payload: ok, IdempotencyKey: strings.Repeat("k", 129)})
			return err
		}, "idempotency_key"},
		{"subscribe bad channel", func() error {
			s, err := ts.client.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: "user:"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, "names no user"},
		{"history page too big", func() error {
			_, err := ts.client.History(ctx, &heraldv1.HistoryRequest{Channel: "news", Limit: 5000})
			return err
		}, "maximum page"},
		{"broadcast nothing", func() error {
			_, err := ts.client.Broadcast(ctx, &heraldv1.BroadcastRequest{Payload: &heraldv1.BroadcastRequest_RawJson{RawJson: []byte(`1`)}})
			return err
		}, "channels is empty"},
		{"disconnect no user", func() error { _, err := ts.client.Disconnect(ctx, &heraldv1.DisconnectRequest{}); return err }, "user is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("err = %v, want InvalidArgument mentioning %q", err, tc.want)
			}
		})
	}
	// Presence off in a namespace is a failed precondition, not a crash.
	if _, err := ts.client.Presence(ctx, &heraldv1.PresenceRequest{Channel: "small:x"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("presence in a namespace without it: %v", err)
	}
	// History since a position of another epoch.
	if _, err := ts.client.History(ctx, &heraldv1.HistoryRequest{Channel: "news", Since: &heraldv1.StreamPosition{Offset: 1, Epoch: "other"}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("history from another epoch: %v", err)
	}
}

func TestHistoryPages(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	for i := 1; i <= 10; i++ {
		ts.publish(t, "room:h", fmt.Sprint(i))
	}
	ctx := context.Background()
	offsets := func(r *heraldv1.HistoryResponse) (out []uint64) {
		for _, p := range r.Publications {
			out = append(out, p.Offset)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		req  *heraldv1.HistoryRequest
		want string
	}{
		{"oldest first", &heraldv1.HistoryRequest{Limit: 3}, "[1 2 3]"},
		{"since", &heraldv1.HistoryRequest{Limit: 3, Since: &heraldv1.StreamPosition{Offset: 8}}, "[9 10]"},
		{"newest first", &heraldv1.HistoryRequest{Limit: 3, Reverse: true}, "[10 9 8]"},
		{"before", &heraldv1.HistoryRequest{Limit: 3, Reverse: true, Since: &heraldv1.StreamPosition{Offset: 3}}, "[2 1]"},
		{"default limit", &heraldv1.HistoryRequest{}, "[1 2 3 4 5 6 7 8 9 10]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Channel = "room:h"
			resp, err := ts.client.History(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(offsets(resp)); got != tc.want {
				t.Fatalf("offsets %s, want %s", got, tc.want)
			}
			if resp.Position.Offset != 10 {
				t.Fatalf("position %v", resp.Position)
			}
		})
	}
}

func TestAPIKeys(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "backend", Key: "0123456789abcdef-secret"}}
	})
	ts := startServer(t, cfg)
	req := &heraldv1.PublishRequest{Channel: "news", Payload: jsonPayload(`1`)}
	for _, tc := range []struct {
		name, auth string
		want       codes.Code
	}{
		{"missing", "", codes.Unauthenticated},
		{"wrong scheme", "Basic abc", codes.Unauthenticated},
		{"wrong key", "Bearer nope-nope-nope-nope", codes.Unauthenticated},
		{"valid", "Bearer 0123456789abcdef-secret", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.auth != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.auth)
			}
			if _, err := ts.client.Publish(ctx, req); status.Code(err) != tc.want {
				t.Fatalf("publish: %v, want %v", err, tc.want)
			}
			s, err := ts.client.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: "news"})
			if err == nil {
				_, err = s.Recv()
			}
			if status.Code(err) != tc.want {
				t.Fatalf("subscribe: %v, want %v", err, tc.want)
			}
		})
	}
	// Health checks need no key.
	if _, err := healthpb.NewHealthClient(ts.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without a key: %v", err)
	}
}

func TestSlowSubscriberIsCutOff(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Limits.SubscriberQueue = 256 })
	ts := startServer(t, cfg)
	slow := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "none:firehose"})
	fast := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "none:firehose"})
	const n = 4000
	payload := fmt.Sprintf("%q", strings.Repeat("x", 4000))
	var got atomic.Uint64 // publications the fast subscriber has received
	received := make(chan error, 1)
	go func() {
		for want := uint64(1); want <= n; want++ {
			ev, err := fast.stream.Recv()
			if err != nil {
				received <- err
				return
			}
			if off := ev.GetPublication().GetOffset(); off != want {
				received <- fmt.Errorf("fast subscriber: offset %d, want %d", off, want)
				return
			}
			got.Store(want)
		}
		received <- nil
	}()
	// The slow subscriber never reads; the publisher must never wait for it.
	// It stays within 64 publications of the fast one, well inside the fast
	// one's queue, however the machine schedules the goroutines.
	for i := uint64(1); i <= n; i++ {
		for i > got.Load()+64 {
			select {
			case err := <-received:
				t.Fatalf("fast subscriber stopped: %v", err)
			default:
				time.Sleep(time.Millisecond)
			}
		}
		ts.publish(t, "none:firehose", payload)
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	for {
		_, err := slow.stream.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("slow subscriber ended with %v, want ResourceExhausted", err)
			}
			break
		}
	}
}

func TestCloseEndsStreamsWithUnavailable(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "news"})
	done := make(chan struct{})
	go func() { ts.gs.GracefulStop(); close(done) }()
	ts.core.Close()
	_, err := s.stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream ended with %v, want Unavailable", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop did not return after the streams ended")
	}
}

func TestChannelsAndInfo(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	ts.publish(t, "room:one", "1")
	ts.publish(t, "room:two", "2")
	ts.publish(t, "news", "3")
	s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:one"})
	defer s.cancel()
	resp, err := ts.client.Channels(context.Background(), &heraldv1.ChannelsRequest{Pattern: "room:*"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Channels) != 2 || resp.Channels[0].Name != "room:one" || resp.Channels[0].Streams != 1 || resp.Channels[1].Name != "room:two" {
		t.Fatalf("channels = %v", resp.Channels)
	}
	info, err := ts.client.Info(context.Background(), &heraldv1.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Engine != "memory" || info.Streams != 1 || info.Node == "" {
		t.Fatalf("info = %v", info)
	}
	var names []string
	for _, ns := range info.Namespaces {
		names = append(names, ns.Name)
		if ns.Name == "room" && (ns.HistorySize != 1000 || !ns.Presence || ns.HistoryTtl.AsDuration() != time.Minute) {
			t.Fatalf("room in info: %v", ns)
		}
	}
	if strings.Join(names, ",") != ",none,room,small,user" {
		t.Fatalf("info's namespaces: %q, want every configured and implicit one, by name", names)
	}
}

func TestBridgeSessionPresence(t *testing.T) {
	cfg := testConfig(t, nil)
	ts := startServer(t, cfg)
	watch := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:p", PresenceEvents: true})
	ctx, cancel := context.WithCancel(context.Background())
	bs, err := ts.client.BridgeSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: "b1"}}})
	alice := &heraldv1.ClientInfo{Client: "c1", User: "alice"}
	_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: &heraldv1.PresenceUpdate{
		Joins: []*heraldv1.PresenceEvent{{Channel: "room:p", Client: alice}, {Channel: "room:p", Client: &heraldv1.ClientInfo{Client: "c2", User: "alice"}}},
	}}})
	ev, err := watch.stream.Recv()
	if err != nil || ev.GetJoin().GetClient().GetClient() != "c1" {
		t.Fatalf("join event: %v %v", ev, err)
	}
	stats := func() *heraldv1.PresenceStatsResponse {
		r, err := ts.client.PresenceStats(context.Background(), &heraldv1.PresenceStatsRequest{Channel: "room:p"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	waitFor(t, func() bool { s := stats(); return s.Clients == 2 && s.Users == 1 })
	// The core's namespaces come first, then commands.
	first, err := bs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.NamespacesFrom(first.GetNamespaces())
	if err != nil || first.GetNamespaces() == nil {
		t.Fatalf("first message %v: %v, want the core's namespaces", first, err)
	}
	if d := cfg.NamespaceIndex().Diff(got, "the core's configuration", "what it sent"); len(d) > 0 {
		t.Fatalf("the namespaces sent differ from the core's: %v", d)
	}
	if r := got["room"]; r == nil || r.HistorySize != 1000 || !r.JoinLeave || r.HistoryTTL.D() != time.Minute {
		t.Fatalf("room sent as %+v", r)
	}
	// Commands reach attached bridges.
	if _, err := ts.client.Disconnect(context.Background(), &heraldv1.DisconnectRequest{User: "alice", Reason: "bye"}); err != nil {
		t.Fatal(err)
	}
	cmd, err := bs.Recv()
	if err != nil || cmd.GetDisconnect().GetUser() != "alice" {
		t.Fatalf("command: %v %v", cmd, err)
	}
	// A bridge that goes away takes its presence with it.
	cancel()
	waitFor(t, func() bool { return stats().Clients == 0 })
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAPIKeyScopes(t *testing.T) {
	keys := map[string]config.APIKey{
		"orders": {Name: "orders", Key: "key-publish-orders-0001", Scopes: []string{"publish:room"}},
		"reader": {Name: "reader", Key: "key-read-all-00000001", Scopes: []string{"read"}},
		"bridge": {Name: "bridge", Key: "key-bridge-0000000001", Scopes: []string{"bridge"}},
		"admin":  {Name: "admin", Key: "key-admin-00000000001"},
	}
	cfg := testConfig(t, func(c *config.Config) {
		for _, k := range keys {
			c.APIKeys = append(c.APIKeys, k)
		}
	})
	ts := startServer(t, cfg)
	as := func(name string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keys[name].Key)
	}
	publish := func(ctx context.Context, ch string) error {
		_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(`1`)})
		return err
	}
	history := func(ctx context.Context, ch string) error {
		_, err := ts.client.History(ctx, &heraldv1.HistoryRequest{Channel: ch})
		return err
	}
	publishAs := func(ctx context.Context, ch string) error {
		_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(`1`),
			Publisher: &heraldv1.ClientInfo{Client: "c1", User: "alice"}})
		return err
	}
	info := func(ctx context.Context) error { _, err := ts.client.Info(ctx, &heraldv1.InfoRequest{}); return err }
	bridge := func(ctx context.Context) error {
		bs, err := ts.client.BridgeSession(ctx)
		if err != nil {
			return err
		}
		_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: "b"}}})
		_ = bs.CloseSend()
		for { // the core's namespaces, then the end
			if _, err = bs.Recv(); err != nil {
				break
			}
		}
		if err == io.EOF {
			return nil
		}
		return err
	}
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"scoped publisher in its namespace", func() error { return publish(as("orders"), "room:1") }, codes.OK},
		{"scoped publisher elsewhere", func() error { return publish(as("orders"), "news") }, codes.PermissionDenied},
		{"scoped publisher reads", func() error { return history(as("orders"), "room:1") }, codes.PermissionDenied},
		{"reader reads", func() error { return history(as("reader"), "room:1") }, codes.OK},
		{"reader publishes", func() error { return publish(as("reader"), "room:1") }, codes.PermissionDenied},
		{"reader admin call", func() error { return info(as("reader")) }, codes.PermissionDenied},
		{"reader bridge session", func() error { return bridge(as("reader")) }, codes.PermissionDenied},
		{"bridge publishes", func() error { return publish(as("bridge"), "news") }, codes.OK},
		{"bridge session", func() error { return bridge(as("bridge")) }, codes.OK},
		{"bridge admin call", func() error { return info(as("bridge")) }, codes.PermissionDenied},
		{"admin", func() error { return info(as("admin")) }, codes.OK},
		{"scoped publisher names a publisher", func() error { return publishAs(as("orders"), "room:1") }, codes.PermissionDenied},
		{"bridge names a publisher", func() error { return publishAs(as("bridge"), "room:1") }, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); status.Code(err) != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestPublisherIsDelivered(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:who"})
	if _, err := ts.client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "room:who", Payload: jsonPayload(`"hi"`),
		Publisher: &heraldv1.ClientInfo{Client: "c1", User: "alice"}}); err != nil {
		t.Fatal(err)
	}
	if p := s.next(t); p.GetPublisher().GetUser() != "alice" || p.GetPublisher().GetClient() != "c1" {
		t.Fatalf("publisher = %v, want alice/c1", p.GetPublisher())
	}
	h, err := ts.client.History(context.Background(), &heraldv1.HistoryRequest{Channel: "room:who"})
	if err != nil || len(h.Publications) != 1 || h.Publications[0].GetPublisher().GetUser() != "alice" {
		t.Fatalf("history: %v %v", h, err)
	}
}

// TestChannelsOverTheMessageLimit: a Channels answer that would be over
// limits.max_grpc_message is refused with FAILED_PRECONDITION naming the
// limit and the pattern that narrows it (grpc-go's own refusal was
// RESOURCE_EXHAUSTED, 429 over REST: "retry later", for an answer that
// fails every time); a pattern that fits is answered.
func TestChannelsOverTheMessageLimit(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.Limits.MaxPayload, c.Limits.MaxGRPCMessage = 1024, 2048 }))
	for i := range 60 {
		ts.publish(t, fmt.Sprintf("room:%s-%02d", strings.Repeat("n", 40), i), "1")
	}
	_, err := ts.client.Channels(context.Background(), &heraldv1.ChannelsRequest{})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "limits.max_grpc_message") || !strings.Contains(st.Message(), "pattern") {
		t.Fatalf("60 channels over a 2 KB limit: %v, want FAILED_PRECONDITION naming limits.max_grpc_message and pattern", err)
	}
	resp, err := ts.client.Channels(context.Background(), &heraldv1.ChannelsRequest{Pattern: "room:*-0?"})
	if err != nil || len(resp.Channels) != 10 {
		t.Fatalf("a pattern matching 10: %d channels, %v", len(resp.GetChannels()), err)
	}
}

// TestChannelsInPages: pages list every channel once, in name order, under
// the limit that refuses the whole list, a pattern holding across pages;
// a channel created between two pages after the token's name is on a
// later page; page_size is capped at 1000; a token that is not Channels'
// and a negative size are INVALID_ARGUMENT.
func TestChannelsInPages(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.Limits.MaxPayload, c.Limits.MaxGRPCMessage = 1024, 2048 }))
	ctx := context.Background()
	var want []string
	for i := range 60 {
		name := fmt.Sprintf("room:%s-%02d", strings.Repeat("n", 40), i)
		ts.publish(t, name, "1")
		want = append(want, name)
	}
	ts.publish(t, "news", "1")
	s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:quiet"}) // a stream, no publication
	defer s.cancel()
	want = append(want, "room:quiet")
	sort.Strings(want)

	list := func(pattern string, size int32, tok string) *heraldv1.ChannelsResponse {
		t.Helper()
		resp, err := ts.client.Channels(ctx, &heraldv1.ChannelsRequest{Pattern: pattern, PageSize: size, PageToken: tok})
		if err != nil {
			t.Fatalf("Channels(%q, %d, %q): %v", pattern, size, tok, err)
		}
		return resp
	}
	var got []string
	tok, pages := "", 0
	for {
		resp := list("room:*", 7, tok)
		pages++
		if len(resp.Channels) > 7 || len(resp.Channels) == 0 {
			t.Fatalf("page %d has %d channels, want 1 to 7", pages, len(resp.Channels))
		}
		for _, c := range resp.Channels {
			got = append(got, c.Name)
			if c.Name == "room:quiet" && c.Streams != 1 {
				t.Fatalf("room:quiet: %v, want 1 stream", c)
			}
		}
		if pages == 2 {
			// Between pages: one channel before the pages' place, one after.
			ts.publish(t, "room:a-late", "1")
			ts.publish(t, "room:z-late", "1")
			want = append(want, "room:z-late")
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
		if pages > 20 {
			t.Fatal("more than 20 pages of 7 for 62 channels")
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pages of 7 listed\n%v\nwant\n%v", got, want)
	}
	if pages != 9 { // 62 listed (60, room:quiet, room:z-late), 7 a page
		t.Fatalf("%d pages, want 9", pages)
	}
	// The last page is full: no token, so no empty page after it.
	if resp := list("news", 1, ""); len(resp.Channels) != 1 || resp.NextPageToken != "" {
		t.Fatalf("a page holding the only match: %v", resp)
	}

	big := startServer(t, testConfig(t, nil))
	for i := range 1003 {
		big.publish(t, fmt.Sprintf("room:%04d", i), "1")
	}
	resp, err := big.client.Channels(ctx, &heraldv1.ChannelsRequest{PageSize: 5000})
	if err != nil || len(resp.Channels) != 1000 || resp.NextPageToken == "" || resp.Channels[999].Name != "room:0999" {
		t.Fatalf("page_size 5000 of 1003: %d channels, token %q, %v; want the first 1000 and a token", len(resp.GetChannels()), resp.GetNextPageToken(), err)
	}
	resp, err = big.client.Channels(ctx, &heraldv1.ChannelsRequest{PageSize: 5000, PageToken: resp.NextPageToken})
	if err != nil || len(resp.Channels) != 3 || resp.NextPageToken != "" || resp.Channels[0].Name != "room:1000" {
		t.Fatalf("the page after 1000 of 1003: %v, %v", resp, err)
	}
	if resp, err := big.client.Channels(ctx, &heraldv1.ChannelsRequest{}); err != nil || len(resp.Channels) != 1003 || resp.NextPageToken != "" {
		t.Fatalf("no page_size: %d channels, token %q, %v; want all 1003", len(resp.GetChannels()), resp.GetNextPageToken(), err)
	}

	for _, req := range []*heraldv1.ChannelsRequest{
		{PageSize: -1},
		{PageSize: 5, PageToken: "not a token"},
		{PageSize: 5, PageToken: "Y2hhdDp4"}, // base64 of a bare name, no version
	} {
		if _, err := ts.client.Channels(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Channels(%v): %v, want INVALID_ARGUMENT", req, err)
		}
	}

	// A token continues the list of its own pattern only.
	resp, err = big.client.Channels(ctx, &heraldv1.ChannelsRequest{Pattern: "room:*", PageSize: 2})
	if err != nil || resp.NextPageToken == "" {
		t.Fatalf("a page of room:*: %v, %v", resp, err)
	}
	for _, pattern := range []string{"", "room:0*", "*"} {
		_, err := big.client.Channels(ctx, &heraldv1.ChannelsRequest{Pattern: pattern, PageSize: 2, PageToken: resp.NextPageToken})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "same pattern") {
			t.Fatalf("a token of room:* with pattern %q: %v, want INVALID_ARGUMENT asking for the same pattern", pattern, err)
		}
	}
	if next, err := big.client.Channels(ctx, &heraldv1.ChannelsRequest{Pattern: "room:*", PageSize: 2, PageToken: resp.NextPageToken}); err != nil || len(next.Channels) != 2 || next.Channels[0].Name != "room:0002" {
		t.Fatalf("the next page of room:*: %v, %v; want room:0002 first", next, err)
	}
	if _, err := big.client.Presence(ctx, &heraldv1.PresenceRequest{Channel: "room:0001", PageSize: 2, PageToken: resp.NextPageToken}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a Channels token given to Presence: %v, want INVALID_ARGUMENT", err)
	}
}

// listsAtMost is the memory engine with Channels capped as the Redis
// engine's: an answer without a limit stops after max names, saying more
// follow.
type listsAtMost struct {
	*memory.Engine
	max int
}

func (e listsAtMost) Channels(ctx context.Context, q engine.ChannelsQuery) ([]engine.ChannelState, bool, error) {
	if q.Limit <= 0 {
		q.Limit = e.max
	}
	return e.Engine.Channels(ctx, q)
}

// TestChannelsOverTheEngineCap: an unpaged Channels over what the engine
// lists in one answer is refused with FAILED_PRECONDITION naming
// page_size, never cut short; under the cap, and in pages, it is whole.
func TestChannelsOverTheEngineCap(t *testing.T) {
	cfg := testConfig(t, nil)
	ts := startServerOn(t, cfg, listsAtMost{memory.New(memory.OptionsFrom(cfg.Limits)), 3})
	ctx := context.Background()
	for _, ch := range []string{"room:a", "room:b", "room:c", "news"} {
		if _, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload("1")}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := ts.client.Channels(ctx, &heraldv1.ChannelsRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "page_size") {
		t.Fatalf("an unpaged list of 4 channels from an engine listing 3: %v, want FAILED_PRECONDITION naming page_size", err)
	}
	resp, err := ts.client.Channels(ctx, &heraldv1.ChannelsRequest{Pattern: "room:*"})
	if err != nil || len(resp.Channels) != 3 {
		t.Fatalf("an unpaged list of 3: %v, %v", resp, err)
	}
	var names []string
	for tok := ""; ; {
		resp, err := ts.client.Channels(ctx, &heraldv1.ChannelsRequest{PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.Channels {
			names = append(names, c.Name)
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	if got := strings.Join(names, " "); got != "news room:a room:b room:c" {
		t.Fatalf("pages of 3 listed %q", got)
	}
}

// TestPresenceOverTheMessageLimit: a presence list over
// limits.max_grpc_message is refused with FAILED_PRECONDITION naming the
// limit and PresenceStats, which still counts the clients.
func TestPresenceOverTheMessageLimit(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.Limits.MaxPayload, c.Limits.MaxGRPCMessage = 1024, 2048 }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs, err := ts.client.BridgeSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: "b1"}}})
	for batch := range 6 { // updates within the 2 KB limit
		up := &heraldv1.PresenceUpdate{}
		for i := range 10 {
			n := batch*10 + i
			up.Joins = append(up.Joins, &heraldv1.PresenceEvent{Channel: "room:crowd", Client: &heraldv1.ClientInfo{Client: fmt.Sprintf("client-%02d", n), User: fmt.Sprintf("user-%02d-%s", n, strings.Repeat("u", 20))}})
		}
		if err := bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: up}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool {
		r, err := ts.client.PresenceStats(context.Background(), &heraldv1.PresenceStatsRequest{Channel: "room:crowd"})
		return err == nil && r.Clients == 60
	})
	_, err = ts.client.Presence(context.Background(), &heraldv1.PresenceRequest{Channel: "room:crowd"})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "limits.max_grpc_message") || !strings.Contains(st.Message(), "PresenceStats") {
		t.Fatalf("presence of 60 clients over a 2 KB limit: %v, want FAILED_PRECONDITION naming limits.max_grpc_message and PresenceStats", err)
	}

	// In pages of 8, by client id: every client once. Between two pages
	// client-03 (listed) and client-50 (not yet) leave and client-99 joins.
	var got []string
	tok := ""
	for pages := 1; ; pages++ {
		resp, err := ts.client.Presence(ctx, &heraldv1.PresenceRequest{Channel: "room:crowd", PageSize: 8, PageToken: tok})
		if err != nil || len(resp.Clients) == 0 || len(resp.Clients) > 8 {
			t.Fatalf("presence page %d: %d clients, %v", pages, len(resp.GetClients()), err)
		}
		for _, c := range resp.Clients {
			got = append(got, c.Client)
		}
		if pages == 1 {
			up := &heraldv1.PresenceUpdate{
				Leaves: []*heraldv1.PresenceEvent{{Channel: "room:crowd", Client: &heraldv1.ClientInfo{Client: "client-03"}}, {Channel: "room:crowd", Client: &heraldv1.ClientInfo{Client: "client-50"}}},
				Joins:  []*heraldv1.PresenceEvent{{Channel: "room:crowd", Client: &heraldv1.ClientInfo{Client: "client-99", User: "late"}}},
			}
			if err := bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: up}}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool {
				r, err := ts.client.PresenceStats(context.Background(), &heraldv1.PresenceStatsRequest{Channel: "room:crowd"})
				return err == nil && r.Clients == 59
			})
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
		if pages > 20 {
			t.Fatal("more than 20 pages of 8 for 60 clients")
		}
	}
	var want []string
	for n := range 60 {
		if n != 50 {
			want = append(want, fmt.Sprintf("client-%02d", n))
		}
	}
	want = append(want, "client-99")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("presence pages listed\n%v\nwant\n%v", got, want)
	}
	for _, req := range []*heraldv1.PresenceRequest{
		{Channel: "room:crowd", PageSize: -1},
		{Channel: "room:crowd", PageSize: 8, PageToken: "%%"},
		{Channel: "room:crowd", PageSize: 8, PageToken: "YzE6cm9vbTphIg"},   // a Channels token of version 1
		{Channel: "room:crowd", PageSize: 8, PageToken: "cDE6Y2xpZW50LTA3"}, // a Presence token of version 1
	} {
		if _, err := ts.client.Presence(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Presence(%v): %v, want INVALID_ARGUMENT", req, err)
		}
	}
	// A token continues the presence of its own channel only.
	first, err := ts.client.Presence(ctx, &heraldv1.PresenceRequest{Channel: "room:crowd", PageSize: 8})
	if err != nil || first.NextPageToken == "" {
		t.Fatalf("a page of room:crowd: %v, %v", first, err)
	}
	_, err = ts.client.Presence(ctx, &heraldv1.PresenceRequest{Channel: "room:other", PageSize: 8, PageToken: first.NextPageToken})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "same channel") {
		t.Fatalf("a token of room:crowd for room:other: %v, want INVALID_ARGUMENT asking for the same channel", err)
	}
}
