package service

import (
	"context"
	"errors"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// Engine holds channel state (offsets, history, dedupe keys, presence) and
// carries publications, presence events and commands between the nodes that
// share it. The memory engine serves one node; the Redis engine many.
//
// Implementations must be safe for concurrent use. They must deliver a
// channel's publications to the Handler in offset order, one at a time per
// channel, and never block on the Handler for long (it does not block).
type Engine interface {
	// Name is "memory" or "redis".
	Name() string
	// Start begins delivery of events for subscribed channels to h.
	Start(ctx context.Context, h Handler) error
	// Publish assigns the next offset of pub.Channel to pub, appends it to
	// history and delivers it on every node, atomically: either all happen
	// or none. It fills pub.Offset and pub.Epoch; pub must not be changed
	// afterwards by anyone.
	Publish(ctx context.Context, pub *heraldv1.Publication, opts PublishOptions) (PublishResult, error)
	// History returns retained publications and the channel's position.
	History(ctx context.Context, channel string, q HistoryQuery) (HistoryResult, error)
	// Subscribe asks for the channel's events to be delivered to this node;
	// Unsubscribe stops that. Calls are counted by the caller: once each.
	Subscribe(ctx context.Context, channel string) error
	Unsubscribe(ctx context.Context, channel string) error
	// AddPresence records client in channel; RemovePresence forgets it.
	// With joinLeave, a join or leave event is delivered on every node.
	AddPresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error
	RemovePresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error
	// Presence lists the clients in a channel.
	Presence(ctx context.Context, channel string) ([]*heraldv1.ClientInfo, error)
	// Command delivers a bridge command to every node.
	Command(ctx context.Context, cmd *heraldv1.BridgeSessionResponse) error
	// Channels lists channels with state in the engine (history or presence).
	Channels(ctx context.Context) ([]ChannelState, error)
	// Ping reports whether the engine can serve requests.
	Ping(ctx context.Context) error
	// Close stops delivery and releases resources.
	Close() error
}

// Handler receives what an engine delivers. Its methods do not block and
// do not call back into the engine, with one exception: after a gap in a
// channel's deliveries (an offset beyond the next one) or a HandleReset,
// HandlePublication and HandleReset read the missed publications with
// Engine.History before returning. An engine that can have gaps (Redis)
// must therefore deliver from where that is allowed (the Redis engine's
// pub/sub goroutines); the memory engine never has gaps.
type Handler interface {
	// HandlePublication receives a channel's publications in offset order.
	HandlePublication(pub *heraldv1.Publication)
	// HandlePresence receives join (join=true) and leave events.
	HandlePresence(ev *heraldv1.PresenceEvent, join bool)
	// HandleCommand receives commands for bridges.
	HandleCommand(cmd *heraldv1.BridgeSessionResponse)
	// HandleReset tells that a channel's continuity may be broken (the engine
	// lost its connection): the node catches up from history, or ends the
	// channel's streams when history cannot cover the gap. It must be
	// called in line with the channel's publications; channel "" means
	// every channel (only for an engine with one delivery goroutine).
	HandleReset(channel string)
}

// PublishOptions are a channel's options that matter to an engine.
type PublishOptions struct {
	// HistorySize is how many publications to retain; 0 keeps none.
	HistorySize int
	// HistoryTTL is how long they are kept.
	HistoryTTL time.Duration
	// IdempotencyKey, when set, dedupes publishes within DedupeWindow.
	IdempotencyKey string
	DedupeWindow   time.Duration
}

// PublishResult is a publication's position.
type PublishResult struct {
	Position  *heraldv1.StreamPosition
	Duplicate bool
}

// HistoryQuery selects a page of history.
type HistoryQuery struct {
	// Since: return publications after it (before it with Reverse). Nil
	// means from the oldest (newest with Reverse).
	Since *heraldv1.StreamPosition
	// Limit is the most publications to return; 0 returns none (only the
	// position).
	Limit   int
	Reverse bool
}

// HistoryResult is a page of history and the channel's position.
type HistoryResult struct {
	Publications []*heraldv1.Publication
	Position     *heraldv1.StreamPosition
	// Oldest is the offset of the oldest retained publication (0 if none).
	Oldest uint64
}

// ChannelState summarises a channel held by an engine.
type ChannelState struct {
	Name     string
	Position *heraldv1.StreamPosition
	Clients  int
}

// ErrEpochMismatch is returned by History when Since belongs to another
// epoch than the channel's current one.
var ErrEpochMismatch = errors.New("position belongs to another epoch of the channel")

// ErrUnavailable wraps engine failures that a client may retry later.
var ErrUnavailable = errors.New("engine unavailable")
