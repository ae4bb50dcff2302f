package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/deploytest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// These end-to-end tests run in every deployment shape: `herald serve` and
// a split core + bridge, each as the loopback demo and as production (API
// keys, JWTs with audience and issuer, TLS everywhere, the bridge dialing
// its core over TLS with a bridge-scoped key). A feature that works in the
// demo and breaks with keys configured fails here.

func pubData(t *testing.T, v map[string]any) *heraldv1.PublishRequest_Data {
	t.Helper()
	s, err := structpb.NewValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return &heraldv1.PublishRequest_Data{Data: s}
}

// TestShapesGRPC: a backend's Subscribe, Publish, PublishStream, History,
// resume and Info over gRPC.
func TestShapesGRPC(t *testing.T) {
	deploytest.Run(t, deploytest.Shapes, nil, func(t *testing.T, d *deploytest.Deployment) {
		be := d.Backend(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		sub, err := be.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: "news"})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := sub.Recv(); err != nil || ev.GetSubscribed() == nil {
			t.Fatalf("subscribe: %v %v", ev, err)
		}
		var epoch string
		for i := 1; i <= 3; i++ {
			res, err := be.Publish(ctx, &heraldv1.PublishRequest{Channel: "news", Payload: pubData(t, map[string]any{"n": i})})
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			epoch = res.GetPosition().GetEpoch()
		}
		ps, err := be.PublishStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 4; i <= 5; i++ {
			if err := ps.Send(&heraldv1.PublishStreamRequest{Publish: &heraldv1.PublishRequest{Channel: "news", Payload: pubData(t, map[string]any{"n": i})}}); err != nil {
				t.Fatal(err)
			}
			if ack, err := ps.Recv(); err != nil || ack.GetOk().GetPosition().GetOffset() != uint64(i) {
				t.Fatalf("stream ack %d: %v %v", i, ack, err)
			}
		}
		_ = ps.CloseSend()
		for i := 1; i <= 5; i++ {
			ev, err := sub.Recv()
			if err != nil || ev.GetPublication().GetOffset() != uint64(i) {
				t.Fatalf("publication %d: %v %v", i, ev, err)
			}
		}
		h, err := be.History(ctx, &heraldv1.HistoryRequest{Channel: "news", Limit: 10})
		if err != nil || len(h.Publications) != 5 {
			t.Fatalf("history: %v %v", h, err)
		}
		resumed, err := be.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: "news", Since: &heraldv1.StreamPosition{Offset: 2, Epoch: epoch}})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := resumed.Recv(); err != nil || !ev.GetSubscribed().GetRecovered() {
			t.Fatalf("resume: %v %v", ev, err)
		}
		for i := 3; i <= 5; i++ {
			if ev, err := resumed.Recv(); err != nil || ev.GetPublication().GetOffset() != uint64(i) {
				t.Fatalf("resumed publication %d: %v %v", i, ev, err)
			}
		}
		if _, err := be.Info(ctx, &heraldv1.InfoRequest{}); err != nil {
			t.Fatalf("info: %v", err)
		}
		if d.Production {
			// Without the key: refused.
			if _, err := d.BackendWithoutKey(t).Publish(ctx, &heraldv1.PublishRequest{Channel: "news", Payload: pubData(t, map[string]any{"n": 0})}); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("publish without a key: %v", err)
			}
		}
	})
}

// TestShapesREST: publish, history, presence, info and the streaming
// subscribe over the REST gateway.
func TestShapesREST(t *testing.T) {
	deploytest.Run(t, deploytest.Shapes, nil, func(t *testing.T, d *deploytest.Deployment) {
		// A streaming subscribe first, then publishes.
		req, _ := http.NewRequest("GET", d.RESTURL()+"/v1/channels/news/subscribe", nil)
		if d.Production {
			req.Header.Set("Authorization", "Bearer "+deploytest.BackendKey)
		}
		resp, err := d.HTTPClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		lines := bufio.NewScanner(resp.Body)
		if !lines.Scan() || !strings.Contains(lines.Text(), `"subscribed"`) {
			t.Fatalf("REST subscribe: %d %s", resp.StatusCode, lines.Text())
		}
		for i := 1; i <= 3; i++ {
			if code, body := d.REST(t, "POST", "/v1/channels/news/publish", fmt.Sprintf(`{"data":{"n":%d}}`, i)); code != 200 {
				t.Fatalf("REST publish: %d %s", code, body)
			}
		}
		for i := 1; i <= 3; i++ {
			if !lines.Scan() || !strings.Contains(lines.Text(), fmt.Sprintf(`"n":%d`, i)) {
				t.Fatalf("REST stream, publication %d: %q", i, lines.Text())
			}
		}
		if code, body := d.REST(t, "POST", "/v1/broadcast", `{"channels":["news","chat:lobby"],"data":{"n":4}}`); code != 200 {
			t.Fatalf("REST broadcast: %d %s", code, body)
		}
		if code, body := d.REST(t, "GET", "/v1/channels/news/history?limit=10", ""); code != 200 || strings.Count(body, `"n":`) != 4 {
			t.Fatalf("REST history: %d %s", code, body)
		}
		for _, path := range []string{"/v1/channels/chat:lobby/presence", "/v1/channels/chat:lobby/presence?page_size=1", "/v1/channels/chat:lobby/presence/stats", "/v1/channels?pattern=news", "/v1/info"} {
			if code, body := d.REST(t, "GET", path, ""); code != 200 {
				t.Fatalf("GET %s: %d %s", path, code, body)
			}
		}
		// The channel list a page at a time: every name once, in order.
		var names []string
		for tok, pages := "", 0; ; pages++ {
			if pages == 50 {
				t.Fatalf("more than 50 pages of 1: %v", names)
			}
			code, body := d.REST(t, "GET", "/v1/channels?page_size=1&page_token="+url.QueryEscape(tok), "")
			var page struct {
				Channels []struct {
					Name string `json:"name"`
				} `json:"channels"`
				Next string `json:"next_page_token"`
			}
			if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil || len(page.Channels) != 1 {
				t.Fatalf("GET /v1/channels?page_size=1: %d %s (%v)", code, body, err)
			}
			if name := page.Channels[0].Name; len(names) > 0 && name <= names[len(names)-1] {
				t.Fatalf("page %d lists %q after %q", pages+1, name, names[len(names)-1])
			}
			names = append(names, page.Channels[0].Name)
			if tok = page.Next; tok == "" {
				break
			}
		}
		if !slices.Contains(names, "news") || !slices.Contains(names, "chat:lobby") {
			t.Fatalf("pages of 1 listed %v, want news and chat:lobby among them", names)
		}
		if code, body := d.REST(t, "POST", "/v1/users/42/disconnect", `{"reason":"test"}`); code != 200 {
			t.Fatalf("REST disconnect: %d %s", code, body)
		}
		if d.Production {
			r, _ := http.NewRequest("POST", d.RESTURL()+"/v1/channels/news/publish", strings.NewReader(`{"data":1}`))
			r.Header.Set("Content-Type", "application/json")
			resp, err := d.HTTPClient(t).Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Fatalf("REST publish without a key: %d", resp.StatusCode)
			}
		}
	})
}

// TestShapesWebSocket: a browser's connect (a JWT in production),
// subscribe, live delivery of a backend's publication, its own publish,
// history, presence with join events, and resume after a reconnect, over
// the bridge.
func TestShapesWebSocket(t *testing.T) {
	deploytest.Run(t, deploytest.Shapes, nil, func(t *testing.T, d *deploytest.Deployment) {
		be := d.Backend(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		user := ""
		if d.Production {
			user = "alice"
		}
		connect := func() *wsClient {
			ws := &wsClient{conn: d.DialWS(t, "herald.json")}
			ws.request(t, fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, d.Token(t, user, nil)), "connect")
			return ws
		}
		watcher := connect()
		watcher.request(t, `{"id":2,"subscribe":{"channel":"chat:lobby"}}`, "subscribe")
		ws := connect()
		ws.request(t, `{"id":2,"subscribe":{"channel":"chat:lobby"}}`, "subscribe")
		// The watcher sees the second connection join (presence is
		// reported to the core through the bridge session).
		for f := watcher.frame(t); !strings.Contains(f, `"join"`); f = watcher.frame(t) {
		}
		res, err := be.Publish(ctx, &heraldv1.PublishRequest{Channel: "chat:lobby", Payload: pubData(t, map[string]any{"n": 1})})
		if err != nil {
			t.Fatal(err)
		}
		if p := ws.pub(t); p.Offset != "1" || p.Data["n"] != float64(1) {
			t.Fatalf("browser got %+v", p)
		}
		_ = ws.conn.WriteMessage(1, []byte(`{"id":3,"publish":{"channel":"chat:lobby","data":{"n":2}}}`))
		for replied, got := false, false; !replied || !got; {
			f := ws.frame(t)
			if strings.Contains(f, `"error"`) {
				t.Fatalf("browser publish: %s", f)
			}
			replied = replied || strings.HasPrefix(f, `{"id":3,"publish"`)
			got = got || strings.Contains(f, `"n":2`)
		}
		hist := ws.request(t, `{"id":4,"history":{"channel":"chat:lobby","limit":10}}`, "history")
		if strings.Count(hist, `"n":`) != 2 {
			t.Fatalf("history: %s", hist)
		}
		pres := ws.request(t, `{"id":5,"presence":{"channel":"chat:lobby"}}`, "presence")
		if strings.Count(pres, `"client":`) != 2 {
			t.Fatalf("presence: %s", pres)
		}
		// Drop and resume: the missed publication comes, recovered.
		_ = ws.conn.Close()
		if _, err := be.Publish(ctx, &heraldv1.PublishRequest{Channel: "chat:lobby", Payload: pubData(t, map[string]any{"n": 3})}); err != nil {
			t.Fatal(err)
		}
		ws = connect()
		reply := ws.request(t, fmt.Sprintf(`{"id":2,"subscribe":{"channel":"chat:lobby","since":{"offset":"2","epoch":%q}}}`, res.GetPosition().GetEpoch()), "subscribe")
		if !strings.Contains(reply, `"recovered":true`) {
			t.Fatalf("resume: %s", reply)
		}
		if p := ws.pub(t); p.Offset != "3" {
			t.Fatalf("resumed: %+v", p)
		}
		if d.Production {
			// A token for another audience is refused.
			bad := &wsClient{conn: d.DialWS(t, "herald.json")}
			_ = bad.conn.WriteMessage(1, []byte(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, d.Token(t, "mallory", map[string]any{"aud": "billing"}))))
			_ = bad.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err := bad.conn.ReadMessage(); err != nil {
					if !strings.Contains(err.Error(), "4001") {
						t.Fatalf("foreign token: %v, want close 4001", err)
					}
					break
				}
			}
		}
		if code, body := httpGet(t, d, "/readyz"); code != 200 {
			t.Fatalf("bridge /readyz: %d %s", code, body)
		}
	})
}

func httpGet(t *testing.T, d *deploytest.Deployment, path string) (int, string) {
	t.Helper()
	resp, err := d.HTTPClient(t).Get(d.BrowserURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 4096)
	k, _ := resp.Body.Read(b)
	return resp.StatusCode, string(b[:k])
}
