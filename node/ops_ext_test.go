package node_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestPprofOnlyWhenEnabled(t *testing.T) {
	off := startNode(t, nil)
	if off.PprofAddr != nil {
		t.Fatal("pprof listener without pprof_addr")
	}
	if code, body := httpDo(t, "GET", "http://"+off.HTTPAddr.String()+"/debug/pprof/", ""); code == 200 && strings.Contains(body, "goroutine") {
		t.Fatal("pprof is served on the main HTTP listener")
	}
	on := startNode(t, func(c *config.Config) { c.PprofAddr = "127.0.0.1:0" })
	if code, body := httpDo(t, "GET", "http://"+on.PprofAddr.String()+"/debug/pprof/goroutine?debug=1", ""); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof: %d %.100s", code, body)
	}
	if code, _ := httpDo(t, "GET", "http://"+on.HTTPAddr.String()+"/debug/pprof/", ""); code == 200 {
		t.Fatal("pprof is also on the main listener")
	}
}

// TestMetricsExposed checks, after a little traffic, that the bridge's
// gauges count it and that every herald_ metric exposed is documented in
// docs/operations.md. (Labelled counters appear once first counted.)
func TestMetricsExposed(t *testing.T) {
	n := startNode(t, nil)
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+n.HTTPAddr.String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"chat:m"}}`))
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := ""
	for !strings.Contains(got, `"subscribe"`) {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got += string(msg)
	}
	be := grpcClient(t, n)
	if _, err := be.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "chat:m", Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewNumberValue(1)}}); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(got, `"pub"`) {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got += string(msg)
	}
	_, body := httpDo(t, "GET", "http://"+n.HTTPAddr.String()+"/metrics", "")
	doc := mustReadFile(t, "../docs/operations.md")
	for _, want := range []string{`herald_ws_connections{subprotocol="herald.json"} 1`, `herald_ws_subscriptions{subprotocol="herald.json"} 1`, "herald_delivery_latency_seconds_count", "herald_ready 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	dash := mustReadFile(t, "../docs/grafana-dashboard.json")
	for _, f := range strings.FieldsFunc(dash, func(r rune) bool { return !(r == '_' || r >= 'a' && r <= 'z') }) {
		if strings.HasPrefix(f, "herald_") {
			name := strings.TrimSuffix(f, "_bucket")
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("the dashboard uses %s, which docs/operations.md does not list", name)
			}
		}
	}
	for _, m := range strings.Split(body, "\n") {
		if strings.HasPrefix(m, "herald_") && !strings.HasPrefix(m, "herald_build_info") {
			name := strings.FieldsFunc(m, func(r rune) bool { return r == '{' || r == ' ' })[0]
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				name = strings.TrimSuffix(name, suf)
			}
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("metric %s is not in docs/operations.md", name)
			}
		}
	}
}

func mustReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDrainReadiness: during drain_delay, /readyz answers 503 and gRPC
// health NOT_SERVING while publishes still work; after it, publishes are
// refused with UNAVAILABLE until the node stops.
func TestDrainReadiness(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DrainDelay = config.Duration(time.Second)
	n, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	be := heraldv1.NewHeraldServiceClient(cc)
	ctx := context.Background()
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before: %v %v", r, err)
	}
	if code, _ := httpDo(t, "GET", "http://"+n.HTTPAddr.String()+"/readyz", ""); code != 200 {
		t.Fatalf("readyz before: %d", code)
	}
	done := make(chan error)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- n.Shutdown(sctx)
	}()
	eventually(t, "readyz 503", func() bool {
		code, _ := httpDo(t, "GET", "http://"+n.HTTPAddr.String()+"/readyz", "")
		return code == http.StatusServiceUnavailable
	})
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "herald.v1.HeraldService"}); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health while draining: %v %v", r, err)
	}
	pub := func() error {
		_, err := be.Publish(ctx, &heraldv1.PublishRequest{Channel: "news", Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewNumberValue(1)}})
		return err
	}
	if err := pub(); err != nil {
		t.Fatalf("publish during drain_delay: %v", err)
	}
	eventually(t, "publishes refused", func() bool {
		err := pub()
		return err != nil && status.Code(err) == codes.Unavailable
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAPIKeyPublishRate: a key over its publish_rate gets
// RESOURCE_EXHAUSTED; another key is not affected.
func TestAPIKeyPublishRate(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{
			{Name: "limited", Key: "limited-key-0123456789", PublishRate: 1, PublishBurst: 3},
			{Name: "other", Key: "other-key-0123456789ab"},
		}
	})
	client := func(key string) heraldv1.HeraldServiceClient {
		cc, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(bearerKey(key)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return heraldv1.NewHeraldServiceClient(cc)
	}
	lim, other := client("limited-key-0123456789"), client("other-key-0123456789ab")
	pub := func(c heraldv1.HeraldServiceClient) error {
		_, err := c.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "news", Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewNumberValue(1)}})
		return err
	}
	var refused error
	for i := 0; i < 6 && refused == nil; i++ {
		refused = pub(lim)
	}
	if status.Code(refused) != codes.ResourceExhausted || !strings.Contains(status.Convert(refused).Message(), "publish rate") {
		t.Fatalf("over the rate: %v, want RESOURCE_EXHAUSTED", refused)
	}
	for i := 0; i < 10; i++ {
		if err := pub(other); err != nil {
			t.Fatalf("another key: %v", err)
		}
	}
	// REST with the limited key: 429.
	code, body := httpDo(t, "POST", "http://"+n.HTTPAddr.String()+"/v1/channels/news/publish", `{"data":1}`, "Authorization", "Bearer limited-key-0123456789")
	if code != http.StatusTooManyRequests {
		t.Fatalf("REST over the rate: %d %s", code, body)
	}
}

type bearerKey string

func (k bearerKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}
func (bearerKey) RequireTransportSecurity() bool { return false }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
