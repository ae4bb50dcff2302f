package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// TestFloorServesTheBench: the bench's own clients connect to the floor
// as to Herald (JWT users on their personal channels, and subscribers of a
// shared channel), and get every publication, REST and gRPC alike, in
// offset order, in Herald's frame shape.
func TestFloorServesTheBench(t *testing.T) {
	f := newFloor()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", f.serveWS)
	mux.HandleFunc("POST /v1/channels/{channel}/publish", f.servePublish)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	ctx := context.Background()

	users := newGroup(groupSpec{N: 3, WS: []string{url}, Personal: true, JWTSecret: "s", Concurrency: 2, Timeout: 5 * time.Second, ReadBuf: 1024})
	users.connect(ctx)
	shared := newGroup(groupSpec{Base: 3, N: 2, WS: []string{url}, Channel: "bench", Concurrency: 2, Timeout: 5 * time.Second, ReadBuf: 1024})
	shared.connect(ctx)
	if r := users.result(false); r.Connected != 3 {
		t.Fatalf("users: %+v", r)
	}
	if r := shared.result(false); r.Connected != 2 {
		t.Fatalf("shared: %+v", r)
	}
	rest := newRESTPublisher(strings.TrimPrefix(srv.URL, "http://"), "", 1, nil)
	defer rest.close()
	g := &floorGRPC{f: f}
	for i := range 4 {
		for u := range 3 {
			p := appendPayload(nil, time.Now().UnixNano(), 64)
			if i%2 == 0 {
				if err := rest.call(ctx, 0, "user:"+userOf(u), p); err != nil {
					t.Fatal(err)
				}
			} else if _, err := g.Publish(ctx, &heraldv1.PublishRequest{Channel: "user:" + userOf(u), Payload: &heraldv1.PublishRequest_RawJson{RawJson: p}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := rest.call(ctx, 0, "bench", appendPayload(nil, time.Now().UnixNano(), 64)); err != nil {
			t.Fatal(err)
		}
	}
	ur := users.drain(ctx, []int64{4, 4, 4}, 5*time.Second)
	sr := shared.drain(ctx, []int64{4, 4}, 5*time.Second)
	users.close()
	shared.close()
	for _, r := range []*groupResult{ur, sr} {
		for i, n := range r.Received {
			if n != 4 {
				t.Fatalf("client %d got %d publications, want 4", r.Base+i, n)
			}
		}
		if r.Duplicates+r.Reorders+r.Gaps+r.Foreign != 0 {
			t.Fatalf("duplicates %d, reorders %d, gaps %d, foreign %d", r.Duplicates, r.Reorders, r.Gaps, r.Foreign)
		}
	}
}

func TestCompareRatios(t *testing.T) {
	res := func(round int, target, pub string, us, p50, p99 float64) *Result {
		return &Result{Round: round, Target: target, Publisher: &PublisherStats{Kind: pub}, ServerUsPerDeliv: us, Latency: &Percentiles{P50: p50, P99: p99}, DeliveriesPerS: 1000}
	}
	c := compare([]*Result{
		res(1, "floor", "unary", 100, 1, 2), res(1, "herald", "unary", 120, 1.5, 3),
		res(1, "floor", "rest", 80, 1, 2), res(1, "herald", "rest", 132, 2, 4),
		res(2, "floor", "unary", 50, 1, 2), res(2, "herald", "unary", 55, 1, 2.5),
	})
	want := map[string][]float64{
		"herald/floor, unary": {1.2, 1.1},
		"herald/floor, rest":  {1.65},
		"rest/unary, herald":  {1.1},
		"rest/unary, floor":   {0.8},
	}
	if len(c.Ratios) != len(want) {
		t.Fatalf("ratios %+v", c.Ratios)
	}
	for _, q := range c.Ratios {
		w, ok := want[q.What]
		if !ok || len(q.CPU) != len(w) {
			t.Fatalf("%s: cpu %v, want %v", q.What, q.CPU, w)
		}
		for i := range w {
			if q.CPU[i] != w[i] {
				t.Fatalf("%s: cpu %v, want %v", q.What, q.CPU, w)
			}
		}
	}
	if q := c.Ratios[0]; q.P99Extra[0] != 1 || q.P99Extra[1] != 0.5 {
		t.Fatalf("p99 extra %v", q.P99Extra)
	}
	if q := c.Ratios[0]; len(q.P99SendExtra) != 0 {
		t.Fatalf("no run had a latency from the send, got %v", q.P99SendExtra)
	}

	// With latencies from the send as well, both differences are kept, and
	// the summary gives the median of each.
	withSend := func(r *Result, p99 float64) *Result { r.LatencySend = &Percentiles{P99: p99}; return r }
	c = compare([]*Result{
		withSend(res(1, "floor", "unary", 100, 1, 9), 3), withSend(res(1, "herald", "unary", 110, 1, 12), 3.5),
		withSend(res(2, "floor", "unary", 100, 1, 9), 3), withSend(res(2, "herald", "unary", 110, 1, 8), 5),
		withSend(res(3, "floor", "unary", 100, 1, 9), 3), withSend(res(3, "herald", "unary", 110, 1, 20), 2),
	})
	q := c.Ratios[0]
	if fmt.Sprint(q.P99Extra) != "[3 -1 11]" || fmt.Sprint(q.P99SendExtra) != "[0.5 2 -1]" {
		t.Fatalf("p99 extra %v, from the send %v", q.P99Extra, q.P99SendExtra)
	}
	var out strings.Builder
	c.print(&out, false)
	for _, want := range []string{"p99 - baseline [3 -1 11] ms (median 3.000)", "p99 from the send - baseline [0.5 2 -1] ms (median 0.500)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
