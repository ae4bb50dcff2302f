package wsbridge_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/node"
)

// A reply to the client's own request (a history page, a subscription's
// recovered publications) may be more than bridge.queue_bytes: the
// client asked for it, and it counts against a budget of its own (16
// times queue_bytes). Before, a history page of 30 publications of 50 KB
// closed the connection as a slow consumer (4004), and so did recovering
// them after a reconnect, again on every reconnect. Beyond the budget a
// history page is an error and a recovery goes live with recovered=false;
// the connection stays.
func TestRepliesLargerThanQueueBytes(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.QueueBytes = 64 << 10 // replies: 1 MiB
	n := startNode(t, cfg, node.Serve)
	be := backend(t, n, "")
	publish := func(channel string, count, size int) *heraldv1.StreamPosition {
		t.Helper()
		var pos *heraldv1.StreamPosition
		for range count {
			resp, err := be.Publish(context.Background(), &heraldv1.PublishRequest{Channel: channel, Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(`"` + strings.Repeat("x", size) + `"`)}})
			if err != nil {
				t.Fatal(err)
			}
			pos = resp.Position
		}
		return pos
	}
	history := func(c *client, channel string) *heraldv1.ServerFrame {
		t.Helper()
		return c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: channel, Limit: 30}}})
	}
	alive := func(c *client) {
		t.Helper()
		if r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}); r.GetPong() == nil {
			t.Fatalf("ping: %v", r)
		}
	}

	// 30 × 8 KB: about 240 KB, over queue_bytes, within the budget.
	fits := publish("chat:fits", 30, 8000)
	for _, sp := range []string{"", "herald.proto"} {
		c := connect(t, n, sp, token(t, "ann", time.Minute, nil))
		r := history(c, "chat:fits")
		pubs := r.GetHistory().GetPublications()
		if len(pubs) != 30 || pubs[0].Offset != 1 || pubs[29].Offset != 30 {
			t.Fatalf("%q: history page: %d publications (%v), want offsets 1..30", sp, len(pubs), r.GetError())
		}
		s := c.subscribe("chat:fits", &heraldv1.StreamPosition{Offset: 0, Epoch: fits.Epoch})
		if !s.GetSubscribe().GetRecovered() {
			t.Fatalf("%q: recovery of 240 KB: %v, want recovered", sp, s)
		}
		for want := uint64(1); want <= 30; want++ {
			if p := c.nextPub("chat:fits"); p.Offset != want {
				t.Fatalf("%q: recovered offset %d, want %d", sp, p.Offset, want)
			}
		}
		alive(c)
	}

	// The same recovery over SSE, resumed by Last-Event-ID.
	publish("chat:ssefits", 1, 10) // the channel's epoch begins
	q := url.Values{"token": {token(t, "sse", time.Hour, nil)}, "channel": {"chat:ssefits"}}
	sc := openSSE(t, httpBase(n), q, "")
	sc.connected()
	sc.subscribedPush("chat:ssefits")
	last := sc.lastID
	if last == "" {
		t.Fatal("SSE: no event id to resume from")
	}
	sc.close()
	publish("chat:ssefits", 30, 8000)
	sc = openSSE(t, httpBase(n), q, last)
	sc.connected()
	if s := sc.subscribedPush("chat:ssefits"); !s.Recovered {
		t.Fatalf("SSE: recovery of 240 KB: %v, want recovered", s)
	}
	for want := uint64(2); want <= 31; want++ {
		if p := sc.nextPub("chat:ssefits"); p.Offset != want {
			t.Fatalf("SSE: recovered offset %d, want %d", p.Offset, want)
		}
	}

	// 30 × 40 KB: about 1.2 MB, over the budget.
	huge := publish("chat:huge", 30, 40000)
	c := connect(t, n, "", token(t, "bob", time.Minute, nil))
	if r := history(c, "chat:huge"); r.GetError().GetCode() != 110 || !strings.Contains(r.GetError().GetMessage(), "bridge.queue_bytes") {
		t.Fatalf("history page of 1.2 MB: %v, want error 110 naming bridge.queue_bytes", r)
	}
	alive(c)
	s := c.subscribe("chat:huge", &heraldv1.StreamPosition{Offset: 0, Epoch: huge.Epoch})
	if sb := s.GetSubscribe(); sb == nil || sb.Recovered || sb.GetPosition().GetOffset() != 30 {
		t.Fatalf("recovery of 1.2 MB: %v, want recovered=false at offset 30", s)
	}
	alive(c)
	publish("chat:huge", 1, 10)
	if p := c.nextPub("chat:huge"); p.Offset != 31 {
		t.Fatalf("live after the recovery that did not fit: offset %d, want 31", p.Offset)
	}
}

// A history page is what one gRPC message may carry
// (limits.max_grpc_message, 4 MiB), in `herald serve` and in a split
// deployment (its core on Redis) alike: the client pages on from its last publication.
// Before, a split bridge asked its core for 100 publications of 60 KB
// (6 MB) and got `trying to send message larger than max`, as error 108
// to the browser, for the history page and for the recovery alike, every
// time, while `herald serve` delivered both.
func TestHistoryPagesFitOneGRPCMessage(t *testing.T) {
	const key = "core-api-key-0123456789"
	coreCfg := testConfig() // the split core on Redis, with a key
	coreCfg.APIKeys = []config.APIKey{{Name: "bridge", Key: key}}
	coreCfg.Engine = "redis"
	coreCfg.Redis.Addrs = []string{redistest.Start(t).Addr}
	coreCfg.Redis.Prefix = fmt.Sprintf("pages%d", time.Now().UnixNano())
	core := startNode(t, coreCfg, node.Core)
	bridgeCfg := testConfig()
	bridgeCfg.Bridge.Core = core.GRPCAddr.String()
	bridgeCfg.Bridge.CoreAPIKey = key
	split := startNode(t, bridgeCfg, node.BridgeOnly)
	serve := startNode(t, testConfig(), node.Serve)
	var pages [2][]int
	for i, shape := range []struct {
		name   string
		bridge *node.Node
		be     heraldv1.HeraldServiceClient
	}{{"split, Redis", split, backend(t, core, key)}, {"serve", serve, backend(t, serve, "")}} {
		var epoch string
		for range 100 {
			resp, err := shape.be.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "chat:pages", Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(`"` + strings.Repeat("x", 60000) + `"`)}})
			if err != nil {
				t.Fatal(err)
			}
			epoch = resp.Position.Epoch
		}
		c := connect(t, shape.bridge, "", token(t, "ann", time.Minute, nil))
		var since *heraldv1.StreamPosition
		for got := uint64(0); got < 100; {
			r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_History{History: &heraldv1.HistoryFrame{Channel: "chat:pages", Since: since, Limit: 100}}})
			pubs := r.GetHistory().GetPublications()
			if len(pubs) == 0 {
				t.Fatalf("%s: history after %d: %v", shape.name, got, r)
			}
			for _, p := range pubs {
				if got++; p.Offset != got {
					t.Fatalf("%s: history offset %d, want %d", shape.name, p.Offset, got)
				}
			}
			pages[i] = append(pages[i], len(pubs))
			since = &heraldv1.StreamPosition{Offset: got, Epoch: epoch}
		}
		if len(pages[i]) < 2 {
			t.Errorf("%s: 6 MB of history in one page %v; a page is at most 4 MiB", shape.name, pages[i])
		}
		s := c.subscribe("chat:pages", &heraldv1.StreamPosition{Offset: 0, Epoch: epoch})
		if !s.GetSubscribe().GetRecovered() {
			t.Fatalf("%s: recovery of 6 MB: %v, want recovered", shape.name, s)
		}
		for want := uint64(1); want <= 100; want++ {
			if p := c.nextPub("chat:pages"); p.Offset != want {
				t.Fatalf("%s: recovered offset %d, want %d", shape.name, p.Offset, want)
			}
		}
	}
	if fmt.Sprint(pages[0]) != fmt.Sprint(pages[1]) {
		t.Errorf("pages of the split bridge %v, of herald serve %v: want the same", pages[0], pages[1])
	}
}

// An answer of the core over limits.max_grpc_message (a split bridge's
// presence list of a crowded channel: presence is not paged) is error
// 200, not temporary, naming the option; it was 108 "temporary" with
// grpc-go's text, which made clients retry a request that fails every
// time. Other browsers are not disturbed.
func TestAnswerOverGRPCMessageLimit(t *testing.T) {
	const key = "core-api-key-0123456789"
	small := func(c *config.Config) { c.Limits.MaxPayload, c.Limits.MaxGRPCMessage = 1024, 2048 }
	coreCfg := testConfig()
	coreCfg.APIKeys = []config.APIKey{{Name: "bridge", Key: key}}
	small(&coreCfg)
	core := startNode(t, coreCfg, node.Core)
	bridgeCfg := testConfig()
	bridgeCfg.Bridge.Core = core.GRPCAddr.String()
	bridgeCfg.Bridge.CoreAPIKey = key
	small(&bridgeCfg)
	bridge := startNode(t, bridgeCfg, node.BridgeOnly)
	var cs []*client
	for i := range 60 {
		c := connect(t, bridge, "", token(t, fmt.Sprintf("member-%02d-%s", i, strings.Repeat("m", 30)), time.Minute, nil))
		if r := c.subscribe("chat:crowd", nil); r.GetSubscribe() == nil {
			t.Fatalf("subscribe %d: %v", i, r)
		}
		cs = append(cs, c)
	}
	r := cs[0].request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Presence{Presence: &heraldv1.PresenceFrame{Channel: "chat:crowd"}}})
	if e := r.GetError(); e.GetCode() != 200 || e.GetTemporary() || !strings.Contains(e.GetMessage(), "limits.max_grpc_message") {
		t.Fatalf("presence of 60 clients over a 2 KB message limit: %v, want error 200, not temporary, naming limits.max_grpc_message", r)
	}
	if r := cs[1].request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.PingFrame{}}}); r.GetPong() == nil {
		t.Fatalf("a bystander's ping: %v", r)
	}
}
