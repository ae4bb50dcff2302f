package service_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	redisengine "github.com/herald-io/herald/engine/redis"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/node"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// redisCluster is several Herald nodes (core mode) on one redis-server
// or on a Redis Cluster, each with a gRPC client.
type redisCluster struct {
	redis   *redistest.Server // nil on a Redis Cluster
	addrs   []string
	edit    func(*config.Config)
	prefix  string
	nodes   []*node.Node
	clients []heraldv1.HeraldServiceClient
}

var clusterSeq atomic.Int64

func startRedisCluster(t *testing.T, n int) *redisCluster {
	t.Helper()
	srv := redistest.Start(t)
	return startNodesOn(t, srv, []string{srv.Addr}, n, nil)
}

// startNodesOn starts n nodes on the Redis at addrs (a Redis Cluster when
// several), with the configuration edited by edit (may be nil).
func startNodesOn(t *testing.T, srv *redistest.Server, addrs []string, n int, edit func(*config.Config)) *redisCluster {
	t.Helper()
	c := &redisCluster{redis: srv, addrs: addrs, edit: edit, prefix: fmt.Sprintf("herald-test-%d-%d", time.Now().UnixNano(), clusterSeq.Add(1))}
	for i := 0; i < n; i++ {
		c.add(t)
	}
	return c
}

// add starts one more node.
func (c *redisCluster) add(t *testing.T) int {
	t.Helper()
	cfg := testConfig(t, func(cfg *config.Config) {
		cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Engine = "redis"
		cfg.Redis.Addrs = c.addrs
		cfg.Redis.Prefix = c.prefix
		if c.edit != nil {
			c.edit(cfg)
		}
	})
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	conn, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c.nodes = append(c.nodes, n)
	c.clients = append(c.clients, heraldv1.NewHeraldServiceClient(conn))
	return len(c.nodes) - 1
}

func (c *redisCluster) server(i int) *testServer {
	return &testServer{client: c.clients[i]}
}

func (c *redisCluster) publish(t *testing.T, i int, channel, body string) *heraldv1.StreamPosition {
	t.Helper()
	return c.server(i).publish(t, channel, body)
}

// nextEvent returns the next publication or the stream's error.
func (s *sub) nextEvent() (*heraldv1.Publication, error) {
	for {
		ev, err := s.stream.Recv()
		if err != nil {
			return nil, err
		}
		if p := ev.GetPublication(); p != nil {
			return p, nil
		}
	}
}

func TestRedisPublishReachesOtherNodesInOneOrder(t *testing.T) {
	c := startRedisCluster(t, 3)
	const ch = "room:order"
	var subs []*sub
	for i := range c.nodes {
		for j := 0; j < 2; j++ {
			subs = append(subs, c.server(i).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch}))
		}
	}
	// One publication from A first: it reaches B and C.
	first := c.publish(t, 0, ch, `{"from":"a"}`)
	for _, s := range subs {
		p := s.next(t)
		if p.Offset != first.Offset || p.Epoch != first.Epoch || string(p.GetRawJson()) != `{"from":"a"}` {
			t.Fatalf("first publication = %v, want %v", p, first)
		}
	}
	// Concurrent publishers on every node.
	const perNode = 100
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < perNode; k++ {
				_, err := c.clients[i].Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(fmt.Sprintf(`{"node":%d,"k":%d}`, i, k))})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var want []string
	for si, s := range subs {
		var got []string
		last := first.Offset
		for k := 0; k < perNode*len(c.nodes); k++ {
			p := s.next(t)
			if p.Offset != last+1 || p.Epoch != first.Epoch {
				t.Fatalf("subscriber %d: offset %d after %d (epoch %s)", si, p.Offset, last, p.Epoch)
			}
			last = p.Offset
			got = append(got, string(p.GetRawJson()))
		}
		if want == nil {
			want = got
		} else if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("subscriber %d saw another order", si)
		}
	}
}

func TestRedisResumeOnAnotherNode(t *testing.T) {
	c := startRedisCluster(t, 3)
	const ch = "room:resume"
	b := c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	for k := 1; k <= 5; k++ {
		c.publish(t, 0, ch, fmt.Sprint(k))
	}
	var last *heraldv1.Publication
	for k := 1; k <= 5; k++ {
		last = b.next(t)
	}
	b.cancel() // the client drops from B
	for k := 6; k <= 10; k++ {
		c.publish(t, 0, ch, fmt.Sprint(k))
	}
	r := c.server(2).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, Since: &heraldv1.StreamPosition{Offset: last.Offset, Epoch: last.Epoch}})
	if !r.subscribed.Recovered {
		t.Fatalf("resume on C: recovered = false (%v)", r.subscribed)
	}
	for k := 6; k <= 10; k++ {
		p := r.next(t)
		if p.Offset != uint64(k) || string(p.GetRawJson()) != fmt.Sprint(k) {
			t.Fatalf("replayed %v, want offset %d", p, k)
		}
	}
	c.publish(t, 1, ch, "11")
	if p := r.next(t); p.Offset != 11 {
		t.Fatalf("live after replay: %v", p)
	}
	// History is shared as well.
	h, err := c.clients[1].History(context.Background(), &heraldv1.HistoryRequest{Channel: ch, Since: &heraldv1.StreamPosition{Offset: 8, Epoch: last.Epoch}, Limit: 2})
	if err != nil || len(h.Publications) != 2 || h.Publications[0].Offset != 9 || h.Position.Offset != 11 {
		t.Fatalf("history on B: %v %v", h, err)
	}
}

func TestRedisIdempotencyKeyOnAnotherNode(t *testing.T) {
	c := startRedisCluster(t, 3)
	const ch = "room:idem"
	watch := c.server(2).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	req := &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(`"once"`), IdempotencyKey: "order-42"}
	r1, err := c.clients[0].Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.clients[1].Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Duplicate || r1.Duplicate || r2.Position.Offset != r1.Position.Offset || r2.Position.Epoch != r1.Position.Epoch {
		t.Fatalf("first %v, retry %v", r1, r2)
	}
	c.publish(t, 1, ch, `"after"`)
	if p := watch.next(t); p.Offset != r1.Position.Offset {
		t.Fatalf("first delivery %v", p)
	}
	if p := watch.next(t); string(p.GetRawJson()) != `"after"` || p.Offset != r1.Position.Offset+1 {
		t.Fatalf("second delivery %v: the retry was delivered or something is missing", p)
	}
}

func TestRedisPresenceAcrossNodes(t *testing.T) {
	restore := redisengine.SetTimingForTest(2*time.Second, 300*time.Millisecond)
	defer restore()
	c := startRedisCluster(t, 3)
	const ch = "room:who"
	ctx := context.Background()
	watch := c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, PresenceEvents: true})

	bridge := func(i int, name string, clients ...string) (grpc.BidiStreamingClient[heraldv1.BridgeSessionRequest, heraldv1.BridgeSessionResponse], context.CancelFunc) {
		sctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		bs, err := c.clients[i].BridgeSession(sctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: name}}})
		up := &heraldv1.PresenceUpdate{}
		for _, cl := range clients {
			up.Joins = append(up.Joins, &heraldv1.PresenceEvent{Channel: ch, Client: &heraldv1.ClientInfo{Client: cl, User: "u-" + cl}})
		}
		_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: up}})
		return bs, cancel
	}
	clientsOn := func(i int) []string {
		r, err := c.clients[i].Presence(ctx, &heraldv1.PresenceRequest{Channel: ch})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ci := range r.Clients {
			out = append(out, ci.Client)
		}
		return out
	}

	bsA, cancelA := bridge(0, "bridge-a", "a1", "a2")
	waitFor(t, func() bool { return fmt.Sprint(clientsOn(1)) == "[a1 a2]" })
	ev, err := watch.stream.Recv()
	if err != nil || ev.GetJoin().GetClient().GetClient() != "a1" {
		t.Fatalf("join on B: %v %v", ev, err)
	}
	// A user disconnected on B reaches the bridge on A.
	if _, err := c.clients[1].Disconnect(ctx, &heraldv1.DisconnectRequest{User: "u-a1"}); err != nil {
		t.Fatal(err)
	}
	cmd, err := bsA.Recv()
	if cmd.GetNamespaces() != nil { // the session's first message
		cmd, err = bsA.Recv()
	}
	if err != nil || cmd.GetDisconnect().GetUser() != "u-a1" {
		t.Fatalf("command on A: %v %v", cmd, err)
	}
	cancelA() // the bridge leaves: its entries go
	waitFor(t, func() bool { return len(clientsOn(1)) == 0 })

	// A node that dies leaves entries that expire within PresenceTTL.
	bridge(2, "bridge-c", "c1")
	waitFor(t, func() bool { return fmt.Sprint(clientsOn(0)) == "[c1]" })
	time.Sleep(time.Second) // past a few refreshes: still there
	if got := clientsOn(0); fmt.Sprint(got) != "[c1]" {
		t.Fatalf("refreshed entry gone: %v", got)
	}
	_ = c.nodes[2].Core().Engine().Close() // C stops refreshing, as if dead
	killed := time.Now()
	waitFor(t, func() bool { return len(clientsOn(0)) == 0 })
	if d := time.Since(killed); d > 3*time.Second {
		t.Fatalf("dead node's entry lasted %v (TTL 2s)", d)
	}
}

// TestRedisPubSubReconnectFillsGap drops every pub/sub connection while a
// publisher runs: Redis keeps the data, the nodes reconnect, and the hub
// fills what pub/sub missed from history, so subscribers see no gap and no
// error.
func TestRedisPubSubReconnectFillsGap(t *testing.T) {
	c := startRedisCluster(t, 2)
	const ch = "room:gap"
	s := c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	rc := redis.NewClient(&redis.Options{Addr: c.redis.Addr})
	defer rc.Close()
	const total = 200
	done := make(chan struct{})
	var killed atomic.Int64
	go func() {
		defer close(done)
		for k := 1; k <= total; k++ {
			if k%50 == 0 {
				killed.Add(int64(killPubSub(t, rc)))
			}
			if _, err := c.clients[0].Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(fmt.Sprint(k))}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for k := 1; k <= total; k++ {
		p, err := s.nextEvent()
		if err != nil {
			t.Fatalf("after %d publications: %v", k-1, err)
		}
		if p.Offset != uint64(k) {
			t.Fatalf("offset %d, want %d", p.Offset, k)
		}
	}
	<-done
	if killed.Load() == 0 {
		t.Fatal("no pub/sub connection was killed")
	}
}

// killPubSub closes every pub/sub connection of the Redis server (CLIENT
// KILL TYPE pubsub misses shard-channel subscribers in Redis 7.0).
func killPubSub(t *testing.T, rc *redis.Client) int {
	list, err := rc.ClientList(context.Background()).Result()
	if err != nil {
		t.Error(err)
		return 0
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		id, pubsub := "", false
		for _, kv := range f {
			k, v, _ := strings.Cut(kv, "=")
			switch {
			case k == "id":
				id = v
			case (k == "sub" || k == "ssub") && v != "0":
				pubsub = true
			}
		}
		if pubsub {
			if err := rc.Do(context.Background(), "client", "kill", "id", id).Err(); err == nil {
				killed++
			}
		}
	}
	return killed
}

// TestRedisRestart restarts Redis (no persistence) in the middle of a
// publish stream: publishes fail promptly with UNAVAILABLE, readiness turns
// 503, the nodes come back by themselves, and since Redis lost everything
// the channel has a new epoch: live streams end with ABORTED and resuming
// clients learn recovered=false.
func TestRedisRestart(t *testing.T) {
	c := startRedisCluster(t, 2)
	const ch = "room:restart"
	s := c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	var last *heraldv1.StreamPosition
	for k := 1; k <= 5; k++ {
		last = c.publish(t, 0, ch, fmt.Sprint(k))
	}
	for k := 1; k <= 5; k++ {
		s.next(t)
	}
	ready := func(i int) int {
		resp, err := http.Get("http://" + c.nodes[i].HTTPAddr.String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(0); code != http.StatusOK {
		t.Fatalf("readyz = %d", code)
	}

	c.redis.Stop()
	for k := 0; k < 3; k++ {
		start := time.Now()
		_, err := c.clients[0].Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(`"lost"`)})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("publish while Redis is down: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("publish while Redis is down took %v", d)
		}
	}
	if code := ready(0); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while Redis is down = %d", code)
	}

	c.redis.Start()
	waitFor(t, func() bool { return ready(0) == http.StatusOK && ready(1) == http.StatusOK })
	var now *heraldv1.StreamPosition
	waitFor(t, func() bool {
		r, err := c.clients[0].Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(`"after"`)})
		if err == nil {
			now = r.Position
		}
		return err == nil
	})
	if now.Epoch == last.Epoch {
		t.Fatalf("epoch unchanged after Redis lost its data: %v", now)
	}
	// The live stream learns that continuity is lost.
	if _, err := s.nextEvent(); status.Code(err) != codes.Aborted {
		t.Fatalf("live stream after restart: %v, want ABORTED", err)
	}
	// Resuming tells the truth: what was published before is gone.
	r := c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, Since: last})
	if r.subscribed.Recovered || r.subscribed.Position.Epoch != now.Epoch {
		t.Fatalf("resume after restart: %v", r.subscribed)
	}
	// And both nodes serve again: a publication on B reaches a subscriber on A.
	a := c.server(0).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	pos := c.publish(t, 1, ch, `"again"`)
	if p := a.next(t); p.Offset != pos.Offset || p.Epoch != pos.Epoch {
		t.Fatalf("after restart: %v, want %v", p, pos)
	}
	if p := r.next(t); p.Offset != pos.Offset {
		t.Fatalf("resumed stream after restart: %v, want %v", p, pos)
	}
}

// TestRedisPublishStreamBatches sends a PublishStream through the Redis
// engine's pipelined batches (the first batch also meets a Redis that has
// not loaded the script yet): acknowledgements come in request order with
// per-channel offsets in that order, a bad request in the middle of a batch
// is refused alone, and a subscriber on another node sees each channel in
// acknowledgement order.
func TestRedisPublishStreamBatches(t *testing.T) {
	c := startRedisCluster(t, 2)
	subs := []*sub{
		c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:b0"}),
		c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:b1"}),
	}
	stream, err := c.clients[0].PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	go func() {
		for i := 0; i < n; i++ {
			ch := fmt.Sprintf("room:b%d", i%2)
			if i%500 == 499 {
				ch = "bad channel"
			}
			req := &heraldv1.PublishStreamRequest{Sequence: uint64(i), Publish: &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(fmt.Sprint(i))}}
			if err := stream.Send(req); err != nil {
				t.Error(err)
				return
			}
		}
		_ = stream.CloseSend()
	}()
	want := map[string][]string{} // channel → payloads in ack order
	last := map[string]uint64{}
	for i := 0; i < n; i++ {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Sequence != uint64(i) {
			t.Fatalf("ack %d has sequence %d", i, resp.Sequence)
		}
		if i%500 == 499 {
			if resp.GetError().GetCode() != "invalid_argument" {
				t.Fatalf("ack %d: %v, want invalid_argument", i, resp)
			}
			continue
		}
		ch := fmt.Sprintf("room:b%d", i%2)
		off := resp.GetOk().GetPosition().GetOffset()
		if off != last[ch]+1 {
			t.Fatalf("ack %d on %s: offset %d after %d", i, ch, off, last[ch])
		}
		last[ch] = off
		want[ch] = append(want[ch], fmt.Sprint(i))
	}
	for k, s := range subs {
		ch := fmt.Sprintf("room:b%d", k)
		for j, body := range want[ch] {
			p := s.next(t)
			if p.Offset != uint64(j+1) || string(p.GetRawJson()) != body {
				t.Fatalf("%s: got offset %d %s, want %d %s", ch, p.Offset, p.GetRawJson(), j+1, body)
			}
		}
	}
}

// TestRedisChannelsInPages: on Redis, Channels lists the channels of every
// node (the registry is shared) a page at a time in name order, with the
// channels that only have a stream on the asking node among them; a
// channel whose state is gone (expired before the registry's sweep) is
// skipped and the page still full: were it not, the page after
// room:r-02 would end at the stream-only room:r-zz, and the next page
// start after it, past room:r-05 and room:r-06.
func TestRedisChannelsInPages(t *testing.T) {
	c := startRedisCluster(t, 2)
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("room:r-%02d", i)
		c.publish(t, i%2, name, "1")
		want = append(want, name)
	}
	c.publish(t, 0, "room:r-02b", "1")
	rc := redis.NewClient(&redis.Options{Addr: c.redis.Addr})
	defer rc.Close()
	if n, err := rc.Del(context.Background(), c.prefix+":{room:r-02b}:m").Result(); err != nil || n != 1 {
		t.Fatalf("deleting room:r-02b's state: %d, %v", n, err)
	}
	s := c.server(0).subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:r-zz"}) // a stream, no state
	defer s.cancel()
	want = append(want, "room:r-zz")
	sort.Strings(want)
	var got []string
	tok := ""
	for pages := 1; ; pages++ {
		resp, err := c.clients[0].Channels(context.Background(), &heraldv1.ChannelsRequest{Pattern: "room:r-*", PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if tok = resp.NextPageToken; tok != "" && len(resp.Channels) != 3 {
			t.Fatalf("page %d: %d channels and a token, want 3", pages, len(resp.Channels))
		}
		for _, ci := range resp.Channels {
			got = append(got, ci.Name)
		}
		if tok == "" {
			break
		}
		if pages > 10 {
			t.Fatal("more than 10 pages of 3 for 8 channels")
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pages listed\n%v\nwant\n%v", got, want)
	}
}
