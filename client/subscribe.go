package client

import (
	"context"
	"errors"
	"io"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc/codes"
)

// SubscribeOptions configures a Subscription. Its zero value subscribes
// from now on, publications only, JSON payloads as text.
type SubscribeOptions struct {
	// Since resumes after this position: the publications after it come
	// first (if the node's history still has them), then live ones.
	Since *Position
	// PresenceEvents also delivers join and leave events (namespaces with
	// join_leave on).
	PresenceEvents bool
	// DecodeJSON delivers JSON payloads decoded, in Publication.data (a
	// google.protobuf.Value: numbers become float64 and object keys lose
	// their order; PAYLOAD_FORMAT_VALUE). By default they arrive as
	// published, as UTF-8 text in Publication.raw_json.
	DecodeJSON bool
	// OnRetry, when set, is called each time the subscription's stream
	// ended for a reason a resubscribe can fix, before waiting delay and
	// resubscribing; err is the reason. It runs on the goroutine that
	// called Recv.
	OnRetry func(err error, delay time.Duration)
}

// Subscription is a subscription to one channel that resumes by itself:
// when its stream ends because the node went away, restarted or drained
// (UNAVAILABLE), lost continuity (ABORTED) or found the subscriber too
// slow (RESOURCE_EXHAUSTED), or the connection was lost, it resubscribes
// from the last position it delivered, with the client's Retry backoff,
// for as long as its context lasts. Each resubscription starts with a
// `subscribed` event; its Unrecovered method says when the node could not
// replay what was missed (the epoch changed or history was too short), so
// that the application reloads its state.
//
// A Subscription is used from one goroutine at a time, as a gRPC stream is.
type Subscription struct {
	c       *Client
	ctx     context.Context
	cancel  context.CancelFunc
	req     *heraldv1.SubscribeRequest // Since: the last position delivered
	onRetry func(error, time.Duration)
	stream  heraldv1.HeraldService_SubscribeClient
	resumed bool // the current stream was opened with Since
	b       backoff
}

// Event is one event of a Subscription: the node's SubscribeResponse
// (GetSubscribed, GetPublication, GetJoin, GetLeave) and whether it
// resumed.
type Event struct {
	*heraldv1.SubscribeResponse
	// Resumed is set on a `subscribed` event when the subscription asked
	// to resume after a position: SubscribeOptions.Since, or the last
	// position delivered before its stream ended.
	Resumed bool
}

// Unrecovered reports whether e is a `subscribed` event of a resumed
// subscription whose gap the node could not fill (recovered: false):
// publications may have been missed; reload the state they build.
func (e Event) Unrecovered() bool {
	s := e.GetSubscribed()
	return s != nil && e.Resumed && !s.GetRecovered()
}

// Subscribe subscribes to channel. The subscription begins at the first
// Recv and lasts until ctx ends or Close.
func (c *Client) Subscribe(ctx context.Context, channel string, opts SubscribeOptions) *Subscription {
	ctx, cancel := context.WithCancel(ctx)
	req := &heraldv1.SubscribeRequest{Channel: channel, PresenceEvents: opts.PresenceEvents, PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW}
	if opts.DecodeJSON {
		req.PayloadFormat = heraldv1.PayloadFormat_PAYLOAD_FORMAT_VALUE
	}
	if opts.Since != nil {
		req.Since = opts.Since.proto()
	}
	return &Subscription{c: c, ctx: ctx, cancel: cancel, req: req, onRetry: opts.OnRetry, b: backoff{r: c.retry}}
}

// Recv returns the next event, resubscribing as needed. It fails, with an
// *Error, when the node refuses the subscription (INVALID_ARGUMENT,
// PERMISSION_DENIED, UNAUTHENTICATED) and when the context ends or Close
// was called (CANCELED or DEADLINE_EXCEEDED; errors.Is(err,
// context.Canceled) holds).
func (s *Subscription) Recv() (Event, error) {
	for {
		if s.stream == nil {
			st, err := s.c.svc.Subscribe(s.ctx, s.req)
			if err != nil {
				if err := s.retry(err); err != nil {
					return Event{}, err
				}
				continue
			}
			s.stream, s.resumed = st, s.req.Since != nil
		}
		resp, err := s.stream.Recv()
		if err != nil {
			s.stream = nil
			if errors.Is(err, io.EOF) {
				err = newError(codes.Unavailable, "the node ended the subscription")
			}
			if err := s.retry(err); err != nil {
				return Event{}, err
			}
			continue
		}
		ev := Event{SubscribeResponse: resp}
		switch {
		case resp.GetSubscribed() != nil:
			sub := resp.GetSubscribed()
			ev.Resumed = s.resumed
			s.b.reset()
			// Without a resume, or when the node could not make one,
			// the subscription starts at the channel's position now.
			// After a successful resume, replayed publications follow
			// and move Since themselves.
			if !s.resumed || !sub.GetRecovered() {
				s.req.Since = &heraldv1.StreamPosition{Offset: sub.GetPosition().GetOffset(), Epoch: sub.GetPosition().GetEpoch()}
			}
		case resp.GetPublication() != nil:
			if p := resp.GetPublication(); p.GetOffset() > 0 {
				s.req.Since = &heraldv1.StreamPosition{Offset: p.GetOffset(), Epoch: p.GetEpoch()}
			}
		}
		return ev, nil
	}
}

// retry decides about a stream that ended with err: nil after waiting the
// backoff when a resubscribe may help, else the error to return.
func (s *Subscription) retry(err error) error {
	err = toError(s.ctx, err)
	if s.ctx.Err() != nil || !resumable(CodeOf(err)) || s.c.closed() {
		return err
	}
	d := s.b.next()
	if s.onRetry != nil {
		s.onRetry(err, d)
	}
	if !sleep(s.ctx, d) {
		return toError(s.ctx, s.ctx.Err())
	}
	return nil
}

// resumable: the codes with which a node ends a subscription that a
// resubscribe from the last position continues (see herald.proto's
// Subscribe), and those of a lost connection.
func resumable(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.Aborted, codes.ResourceExhausted, codes.Canceled, codes.DeadlineExceeded:
		return true
	}
	return false
}

// Position returns the position the subscription resumes from when its
// stream ends: the last publication it delivered, or where it started;
// false while it has none (before its first event, without Since).
func (s *Subscription) Position() (Position, bool) {
	if s.req.Since == nil {
		return Position{}, false
	}
	return positionOf(s.req.Since), true
}

// Close ends the subscription; a Recv in progress returns CANCELED.
func (s *Subscription) Close() { s.cancel() }
