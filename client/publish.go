package client

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc/codes"
)

// Message is one publication to publish. Set exactly one of JSON and
// Binary.
type Message struct {
	// Channel is the channel to publish to ("chat:lobby", "user:42").
	Channel string
	// JSON is a JSON payload as text (UTF-8). It is delivered as given:
	// numbers, strings and key order untouched (a node may drop white
	// space between tokens). A node refuses invalid JSON with
	// INVALID_ARGUMENT. The client does not modify it.
	JSON []byte
	// Binary is a binary payload, opaque to Herald. An empty, non-nil
	// slice is an empty payload.
	Binary []byte
	// Tags are delivered with the publication (at most 32, each key and
	// value at most 256 bytes).
	Tags map[string]string
	// IdempotencyKey dedupes the publication within the node's dedupe
	// window (at most 128 bytes). Empty: the client makes a random one for
	// this publication, which makes its own retries safe. Set one yourself
	// (an order id, an event id) to make your retries safe too, or to
	// retry after Publish gave up.
	IdempotencyKey string
}

// Ack acknowledges a publication: once a node returns it, the publication
// has its place in the channel, is in the channel's history if its
// namespace keeps any, and is on its way to the channel's subscribers.
type Ack struct {
	// Position is the publication's place in its channel.
	Position Position
	// Duplicate is set when the node had already published a publication
	// with the same idempotency key (an earlier attempt whose answer was
	// lost): Position is that publication's, and nothing was published
	// this time.
	Duplicate bool
	// IdempotencyKey is the key the publication carried (the client's,
	// when Message.IdempotencyKey was empty).
	IdempotencyKey string
}

// Position is a place in a channel's stream of publications: an offset
// within an epoch (one continuous life of the channel's history; offsets
// of different epochs are not comparable).
type Position struct {
	Offset uint64
	Epoch  string
}

// String returns p as OFFSET@EPOCH ("42@3f2a9c1b"), the form `herald
// subscribe --since` takes.
func (p Position) String() string { return strconv.FormatUint(p.Offset, 10) + "@" + p.Epoch }

// ParsePosition reads OFFSET@EPOCH.
func ParsePosition(s string) (Position, error) {
	off, epoch, ok := strings.Cut(s, "@")
	n, err := strconv.ParseUint(off, 10, 64)
	if !ok || err != nil {
		return Position{}, fmt.Errorf("position %q: want OFFSET@EPOCH", s)
	}
	return Position{Offset: n, Epoch: epoch}, nil
}

func (p Position) proto() *heraldv1.StreamPosition {
	return &heraldv1.StreamPosition{Offset: p.Offset, Epoch: p.Epoch}
}

func positionOf(sp *heraldv1.StreamPosition) Position {
	return Position{Offset: sp.GetOffset(), Epoch: sp.GetEpoch()}
}

// request builds m's PublishRequest, with an idempotency key.
func (m Message) request() (*heraldv1.PublishRequest, error) {
	req := &heraldv1.PublishRequest{Channel: m.Channel, Tags: m.Tags, IdempotencyKey: m.IdempotencyKey}
	switch {
	case m.JSON != nil && m.Binary != nil:
		return nil, newError(codes.InvalidArgument, "message: set JSON or Binary, not both")
	case m.JSON != nil:
		// As text in `json`: the node keeps its numbers and key order, and
		// refuses it if it is not UTF-8 JSON.
		req.Payload = &heraldv1.PublishRequest_Json{Json: string(m.JSON)}
	case m.Binary != nil:
		req.Payload = &heraldv1.PublishRequest_Binary{Binary: m.Binary}
	default:
		return nil, newError(codes.InvalidArgument, "message: no payload: set JSON or Binary")
	}
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = newKey()
	}
	return req, nil
}

// newKey returns a random idempotency key (130 bits, 26 characters).
func newKey() string { return rand.Text() }

func ackOf(resp *heraldv1.PublishResponse, key string) Ack {
	return Ack{Position: positionOf(resp.GetPosition()), Duplicate: resp.GetDuplicate(), IdempotencyKey: key}
}

// Publish publishes m and returns its acknowledgement. It retries as Retry
// says (on UNAVAILABLE and attempt timeouts, with backoff, within ctx);
// every attempt carries the same idempotency key, so a retry never
// delivers twice. An error is an *Error: INVALID_ARGUMENT (bad channel,
// unknown namespace, payload too large), PERMISSION_DENIED,
// UNAUTHENTICATED, RESOURCE_EXHAUSTED (the API key's publish rate), or the
// last attempt's UNAVAILABLE or DEADLINE_EXCEEDED, after which the
// publication may or may not have been made: publish again with the same
// IdempotencyKey to find out without publishing twice.
func (c *Client) Publish(ctx context.Context, m Message) (Ack, error) {
	req, err := m.request()
	if err != nil {
		return Ack{}, err
	}
	b := backoff{r: c.retry}
	for attempt := 1; ; attempt++ {
		resp, err := c.publishOnce(ctx, req)
		if err == nil {
			return ackOf(resp, req.IdempotencyKey), nil
		}
		err = toError(ctx, err)
		if !transient(ctx, CodeOf(err)) || c.retry.exhausted(attempt) || !sleep(ctx, b.next()) {
			return Ack{}, err
		}
	}
}

func (c *Client) publishOnce(ctx context.Context, req *heraldv1.PublishRequest) (*heraldv1.PublishResponse, error) {
	if t := c.retry.AttemptTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	return c.svc.Publish(ctx, req)
}
