package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// dialCore connects to a core's gRPC API; ctx carries the API key.
func dialCore(ctx context.Context, addr, apiKey string, tc *tls.Config) (heraldv1.HeraldServiceClient, context.Context, func(), error) {
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc.Clone())
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, nil, err
	}
	if apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	}
	return heraldv1.NewHeraldServiceClient(conn), ctx, func() { _ = conn.Close() }, nil
}

// schedule is a fixed-rate send plan: send i is due at start + i/rate. Due
// times are computed, never ticked, so a late send does not shift the
// ones after it, and the lateness of each send is what the publisher lag
// reports. Rate 0 means "as fast as possible" (no due times).
type schedule struct {
	start time.Time
	rate  float64
}

func (s schedule) due(i int) time.Time {
	return s.start.Add(time.Duration(float64(i) * 1e9 / s.rate))
}

// waiter sleeps until due times with one reusable timer.
type waiter struct{ t *time.Timer }

func newWaiter() *waiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{t: t}
}

func (w *waiter) until(ctx context.Context, due time.Time) error {
	d := time.Until(due)
	if d <= 0 {
		return ctx.Err()
	}
	w.t.Reset(d)
	select {
	case <-w.t.C:
		return nil
	case <-ctx.Done():
		w.t.Stop()
		return ctx.Err()
	}
}

// pubResult is what a publisher did.
type pubResult struct {
	planned  int
	sent     int
	okPer    []int64 // acknowledged publications per target
	ok       int64
	errs     int64
	errSamp  []string
	lag      Histogram // actual send time - due time
	ack      Histogram // ack time - send time
	start    time.Time
	end      time.Time // last send
	streamEr error
}

// streamPublisher publishes over one PublishStream: this goroutine sends on
// schedule, a receiver goroutine matches acks (which come in request order)
// against the send times queued in a FIFO whose capacity bounds the
// publications in flight.
type streamPublisher struct {
	client  heraldv1.HeraldServiceClient
	channel func(i int) string
	targets int // publication i goes to target i%targets
	size    int
	window  int
	// fromSchedule stamps each payload with its scheduled time instead of
	// its send time (with a rate), so that delivery latency includes the
	// time a publication waited for a publisher that fell behind.
	fromSchedule bool
}

func (p *streamPublisher) run(ctx context.Context, rate float64, dur time.Duration) (*pubResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := p.client.PublishStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("PublishStream: %w", err)
	}
	r := &pubResult{okPer: make([]int64, max(1, p.targets))}
	inflight := make(chan int64, max(1, p.window))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					r.streamEr = err
				}
				return
			}
			sentAt := <-inflight
			now := time.Now().UnixNano()
			r.ack.Record(now - sentAt)
			if resp.GetOk() != nil {
				r.ok++
				r.okPer[resp.GetSequence()%uint64(len(r.okPer))]++
			} else {
				r.errs++
				if len(r.errSamp) < 5 {
					e := resp.GetError()
					r.errSamp = append(r.errSamp, e.GetCode()+": "+e.GetMessage())
				}
			}
		}
	}()

	w := newWaiter()
	r.start = time.Now().Add(20 * time.Millisecond)
	s := schedule{start: r.start, rate: rate}
	end := r.start.Add(dur)
	if rate > 0 {
		r.planned = int(rate * dur.Seconds())
	}
	var buf []byte
	for i := 0; rate <= 0 || i < r.planned; i++ {
		var due time.Time
		if rate > 0 {
			due = s.due(i)
			if err := w.until(ctx, due); err != nil {
				break
			}
		}
		now := time.Now()
		if rate <= 0 {
			if now.After(end) || ctx.Err() != nil {
				break
			}
			due = now
		}
		r.lag.Record(int64(now.Sub(due)))
		buf = appendStamp(buf[:0], now, due, rate > 0 && p.fromSchedule, p.size)
		req := &heraldv1.PublishStreamRequest{
			Sequence: uint64(i),
			Publish: &heraldv1.PublishRequest{
				Channel: p.channel(i),
				Payload: &heraldv1.PublishRequest_RawJson{RawJson: append([]byte(nil), buf...)},
			},
		}
		select {
		case inflight <- now.UnixNano():
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if err := stream.Send(req); err != nil {
			<-inflight
			break // Recv reports the stream's error
		}
		r.sent++
		r.end = now
	}
	_ = stream.CloseSend()
	wg.Wait()
	if rate <= 0 {
		r.planned = r.sent
	}
	if r.streamEr != nil {
		return r, fmt.Errorf("PublishStream: %w", r.streamEr)
	}
	return r, nil
}

// callPublisher publishes one request per publication with concurrent
// workers: worker w sends publications w, w+C, w+2C… on the shared
// schedule (or back to back with rate 0) and records its own histograms,
// merged at the end. What one call is (a unary gRPC Publish, a REST POST)
// is call's business; it returns once the publication is acknowledged.
type callPublisher struct {
	call    func(ctx context.Context, w int, channel string, payload []byte) error
	channel func(i int) string
	targets int // publication i goes to target i%targets
	size    int
	workers int
	// fromSchedule: as in streamPublisher.
	fromSchedule bool
}

// unaryPublisher publishes with unary gRPC Publish calls.
func unaryPublisher(client heraldv1.HeraldServiceClient) func(ctx context.Context, w int, channel string, payload []byte) error {
	return func(ctx context.Context, _ int, channel string, payload []byte) error {
		_, err := client.Publish(ctx, &heraldv1.PublishRequest{
			Channel: channel,
			Payload: &heraldv1.PublishRequest_RawJson{RawJson: payload},
		})
		return err
	}
}

func (p *callPublisher) run(ctx context.Context, rate float64, dur time.Duration) *pubResult {
	targets := max(1, p.targets)
	total := &pubResult{okPer: make([]int64, targets)}
	total.start = time.Now().Add(20 * time.Millisecond)
	s := schedule{start: total.start, rate: rate}
	end := total.start.Add(dur)
	planned := 0
	if rate > 0 {
		planned = int(rate * dur.Seconds())
	}
	parts := make([]*pubResult, p.workers)
	var wg sync.WaitGroup
	for w := range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &pubResult{okPer: make([]int64, targets)}
			parts[w] = r
			wt := newWaiter()
			if err := wt.until(ctx, total.start); err != nil {
				return
			}
			var buf []byte
			for i := w; rate <= 0 || i < planned; i += p.workers {
				var due time.Time
				if rate > 0 {
					due = s.due(i)
					if wt.until(ctx, due) != nil {
						return
					}
				}
				now := time.Now()
				if rate <= 0 {
					if now.After(end) || ctx.Err() != nil {
						return
					}
					due = now
				}
				r.lag.Record(int64(now.Sub(due)))
				buf = appendStamp(buf[:0], now, due, rate > 0 && p.fromSchedule, p.size)
				err := p.call(ctx, w, p.channel(i), buf)
				r.ack.Record(int64(time.Since(now)))
				r.sent++
				r.end = now
				if err != nil {
					r.errs++
					if len(r.errSamp) < 5 {
						r.errSamp = append(r.errSamp, err.Error())
					}
				} else {
					r.ok++
					r.okPer[i%targets]++
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range parts {
		total.sent += r.sent
		total.ok += r.ok
		total.errs += r.errs
		total.lag.Merge(&r.lag)
		total.ack.Merge(&r.ack)
		for i, n := range r.okPer {
			total.okPer[i] += n
		}
		if r.end.After(total.end) {
			total.end = r.end
		}
		for _, e := range r.errSamp {
			if len(total.errSamp) < 5 {
				total.errSamp = append(total.errSamp, e)
			}
		}
	}
	total.planned = planned
	if rate <= 0 {
		total.planned = total.sent
	}
	return total
}

// appendStamp appends a payload stamped with the time its delivery latency
// is counted from: when it was due on the schedule, or when it was sent.
// Counting from the schedule keeps a publisher that falls behind (a
// server slow to answer) from hiding the wait in its own backlog; the
// payload then carries its send time too, so that every run also reports
// the latency from the send, which leaves the publisher's backlog out.
func appendStamp(b []byte, sent, due time.Time, fromSchedule bool, size int) []byte {
	if fromSchedule {
		return appendStamped(b, due.UnixNano(), sent.UnixNano(), size)
	}
	return appendPayload(b, sent.UnixNano(), size)
}
