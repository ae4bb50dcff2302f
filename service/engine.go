package service

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
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

// LimitError is an operation refused because it would go beyond a
// configured limit. Its message names the option and reaches the client
// as it is, with RESOURCE_EXHAUSTED.
type LimitError struct {
	// Option is the configuration option, e.g. "limits.max_channels_per_node".
	Option string
	Msg    string
}

func (e *LimitError) Error() string { return e.Msg }

// refuse returns a LimitError for option and counts it in
// herald_limit_refusals_total.
func refuse(option, format string, args ...any) error {
	metricLimitRefusals.WithLabelValues(option).Inc()
	return &LimitError{Option: option, Msg: fmt.Sprintf(format, args...)}
}

// maxOffset is the largest offset a channel can have: the Redis engine
// counts offsets with Redis's signed 64-bit integers, and the memory
// engine follows it so that both accept the same positions.
const maxOffset = math.MaxInt64

// maxEpochLen bounds the epoch of a position a client sends. Epochs Herald
// makes are at most 32 bytes.
const maxEpochLen = 64

// emptyEpoch is the epoch reported for a channel without state (never
// published, or forgotten). It is made of the engine's era (random per
// memory engine process, shared through Redis for the Redis engine) and
// the number of the period of the clock it falls in, so it is stable for
// a while, the same on every node, and needs no write:
//
//   - A position read from a channel without state, resumed later, is
//     honoured (recovered) only while the channel is still without state
//     and the period has not changed, or when the channel's state was
//     created in the same period (the engine remembers that period: born).
//     Engines make period no longer than the shortest time in which a
//     channel's state can be created and forgotten again, so a position
//     that saw a channel empty can never skip a whole life of that
//     channel's state unnoticed.
//   - The '.' keeps it apart from the epochs of channels with state,
//     which are hex only.
func emptyEpoch(era string, period int64) string {
	return era + "." + strconv.FormatInt(period, 16)
}
