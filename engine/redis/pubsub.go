package redis

import (
	"context"
	"errors"
	"hash/maphash"
	"net"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
)

// Pub/sub of the Redis engine. Every channel C has a shard channel P:{C}:s
// in C's slot, which the publish script SPUBLISHes to; a node that has
// subscribers of C SSUBSCRIBEs to it on a connection to the primary that
// serves the slot. Each primary gets a small fixed number of pub/sub
// connections (Options.Conns), a channel always the same one of them, and
// each connection has a receive goroutine that delivers its channels to the
// Handler, so that a channel's publications arrive in order.
//
// The placer goroutine puts channels on connections: it asks the cluster
// client's slot map for the primary of a channel's slot and places the
// channel on one of that primary's connections (made when first needed).
// A connection's sync goroutine sends what changed in batches, one
// SSUBSCRIBE per slot (Redis refuses a SSUBSCRIBE across slots), and the
// receive goroutine confirms each channel when its own "ssubscribe" reply
// arrives: from then on every publication reaches this node, so Subscribe
// returns and the hub reads history after that.
//
// A channel leaves its connection (it becomes homeless, and stale if it was
// confirmed) when:
//
//   - the connection fails (the primary died, a network cut): all its
//     channels;
//   - Redis unsubscribes it by itself ("sunsubscribe" that nobody asked
//     for): its slot moved to another primary in a resharding;
//   - its SSUBSCRIBE is refused (MOVED: the slot map was stale; CLUSTERDOWN
//     during a failover);
//   - the slot map, reloaded, names another primary for its slot twice in
//     a row (a failover the connection has not noticed).
//
// The placer puts it on the right primary again; once confirmed there, a
// stale channel first gets a check that the last publication this node
// delivered is still in its log (check.lua: a failover can lose
// publications that were not replicated yet, and then the epoch changes,
// bump.lua), and then HandleReset, in line with its publications: the hub
// fills the gap from history, or ends the channel's streams when it
// cannot. So subscribers see no gap, or are told that they missed
// something.
//
// Each channel's deliveries are serialised by its dmu and come only from
// its home, the connection where it is confirmed: a connection that still
// receives a channel that moved away drops those messages, and the new
// home's first delivery waits for a delivery of the old one in progress.
//
// Lock order: psConn.wmu → pubsub.mu → psConn.mu. rsub.dmu is taken with
// no other lock held, and the Handler is called under it only.

// pubsub is the engine's pub/sub state.
type pubsub struct {
	e    *Engine
	seed maphash.Seed
	kick chan struct{} // wakes the placer

	mu       sync.Mutex // guards the fields below, and those of rsubs and psConns marked (pubsub.mu)
	subs     map[string]*rsub
	conns    map[*goredis.Client][]*psConn
	homeless map[*rsub]struct{}
	ctrlLeft int           // control channels not confirmed yet
	ctrlUp   chan struct{} // closed when every control channel was confirmed once
	closed   bool
	wg       sync.WaitGroup
}

// rsub is one channel's subscription on this node.
type rsub struct {
	channel string // Herald channel; "" for a control channel
	name    string // the shard channel
	slot    int
	control bool

	// (pubsub.mu)
	refs     int     // Subscribe calls not undone; 1 for a control channel
	conn     *psConn // where it is placed; nil while homeless
	asked    bool    // SSUBSCRIBE sent on conn's current PubSub
	live     bool    // confirmed there
	stale    bool    // was live before it left a connection
	everLive bool    // (control channels) confirmed once
	ready    chan struct{}
	mismatch int       // reconciles in a row that found another primary for its slot
	placedAt time.Time // when it was placed, to re-place a stuck one
	unplaced bool      // gone from subs (refs reached 0)

	home atomic.Pointer[psConn] // the connection that delivers it: set when confirmed, cleared when it leaves (pubsub.mu)

	dmu  sync.Mutex            // serialises deliveries
	last *heraldv1.Publication // the last publication delivered (dmu)
}

// psConn is one pub/sub connection to one primary.
type psConn struct {
	p      *pubsub
	client *goredis.Client // the primary's client
	kick   chan struct{}   // wakes the sync goroutine
	done   chan struct{}   // closed when the connection is retired

	mu    sync.Mutex       // guards chans (written under pubsub.mu too)
	chans map[string]*rsub // placed here, by shard channel

	// (pubsub.mu)
	ps      *goredis.PubSub
	gen     uint64 // number of ps; replies of an older one are ignored
	up      bool   // a PING went through on ps
	broken  bool   // ps failed and is not back yet
	dirty   map[*rsub]struct{}
	unsubs  []string  // shard channels to SUNSUBSCRIBE
	sent    []sentCmd // commands sent on ps whose replies have not all come
	retired bool
	emptyAt time.Time // when chans became empty (zero while it is not)
	probeAt time.Time // when the last PING to bring ps up went out

	wmu sync.Mutex // orders writes on ps with their entries in sent
}

// sentCmd is a command sent on a pub/sub connection, awaiting replies:
// SSUBSCRIBE and SUNSUBSCRIBE get one per channel, or one error; PING one.
type sentCmd struct {
	kind  byte // 's' ssubscribe, 'u' sunsubscribe, 'p' ping
	names []string
	subs  []*rsub // for 's', the channels asked, in order
	next  int     // replies received
}

// Timing of pub/sub.
const (
	// healthEvery is how long receive waits for traffic before it pings
	// the connection; a second silent period means the connection is dead.
	healthEvery = 3 * time.Second
	// placeEvery is how often the placer looks at homeless channels
	// without being woken, and at stuck ones.
	placeEvery = 250 * time.Millisecond
	// reconcileEvery is how often it compares placements with the slot map.
	reconcileEvery = 2 * time.Second
	// retireAfter is how long a connection without channels to a node that
	// no longer serves slots lives on.
	retireAfter = 10 * time.Second
)

func newPubSub(e *Engine) *pubsub {
	p := &pubsub{
		e:        e,
		seed:     maphash.MakeSeed(),
		kick:     make(chan struct{}, 1),
		subs:     make(map[string]*rsub),
		conns:    make(map[*goredis.Client][]*psConn),
		homeless: make(map[*rsub]struct{}),
		ctrlUp:   make(chan struct{}),
	}
	for _, name := range e.controls {
		r := &rsub{name: name, slot: keySlot(name), control: true, refs: 1, ready: make(chan struct{})}
		p.subs["\x00"+name] = r
		p.homeless[r] = struct{}{}
		p.ctrlLeft++
	}
	return p
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// start runs the placer.
func (p *pubsub) start() {
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.placeLoop() }()
	wake(p.kick)
}

// controlsReady is closed once every control channel was confirmed.
func (p *pubsub) controlsReady() <-chan struct{} { return p.ctrlUp }

// close retires every connection and waits for the goroutines.
func (p *pubsub) close() {
	p.mu.Lock()
	p.closed = true
	var all []*psConn
	for _, cs := range p.conns {
		all = append(all, cs...)
	}
	for _, c := range all {
		c.retireLocked()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// channels lists the Herald channels this node asked to deliver.
func (p *pubsub) channels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.subs))
	for _, r := range p.subs {
		if !r.control && r.refs > 0 {
			out = append(out, r.channel)
		}
	}
	return out
}

// Subscribe implements engine.Broker: it returns once Redis confirmed the
// channel's subscription on this node, or fails with ErrUnavailable within
// twice Timeout (Timeout while the connection is known to be down).
func (e *Engine) Subscribe(ctx context.Context, channel string) error {
	p := e.ps
	p.mu.Lock()
	r := p.subs[channel]
	if r == nil {
		name := e.key(channel, "s")
		r = &rsub{channel: channel, name: name, slot: keySlot(name), ready: make(chan struct{})}
		p.subs[channel] = r
		p.homeless[r] = struct{}{}
		wake(p.kick)
	}
	r.refs++
	if r.live {
		p.mu.Unlock()
		return nil
	}
	wait := 2 * e.opts.Timeout
	if r.conn != nil && r.conn.broken {
		wait = e.opts.Timeout
	}
	ready := r.ready
	p.mu.Unlock()
	var err error
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = errors.New("subscription not confirmed in time")
	case <-e.ctx.Done():
		err = errors.New("engine closed")
	}
	_ = e.Unsubscribe(context.Background(), channel)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	e.reloadTopology()
	return e.fail(ctx, "subscribe "+channel, err)
}

// Unsubscribe implements engine.Broker.
func (e *Engine) Unsubscribe(ctx context.Context, channel string) error {
	p := e.ps
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.subs[channel]
	if r == nil || r.refs == 0 {
		return nil
	}
	if r.refs--; r.refs > 0 {
		return nil
	}
	delete(p.subs, channel)
	r.unplaced = true
	p.unplaceLocked(r, r.asked)
	delete(p.homeless, r)
	return nil
}

// unplaceLocked takes r off its connection (unsubscribing it there when
// unsub) and makes it homeless; a confirmed r becomes stale. p.mu must be
// held.
func (p *pubsub) unplaceLocked(r *rsub, unsub bool) {
	if c := r.conn; c != nil {
		c.mu.Lock()
		if c.chans[r.name] == r {
			delete(c.chans, r.name)
		}
		if len(c.chans) == 0 {
			c.emptyAt = time.Now()
		}
		c.mu.Unlock()
		delete(c.dirty, r)
		if unsub && c.up && !c.broken {
			c.unsubs = append(c.unsubs, r.name)
			wake(c.kick)
		}
	}
	r.conn, r.asked, r.mismatch = nil, false, 0
	if r.live {
		r.live, r.stale = false, true
		r.ready = make(chan struct{})
	}
	r.home.Store(nil)
	if !r.unplaced {
		p.homeless[r] = struct{}{}
		wake(p.kick)
	}
}

// placeLoop places homeless channels, re-places stuck ones and reconciles
// placements with the slot map, until the engine closes.
func (p *pubsub) placeLoop() {
	e := p.e
	t := time.NewTicker(placeEvery)
	defer t.Stop()
	lastReconcile := time.Now()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-p.kick:
		case <-t.C:
		}
		p.place()
		if time.Since(lastReconcile) >= reconcileEvery {
			lastReconcile = time.Now()
			p.reconcile()
		}
	}
}

// owner returns the client of the primary that serves name's slot.
func (p *pubsub) owner(ctx context.Context, name string) (*goredis.Client, error) {
	return p.e.primary(ctx, name)
}

// place puts every homeless channel on a connection to its slot's primary.
func (p *pubsub) place() {
	e := p.e
	p.mu.Lock()
	todo := make([]*rsub, 0, len(p.homeless))
	for r := range p.homeless {
		todo = append(todo, r)
	}
	p.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
	defer cancel()
	owners := make(map[*rsub]*goredis.Client, len(todo))
	for _, r := range todo {
		c, err := p.owner(ctx, r.name)
		if err != nil {
			e.reloadTopology()
			break // the slot map cannot be read: next time
		}
		owners[r] = c
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for r, client := range owners {
		if _, ok := p.homeless[r]; !ok || r.unplaced {
			continue
		}
		delete(p.homeless, r)
		c := p.connLocked(client, r.name)
		r.conn, r.asked, r.placedAt = c, false, time.Now()
		c.mu.Lock()
		c.chans[r.name] = r
		c.emptyAt = time.Time{}
		c.mu.Unlock()
		c.dirty[r] = struct{}{}
		wake(c.kick)
	}
}

// connLocked returns the connection to client that carries name, making
// the primary's connections when there are none. p.mu must be held.
func (p *pubsub) connLocked(client *goredis.Client, name string) *psConn {
	cs := p.conns[client]
	if cs == nil {
		for range p.e.opts.Conns {
			c := &psConn{
				p: p, client: client,
				kick:  make(chan struct{}, 1),
				done:  make(chan struct{}),
				chans: make(map[string]*rsub),
				dirty: make(map[*rsub]struct{}),
			}
			c.ps = client.SSubscribe(p.e.ctx)
			c.gen = 1
			cs = append(cs, c)
			p.wg.Add(2)
			go func() { defer p.wg.Done(); c.receiveLoop() }()
			go func() { defer p.wg.Done(); c.syncLoop() }()
		}
		p.conns[client] = cs
	}
	return cs[maphash.String(p.seed, name)%uint64(len(cs))]
}

// reconcile moves channels whose slot, by the slot map, is served by
// another primary than their connection's, twice in a row (a failover or a
// resharding that Redis did not tell the connection about), re-places
// channels placed long ago and still not confirmed, and retires empty
// connections to nodes that serve no slot any more.
func (p *pubsub) reconcile() {
	e := p.e
	p.mu.Lock()
	placed := make([]*rsub, 0, len(p.subs))
	for _, r := range p.subs {
		if r.conn != nil {
			placed = append(placed, r)
		}
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
	defer cancel()
	owners := make(map[*rsub]*goredis.Client, len(placed))
	masters := map[*goredis.Client]bool{}
	for _, r := range placed {
		c, err := p.owner(ctx, r.name)
		if err != nil {
			return
		}
		owners[r] = c
		masters[c] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for r, owner := range owners {
		c := r.conn
		switch {
		case c == nil || r.unplaced:
		case c.client != owner:
			if r.mismatch++; r.mismatch >= 2 {
				p.unplaceLocked(r, r.asked)
			}
		case !r.live && time.Since(r.placedAt) > 4*e.opts.Timeout:
			// Stuck: its SSUBSCRIBE got no answer.
			p.unplaceLocked(r, false)
		default:
			r.mismatch = 0
		}
	}
	if e.cluster == nil || len(owners) == 0 {
		return
	}
	for client, cs := range p.conns {
		if masters[client] {
			continue
		}
		idle := true
		for _, c := range cs {
			c.mu.Lock()
			if len(c.chans) > 0 || c.emptyAt.IsZero() || time.Since(c.emptyAt) < retireAfter {
				idle = false
			}
			c.mu.Unlock()
		}
		if idle {
			for _, c := range cs {
				c.retireLocked()
			}
			delete(p.conns, client)
		}
	}
}

// retireLocked stops the connection's goroutines. p.mu must be held.
func (c *psConn) retireLocked() {
	if c.retired {
		return
	}
	c.retired = true
	close(c.done)
	_ = c.ps.Close()
}

// syncLoop sends subscription changes and probes a connection that is not
// known to be up.
func (c *psConn) syncLoop() {
	t := time.NewTicker(placeEvery)
	defer t.Stop()
	for {
		select {
		case <-c.p.e.ctx.Done():
			return
		case <-c.done:
			return
		case <-c.kick:
		case <-t.C:
		}
		c.sync()
	}
}

// sync sends, on a connection that is up, the SUNSUBSCRIBEs and then the
// SSUBSCRIBEs (one per slot) asked for since the last call; on one that is
// not, a PING to bring it up.
func (c *psConn) sync() {
	p, e := c.p, c.p.e
	c.wmu.Lock()
	defer c.wmu.Unlock()
	p.mu.Lock()
	if c.retired {
		p.mu.Unlock()
		return
	}
	ps, gen := c.ps, c.gen
	if !c.up {
		if c.broken && time.Since(c.probeAt) < 100*time.Millisecond {
			p.mu.Unlock()
			return // the node is down: probe it ten times a second at most
		}
		c.probeAt = time.Now()
		c.sent = append(c.sent, sentCmd{kind: 'p'})
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
		err := ps.Ping(ctx, "up")
		cancel()
		p.mu.Lock()
		if c.gen == gen {
			if err != nil {
				c.sent = nil
			} else {
				c.up = true
			}
		}
		up := c.up && c.gen == gen
		p.mu.Unlock()
		if err != nil {
			c.failed(gen, err)
			return
		}
		if !up {
			return
		}
		p.mu.Lock()
		if c.gen != gen || c.retired {
			p.mu.Unlock()
			return
		}
	}
	// Unsubscribe first, so that a channel unsubscribed and subscribed
	// again in one batch ends subscribed.
	var cmds []sentCmd
	for _, group := range bySlot(c.unsubs, nil) {
		cmds = append(cmds, sentCmd{kind: 'u', names: group.names})
	}
	c.unsubs = nil
	var asked []*rsub
	for r := range c.dirty {
		if r.conn == c && !r.asked && !r.unplaced {
			r.asked = true
			asked = append(asked, r)
		}
	}
	clear(c.dirty)
	names := make([]string, len(asked))
	for i, r := range asked {
		names[i] = r.name
	}
	for _, group := range bySlot(names, asked) {
		cmds = append(cmds, sentCmd{kind: 's', names: group.names, subs: group.subs})
	}
	c.sent = append(c.sent, cmds...)
	p.mu.Unlock()
	if len(cmds) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
	defer cancel()
	for _, cmd := range cmds {
		var err error
		if cmd.kind == 'u' {
			err = ps.SUnsubscribe(ctx, cmd.names...)
		} else {
			err = ps.SSubscribe(ctx, cmd.names...)
		}
		if err != nil {
			c.failed(gen, err)
			return
		}
	}
}

type slotGroup struct {
	names []string
	subs  []*rsub
}

// bySlot groups names (and the rsubs beside them, if any) by slot.
func bySlot(names []string, subs []*rsub) []slotGroup {
	idx := map[int]int{}
	var out []slotGroup
	for i, n := range names {
		s := keySlot(n)
		j, ok := idx[s]
		if !ok {
			j = len(out)
			idx[s] = j
			out = append(out, slotGroup{})
		}
		out[j].names = append(out[j].names, n)
		if subs != nil {
			out[j].subs = append(out[j].subs, subs[i])
		}
	}
	return out
}

// failed handles the failure of the connection's PubSub number gen: a new
// PubSub replaces it, and its channels go elsewhere (or back here once the
// slot map says so).
func (c *psConn) failed(gen uint64, err error) {
	p, e := c.p, c.p.e
	p.mu.Lock()
	if c.gen != gen || c.retired || p.closed {
		p.mu.Unlock()
		return
	}
	if !c.broken {
		e.log.Warn("redis: pub/sub connection lost; resubscribing", "addr", c.client.Options().Addr, "err", err)
	}
	old := c.ps
	c.ps = c.client.SSubscribe(e.ctx)
	c.gen++
	c.up, c.broken = false, true
	c.sent, c.unsubs = nil, nil
	clear(c.dirty)
	c.mu.Lock()
	chans := make([]*rsub, 0, len(c.chans))
	for _, r := range c.chans {
		chans = append(chans, r)
	}
	c.mu.Unlock()
	for _, r := range chans {
		p.unplaceLocked(r, false)
	}
	p.mu.Unlock()
	_ = old.Close() // outside p.mu: it may wait for a write in progress
	e.reloadTopology()
	wake(c.kick)
}

// receiveLoop reads the connection and delivers, until it is retired.
func (c *psConn) receiveLoop() {
	p, e := c.p, c.p.e
	backoff := 50 * time.Millisecond
	silent := false // healthEvery passed without traffic, and a PING went out
	for {
		p.mu.Lock()
		ps, gen, retired := c.ps, c.gen, c.retired
		p.mu.Unlock()
		if retired || e.ctx.Err() != nil {
			return
		}
		msg, err := ps.ReceiveTimeout(e.ctx, healthEvery)
		if e.ctx.Err() != nil {
			return
		}
		if err != nil {
			var rerr goredis.Error
			if errors.As(err, &rerr) && c.refused(gen, err) {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !silent {
				silent = true
				c.ping(gen)
				continue
			}
			if errors.Is(err, goredis.ErrClosed) {
				p.mu.Lock()
				retired := c.retired || c.gen != gen
				p.mu.Unlock()
				if retired {
					continue
				}
			}
			c.failed(gen, err)
			silent = false
			select {
			case <-e.ctx.Done():
				return
			case <-c.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 400*time.Millisecond)
			continue
		}
		silent = false
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *goredis.Message:
			c.deliver(m)
		case *goredis.Subscription:
			c.subscription(gen, m)
		case *goredis.Pong:
			c.pong(gen)
		}
	}
}

// ping sends a health PING on PubSub gen.
func (c *psConn) ping(gen uint64) {
	p, e := c.p, c.p.e
	c.wmu.Lock()
	defer c.wmu.Unlock()
	p.mu.Lock()
	if c.gen != gen {
		p.mu.Unlock()
		return
	}
	ps := c.ps
	c.sent = append(c.sent, sentCmd{kind: 'p'})
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
	defer cancel()
	if err := ps.Ping(ctx, "health"); err != nil {
		c.failed(gen, err)
	}
}

// front returns the oldest command awaiting a reply on PubSub gen, or nil.
// p.mu must be held.
func (c *psConn) frontLocked(gen uint64) *sentCmd {
	if c.gen != gen || len(c.sent) == 0 {
		return nil
	}
	return &c.sent[0]
}

func (c *psConn) popLocked() { c.sent = c.sent[1:] }

// pong takes the reply of a PING. The connection is up: the first traffic
// after a failure also tells that Redis may have restarted empty, so
// presence is refreshed.
func (c *psConn) pong(gen uint64) {
	p, e := c.p, c.p.e
	p.mu.Lock()
	if f := c.frontLocked(gen); f != nil && f.kind == 'p' {
		c.popLocked()
	}
	back := c.gen == gen && c.broken
	if back {
		c.broken = false
	}
	p.mu.Unlock()
	if back {
		e.log.Info("redis: pub/sub connection back", "addr", c.client.Options().Addr)
		e.refreshPresenceSoon()
	}
}

// subscription takes an "ssubscribe" or "sunsubscribe" message: the reply
// to a command of ours, or (sunsubscribe) Redis unsubscribing a channel by
// itself because its slot moved away.
func (c *psConn) subscription(gen uint64, m *goredis.Subscription) {
	p := c.p
	p.mu.Lock()
	f := c.frontLocked(gen)
	switch {
	case m.Kind == "ssubscribe" && f != nil && f.kind == 's' && f.next < len(f.names) && f.names[f.next] == m.Channel:
		r := f.subs[f.next]
		if f.next++; f.next == len(f.names) {
			c.popLocked()
		}
		c.confirmLocked(r) // unlocks p.mu
		return
	case m.Kind == "sunsubscribe" && f != nil && f.kind == 'u' && f.next < len(f.names) && f.names[f.next] == m.Channel:
		if f.next++; f.next == len(f.names) {
			c.popLocked()
		}
	case m.Kind == "sunsubscribe" && c.gen == gen:
		c.mu.Lock()
		r := c.chans[m.Channel]
		c.mu.Unlock()
		if r != nil && r.conn == c {
			p.e.reloadTopology()
			p.unplaceLocked(r, false)
		}
	}
	p.mu.Unlock()
}

// confirmLocked makes r live on c, if it is still placed and asked there.
// p.mu must be held; it is released. A stale r is then checked and reset,
// in line with its deliveries.
func (c *psConn) confirmLocked(r *rsub) {
	p := c.p
	if r.conn != c || !r.asked || r.live || r.unplaced {
		p.mu.Unlock()
		return
	}
	r.live = true
	close(r.ready)
	stale := r.stale
	r.stale = false
	r.home.Store(c)
	if r.control && !r.everLive {
		r.everLive = true
		if p.ctrlLeft--; p.ctrlLeft == 0 {
			close(p.ctrlUp)
		}
	}
	p.mu.Unlock()
	if !stale || r.control {
		return
	}
	h := p.e.handler()
	if h == nil {
		return
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if r.home.Load() != c {
		return // gone again meanwhile
	}
	if r.last != nil {
		p.e.checkLost(r.channel, r.last)
	}
	h.HandleReset(r.channel)
}

// refused takes an error reply on PubSub gen: a refused SSUBSCRIBE (the
// slot is elsewhere, the cluster is down) leaves its channels homeless. It
// reports false for an error that answers no command of ours (the
// connection could not be set up: a refused AUTH), a failure.
func (c *psConn) refused(gen uint64, err error) bool {
	p, e := c.p, c.p.e
	p.mu.Lock()
	defer p.mu.Unlock()
	f := c.frontLocked(gen)
	if f == nil || f.next > 0 {
		return false
	}
	cmd := *f
	c.popLocked()
	if cmd.kind != 's' {
		return true
	}
	e.reloadTopology()
	for _, r := range cmd.subs {
		if r.conn == c && r.asked && !r.live {
			p.unplaceLocked(r, false)
		}
	}
	return true
}

// deliver decodes a pub/sub message and hands it to the Handler, if c is
// its channel's home.
func (c *psConn) deliver(m *goredis.Message) {
	e := c.p.e
	h := e.handler()
	c.mu.Lock()
	r := c.chans[m.Channel]
	c.mu.Unlock()
	if h == nil || r == nil || m.Payload == "" {
		return
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if r.home.Load() != c {
		return
	}
	if r.control {
		cmd := &heraldv1.BridgeSessionResponse{}
		if err := proto.Unmarshal([]byte(m.Payload), cmd); err != nil {
			e.log.Error("redis: bad command message", "err", err)
			return
		}
		h.HandleCommand(cmd)
		return
	}
	kind, data := m.Payload[0], []byte(m.Payload[1:])
	switch kind {
	case 'p':
		pub := &heraldv1.Publication{}
		if err := proto.Unmarshal(data, pub); err != nil {
			e.log.Error("redis: bad publication message", "channel", m.Channel, "err", err)
			return
		}
		r.last = pub
		h.HandlePublication(pub)
	case 'j', 'l':
		ev := &heraldv1.PresenceEvent{}
		if err := proto.Unmarshal(data, ev); err != nil {
			e.log.Error("redis: bad presence message", "channel", m.Channel, "err", err)
			return
		}
		h.HandlePresence(ev, kind == 'j')
	}
}
