package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/client"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/proxytest"
	"github.com/herald-io/herald/internal/redistest"
	"google.golang.org/grpc/codes"
)

// TestStreamBackpressureAndOrder: with Window publications
// unacknowledged, TryPublish fails with ErrFull and Publish waits (until
// its context ends, or until acknowledgements make room); Results are
// resolved in publication order with increasing offsets.
func TestStreamBackpressureAndOrder(t *testing.T) {
	n := startNode(t, nil)
	p := proxytest.Start(t, n.GRPCAddr.String())
	c := dial(t, p.Addr)
	ctx := ctxTimeout(t, 30*time.Second)
	stream := c.PublishStream(ctx, client.StreamOptions{Window: 4})
	first, err := stream.Publish(ctx, client.Message{Channel: "bp", JSON: jsonN(0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Wait(ctx); err != nil {
		t.Fatal(err) // the stream is up
	}

	p.Hold() // acknowledgements stop arriving
	var results []*client.Result
	for i := 1; i <= 4; i++ {
		r, err := stream.Publish(ctx, client.Message{Channel: "bp", JSON: jsonN(i)})
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
	}
	if _, err := stream.TryPublish(client.Message{Channel: "bp", JSON: jsonN(99)}); !errors.Is(err, client.ErrFull) || client.CodeOf(err) != codes.ResourceExhausted {
		t.Fatalf("TryPublish on a full window: %v, want ErrFull", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = stream.Publish(short, client.Message{Channel: "bp", JSON: jsonN(99)})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || client.CodeOf(err) != codes.DeadlineExceeded {
		t.Fatalf("Publish on a full window past its deadline: %v", err)
	}
	blocked := make(chan *client.Result, 1)
	go func() {
		r, err := stream.Publish(ctx, client.Message{Channel: "bp", JSON: jsonN(5)})
		if err != nil {
			t.Error(err)
		}
		blocked <- r
	}()
	for _, r := range results {
		select {
		case <-r.Done():
			t.Fatal("a publication was acknowledged while the answers were held")
		default:
		}
	}

	// Resolved in order: when one is done, all before it are.
	inOrder := make(chan error, 1)
	go func() {
		for i, r := range results {
			<-r.Done()
			for _, before := range results[:i] {
				select {
				case <-before.Done():
				default:
					inOrder <- fmt.Errorf("result %d resolved before result %d", i+1, i)
					return
				}
			}
		}
		inOrder <- nil
	}()
	p.Release()
	if err := <-inOrder; err != nil {
		t.Fatal(err)
	}
	last := <-blocked
	results = append(results, last)
	for i, r := range results {
		ack, err := r.Wait(ctx)
		if err != nil || ack.Position.Offset != uint64(i+2) || ack.Duplicate {
			t.Fatalf("result %d: %+v %v, want offset %d", i+1, ack, err, i+2)
		}
	}
	if err := stream.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Publish(ctx, client.Message{Channel: "bp", JSON: jsonN(6)}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

// collector subscribes to a channel (through its own client) and records
// the n of every {"n":…} publication in arrival order, with its offset.
type collector struct {
	mu      sync.Mutex
	ns      []int
	offsets []uint64
	err     error
}

func collect(t *testing.T, c *client.Client, ctx context.Context, channel string) *collector {
	t.Helper()
	sub := c.Subscribe(ctx, channel, client.SubscribeOptions{})
	if ev, err := sub.Recv(); err != nil || ev.GetSubscribed() == nil {
		t.Fatalf("subscribe: %v %v", ev, err)
	}
	col := &collector{}
	go func() {
		for {
			ev, err := sub.Recv()
			if err != nil {
				col.mu.Lock()
				col.err = err
				col.mu.Unlock()
				return
			}
			p := ev.GetPublication()
			if p == nil {
				continue
			}
			var v struct{ N int }
			if err := json.Unmarshal(p.GetRawJson(), &v); err != nil {
				t.Error(err)
			}
			col.mu.Lock()
			col.ns = append(col.ns, v.N)
			col.offsets = append(col.offsets, p.Offset)
			col.mu.Unlock()
		}
	}()
	return col
}

func (col *collector) count() int {
	col.mu.Lock()
	defer col.mu.Unlock()
	return len(col.ns)
}

// check asserts that the collector got 1..total exactly once, in order,
// at consecutive offsets, and that each Result's offset is the one the
// subscriber saw.
func (col *collector) check(t *testing.T, results []*client.Result, firstOffset uint64) {
	t.Helper()
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.ns) != len(results) {
		t.Fatalf("subscriber got %d publications, want %d", len(col.ns), len(results))
	}
	for i, n := range col.ns {
		if n != i+1 || col.offsets[i] != firstOffset+uint64(i) {
			t.Fatalf("publication %d: n=%d at offset %d; want n=%d at %d (lost, duplicated or reordered)", i, n, col.offsets[i], i+1, firstOffset+uint64(i))
		}
		ack, err := results[i].Wait(context.Background())
		if err != nil || ack.Position.Offset != col.offsets[i] {
			t.Fatalf("result %d: %+v %v; the subscriber saw offset %d", i+1, ack, err, col.offsets[i])
		}
	}
}

// publisher publishes {"n":1}…{"n":total} on a Stream from one
// goroutine, counting what Publish accepted.
type publisher struct {
	mu       sync.Mutex
	results  []*client.Result
	enqueued atomic.Int64
	done     chan error
}

func startPublishing(ctx context.Context, s *client.Stream, channel string, total int) *publisher {
	pb := &publisher{done: make(chan error, 1)}
	go func() {
		for i := 1; i <= total; i++ {
			r, err := s.Publish(ctx, client.Message{Channel: channel, JSON: jsonN(i)})
			if err != nil {
				pb.done <- err
				return
			}
			pb.mu.Lock()
			pb.results = append(pb.results, r)
			pb.mu.Unlock()
			pb.enqueued.Add(1)
		}
		pb.done <- nil
	}()
	return pb
}

func (pb *publisher) acked() int {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	k := 0
	for _, r := range pb.results {
		select {
		case <-r.Done():
			k++
		default:
			return k
		}
	}
	return k
}

// breakMidFlight holds the node's answers until a full window of
// publications is committed (the subscriber has them) and unacknowledged,
// then lets between run (which cuts the connection) and lets answers flow
// again. It returns how many were committed and unacknowledged: the
// stream must send them again and get them back as duplicates.
func breakMidFlight(t *testing.T, p *proxytest.Proxy, pb *publisher, col *collector, window int, between func()) int {
	t.Helper()
	p.Hold()
	waitFor(t, "a full window committed and unacknowledged", func() bool {
		e, a := int(pb.enqueued.Load()), pb.acked()
		if e-a != window || col.count() != e {
			return false
		}
		// Answers the proxy wrote before Hold may still be unread in the
		// client's socket (nothing shows how much): read, they would free
		// the window for publications the cut then catches uncommitted,
		// which are resent as first sends. The state must stay put a
		// while: after Hold nothing else can move it.
		time.Sleep(100 * time.Millisecond)
		return int(pb.enqueued.Load()) == e && pb.acked() == a && col.count() == e
	})
	inFlight := int(pb.enqueued.Load()) - pb.acked()
	between()
	p.Release()
	return inFlight
}

func countDuplicates(t *testing.T, results []*client.Result) int {
	t.Helper()
	k := 0
	for _, r := range results {
		ack, err := r.Wait(context.Background())
		if err != nil {
			t.Fatalf("a publication failed: %v", err)
		}
		if ack.Duplicate {
			k++
		}
	}
	return k
}

// TestStreamResendsAfterTheConnectionBreaks: a Stream whose connection is
// cut three times, each time with a full window committed by the node and
// not acknowledged, sends those again with their keys; every publication
// is acknowledged, the subscriber receives each exactly once and in order,
// and exactly the resent ones come back as duplicates.
func TestStreamResendsAfterTheConnectionBreaks(t *testing.T) {
	n := startNode(t, nil)
	p := proxytest.Start(t, n.GRPCAddr.String())
	ctx := ctxTimeout(t, 60*time.Second)
	col := collect(t, dial(t, n.GRPCAddr.String()), ctx, "cut")
	const window, total = 32, 1500
	stream := dial(t, p.Addr).PublishStream(ctx, client.StreamOptions{Window: window})
	pb := startPublishing(ctx, stream, "cut", total)
	resent := 0
	for _, at := range []int{200, 600, 1000} {
		waitFor(t, fmt.Sprintf("%d acknowledgements", at), func() bool { return pb.acked() >= at })
		resent += breakMidFlight(t, p, pb, col, window, p.Cut)
	}
	if err := <-pb.done; err != nil {
		t.Fatal(err)
	}
	if err := stream.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscriber to receive everything", func() bool { return col.count() >= total })
	col.check(t, pb.results, 1)
	if d := countDuplicates(t, pb.results); d != resent || resent != 3*window {
		t.Fatalf("%d duplicates, %d resent after the cuts; want %d of each", d, resent, 3*window)
	}
	if p.Accepted() != 4 {
		t.Fatalf("the stream made %d connections, want 4", p.Accepted())
	}
}

// TestStreamSurvivesANodeRestartRedis: the node under a Stream stops with
// a full window committed and unacknowledged, and another node on the
// same Redis takes its place. The stream reconnects to it and sends the
// window again: Redis remembers the keys, so a subscriber on a third node
// receives every publication exactly once, in order.
func TestStreamSurvivesANodeRestartRedis(t *testing.T) {
	r := redistest.Start(t)
	edit := onRedis(r, fmt.Sprintf("streamrestart%d", time.Now().UnixNano()))
	withHistory := func(c *config.Config) {
		edit(c)
		c.Namespaces = []config.Namespace{{Name: "orders", HistorySize: 10000, HistoryTTL: config.Duration(10 * time.Minute)}}
	}
	a, watcher := startNode(t, withHistory), startNode(t, withHistory)
	p := proxytest.Start(t, a.GRPCAddr.String())
	ctx := ctxTimeout(t, 60*time.Second)
	col := collect(t, dial(t, watcher.GRPCAddr.String()), ctx, "orders:stream")
	const window, total = 64, 1000
	stream := dial(t, p.Addr).PublishStream(ctx, client.StreamOptions{Window: window})
	pb := startPublishing(ctx, stream, "orders:stream", total)
	waitFor(t, "300 acknowledgements", func() bool { return pb.acked() >= 300 })
	resent := breakMidFlight(t, p, pb, col, window, func() {
		stopNode(a)
		b := startNode(t, withHistory)
		p.SetTarget(b.GRPCAddr.String())
		p.Cut()
	})
	if err := <-pb.done; err != nil {
		t.Fatal(err)
	}
	if err := stream.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscriber to receive everything", func() bool { return col.count() >= total })
	col.check(t, pb.results, 1)
	if d := countDuplicates(t, pb.results); d != resent || resent != window {
		t.Fatalf("%d duplicates, %d resent after the restart; want %d of each", d, resent, window)
	}
}

// TestStreamCloseGivesUpAtItsDeadline: Close waits for acknowledgements
// only as long as its context; what is left gets CANCELED.
func TestStreamCloseGivesUpAtItsDeadline(t *testing.T) {
	n := startNode(t, nil)
	p := proxytest.Start(t, n.GRPCAddr.String())
	ctx := ctxTimeout(t, 30*time.Second)
	stream := dial(t, p.Addr).PublishStream(ctx, client.StreamOptions{})
	p.Hold()
	r, err := stream.Publish(ctx, client.Message{Channel: "close", JSON: jsonN(1)})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := stream.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want the deadline", err)
	}
	if _, err := r.Wait(ctx); client.CodeOf(err) != codes.Canceled {
		t.Fatalf("abandoned publication: %v, want CANCELED", err)
	}
	p.Release()
}
