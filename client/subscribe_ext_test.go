package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/client"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/proxytest"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// retries records a Subscription's OnRetry calls.
type retries struct {
	mu    sync.Mutex
	codes []codes.Code
	waits []time.Duration
}

func (r *retries) record(err error, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.codes = append(r.codes, client.CodeOf(err))
	r.waits = append(r.waits, d)
}

func (r *retries) seen(code codes.Code) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.codes {
		if c == code {
			return true
		}
	}
	return false
}

func recvPub(t *testing.T, sub *client.Subscription) client.Event {
	t.Helper()
	ev, err := sub.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetPublication() == nil {
		t.Fatalf("got %v, want a publication", ev)
	}
	return ev
}

// TestSubscribeResumesAfterRestartUnrecovered: the memory engine's node
// restarts (a new epoch: history is gone). The subscription resubscribes
// by itself, with backoff reported to OnRetry, and its `subscribed` event
// is Unrecovered; live publications of the new epoch follow, and the
// position to resume from is in the new epoch.
func TestSubscribeResumesAfterRestartUnrecovered(t *testing.T) {
	n := startNode(t, nil)
	addr := n.GRPCAddr.String()
	var rs retries
	sub := dial(t, addr).Subscribe(ctxTimeout(t, 60*time.Second), "news", client.SubscribeOptions{OnRetry: rs.record})
	ev, err := sub.Recv()
	if err != nil || ev.GetSubscribed() == nil || ev.Resumed || ev.Unrecovered() {
		t.Fatalf("first event %v (resumed %v), %v", ev, ev.Resumed, err)
	}
	pub := dial(t, addr)
	if _, err := pub.Publish(ctxTimeout(t, 10*time.Second), client.Message{Channel: "news", JSON: jsonN(1)}); err != nil {
		t.Fatal(err)
	}
	first := recvPub(t, sub).GetPublication()
	if pos, ok := sub.Position(); !ok || pos.Offset != 1 || pos.Epoch != first.Epoch {
		t.Fatalf("Position() = %v %v after offset 1", pos, ok)
	}

	stopNode(n)
	_ = startNode(t, at(addr, nil))
	ev, err = sub.Recv()
	if err != nil || ev.GetSubscribed() == nil || !ev.Resumed || !ev.Unrecovered() {
		t.Fatalf("after the restart: %v (resumed %v), %v; want an unrecovered resubscription", ev, ev.Resumed, err)
	}
	if !rs.seen(codes.Unavailable) {
		t.Fatalf("OnRetry saw %v, want UNAVAILABLE", rs.codes)
	}
	newEpoch := ev.GetSubscribed().GetPosition().GetEpoch()
	if newEpoch == first.Epoch {
		t.Fatal("the epoch did not change")
	}
	if _, err := pub.Publish(ctxTimeout(t, 10*time.Second), client.Message{Channel: "news", JSON: jsonN(2)}); err != nil {
		t.Fatal(err)
	}
	// The restarted node's channel had no state when it was subscribed
	// (an empty epoch, newEpoch); its first publication starts a real
	// epoch, which the stream carries on into.
	p := recvPub(t, sub).GetPublication()
	if string(p.GetRawJson()) != `{"n":2}` || p.Epoch == first.Epoch || p.Offset != 1 {
		t.Fatalf("got %v after the restart", p)
	}

	// The next resume would start from the new epoch.
	if pos, ok := sub.Position(); !ok || pos.Epoch != p.Epoch || pos.Offset != 1 {
		t.Fatalf("Position() = %v %v, want 1@%s", pos, ok, p.Epoch)
	}
}

// TestSubscribeResumesAcrossRestartRedis: the subscriber's node stops
// while another node on the same Redis goes on publishing; when a node is
// back at the address, the subscription resumes recovered and gets
// exactly what it missed, in order, then live publications.
func TestSubscribeResumesAcrossRestartRedis(t *testing.T) {
	r := redistest.Start(t)
	edit := onRedis(r, fmt.Sprintf("subrestart%d", time.Now().UnixNano()))
	a, other := startNode(t, edit), startNode(t, edit)
	addr := a.GRPCAddr.String()
	pub := dial(t, other.GRPCAddr.String())
	ctx := ctxTimeout(t, 60*time.Second)
	publish := func(i int) {
		t.Helper()
		if _, err := pub.Publish(ctx, client.Message{Channel: "feed", JSON: jsonN(i)}); err != nil {
			t.Fatal(err)
		}
	}
	sub := dial(t, addr).Subscribe(ctx, "feed", client.SubscribeOptions{})
	if ev, err := sub.Recv(); err != nil || ev.GetSubscribed() == nil {
		t.Fatal(ev, err)
	}
	publish(1)
	recvPub(t, sub)

	stopNode(a)
	for i := 2; i <= 4; i++ {
		publish(i)
	}
	_ = startNode(t, at(addr, edit))
	ev, err := sub.Recv()
	if err != nil || ev.GetSubscribed() == nil || !ev.Resumed || ev.Unrecovered() {
		t.Fatalf("after the restart: %v (resumed %v), %v; want a recovered resubscription", ev, ev.Resumed, err)
	}
	for i := 2; i <= 4; i++ {
		if p := recvPub(t, sub).GetPublication(); string(p.GetRawJson()) != fmt.Sprintf(`{"n":%d}`, i) || p.Offset != uint64(i) {
			t.Fatalf("missed publication %d: got %v", i, p)
		}
	}
	publish(5)
	if p := recvPub(t, sub).GetPublication(); p.Offset != 5 {
		t.Fatalf("live publication after the resume: %v", p)
	}
}

// TestSubscribeResumesASlowConsumer: a subscriber that reads nothing while
// publications pile up is ended by the node (RESOURCE_EXHAUSTED); the
// subscription resumes from its last position and, history permitting,
// delivers every publication once, in order.
func TestSubscribeResumesASlowConsumer(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.Limits.SubscriberQueue = 8
		c.Namespaces = []config.Namespace{{Name: "slow", HistorySize: 10000, HistoryTTL: config.Duration(10 * time.Minute)}}
	})
	addr := n.GRPCAddr.String()
	var rs retries
	// Small HTTP/2 windows, so that the node's sends block soon.
	subc := dial(t, addr, client.WithDialOptions(grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16)))
	ctx := ctxTimeout(t, 60*time.Second)
	sub := subc.Subscribe(ctx, "slow:feed", client.SubscribeOptions{OnRetry: rs.record})
	if ev, err := sub.Recv(); err != nil || ev.GetSubscribed() == nil {
		t.Fatal(ev, err)
	}
	const total = 2000
	stream := dial(t, addr).PublishStream(ctx, client.StreamOptions{})
	pad := strings.Repeat("x", 1000)
	for i := 1; i <= total; i++ {
		if _, err := stream.Publish(ctx, client.Message{Channel: "slow:feed", JSON: []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= total; {
		ev, err := sub.Recv()
		switch {
		case err != nil:
			t.Fatal(err)
		case ev.Unrecovered():
			t.Fatalf("resumed unrecovered at publication %d", i)
		case ev.GetPublication() != nil:
			if p := ev.GetPublication(); p.Offset != uint64(i) {
				t.Fatalf("publication %d: offset %d", i, p.Offset)
			}
			i++
		}
	}
	if !rs.seen(codes.ResourceExhausted) {
		t.Fatalf("OnRetry saw %v; the node never ended the slow subscriber", rs.codes)
	}
}

// TestSubscribeStopsWhenRefused: a subscription the node refuses is not
// retried: Recv returns the node's code.
func TestSubscribeStopsWhenRefused(t *testing.T) {
	n := startNode(t, nil)
	var rs retries
	sub := dial(t, n.GRPCAddr.String()).Subscribe(ctxTimeout(t, 10*time.Second), "nope:x", client.SubscribeOptions{OnRetry: rs.record})
	if _, err := sub.Recv(); client.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
	}
	if len(rs.codes) != 0 {
		t.Fatalf("retried a refusal: %v", rs.codes)
	}

	// Close ends a subscription: Recv says CANCELED, as context.Canceled.
	sub = dial(t, n.GRPCAddr.String()).Subscribe(context.Background(), "news", client.SubscribeOptions{})
	if _, err := sub.Recv(); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(50 * time.Millisecond); sub.Close() }()
	if _, err := sub.Recv(); client.CodeOf(err) != codes.Canceled || !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after Close: %v", err)
	}
}

// TestSubscribeRetriesAnUnreachableNode: with no node at the address the
// subscription keeps trying, reporting each wait to OnRetry with a
// backoff that grows to Retry.Max, until a node appears.
func TestSubscribeRetriesAnUnreachableNode(t *testing.T) {
	n := startNode(t, nil)
	addr := n.GRPCAddr.String()
	stopNode(n)
	var rs retries
	c := dial(t, addr, client.WithRetry(client.Retry{Initial: 20 * time.Millisecond, Max: 160 * time.Millisecond}))
	sub := c.Subscribe(ctxTimeout(t, 60*time.Second), "news", client.SubscribeOptions{OnRetry: rs.record})
	got := make(chan error, 1)
	go func() {
		ev, err := sub.Recv()
		if err == nil && ev.GetSubscribed() == nil {
			err = fmt.Errorf("first event %v", ev)
		}
		got <- err
	}()
	waitFor(t, "six retries", func() bool { rs.mu.Lock(); defer rs.mu.Unlock(); return len(rs.codes) >= 6 })
	_ = startNode(t, at(addr, nil))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i, d := range rs.waits {
		if rs.codes[i] != codes.Unavailable || d > 160*time.Millisecond {
			t.Fatalf("retry %d: %v after %v", i, rs.codes[i], d)
		}
	}
	if last := rs.waits[5]; last < 80*time.Millisecond {
		t.Fatalf("the backoff did not grow: waits %v", rs.waits)
	}
}

// TestCloseStopsStreamsAndSubscriptions: after Client.Close, a
// Subscription and a Stream stop instead of reconnecting.
func TestCloseStopsStreamsAndSubscriptions(t *testing.T) {
	n := startNode(t, nil)
	c, err := client.Dial(n.GRPCAddr.String(), client.WithRetry(client.Retry{Attempts: -1}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	sub := c.Subscribe(ctx, "news", client.SubscribeOptions{})
	if _, err := sub.Recv(); err != nil {
		t.Fatal(err)
	}
	stream := c.PublishStream(ctx, client.StreamOptions{})
	if r, err := stream.Publish(ctx, client.Message{Channel: "news", JSON: jsonN(1)}); err != nil {
		t.Fatal(err)
	} else if _, err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if _, err := sub.Recv(); client.CodeOf(err) != codes.Canceled {
		t.Fatalf("Recv after Client.Close: %v", err)
	}
	r, err := stream.Publish(ctx, client.Message{Channel: "news", JSON: jsonN(2)})
	if err == nil {
		_, err = r.Wait(ctx)
	}
	if client.CodeOf(err) != codes.Canceled {
		t.Fatalf("stream publish after Client.Close: %v", err)
	}
}

// TestSubscribeResumesAfterAborted: Redis loses its data under a live
// subscription (FLUSHALL: the channel starts a new epoch). The node ends
// the stream with ABORTED; the subscription resumes, says Unrecovered,
// and receives the new epoch's publications.
func TestSubscribeResumesAfterAborted(t *testing.T) {
	r := redistest.Start(t)
	n := startNode(t, onRedis(r, fmt.Sprintf("aborted%d", time.Now().UnixNano())))
	c := dial(t, n.GRPCAddr.String())
	ctx := ctxTimeout(t, 30*time.Second)
	var rs retries
	sub := c.Subscribe(ctx, "flushed", client.SubscribeOptions{OnRetry: rs.record})
	if _, err := sub.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, client.Message{Channel: "flushed", JSON: jsonN(1)}); err != nil {
		t.Fatal(err)
	}
	old := recvPub(t, sub).GetPublication().Epoch

	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, client.Message{Channel: "flushed", JSON: jsonN(2)}); err != nil {
		t.Fatal(err)
	}
	var ev client.Event
	for {
		var err error
		if ev, err = sub.Recv(); err != nil {
			t.Fatal(err)
		}
		if ev.GetSubscribed() != nil {
			break
		}
		if p := ev.GetPublication(); p != nil {
			t.Fatalf("a publication of epoch %s on the old stream (was %s)", p.Epoch, old)
		}
	}
	if !ev.Unrecovered() || !rs.seen(codes.Aborted) || ev.GetSubscribed().GetPosition().GetEpoch() == old {
		t.Fatalf("after FLUSHALL: %v (unrecovered %v), retries %v", ev, ev.Unrecovered(), rs.codes)
	}
	if _, err := c.Publish(ctx, client.Message{Channel: "flushed", JSON: jsonN(3)}); err != nil {
		t.Fatal(err)
	}
	if p := recvPub(t, sub).GetPublication(); string(p.GetRawJson()) != `{"n":3}` || p.Epoch == old {
		t.Fatalf("after the resume: %v", p)
	}
}

// TestSubscribeResumesAfterTheConnectionIsCut: the subscriber's
// connection is cut while publications go on; the subscription resumes,
// recovered, with exactly what it missed.
func TestSubscribeResumesAfterTheConnectionIsCut(t *testing.T) {
	n := startNode(t, nil)
	p := proxytest.Start(t, n.GRPCAddr.String())
	pub := dial(t, n.GRPCAddr.String())
	ctx := ctxTimeout(t, 30*time.Second)
	sub := dial(t, p.Addr).Subscribe(ctx, "cutsub", client.SubscribeOptions{})
	if _, err := sub.Recv(); err != nil {
		t.Fatal(err)
	}
	publish := func(i int) {
		t.Helper()
		if _, err := pub.Publish(ctx, client.Message{Channel: "cutsub", JSON: jsonN(i)}); err != nil {
			t.Fatal(err)
		}
	}
	publish(1)
	recvPub(t, sub)
	p.Hold() // what the node sends from now on is lost with the connection
	publish(2)
	publish(3)
	p.Cut()
	p.Release()
	ev, err := sub.Recv()
	if err != nil || ev.GetSubscribed() == nil || !ev.Resumed || ev.Unrecovered() {
		t.Fatalf("after the cut: %v (resumed %v) %v; want a recovered resubscription", ev, ev.Resumed, err)
	}
	for i := 2; i <= 3; i++ {
		if got := recvPub(t, sub).GetPublication(); string(got.GetRawJson()) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("want {\"n\":%d}, got %v", i, got)
		}
	}
}
