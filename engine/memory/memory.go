// Package memory is the in-memory engine: all channel state in this
// process, for one node. It is Herald's default engine.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/proto"
)

// Engine keeps all channel state in this process.
//
// A channel has state (an epoch, an offset, history, idempotency keys) from
// its first publication until the sweep forgets it (see sweep); reads and
// subscriptions never create state. A channel without state reports offset
// 0 and the empty epoch of the current period (engine.EmptyEpoch). A memChannel
// without an epoch exists only while the channel has subscriptions or
// presence on this node, which the limits on connections and streams
// bound; channels with state are bounded by Options.MaxChannels.
//
// Epochs are chosen when a channel's state is created, so a restart (or a
// channel forgotten after being idle) shows as a new epoch.
//
// Lock order: memShard.mu → memChannel.mu. Handler calls run under
// memChannel.mu (see engine.Handler).
type Engine struct {
	seed   maphash.Seed
	shards [64]memShard
	now    func() time.Time
	era    string // the era of this process's empty epochs
	opts   Options

	channels atomic.Int64 // channels with state
	keys     atomic.Int64 // idempotency keys held

	mu sync.Mutex // guards h and done
	h  engine.Handler

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ engine.Engine = (*Engine)(nil)

// Options bound the memory engine. A zero field takes the default of
// config.Default().Limits.
type Options struct {
	// MaxChannels bounds the channels with state
	// (limits.max_channels_per_node).
	MaxChannels int
	// MaxKeys bounds the idempotency keys remembered at once
	// (limits.max_idempotency_keys); MaxKeysPerChannel, those of one
	// channel (limits.max_idempotency_keys_per_channel).
	MaxKeys           int
	MaxKeysPerChannel int
}

// OptionsFrom returns the memory engine's options for the configured
// limits.
func OptionsFrom(l config.Limits) Options {
	return Options{MaxChannels: l.MaxChannelsPerNode, MaxKeys: l.MaxIdempotencyKeys, MaxKeysPerChannel: l.MaxIdempotencyKeysPerChannel}
}

type memShard struct {
	mu    sync.Mutex
	chans map[string]*memChannel
}

// memChannel is one channel's state; mu guards every field. Without an
// epoch it holds only subscriptions and presence.
type memChannel struct {
	mu     sync.Mutex
	name   string
	epoch  string // "" until the first publication
	born   int64  // the period (of empty epochs) in which epoch was chosen
	offset uint64

	// ring holds the retained publications, oldest at head, n of them;
	// entry i has offset offset-n+1+i. Its length grows by doubling, up
	// to the history size, as publications come, and shrinks when old
	// ones are trimmed, so a channel with one publication holds one
	// entry.
	ring []histEntry
	head int
	n    int
	ttl  time.Duration // longest history TTL of its publications

	dd *dedupeSet // nil without idempotency keys

	presence   map[string]*heraldv1.ClientInfo
	subscribed int   // Subscribe calls not yet undone: keeps the state alive
	touched    int64 // unix ns of the last publication, unsubscribe or leave
}

// dedupeSet is a channel's idempotency keys within their window.
type dedupeSet struct {
	offsets map[string]uint64 // key -> its publication's offset
	order   []dedupeKey       // the keys in the order they came, from head, for expiry
	head    int
	peak    int // the map's size when it was made: maps do not shrink
	window  time.Duration
}

// histEntry is a retained publication: one heap object without pointers,
// which the garbage collector does not scan, instead of the four objects
// of a decoded message (see BenchmarkRetainedHistory). Its channel, offset
// and epoch are not kept; History sets them.
//
// A publication with only a payload (raw_json or binary) and its time,
// which is what the core's publish paths make unless tags or a publisher
// are given, is kept as that payload's bytes (shared with the publication,
// which no one changes once published) and its time: nothing to encode on
// publish or decode on read. Any other publication is kept in protobuf
// wire format.
type histEntry struct {
	b    []byte // the payload (histJSON, histBinary) or the encoded publication (histEncoded)
	at   int64  // unix ns
	ms   int64  // the publication's time_unix_ms (histJSON, histBinary)
	kind histKind
}

type histKind uint8

const (
	histEncoded histKind = iota
	histJSON
	histBinary
)

type dedupeKey struct {
	key string
	at  int64 // unix ns
}

// New returns an in-memory engine. Its metrics (herald_engine_channels,
// herald_idempotency_keys, herald_idempotency_keys_evicted_total) are
// process-wide: a process runs one node.
func New(opts Options) *Engine { return newEngine(time.Now, opts) }

func newEngine(now func() time.Time, opts Options) *Engine {
	d := OptionsFrom(config.Default().Limits)
	if opts.MaxChannels <= 0 {
		opts.MaxChannels = d.MaxChannels
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = d.MaxKeys
	}
	if opts.MaxKeysPerChannel <= 0 {
		opts.MaxKeysPerChannel = d.MaxKeysPerChannel
	}
	e := &Engine{seed: maphash.MakeSeed(), now: now, era: engine.NewEpoch(), opts: opts, done: make(chan struct{})}
	for i := range e.shards {
		e.shards[i].chans = make(map[string]*memChannel)
	}
	return e
}

// Name is "memory".
func (e *Engine) Name() string { return "memory" }

// Start begins delivery to h and the sweep of idle channels.
func (e *Engine) Start(ctx context.Context, h engine.Handler) error {
	e.mu.Lock()
	e.h = h
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-e.done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				e.sweep()
			}
		}
	}()
	return nil
}

func (e *Engine) handler() engine.Handler {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.h
}

func (e *Engine) shard(channel string) *memShard {
	return &e.shards[maphash.String(e.seed, channel)%uint64(len(e.shards))]
}

// channel returns the channel's entry, creating one (without state) when
// create is set; nil when there is none. The returned channel is locked.
func (e *Engine) channel(name string, create bool) *memChannel {
	s := e.shard(name)
	s.mu.Lock()
	c := s.chans[name]
	if c == nil {
		if !create {
			s.mu.Unlock()
			return nil
		}
		c = &memChannel{name: name}
		s.chans[name] = c
	}
	c.mu.Lock()
	s.mu.Unlock()
	return c
}

// release unlocks c, first forgetting it if it holds nothing: no state, no
// subscription, no presence. c.mu must be held.
func (e *Engine) release(c *memChannel) {
	if !c.unused() {
		c.mu.Unlock()
		return
	}
	// Retake the locks in order. Whoever found c in the map locked it
	// under the shard lock and is done with it once we hold both.
	c.mu.Unlock()
	s := e.shard(c.name)
	s.mu.Lock()
	c.mu.Lock()
	if c.unused() && s.chans[c.name] == c {
		delete(s.chans, c.name)
	}
	c.mu.Unlock()
	s.mu.Unlock()
}

// unused reports whether c holds nothing. c.mu must be held.
func (c *memChannel) unused() bool {
	return c.epoch == "" && c.subscribed == 0 && len(c.presence) == 0
}

// period numbers the stretch of time that an empty epoch stands for. It
// is idleFor long: a channel's state lives at least idleFor, so two
// positions of one period cannot have a whole life of a channel's state
// between them (see engine.EmptyEpoch).
func (e *Engine) period(t time.Time) int64 { return t.UnixNano() / int64(idleFor) }

// empty returns the empty epoch at t.
func (e *Engine) empty(t time.Time) string { return engine.EmptyEpoch(e.era, e.period(t)) }

// Publish implements engine.Broker.
func (e *Engine) Publish(ctx context.Context, pub *heraldv1.Publication, opts engine.PublishOptions) (engine.PublishResult, error) {
	var h histEntry
	if opts.HistorySize > 0 {
		var err error
		if h, err = newHistEntry(pub); err != nil {
			return engine.PublishResult{}, err
		}
	}
	c := e.channel(pub.Channel, true)
	now := e.now()
	key := opts.IdempotencyKey
	if opts.DedupeWindow <= 0 {
		key = "" // no window, nothing to remember (as on Redis)
	}
	if key != "" {
		if c.dd != nil {
			e.expireDedupe(c, now)
		}
		if off, ok := c.dd.lookup(key); ok {
			defer c.mu.Unlock()
			return engine.PublishResult{Position: &heraldv1.StreamPosition{Offset: off, Epoch: c.epoch}, Duplicate: true}, nil
		}
		if !e.admitKey(c) {
			key = ""
		}
	}
	if c.epoch == "" {
		if n := e.channels.Add(1); n > int64(e.opts.MaxChannels) {
			e.channels.Add(-1)
			if key != "" {
				e.keys.Add(-1)
			}
			e.release(c)
			return engine.PublishResult{}, engine.Refuse("limits.max_channels_per_node",
				"this node holds state for %d channels, its limit (limits.max_channels_per_node); idle channels are forgotten after 10 minutes", e.opts.MaxChannels)
		}
		metricEngineChannels.Inc()
		c.epoch, c.born = engine.NewEpoch(), e.period(now)
	}
	defer c.mu.Unlock()
	h.at = now.UnixNano()
	c.touched = now.UnixNano()
	c.offset++
	pub.Offset = c.offset
	pub.Epoch = c.epoch
	if opts.HistoryTTL > c.ttl {
		c.ttl = opts.HistoryTTL
	}
	c.push(h, opts.HistorySize)
	if key != "" {
		if c.dd == nil {
			c.dd = &dedupeSet{offsets: make(map[string]uint64)}
		}
		d := c.dd
		d.offsets[key] = c.offset
		d.peak = max(d.peak, len(d.offsets))
		d.order = append(d.order, dedupeKey{key: key, at: now.UnixNano()})
		d.window = max(d.window, opts.DedupeWindow)
		metricIdempotencyKeys.Inc()
	}
	if h := e.handler(); h != nil {
		// Under c.mu, so that handlers see the channel's publications in
		// offset order.
		h.HandlePublication(pub)
	}
	return engine.PublishResult{Position: &heraldv1.StreamPosition{Offset: c.offset, Epoch: c.epoch}}, nil
}

// lookup returns the offset of key, if it is in the window. d may be nil.
func (d *dedupeSet) lookup(key string) (uint64, bool) {
	if d == nil {
		return 0, false
	}
	off, ok := d.offsets[key]
	return off, ok
}

// admitKey makes room for one more idempotency key of c within the limits
// and reports whether the key is to be remembered. Over the channel's cap
// its oldest key is forgotten; over the node's cap too, when the channel
// holds one; a channel holding none at the node's cap publishes without
// remembering the key. Either way the publish goes on: a refusal would
// turn the caps into a way for one publisher (or a client that keys every
// publish, as Herald's Go client does) to stop every keyed publish on the
// node, while forgetting the oldest keys only shortens how far back a
// retry is recognised, which herald_idempotency_keys_evicted_total shows.
// c.mu must be held.
func (e *Engine) admitKey(c *memChannel) bool {
	if d := c.dd; d != nil && len(d.offsets) >= e.opts.MaxKeysPerChannel {
		e.evictOldestKey(c, "limits.max_idempotency_keys_per_channel")
	}
	if n := e.keys.Add(1); n > int64(e.opts.MaxKeys) {
		if c.dd == nil || len(c.dd.offsets) == 0 {
			e.keys.Add(-1)
			metricKeysEvicted.WithLabelValues("limits.max_idempotency_keys").Inc()
			return false
		}
		e.evictOldestKey(c, "limits.max_idempotency_keys")
	}
	return true
}

// evictOldestKey forgets c's oldest idempotency key before its window
// ends, counting it under limit. c.mu must be held; c.dd holds a key.
func (e *Engine) evictOldestKey(c *memChannel, limit string) {
	d := c.dd
	for d.head < len(d.order) {
		k := d.order[d.head]
		d.order[d.head] = dedupeKey{}
		d.head++
		if _, ok := d.offsets[k.key]; ok {
			delete(d.offsets, k.key)
			e.keys.Add(-1)
			metricIdempotencyKeys.Dec()
			metricKeysEvicted.WithLabelValues(limit).Inc()
			return
		}
	}
}

// expireDedupe forgets the keys older than the channel's window, and the
// set once empty. c.mu must be held.
func (e *Engine) expireDedupe(c *memChannel, now time.Time) {
	d := c.dd
	if d == nil {
		return
	}
	cut := now.Add(-d.window).UnixNano()
	i := d.head
	for ; i < len(d.order) && d.order[i].at < cut; i++ {
		delete(d.offsets, d.order[i].key)
		d.order[i] = dedupeKey{}
	}
	expired := i - d.head
	if expired == 0 {
		return
	}
	d.head = i
	e.keys.Add(-int64(expired))
	metricIdempotencyKeys.Sub(float64(expired))
	if len(d.offsets) == 0 {
		c.dd = nil
		return
	}
	if d.head > len(d.order)/2 { // keep the list's dead front short
		d.order = append(d.order[:0], d.order[d.head:]...)
		d.head = 0
	}
	if d.peak > 1024 && len(d.offsets) < d.peak/4 { // most are gone: make both again, smaller
		m := make(map[string]uint64, len(d.offsets))
		for k, v := range d.offsets {
			m[k] = v
		}
		d.offsets, d.peak = m, len(m)
		d.order = append([]dedupeKey(nil), d.order[d.head:]...)
		d.head = 0
	}
}

// push appends an entry to the history, keeping at most size. c.mu must
// be held.
func (c *memChannel) push(h histEntry, size int) {
	if size <= 0 {
		c.ring, c.head, c.n = nil, 0, 0
		return
	}
	if c.n > size { // the history size went down
		c.drop(c.n - size)
	}
	switch {
	case len(c.ring) > size:
		c.resize(size)
	case c.n == len(c.ring) && c.n < size:
		c.resize(min(max(2*len(c.ring), 1), size))
	}
	if c.n < len(c.ring) {
		c.ring[(c.head+c.n)%len(c.ring)] = h
		c.n++
		return
	}
	c.ring[c.head] = h // full: the oldest goes
	c.head = (c.head + 1) % len(c.ring)
}

// resize moves the entries, oldest first, to a ring of length size (at
// least c.n). c.mu must be held.
func (c *memChannel) resize(size int) {
	if size == 0 {
		c.ring, c.head = nil, 0
		return
	}
	ring := make([]histEntry, size)
	for i := 0; i < c.n; i++ {
		ring[i] = c.ring[(c.head+i)%len(c.ring)]
	}
	c.ring, c.head = ring, 0
}

// drop forgets the k oldest entries. c.mu must be held.
func (c *memChannel) drop(k int) {
	for ; k > 0; k-- {
		c.ring[c.head] = histEntry{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
}

// trim drops entries older than the TTL and shrinks the ring when it is
// mostly empty. c.mu must be held.
func (c *memChannel) trim(now time.Time) {
	if c.ttl <= 0 || c.n == 0 {
		return
	}
	cut := now.Add(-c.ttl).UnixNano()
	k := 0
	for k < c.n && c.ring[(c.head+k)%len(c.ring)].at < cut {
		k++
	}
	if k == 0 {
		return
	}
	c.drop(k)
	if len(c.ring) > 4 && c.n <= len(c.ring)/4 {
		c.resize(2 * c.n)
	}
}

// matches reports whether a position a client gives (nil: none) belongs
// to the channel's current epoch: the same epoch, no epoch, or offset 0 in
// the empty epoch of the period in which the state was created (a position
// read just before the first publication). c.mu must be held; c has state.
func (e *Engine) matches(c *memChannel, since *heraldv1.StreamPosition) bool {
	return since == nil || since.Epoch == "" || since.Epoch == c.epoch ||
		since.Offset == 0 && since.Epoch == engine.EmptyEpoch(e.era, c.born)
}

// History implements engine.Broker.
func (e *Engine) History(ctx context.Context, channel string, q engine.HistoryQuery) (engine.HistoryResult, error) {
	now := e.now()
	c := e.channel(channel, false)
	if c == nil || c.epoch == "" {
		if c != nil {
			c.mu.Unlock()
		}
		// No state, and none is made: offset 0 in the empty epoch.
		res := engine.HistoryResult{Position: &heraldv1.StreamPosition{Epoch: e.empty(now)}}
		if q.Since != nil && q.Since.Epoch != "" && q.Since.Epoch != res.Position.Epoch {
			return res, engine.ErrEpochMismatch
		}
		return res, nil
	}
	defer c.mu.Unlock()
	c.trim(now)
	top := c.offset
	res := engine.HistoryResult{Position: &heraldv1.StreamPosition{Offset: top, Epoch: c.epoch}}
	if c.n > 0 {
		res.Oldest = top - uint64(c.n) + 1
	}
	if !e.matches(c, q.Since) {
		return res, engine.ErrEpochMismatch
	}
	if q.Limit <= 0 || c.n == 0 {
		return res, nil
	}
	var err error
	add := func(i int) {
		if err != nil {
			return
		}
		var p *heraldv1.Publication
		if p, err = c.ring[(c.head+i)%len(c.ring)].publication(); err == nil {
			p.Channel, p.Offset, p.Epoch = c.name, res.Oldest+uint64(i), c.epoch
			res.Publications = append(res.Publications, p)
		}
	}
	// Offsets in the ring are consecutive, from res.Oldest to top: entry i
	// has offset oldest+i. Any since (up to 2^64-1) is compared before it
	// is turned into an index, so the index is within 0..n.
	oldest := res.Oldest
	if !q.Reverse {
		start := 0
		if q.Since != nil {
			if q.Since.Offset >= top {
				return res, nil
			}
			if q.Since.Offset >= oldest {
				start = int(q.Since.Offset-oldest) + 1
			}
		}
		res.Publications = make([]*heraldv1.Publication, 0, min(c.n-start, q.Limit))
		for i := start; i < c.n && len(res.Publications) < q.Limit; i++ {
			add(i)
		}
		return res, err
	}
	end := c.n - 1
	if q.Since != nil {
		if q.Since.Offset <= oldest {
			return res, nil
		}
		if q.Since.Offset <= top {
			end = int(q.Since.Offset-oldest) - 1
		}
	}
	res.Publications = make([]*heraldv1.Publication, 0, min(end+1, q.Limit))
	for i := end; i >= 0 && len(res.Publications) < q.Limit; i-- {
		add(i)
	}
	return res, err
}

// Subscribe implements engine.Broker: it keeps the channel's entry (not
// its state) alive.
func (e *Engine) Subscribe(ctx context.Context, channel string) error {
	c := e.channel(channel, true)
	c.subscribed++
	c.mu.Unlock()
	return nil
}

// Unsubscribe implements engine.Broker.
func (e *Engine) Unsubscribe(ctx context.Context, channel string) error {
	if c := e.channel(channel, false); c != nil {
		if c.subscribed > 0 {
			c.subscribed--
		}
		if c.epoch != "" {
			c.touched = e.now().UnixNano()
		}
		e.release(c)
	}
	return nil
}

// AddPresence implements engine.Presence.
func (e *Engine) AddPresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
	c := e.channel(channel, true)
	defer c.mu.Unlock()
	if c.presence == nil {
		c.presence = make(map[string]*heraldv1.ClientInfo)
	}
	c.presence[client.Client] = client
	if h := e.handler(); h != nil && joinLeave {
		h.HandlePresence(&heraldv1.PresenceEvent{Channel: channel, Client: client}, true)
	}
	return nil
}

// RemovePresence implements engine.Presence.
func (e *Engine) RemovePresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
	c := e.channel(channel, false)
	if c == nil {
		return nil
	}
	if _, ok := c.presence[client.Client]; !ok {
		c.mu.Unlock()
		return nil
	}
	delete(c.presence, client.Client)
	if len(c.presence) == 0 {
		c.presence = nil
	}
	if c.epoch != "" {
		c.touched = e.now().UnixNano()
	}
	if h := e.handler(); h != nil && joinLeave {
		h.HandlePresence(&heraldv1.PresenceEvent{Channel: channel, Client: client}, false)
	}
	e.release(c)
	return nil
}

// Presence implements engine.Presence.
func (e *Engine) Presence(ctx context.Context, channel string) ([]*heraldv1.ClientInfo, error) {
	c := e.channel(channel, false)
	if c == nil {
		return nil, nil
	}
	defer c.mu.Unlock()
	out := make([]*heraldv1.ClientInfo, 0, len(c.presence))
	for _, ci := range c.presence {
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Client < out[j].Client })
	return out, nil
}

// Command implements engine.Broker: this node is every node.
func (e *Engine) Command(ctx context.Context, cmd *heraldv1.BridgeSessionResponse) error {
	if h := e.handler(); h != nil {
		h.HandleCommand(cmd)
	}
	return nil
}

// Channels implements engine.Engine.
func (e *Engine) Channels(ctx context.Context, q engine.ChannelsQuery) ([]engine.ChannelState, bool, error) {
	// One pass, each channel's state read as it is met. For a page, a
	// heap keeps the Limit smallest names (the largest on top), so that a
	// console paging a node of a million channels sorts 500 of them and
	// allocates a page's states, not a million.
	type entry struct {
		name    string
		offset  uint64
		epoch   string
		clients int
	}
	page := q.Limit > 0
	var all []entry
	if page {
		all = make([]entry, 0, q.Limit)
	} else {
		all = make([]entry, 0, e.channels.Load()) // those with an epoch; presence adds a few
	}
	more := false
	less := func(a, b entry) bool { return a.name > b.name } // the heap's top is the largest name
	down := func(i int) {
		for {
			l, big := 2*i+1, i
			if l < len(all) && less(all[l], all[big]) {
				big = l
			}
			if r := l + 1; r < len(all) && less(all[r], all[big]) {
				big = r
			}
			if big == i {
				return
			}
			all[i], all[big] = all[big], all[i]
			i = big
		}
	}
	up := func(i int) {
		for i > 0 {
			p := (i - 1) / 2
			if !less(all[i], all[p]) {
				return
			}
			all[i], all[p] = all[p], all[i]
			i = p
		}
	}
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		for _, c := range s.chans {
			if !q.Selects(c.name) {
				continue
			}
			c.mu.Lock()
			if c.epoch != "" || len(c.presence) > 0 {
				en := entry{c.name, c.offset, c.epoch, len(c.presence)}
				switch {
				case !page:
					all = append(all, en)
				case len(all) < q.Limit:
					all = append(all, en)
					up(len(all) - 1)
				case en.name < all[0].name: // it takes the largest one's place
					all[0] = en
					down(0)
					more = true
				default:
					more = true
				}
			}
			c.mu.Unlock()
		}
		s.mu.Unlock()
	}
	slices.SortFunc(all, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	empty := e.empty(e.now())
	out := make([]engine.ChannelState, len(all))
	for i, en := range all {
		pos := &heraldv1.StreamPosition{Offset: en.offset, Epoch: en.epoch}
		if en.epoch == "" {
			pos.Epoch = empty
		}
		out[i] = engine.ChannelState{Name: en.name, Position: pos, Clients: en.clients}
	}
	return out, more, nil
}

// Ping implements engine.Engine: the memory engine is always there.
func (e *Engine) Ping(ctx context.Context) error { return nil }

// Close stops the sweep.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		close(e.done)
		e.wg.Wait()
		// The gauges are process-wide: take this engine's share out.
		metricEngineChannels.Sub(float64(e.channels.Load()))
		metricIdempotencyKeys.Sub(float64(e.keys.Load()))
	})
	e.wg.Wait()
	return nil
}

// The schedule on which idle channel state is forgotten (documented in
// docs/operations.md): every sweepEvery, the sweep trims expired history
// and idempotency keys, and forgets the state of a channel that has no
// subscription and no presence on this node, no history left, no
// idempotency key left, and had no publication (or last unsubscribe or
// leave) for idleFor, or for its history TTL if that is longer.
const (
	sweepEvery = 10 * time.Second
	idleFor    = 10 * time.Minute
)

// sweep forgets idle channels, so that memory follows the active set.
func (e *Engine) sweep() {
	now := e.now()
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		for name, c := range s.chans {
			c.mu.Lock()
			c.trim(now)
			e.expireDedupe(c, now)
			if c.unused() || c.epoch != "" && c.subscribed == 0 && len(c.presence) == 0 && c.n == 0 &&
				c.dd == nil && now.UnixNano()-c.touched > int64(max(idleFor, c.ttl)) {
				delete(s.chans, name)
				if c.epoch != "" {
					e.channels.Add(-1)
					metricEngineChannels.Dec()
				}
			}
			c.mu.Unlock()
		}
		s.mu.Unlock()
	}
}

// newHistEntry makes pub's history entry (at still to be set; see
// histEntry).
func newHistEntry(pub *heraldv1.Publication) (histEntry, error) {
	if len(pub.Tags) == 0 && pub.Publisher == nil && len(pub.ProtoReflect().GetUnknown()) == 0 {
		switch p := pub.Payload.(type) {
		case *heraldv1.Publication_RawJson:
			return histEntry{b: ownBytes(p.RawJson), ms: pub.TimeUnixMs, kind: histJSON}, nil
		case *heraldv1.Publication_Binary:
			return histEntry{b: ownBytes(p.Binary), ms: pub.TimeUnixMs, kind: histBinary}, nil
		}
	}
	return encodedEntry(pub)
}

// ownBytes returns b, or a copy of it when b is a small part of a larger
// array (which keeping b would keep alive).
func ownBytes(b []byte) []byte {
	if cap(b)-len(b) > len(b)/8+32 {
		return bytes.Clone(b)
	}
	return b
}

// encodedEntry makes pub's history entry in protobuf wire format, without
// its channel (offset and epoch are not set yet). The engine owns pub
// during Publish, so its channel is taken out while it is encoded.
func encodedEntry(pub *heraldv1.Publication) (histEntry, error) {
	name := pub.Channel
	pub.Channel = ""
	b, err := proto.Marshal(pub)
	pub.Channel = name
	if err != nil {
		return histEntry{}, fmt.Errorf("memory engine: encoding the publication for history: %w", err)
	}
	return histEntry{b: b, kind: histEncoded}, nil
}

// historyPub is a publication of history and its payload's oneof member,
// made in one allocation instead of two.
type historyPub struct {
	pub heraldv1.Publication
	raw heraldv1.Publication_RawJson
	bin heraldv1.Publication_Binary
}

// publication returns the entry's publication, without its channel,
// offset and epoch.
func (h histEntry) publication() (*heraldv1.Publication, error) {
	switch h.kind {
	case histJSON, histBinary:
		hp := new(historyPub)
		hp.pub.TimeUnixMs = h.ms
		if h.kind == histJSON {
			hp.raw.RawJson = h.b
			hp.pub.Payload = &hp.raw
		} else {
			hp.bin.Binary = h.b
			hp.pub.Payload = &hp.bin
		}
		return &hp.pub, nil
	}
	p := new(heraldv1.Publication)
	if err := proto.Unmarshal(h.b, p); err != nil {
		return nil, fmt.Errorf("memory engine: decoding a publication of history: %w", err)
	}
	return p, nil
}
