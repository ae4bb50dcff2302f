package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"sort"
	"sync"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// memoryEngine keeps all channel state in this process. Its epochs are
// chosen when a channel's state is created, so a restart (or a channel
// forgotten after being idle past its history TTL) shows as a new epoch.
type memoryEngine struct {
	seed   maphash.Seed
	shards [64]memShard
	now    func() time.Time

	mu sync.Mutex // guards h and done
	h  Handler

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ Engine = (*memoryEngine)(nil)

type memShard struct {
	mu    sync.Mutex
	chans map[string]*memChannel
}

// memChannel is one channel's state; mu guards every field.
type memChannel struct {
	mu         sync.Mutex
	name       string
	epoch      string
	offset     uint64
	hist       []histEntry // ring buffer of at most cap(hist) entries
	head       int         // index of the oldest entry
	n          int         // number of entries
	dedupe     map[string]dedupeEntry
	dedupeFIFO []dedupeKey
	presence   map[string]*heraldv1.ClientInfo
	subscribed int // Subscribe calls not yet undone: keeps the state alive
	touched    time.Time
	ttl        time.Duration
}

type histEntry struct {
	pub *heraldv1.Publication
	at  time.Time
}

type dedupeEntry struct {
	offset uint64
	at     time.Time
}

type dedupeKey struct {
	key string
	at  time.Time
}

// NewMemoryEngine returns the in-memory engine.
func NewMemoryEngine() Engine { return newMemoryEngine(time.Now) }

func newMemoryEngine(now func() time.Time) *memoryEngine {
	e := &memoryEngine{seed: maphash.MakeSeed(), now: now, done: make(chan struct{})}
	for i := range e.shards {
		e.shards[i].chans = make(map[string]*memChannel)
	}
	return e
}

func (e *memoryEngine) Name() string { return "memory" }

func (e *memoryEngine) Start(ctx context.Context, h Handler) error {
	e.mu.Lock()
	e.h = h
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(10 * time.Second)
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

func (e *memoryEngine) handler() Handler {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.h
}

func (e *memoryEngine) shard(channel string) *memShard {
	return &e.shards[maphash.String(e.seed, channel)%uint64(len(e.shards))]
}

// channel returns the channel's state, creating it when create is set.
// The returned channel is locked.
func (e *memoryEngine) channel(name string, create bool) *memChannel {
	s := e.shard(name)
	s.mu.Lock()
	c := s.chans[name]
	if c == nil {
		if !create {
			s.mu.Unlock()
			return nil
		}
		c = &memChannel{name: name, epoch: newEpoch(), touched: e.now()}
		s.chans[name] = c
	}
	c.mu.Lock()
	s.mu.Unlock()
	return c
}

func newEpoch() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (e *memoryEngine) Publish(ctx context.Context, pub *heraldv1.Publication, opts PublishOptions) (PublishResult, error) {
	c := e.channel(pub.Channel, true)
	defer c.mu.Unlock()
	now := e.now()
	c.touched = now
	if opts.IdempotencyKey != "" {
		c.expireDedupe(now, opts.DedupeWindow)
		if d, ok := c.dedupe[opts.IdempotencyKey]; ok {
			return PublishResult{Position: &heraldv1.StreamPosition{Offset: d.offset, Epoch: c.epoch}, Duplicate: true}, nil
		}
	}
	c.offset++
	pub.Offset = c.offset
	pub.Epoch = c.epoch
	if opts.HistoryTTL > c.ttl {
		c.ttl = opts.HistoryTTL
	}
	c.append(histEntry{pub: pub, at: now}, opts.HistorySize)
	if opts.IdempotencyKey != "" {
		if c.dedupe == nil {
			c.dedupe = make(map[string]dedupeEntry)
		}
		c.dedupe[opts.IdempotencyKey] = dedupeEntry{offset: c.offset, at: now}
		c.dedupeFIFO = append(c.dedupeFIFO, dedupeKey{key: opts.IdempotencyKey, at: now})
	}
	if h := e.handler(); h != nil {
		// Under c.mu, so that handlers see the channel's publications in
		// offset order.
		h.HandlePublication(pub)
	}
	return PublishResult{Position: &heraldv1.StreamPosition{Offset: c.offset, Epoch: c.epoch}}, nil
}

// expireDedupe forgets keys older than window. c.mu must be held.
func (c *memChannel) expireDedupe(now time.Time, window time.Duration) {
	i := 0
	for ; i < len(c.dedupeFIFO) && now.Sub(c.dedupeFIFO[i].at) > window; i++ {
		k := c.dedupeFIFO[i]
		if d, ok := c.dedupe[k.key]; ok && d.at.Equal(k.at) {
			delete(c.dedupe, k.key)
		}
	}
	if i > 0 {
		c.dedupeFIFO = append(c.dedupeFIFO[:0], c.dedupeFIFO[i:]...)
	}
}

// append adds an entry to the ring, growing or shrinking it to size.
// c.mu must be held.
func (c *memChannel) append(h histEntry, size int) {
	if size <= 0 {
		c.hist, c.head, c.n = nil, 0, 0
		return
	}
	if cap(c.hist) != size {
		entries := c.entries()
		if len(entries) > size {
			entries = entries[len(entries)-size:]
		}
		c.hist = make([]histEntry, size)
		copy(c.hist, entries)
		c.head, c.n = 0, len(entries)
	}
	if c.n < size {
		c.hist[(c.head+c.n)%size] = h
		c.n++
		return
	}
	c.hist[c.head] = h
	c.head = (c.head + 1) % size
}

// entries returns the retained entries, oldest first. c.mu must be held.
func (c *memChannel) entries() []histEntry {
	out := make([]histEntry, 0, c.n)
	for i := 0; i < c.n; i++ {
		out = append(out, c.hist[(c.head+i)%len(c.hist)])
	}
	return out
}

// trim drops entries older than the TTL. c.mu must be held.
func (c *memChannel) trim(now time.Time) {
	for c.n > 0 && c.ttl > 0 && now.Sub(c.hist[c.head].at) > c.ttl {
		c.hist[c.head] = histEntry{}
		c.head = (c.head + 1) % len(c.hist)
		c.n--
	}
}

func (e *memoryEngine) History(ctx context.Context, channel string, q HistoryQuery) (HistoryResult, error) {
	c := e.channel(channel, true)
	defer c.mu.Unlock()
	now := e.now()
	c.touched = now
	c.trim(now)
	res := HistoryResult{Position: &heraldv1.StreamPosition{Offset: c.offset, Epoch: c.epoch}}
	if c.n > 0 {
		res.Oldest = c.hist[c.head].pub.Offset
	}
	if q.Since != nil && q.Since.Epoch != "" && q.Since.Epoch != c.epoch {
		return res, ErrEpochMismatch
	}
	if q.Limit <= 0 || c.n == 0 {
		return res, nil
	}
	at := func(i int) *heraldv1.Publication { return c.hist[(c.head+i)%len(c.hist)].pub }
	// Offsets in the ring are consecutive: entry i has offset oldest+i.
	if !q.Reverse {
		start := 0
		if q.Since != nil && q.Since.Offset >= res.Oldest {
			start = int(q.Since.Offset - res.Oldest + 1)
		}
		for i := start; i < c.n && len(res.Publications) < q.Limit; i++ {
			res.Publications = append(res.Publications, at(i))
		}
		return res, nil
	}
	end := c.n - 1
	if q.Since != nil {
		if q.Since.Offset < res.Oldest {
			return res, nil
		}
		end = min(int(q.Since.Offset-res.Oldest)-1, c.n-1)
	}
	for i := end; i >= 0 && len(res.Publications) < q.Limit; i-- {
		res.Publications = append(res.Publications, at(i))
	}
	return res, nil
}

func (e *memoryEngine) Subscribe(ctx context.Context, channel string) error {
	c := e.channel(channel, true)
	c.subscribed++
	c.mu.Unlock()
	return nil
}

func (e *memoryEngine) Unsubscribe(ctx context.Context, channel string) error {
	if c := e.channel(channel, false); c != nil {
		if c.subscribed > 0 {
			c.subscribed--
		}
		c.touched = e.now()
		c.mu.Unlock()
	}
	return nil
}

func (e *memoryEngine) AddPresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
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

func (e *memoryEngine) RemovePresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
	c := e.channel(channel, false)
	if c == nil {
		return nil
	}
	defer c.mu.Unlock()
	if _, ok := c.presence[client.Client]; !ok {
		return nil
	}
	delete(c.presence, client.Client)
	c.touched = e.now()
	if h := e.handler(); h != nil && joinLeave {
		h.HandlePresence(&heraldv1.PresenceEvent{Channel: channel, Client: client}, false)
	}
	return nil
}

func (e *memoryEngine) Presence(ctx context.Context, channel string) ([]*heraldv1.ClientInfo, error) {
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

func (e *memoryEngine) Command(ctx context.Context, cmd *heraldv1.BridgeSessionResponse) error {
	if h := e.handler(); h != nil {
		h.HandleCommand(cmd)
	}
	return nil
}

func (e *memoryEngine) Channels(ctx context.Context) ([]ChannelState, error) {
	var out []ChannelState
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		for _, c := range s.chans {
			c.mu.Lock()
			out = append(out, ChannelState{
				Name:     c.name,
				Position: &heraldv1.StreamPosition{Offset: c.offset, Epoch: c.epoch},
				Clients:  len(c.presence),
			})
			c.mu.Unlock()
		}
		s.mu.Unlock()
	}
	return out, nil
}

func (e *memoryEngine) Ping(ctx context.Context) error { return nil }

func (e *memoryEngine) Close() error {
	e.closeOnce.Do(func() { close(e.done) })
	e.wg.Wait()
	return nil
}

// idleFor is how long a channel with no subscribers, presence or retained
// history is kept before its state (offsets, epoch) is forgotten.
const idleFor = 10 * time.Minute

// sweep forgets idle channels, so that memory follows the active set.
func (e *memoryEngine) sweep() {
	now := e.now()
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		for name, c := range s.chans {
			c.mu.Lock()
			c.trim(now)
			if c.subscribed == 0 && len(c.presence) == 0 && c.n == 0 && now.Sub(c.touched) > max(idleFor, c.ttl) {
				delete(s.chans, name)
			}
			c.mu.Unlock()
		}
		s.mu.Unlock()
	}
}
