package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/herald-io/herald/client"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/proxytest"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// publishInBackground runs c.Publish(m) and returns where its outcome
// arrives.
func publishInBackground(c *client.Client, m client.Message) <-chan publishOutcome {
	out := make(chan publishOutcome, 1)
	go func() {
		ack, err := c.Publish(context.Background(), m)
		out <- publishOutcome{ack, err}
	}()
	return out
}

type publishOutcome struct {
	ack client.Ack
	err error
}

func waitOutcome(t *testing.T, ch <-chan publishOutcome) publishOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(30 * time.Second):
		t.Fatal("Publish did not return within 30s")
		return publishOutcome{}
	}
}

// TestPublishRetryAfterLostAnswerDeliversOnce: a publish reaches the node
// and is committed, but its answer is lost with the connection. Publish
// retries by itself with the same idempotency key; the node answers with
// the original position and `duplicate`, and the channel holds the
// publication once.
func TestPublishRetryAfterLostAnswerDeliversOnce(t *testing.T) {
	n := startNode(t, nil)
	direct := dial(t, n.GRPCAddr.String())
	p := proxytest.Start(t, n.GRPCAddr.String())
	c := dial(t, p.Addr)
	if _, err := c.Publish(ctxTimeout(t, 10*time.Second), client.Message{Channel: "retry", JSON: jsonN(0)}); err != nil {
		t.Fatal(err) // the connection is up
	}

	p.Hold()
	out := publishInBackground(c, client.Message{Channel: "retry", JSON: jsonN(1)})
	waitFor(t, "the publication in history", func() bool { return len(history(t, direct, "retry")) == 2 })
	p.Cut()
	p.Release()

	o := waitOutcome(t, out)
	if o.err != nil {
		t.Fatalf("Publish: %v", o.err)
	}
	h := history(t, direct, "retry")
	if len(h) != 2 {
		t.Fatalf("history holds %d publications, want 2", len(h))
	}
	if !o.ack.Duplicate || o.ack.Position.Offset != h[1].Offset || o.ack.Position.Epoch != h[1].Epoch || o.ack.IdempotencyKey == "" {
		t.Fatalf("ack %+v; want a duplicate of offset %d", o.ack, h[1].Offset)
	}
	if p.Accepted() < 2 {
		t.Fatalf("the proxy saw %d connections; the retry did not reconnect", p.Accepted())
	}
}

// TestPublishRetryAcrossNodeRestartRedis: the node that committed a
// publish goes away before its answer arrives; a new node on the same
// Redis takes over. The retry gets the original position, and a
// subscriber of the new node receives nothing for it.
func TestPublishRetryAcrossNodeRestartRedis(t *testing.T) {
	r := redistest.Start(t)
	edit := onRedis(r, fmt.Sprintf("pubretry%d", time.Now().UnixNano()))
	a := startNode(t, edit)
	p := proxytest.Start(t, a.GRPCAddr.String())
	c := dial(t, p.Addr)
	if _, err := c.Publish(ctxTimeout(t, 10*time.Second), client.Message{Channel: "restart", JSON: jsonN(0)}); err != nil {
		t.Fatal(err)
	}
	p.Hold()
	out := publishInBackground(c, client.Message{Channel: "restart", JSON: jsonN(1)})
	viaA := dial(t, a.GRPCAddr.String())
	waitFor(t, "the publication in history", func() bool { return len(history(t, viaA, "restart")) == 2 })
	stopNode(a)

	b := startNode(t, edit)
	viaB := dial(t, b.GRPCAddr.String())
	sub := viaB.Subscribe(ctxTimeout(t, 30*time.Second), "restart", client.SubscribeOptions{})
	if ev, err := sub.Recv(); err != nil || ev.GetSubscribed() == nil {
		t.Fatalf("subscribe on B: %v %v", ev, err)
	}
	p.SetTarget(b.GRPCAddr.String())
	p.Cut()
	p.Release()

	o := waitOutcome(t, out)
	h := history(t, viaB, "restart")
	if o.err != nil || !o.ack.Duplicate || len(h) != 2 || o.ack.Position.Offset != h[1].Offset {
		t.Fatalf("ack %+v, err %v, history of %d; want a duplicate of offset 2 and 2 publications", o.ack, o.err, len(h))
	}
	// The retry delivered nothing: the next publication is the first the
	// subscriber gets.
	if _, err := viaB.Publish(ctxTimeout(t, 10*time.Second), client.Message{Channel: "restart", JSON: jsonN(2)}); err != nil {
		t.Fatal(err)
	}
	ev, err := sub.Recv()
	if err != nil || string(ev.GetPublication().GetRawJson()) != `{"n":2}` || ev.GetPublication().Offset != 3 {
		t.Fatalf("subscriber on B got %v (%v), want {\"n\":2} at offset 3", ev, err)
	}
}

// duplicates reads the node's count of publishes answered as duplicates.
func duplicates(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "herald_publish_duplicates_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestPublishRetriesAnAttemptThatTimesOut: the node's answers stop
// arriving (a connection gone silent); the attempt times out
// (DEADLINE_EXCEEDED of the attempt, not of the caller) and Publish sends
// it again, with the same key.
func TestPublishRetriesAnAttemptThatTimesOut(t *testing.T) {
	n := startNode(t, nil)
	p := proxytest.Start(t, n.GRPCAddr.String())
	c := dial(t, p.Addr, client.WithRetry(client.Retry{AttemptTimeout: 500 * time.Millisecond}))
	if _, err := c.Publish(ctxTimeout(t, 10*time.Second), client.Message{Channel: "silent", JSON: jsonN(0)}); err != nil {
		t.Fatal(err)
	}
	before := duplicates(t)
	p.Hold()
	out := publishInBackground(c, client.Message{Channel: "silent", JSON: jsonN(1)})
	waitFor(t, "a second attempt to reach the node", func() bool { return duplicates(t) > before })
	p.Release()
	o := waitOutcome(t, out)
	h := history(t, dial(t, n.GRPCAddr.String()), "silent")
	if o.err != nil || !o.ack.Duplicate || len(h) != 2 || o.ack.Position.Offset != 2 {
		t.Fatalf("ack %+v, err %v, %d publications; want a duplicate of offset 2", o.ack, o.err, len(h))
	}
}

// TestPublishGivesUp: with no node at the address, Publish makes
// Retry.Attempts attempts and returns UNAVAILABLE; a caller's deadline
// stops it sooner, with the last attempt's code.
func TestPublishGivesUp(t *testing.T) {
	p := proxytest.Start(t, "127.0.0.1:1") // accepts, then finds nothing behind
	c := dial(t, p.Addr, client.WithRetry(client.Retry{Attempts: 3, Initial: 10 * time.Millisecond}))
	start := time.Now()
	_, err := c.Publish(ctxTimeout(t, 30*time.Second), client.Message{Channel: "x", JSON: jsonN(1)})
	if client.CodeOf(err) != codes.Unavailable {
		t.Fatalf("err = %v, want UNAVAILABLE", err)
	}
	if p.Accepted() < 1 {
		t.Fatal("no attempt reached the address")
	}
	t.Logf("gave up after %v, %d connections: %v", time.Since(start), p.Accepted(), err)

	forever := dial(t, p.Addr, client.WithRetry(client.Retry{Attempts: -1, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = forever.Publish(ctx, client.Message{Channel: "x", JSON: jsonN(1)})
	if code := client.CodeOf(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want UNAVAILABLE or DEADLINE_EXCEEDED when the deadline passes", err)
	}
	if ctx.Err() == nil {
		t.Fatal("Publish with unlimited attempts returned before the caller's deadline")
	}
}

// TestPublishDoesNotRetryRefusals: a publish the node refuses is not
// retried, and its error carries the node's code and message.
func TestPublishDoesNotRetryRefusals(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.Limits.MaxPayload = 16 })
	p := proxytest.Start(t, n.GRPCAddr.String())
	c := dial(t, p.Addr)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, tc := range []struct {
		m    client.Message
		code codes.Code
	}{
		{client.Message{Channel: "nope:x", JSON: jsonN(1)}, codes.InvalidArgument},
		{client.Message{Channel: "big", JSON: []byte(`"this payload is over sixteen bytes"`)}, codes.InvalidArgument},
		{client.Message{Channel: "bad", JSON: []byte(`{not json`)}, codes.InvalidArgument},
		{client.Message{Channel: "none"}, codes.InvalidArgument},
		{client.Message{Channel: "both", JSON: jsonN(1), Binary: []byte{1}}, codes.InvalidArgument},
	} {
		_, err := c.Publish(ctx, tc.m)
		var e *client.Error
		if client.CodeOf(err) != tc.code || !errors.As(err, &e) || e.Message() == "" {
			t.Errorf("%+v: err = %v, want %v", tc.m, err, tc.code)
		}
	}
	if p.Accepted() != 1 {
		t.Fatalf("%d connections; a refusal was retried over a new one", p.Accepted())
	}
	// Binary payloads, tags and an empty binary payload go through.
	ack, err := c.Publish(ctx, client.Message{Channel: "bin", Binary: []byte{0, 0xff, 1}, Tags: map[string]string{"k": "v"}})
	if err != nil || ack.Position.Offset != 1 {
		t.Fatalf("binary publish: %+v %v", ack, err)
	}
	if _, err := c.Publish(ctx, client.Message{Channel: "bin", Binary: []byte{}}); err != nil {
		t.Fatalf("empty binary publish: %v", err)
	}
	h := history(t, c, "bin")
	empty, ok := h[1].GetPayload().(*heraldv1.Publication_Binary)
	if len(h) != 2 || string(h[0].GetBinary()) != "\x00\xff\x01" || h[0].Tags["k"] != "v" || !ok || len(empty.Binary) != 0 {
		t.Fatalf("history %v", h)
	}
}
