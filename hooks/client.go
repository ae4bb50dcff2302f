package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/herald-io/herald/config"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Options are the optional parts of a Client. The zero value works.
type Options struct {
	// Log receives failures (rate-limited) and circuit changes. Default:
	// discarded.
	Log *slog.Logger
	// MaxMessage bounds an answer's size in bytes. Default 4 MiB.
	MaxMessage int
	// UserAgent is sent with HTTP calls. Default "herald".
	UserAgent string
	// MaxPayload bounds a payload in an answer (a publication's
	// replacement, an RPC result): a larger one is a BadAnswer. Default
	// 0: no bound beyond MaxMessage.
	MaxPayload int
}

// Client calls the application's backend. Its methods are safe for
// concurrent use; each returns the backend's checked answer or an *Error.
type Client struct {
	cfg     config.Hooks
	backend string
	maxPay  int
	c       caller
	log     *slog.Logger
	sem     chan struct{}
	br      breaker
	closed  sync.Once

	logMu  sync.Mutex
	logged map[string]time.Time // by hook: the last failure logged
	quiet  map[string]int       // by hook: failures not logged since
}

// caller makes one call of a hook: req is sent, the answer decoded into
// resp. An error says why there is no answer: BadAnswer for an answer that
// could not be decoded (as an *Error), anything else is unavailability.
type caller interface {
	call(ctx context.Context, hook string, req, resp proto.Message) error
	close() error
}

// logEvery is the longest silence of the log while a hook keeps failing.
const logEvery = 10 * time.Second

// New returns a client of the backend that cfg (validated) names, over
// gRPC or HTTP. It dials lazily: a backend that is down fails calls, not
// New.
func New(cfg config.Hooks, opts Options) (*Client, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = 4 << 20
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "herald"
	}
	c := &Client{
		cfg:     cfg,
		backend: cfg.Backend(),
		maxPay:  opts.MaxPayload,
		log:     opts.Log,
		sem:     make(chan struct{}, max(cfg.MaxInFlight, 1)),
		logged:  make(map[string]time.Time),
		quiet:   make(map[string]int),
	}
	c.br = breaker{threshold: max(cfg.CircuitFailures, 1), openFor: cfg.CircuitOpen.D(), onChange: c.circuitChanged}
	var err error
	if cfg.GRPCAddr != "" {
		c.c, err = newGRPCCaller(cfg, opts)
	} else {
		c.c, err = newHTTPCaller(cfg, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("hooks: %w", err)
	}
	metricCircuit.WithLabelValues(c.backend).Set(stateClosed)
	return c, nil
}

// Close releases the client's connections. Calls after it fail.
func (c *Client) Close() error {
	var err error
	c.closed.Do(func() {
		err = c.c.close()
		metricCircuit.DeleteLabelValues(c.backend)
	})
	return err
}

// Backend names the backend (its gRPC address or URL).
func (c *Client) Backend() string { return c.backend }

// Connect asks who a connecting browser is.
func (c *Client) Connect(ctx context.Context, req *hooksv1.ConnectRequest) (*hooksv1.ConnectResponse, error) {
	resp := &hooksv1.ConnectResponse{}
	return resp, c.do(ctx, "connect", req, resp, func() error { return checkConnect(resp) })
}

// Refresh asks whether a session goes on.
func (c *Client) Refresh(ctx context.Context, req *hooksv1.RefreshRequest) (*hooksv1.RefreshResponse, error) {
	resp := &hooksv1.RefreshResponse{}
	return resp, c.do(ctx, "refresh", req, resp, func() error { return checkRefresh(resp) })
}

// Subscribe asks whether a session may subscribe to a channel.
func (c *Client) Subscribe(ctx context.Context, req *hooksv1.SubscribeRequest) (*hooksv1.SubscribeResponse, error) {
	resp := &hooksv1.SubscribeResponse{}
	return resp, c.do(ctx, "subscribe", req, resp, func() error { return checkSubscribe(resp) })
}

// Publish asks what to do with a browser's publication.
func (c *Client) Publish(ctx context.Context, req *hooksv1.PublishRequest) (*hooksv1.PublishResponse, error) {
	resp := &hooksv1.PublishResponse{}
	return resp, c.do(ctx, "publish", req, resp, func() error { return checkPublish(resp, c.maxPay) })
}

// RPC passes a browser's rpc frame to the backend.
func (c *Client) RPC(ctx context.Context, req *hooksv1.RPCRequest) (*hooksv1.RPCResponse, error) {
	resp := &hooksv1.RPCResponse{}
	return resp, c.do(ctx, "rpc", req, resp, func() error { return checkRPC(resp, c.maxPay) })
}

// do makes one call under the circuit, the in-flight bound and the
// timeout, checks its answer and counts it.
func (c *Client) do(ctx context.Context, hook string, req, resp proto.Message, check func() error) error {
	fail := func(k Kind, err error) error {
		metricErrors.WithLabelValues(hook, k.String()).Inc()
		e := &Error{Kind: k, Hook: hook, Err: err}
		c.logFailure(hook, e)
		return e
	}
	now := time.Now()
	ok, probe := c.br.allow(now)
	if !ok {
		return fail(CircuitOpen, errors.New("the circuit is open after failed calls; no call was made"))
	}
	select {
	case c.sem <- struct{}{}:
	default:
		c.br.drop(probe)
		return fail(Overloaded, fmt.Errorf("%d calls in flight (hooks.max_in_flight); no call was made", cap(c.sem)))
	}
	inFlight.Add(1)
	defer func() {
		inFlight.Add(-1)
		<-c.sem
	}()

	deadline := now.Add(c.cfg.Timeout.D())
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	metricCalls.WithLabelValues(hook).Inc()
	err := c.c.call(cctx, hook, req, resp)
	metricDuration.WithLabelValues(hook).Observe(time.Since(now).Seconds())
	// The caller's deadline, when it comes no later than ours, is ours.
	pd, hasPD := ctx.Deadline()
	ownDeadline := ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) && hasPD && !pd.Before(deadline)
	var kind Kind
	switch {
	case err == nil:
		if cerr := check(); cerr != nil {
			kind, err = BadAnswer, cerr
		}
	case cctx.Err() != nil && ownDeadline,
		// The deadline reached the backend with the call (grpc-timeout)
		// and its answer, DEADLINE_EXCEEDED, can come back a moment
		// before our own timer fires.
		cctx.Err() == nil && deadlineExceeded(err) && (!hasPD || !pd.Before(deadline)):
		kind = Timeout
		err = fmt.Errorf("no answer within %v (hooks.timeout)", c.cfg.Timeout.D())
	case ctx.Err() != nil:
		// The caller went away (its session closed, the bridge stops):
		// no verdict on the backend.
		c.br.drop(probe)
		return &Error{Kind: Unavailable, Hook: hook, Err: ctx.Err()}
	case KindOf(err) == BadAnswer:
		kind = BadAnswer
	default:
		kind = Unavailable
	}
	c.br.done(probe, kind == 0, time.Now())
	if kind != 0 {
		return fail(kind, err)
	}
	if refused(resp) {
		metricRefusals.WithLabelValues(hook).Inc()
	}
	return nil
}

// logFailure logs a failed call at warn: at once, then at most every
// logEvery per hook while failures go on, with how many were not logged.
func (c *Client) logFailure(hook string, e *Error) {
	now := time.Now()
	c.logMu.Lock()
	if now.Sub(c.logged[hook]) < logEvery {
		c.quiet[hook]++
		c.logMu.Unlock()
		return
	}
	c.logged[hook] = now
	n := c.quiet[hook]
	c.quiet[hook] = 0
	c.logMu.Unlock()
	c.log.Warn("hook call failed; the browser was told to retry later", "hook", hook, "backend", c.backend, "code", e.Kind.String(), "err", e.Err, "not_logged_since", n)
}

func (c *Client) circuitChanged(from, to int) {
	metricCircuit.WithLabelValues(c.backend).Set(float64(to))
	switch to {
	case stateOpen:
		c.log.Warn("hook circuit open: calls to the application's backend are refused at once", "backend", c.backend, "for", c.cfg.CircuitOpen.D(), "after_failures", c.cfg.CircuitFailures)
	case stateHalfOpen:
		c.log.Info("hook circuit half-open: probing the application's backend", "backend", c.backend)
	case stateClosed:
		c.log.Info("hook circuit closed: the application's backend answers again", "backend", c.backend)
	}
}

// deadlineExceeded reports whether err is a call ended by its deadline.
func deadlineExceeded(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}
