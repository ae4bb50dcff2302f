package engine

import (
	"context"
	"strings"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// Engine is what the core needs of an engine: a Broker (publish with
// history, delivery between nodes), Presence, and a few calls about the
// engine itself.
//
// Implementations must be safe for concurrent use.
type Engine interface {
	Broker
	Presence
	// Name is the name the configuration selects the engine by ("memory",
	// "redis"); metrics and Info report it.
	Name() string
	// Channels lists the channels with state in the engine (history or
	// presence) that q selects, in name order, and says whether it left
	// out more of them.
	Channels(ctx context.Context, q ChannelsQuery) (states []ChannelState, more bool, err error)
	// Ping reports whether the engine can serve requests; readiness
	// follows it.
	Ping(ctx context.Context) error
	// Close stops delivery and releases resources. It is idempotent.
	Close() error
}

// Broker orders, stores and carries a channel's publications. Publish and
// History together are the channel's log: publishing appends to history
// and delivers on every node as one step, so that a subscriber that reads
// history after its subscription is in place misses nothing.
type Broker interface {
	// Start begins delivery of events for subscribed channels to h. It
	// returns once delivery is set up or a bounded wait passed; it does
	// not fail because a remote store is down (the node then reports not
	// ready, and recovers by itself).
	Start(ctx context.Context, h Handler) error
	// Publish assigns the next offset of pub.Channel to pub, appends it to
	// history and delivers it on every node, atomically: either all happen
	// or none. It fills pub.Offset and pub.Epoch; pub must not be changed
	// afterwards by anyone. With an idempotency key seen within the dedupe
	// window it delivers nothing and answers the first publication's
	// position with Duplicate set.
	//
	// An error wrapping ErrUnavailable means the publication may be
	// retried; one made by MaybeStored, that it may have been stored (and
	// delivered) all the same, so that a retry must carry the same
	// idempotency key.
	Publish(ctx context.Context, pub *heraldv1.Publication, opts PublishOptions) (PublishResult, error)
	// History returns retained publications and the channel's position. A
	// channel without state reads as offset 0 of its empty epoch
	// (EmptyEpoch) and History writes nothing. Since of another epoch than
	// the channel's answers ErrEpochMismatch with the position set.
	History(ctx context.Context, channel string, q HistoryQuery) (HistoryResult, error)
	// Subscribe asks for the channel's events to be delivered to this
	// node; it returns once they are (a publication made after it returns
	// is delivered). Unsubscribe stops that. Calls are counted by the
	// caller: once each.
	Subscribe(ctx context.Context, channel string) error
	Unsubscribe(ctx context.Context, channel string) error
	// Command delivers a bridge command to every node, this one included.
	Command(ctx context.Context, cmd *heraldv1.BridgeSessionResponse) error
}

// BatchPublisher is implemented by engines that publish many publications
// in one round trip (the Redis engine pipelines its script). Publications
// of one channel get offsets in the order of pubs; every result comes with
// its own error, with Publish's meaning.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, pubs []*heraldv1.Publication, opts []PublishOptions) ([]PublishResult, []error)
}

// Presence records who is in a channel, across nodes.
type Presence interface {
	// AddPresence records client in channel; RemovePresence forgets it.
	// With joinLeave, a join or leave event is delivered on every node
	// (HandlePresence), once per entry that appears or goes.
	AddPresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error
	RemovePresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error
	// Presence lists the clients in a channel, sorted by client id.
	Presence(ctx context.Context, channel string) ([]*heraldv1.ClientInfo, error)
}

// Handler receives what an engine delivers. Its methods do not block and
// do not call back into the engine, with one exception: after a gap in a
// channel's deliveries (an offset beyond the next one) or a HandleReset,
// HandlePublication and HandleReset read the missed publications with
// Engine.History before returning. An engine that can have gaps (Redis)
// must therefore deliver from where that is allowed (the Redis engine's
// pub/sub goroutines); the memory engine never has gaps.
//
// An engine calls the Handler for one channel from one goroutine at a
// time, in offset order.
type Handler interface {
	// HandlePublication receives a channel's publications in offset order.
	HandlePublication(pub *heraldv1.Publication)
	// HandlePresence receives join (join=true) and leave events.
	HandlePresence(ev *heraldv1.PresenceEvent, join bool)
	// HandleCommand receives commands for bridges.
	HandleCommand(cmd *heraldv1.BridgeSessionResponse)
	// HandleReset tells that a channel's continuity may be broken (the
	// engine lost its connection, or the channel moved to another shard):
	// the node catches up from history, or ends the channel's streams when
	// history cannot cover the gap. It must be called in line with the
	// channel's publications; channel "" means every channel (only for an
	// engine with one delivery goroutine).
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

// ChannelsQuery selects the channels Channels lists: those whose names
// sort after After, begin with Prefix and that Keep accepts; the first
// Limit of them, or with Limit 0 all of them (an engine may stop short of
// all: Redis does past 10,000, and says there are more).
type ChannelsQuery struct {
	After  string // "": from the first
	Prefix string // "": any; a pattern's literal beginning, which engines may seek to
	Keep   func(name string) bool
	Limit  int
}

// Selects reports whether q selects name (regardless of Limit).
func (q ChannelsQuery) Selects(name string) bool {
	return name > q.After && strings.HasPrefix(name, q.Prefix) && (q.Keep == nil || q.Keep(name))
}

// ChannelState summarises a channel held by an engine.
type ChannelState struct {
	Name     string
	Position *heraldv1.StreamPosition
	Clients  int
}
