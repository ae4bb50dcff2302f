package client

import (
	"context"
	"errors"
	"io"
	"sync"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc/codes"
)

// StreamOptions configures a Stream. Its zero value is the default.
type StreamOptions struct {
	// Window bounds the publications published on the stream and not yet
	// acknowledged; Publish waits (TryPublish fails) while it is full.
	// Default 256.
	Window int
}

// Stream publishes over one PublishStream: many publications without a
// round trip each, acknowledged in order. It keeps at most Window of
// them unacknowledged (backpressure), reports each one's outcome on its
// Result, in publication order, and survives its stream breaking: it
// reconnects (with the client's Retry backoff) and sends again, in order
// and with the same idempotency keys, every publication not yet
// acknowledged, so that nothing acknowledged is lost and nothing is
// delivered twice (within the node's dedupe window; across a node restart
// with an engine that keeps its dedupe keys, as Redis does).
//
// A publication that the node refuses (INVALID_ARGUMENT, PERMISSION_DENIED,
// or UNAVAILABLE when its engine failed it) gets that error on its Result
// and the stream carries on; it is not sent again, as that would reorder
// it after later ones. The stream fails as a whole, every Result pending
// with the error, when it cannot reconnect (Retry.Attempts consecutive
// failed connections), when the node refuses the stream itself
// (UNAUTHENTICATED, PERMISSION_DENIED), or when its context ends.
//
// A Stream is safe for concurrent use; the order of publications is the
// order in which Publish calls return.
type Stream struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{} // one per unacknowledged publication
	wake   chan struct{} // something to send, or closing
	done   chan struct{} // closed when run returns

	mu      sync.Mutex
	pending []*Result // unacknowledged, in order; lock must be held
	sent    int       // pending[:sent] were sent on the current stream
	seq     uint64
	closing bool
	err     error // why the stream failed; set before done closes
}

// Result is the outcome of one publication on a Stream.
type Result struct {
	req  *heraldv1.PublishRequest
	seq  uint64
	done chan struct{}
	ack  Ack
	err  error
}

// Done is closed when the outcome is known.
func (r *Result) Done() <-chan struct{} { return r.done }

// Wait waits for the outcome, or for ctx to end (then it returns ctx's
// error; the publication's outcome is still to come on Done).
func (r *Result) Wait(ctx context.Context) (Ack, error) {
	select {
	case <-r.done:
		return r.ack, r.err
	case <-ctx.Done():
		return Ack{}, toError(ctx, ctx.Err())
	}
}

// IdempotencyKey returns the key the publication carries.
func (r *Result) IdempotencyKey() string { return r.req.IdempotencyKey }

func (r *Result) resolve(ack Ack, err error) {
	r.ack, r.err = ack, err
	close(r.done)
}

// PublishStream opens a Stream; ctx bounds its whole life (when ctx ends,
// the stream fails with its error). The gRPC stream is opened at the
// first publication.
func (c *Client) PublishStream(ctx context.Context, opts StreamOptions) *Stream {
	if opts.Window <= 0 {
		opts.Window = 256
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{
		c: c, ctx: ctx, cancel: cancel,
		slots: make(chan struct{}, opts.Window),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	go s.run()
	return s
}

// Publish queues m on the stream and returns its Result. While Window
// publications are unacknowledged it waits for room, until ctx ends
// (then the error is ctx's, as an *Error). It fails with ErrClosed after
// Close, and with the stream's error once the stream failed. Errors in m
// (no payload) are returned at once.
func (s *Stream) Publish(ctx context.Context, m Message) (*Result, error) {
	req, err := m.request()
	if err != nil {
		return nil, err
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, toError(ctx, ctx.Err())
	case <-s.done:
		return nil, s.failure()
	}
	return s.enqueue(req)
}

// TryPublish is Publish that does not wait: while the window is full it
// fails with ErrFull.
func (s *Stream) TryPublish(m Message) (*Result, error) {
	req, err := m.request()
	if err != nil {
		return nil, err
	}
	select {
	case s.slots <- struct{}{}:
	default:
		select {
		case <-s.done:
			return nil, s.failure()
		default:
		}
		return nil, ErrFull
	}
	return s.enqueue(req)
}

func (s *Stream) enqueue(req *heraldv1.PublishRequest) (*Result, error) {
	s.mu.Lock()
	if s.closing || s.err != nil {
		err := s.err
		s.mu.Unlock()
		<-s.slots
		if err == nil {
			err = ErrClosed
		}
		return nil, err
	}
	s.seq++
	r := &Result{req: req, seq: s.seq, done: make(chan struct{})}
	s.pending = append(s.pending, r)
	s.mu.Unlock()
	s.notify()
	return r, nil
}

func (s *Stream) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	return ErrClosed
}

func (s *Stream) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close stops new publications and waits until every publication made is
// acknowledged (or refused), then closes the stream. When ctx ends first,
// it abandons the rest: their Results get CANCELED (they may or may not
// have been published) and Close returns ctx's error. Close returns the
// stream's error if it failed. It is safe to call more than once.
func (s *Stream) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.notify()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.cancel()
		<-s.done
		return toError(ctx, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// errDrained ends a session that closed its stream after the last
// acknowledgement.
var errDrained = errors.New("drained")

// run keeps a gRPC stream open while there is something to send, until
// the stream drains after Close or fails.
func (s *Stream) run() {
	defer close(s.done)
	defer s.cancel()
	b := backoff{r: s.c.retry}
	failures := 0
	for {
		if !s.waitForWork() {
			s.fail(s.ctxError())
			return
		}
		if s.drained() {
			return
		}
		acked, err := s.session()
		if err == errDrained {
			return
		}
		if s.ctx.Err() != nil {
			s.fail(s.ctxError())
			return
		}
		if acked > 0 {
			failures = 0
			b.reset()
		}
		failures++
		err = toError(s.ctx, err)
		if !streamTransient(CodeOf(err)) || s.c.retry.exhausted(failures) || s.c.closed() {
			s.fail(err)
			return
		}
		if !sleep(s.ctx, b.next()) {
			s.fail(s.ctxError())
			return
		}
	}
}

// ctxError is what Results get when the stream's context ended: CANCELED
// when Close gave up or the caller cancelled.
func (s *Stream) ctxError() error {
	return newError(codes.Canceled, "publish stream closed before the publication was acknowledged; it may or may not have been published")
}

// streamTransient: the stream broke (node gone, restarting, draining,
// connection cut) rather than being refused.
func streamTransient(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// waitForWork waits until a publication is pending or Close was called;
// false when the context ended.
func (s *Stream) waitForWork() bool {
	for {
		s.mu.Lock()
		ready := len(s.pending) > 0 || s.closing
		s.mu.Unlock()
		if ready {
			return true
		}
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return false
		}
	}
}

func (s *Stream) drained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing && len(s.pending) == 0
}

// fail resolves every pending publication with err and marks the stream
// failed.
func (s *Stream) fail(err error) {
	s.mu.Lock()
	pending := s.pending
	s.pending, s.sent = nil, 0
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	for _, r := range pending {
		r.resolve(Ack{}, err)
		<-s.slots
	}
}

// session runs one gRPC stream: it sends every pending publication not
// yet sent on it (all of them, at first: those a broken stream did not
// acknowledge go again, in order, with their keys) and resolves them as
// acknowledgements arrive. It returns how many were acknowledged and why
// it ended.
func (s *Stream) session() (int, error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	st, err := s.c.svc.PublishStream(ctx)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.sent = 0
	s.mu.Unlock()

	acked := 0
	recvDone := make(chan error, 1)
	go func() { recvDone <- s.receive(st, &acked) }()
	wait := func() error { // the receiver's verdict; it has stopped
		cancel()
		return <-recvDone
	}
	for {
		s.mu.Lock()
		batch := append([]*Result(nil), s.pending[s.sent:]...)
		s.sent = len(s.pending)
		drained := s.closing && len(s.pending) == 0
		s.mu.Unlock()
		if drained {
			_ = st.CloseSend()
			if err = <-recvDone; err == nil {
				err = errDrained
			}
			return acked, err
		}
		for _, r := range batch {
			if err := st.Send(&heraldv1.PublishStreamRequest{Publish: r.req, Sequence: r.seq}); err != nil {
				// The stream broke; the receiver has its status.
				select {
				case err = <-recvDone:
					err = orEnded(err)
				case <-ctx.Done():
					err = wait()
				}
				return acked, err
			}
		}
		select {
		case <-s.wake:
			continue
		case err = <-recvDone:
			err = orEnded(err)
		case <-ctx.Done():
			err = wait()
		}
		return acked, err // acked is final: the receiver has stopped
	}
}

// orEnded turns a stream the node ended without an error while
// publications were pending into UNAVAILABLE, to reconnect.
func orEnded(err error) error {
	if err == nil {
		return newError(codes.Unavailable, "the node ended the publish stream")
	}
	return err
}

// receive resolves pending publications with the stream's answers, in
// order, until the stream ends (nil: ended by the node after CloseSend).
// acked counts them; it is read after receive returns.
func (s *Stream) receive(st heraldv1.HeraldService_PublishStreamClient, acked *int) error {
	for {
		resp, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		if len(s.pending) == 0 || s.sent == 0 || s.pending[0].seq != resp.Sequence {
			s.mu.Unlock()
			return newError(codes.Internal, "publish stream: an acknowledgement out of order")
		}
		r := s.pending[0]
		s.pending[0] = nil
		s.pending = s.pending[1:]
		s.sent--
		closing := s.closing && len(s.pending) == 0
		s.mu.Unlock()
		if e := resp.GetError(); e != nil {
			r.resolve(Ack{IdempotencyKey: r.req.IdempotencyKey}, newError(parseCode(e.Code), e.Message))
		} else {
			r.resolve(ackOf(resp.GetOk(), r.req.IdempotencyKey), nil)
		}
		<-s.slots
		*acked++
		if closing {
			s.notify()
		}
	}
}
