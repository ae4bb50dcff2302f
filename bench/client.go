package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// groupSpec describes a set of WebSocket clients held by one process. It is
// sent to child processes as JSON.
type groupSpec struct {
	// Base is the global index of the first client; N how many there are.
	Base int `json:"base"`
	N    int `json:"n"`
	// WS are bridge URLs; client i uses WS[i%len(WS)].
	WS []string `json:"ws"`
	// Src are local source addresses; empty lets the kernel choose.
	Src []string `json:"src,omitempty"`
	// Channel is subscribed by every client, unless OwnChannels
	// (idle-<i>) or Personal (no subscribe: the server subscribes
	// user:bench-<i>).
	Channel     string `json:"channel,omitempty"`
	OwnChannels bool   `json:"own_channels,omitempty"`
	Personal    bool   `json:"personal,omitempty"`
	// JWTSecret, when set, signs an HS256 token for user bench-<i>.
	JWTSecret string `json:"jwt_secret,omitempty"`
	// Concurrency bounds handshakes in flight.
	Concurrency int `json:"concurrency"`
	// Timeout bounds one client's dial, connect and subscribe.
	Timeout time.Duration `json:"timeout"`
	// ReadBuf is gorilla's read buffer size per connection.
	ReadBuf int `json:"read_buf"`
	// Transport is websocket (default), sse or http_stream.
	Transport string `json:"transport,omitempty"`
	// H2: sse and http_stream clients speak HTTP/2 (over TLS), each on a
	// connection of its own.
	H2 bool `json:"h2,omitempty"`
	// TLS: the server speaks TLS (WS are wss:// URLs), verified with the
	// PEM roots TLSCA (the system's when empty).
	TLS   bool   `json:"tls,omitempty"`
	TLSCA []byte `json:"tls_ca,omitempty"`
}

func userOf(i int) string { return "bench-" + strconv.Itoa(i) }

// channelOf is the channel client i listens on.
func (s *groupSpec) channelOf(i int) string {
	switch {
	case s.Personal:
		return "user:" + userOf(i)
	case s.OwnChannels:
		return "idle-" + strconv.Itoa(i)
	}
	return s.Channel
}

// groupResult is what a group reports; the parent merges them.
type groupResult struct {
	Base          int           `json:"base"`
	Connected     int           `json:"connected"`
	ConnectErrors int           `json:"connect_errors"`
	ErrorSamples  []string      `json:"error_samples,omitempty"`
	Connect       *Histogram    `json:"connect,omitempty"`
	ConnectWall   time.Duration `json:"connect_wall"`
	// Received counts publications per client, Received[0] being client
	// Base; -1 marks a client that never connected.
	Received     []int64     `json:"received,omitempty"`
	Latency      *Histogram  `json:"latency,omitempty"`
	LatencySend  *Histogram  `json:"latency_send,omitempty"` // from the send, where payloads carry it
	LastRecv     int64       `json:"last_recv,omitempty"`
	CloseCodes   map[int]int `json:"close_codes,omitempty"`
	CloseSamples []string    `json:"close_samples,omitempty"`
	Unsubscribed int         `json:"unsubscribed,omitempty"`
	Foreign      int64       `json:"foreign,omitempty"`
	Presence     int64       `json:"presence,omitempty"` // join/leave pushes
	// Per client, publications are checked against the channel's
	// offsets: an offset seen last time again (Duplicates), one below it
	// (Reorders), and offsets skipped (Gaps).
	Duplicates int64   `json:"duplicates,omitempty"`
	Reorders   int64   `json:"reorders,omitempty"`
	Gaps       int64   `json:"gaps,omitempty"`
	CPU        float64 `json:"cpu,omitempty"` // child processes only
	// The bench's own garbage collector in the measured window (see
	// pauseGC): bytes allocated, collections its memory limit forced.
	GCAlloc  uint64 `json:"gc_alloc,omitempty"`
	GCForced uint64 `json:"gc_forced,omitempty"`
}

// merge folds o into r. Received is not merged here: the caller places
// each group's counts at its Base.
func (r *groupResult) merge(o *groupResult) {
	r.Connected += o.Connected
	r.ConnectErrors += o.ConnectErrors
	for _, s := range o.ErrorSamples {
		if len(r.ErrorSamples) < 5 {
			r.ErrorSamples = append(r.ErrorSamples, s)
		}
	}
	if o.Connect != nil {
		if r.Connect == nil {
			r.Connect = new(Histogram)
		}
		r.Connect.Merge(o.Connect)
	}
	r.ConnectWall = max(r.ConnectWall, o.ConnectWall)
	if o.Latency != nil {
		if r.Latency == nil {
			r.Latency = new(Histogram)
		}
		r.Latency.Merge(o.Latency)
	}
	if o.LatencySend != nil {
		if r.LatencySend == nil {
			r.LatencySend = new(Histogram)
		}
		r.LatencySend.Merge(o.LatencySend)
	}
	r.LastRecv = max(r.LastRecv, o.LastRecv)
	for c, n := range o.CloseCodes {
		if r.CloseCodes == nil {
			r.CloseCodes = make(map[int]int)
		}
		r.CloseCodes[c] += n
	}
	for _, s := range o.CloseSamples {
		if len(r.CloseSamples) < 5 {
			r.CloseSamples = append(r.CloseSamples, s)
		}
	}
	r.Unsubscribed += o.Unsubscribed
	r.Foreign += o.Foreign
	r.Presence += o.Presence
	r.Duplicates += o.Duplicates
	r.Reorders += o.Reorders
	r.Gaps += o.Gaps
	r.CPU += o.CPU
	r.GCAlloc += o.GCAlloc
	r.GCForced += o.GCForced
}

// client is one WebSocket connection. Its reader goroutine owns conn's read
// side; received is read by the group while it runs.
type client struct {
	idx      int
	conn     *websocket.Conn // websocket
	stream   *streamConn     // sse, http_stream
	received atomic.Int64
	gone     atomic.Bool // the read loop ended
	lastOff  uint64      // the highest offset received; owned by the read loop
}

// seq checks a publication's offset against the last one client c
// received (its channel's offsets increase by one per publication).
func (g *group) seq(c *client, off uint64) {
	last := c.lastOff
	switch {
	case last == 0:
	case off == last:
		g.dups.Add(1)
		return
	case off < last:
		g.reorders.Add(1)
		return
	case off > last+1:
		g.gaps.Add(int64(off - last - 1))
	}
	c.lastOff = off
}

// group holds a set of clients in this process.
type group struct {
	spec    groupSpec
	dialers []*websocket.Dialer
	nets    []*net.Dialer // the same, for sse and http_stream
	tls     *tls.Config   // with spec.TLS; the streams' (the dialers have theirs)
	tlsErr  error         // spec.TLSCA unusable: every handshake fails with it
	clients []*client     // nil where the connection failed
	lat     *recorder
	closing atomic.Bool
	wg      sync.WaitGroup
	closed  sync.Once

	mu           sync.Mutex
	connectH     Histogram
	connectErrs  int
	errSamples   []string
	closeCodes   map[int]int
	closeSamples []string
	unsubscribed int
	foreign      atomic.Int64
	presence     atomic.Int64
	dups         atomic.Int64
	reorders     atomic.Int64
	gaps         atomic.Int64
	connectWall  time.Duration
}

// bufPool holds message buffers: a client holds one only while it reads a
// message, so idle clients hold none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writePool lends gorilla its write buffers, which clients need only for
// their first frames and their close.
var writePool = &sync.Pool{}

func newGroup(spec groupSpec) *group {
	g := &group{spec: spec, clients: make([]*client, spec.N), lat: newRecorder(64), closeCodes: map[int]int{}}
	srcs := spec.Src
	if len(srcs) == 0 {
		srcs = []string{""}
	}
	if spec.TLS {
		g.tls, g.tlsErr = clientTLS(spec.TLSCA)
	}
	for _, s := range srcs {
		nd := &net.Dialer{Timeout: spec.Timeout}
		if s != "" {
			nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(s)}
		}
		g.nets = append(g.nets, nd)
		g.dialers = append(g.dialers, &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: spec.Timeout,
			Subprotocols:     []string{"herald.json"},
			ReadBufferSize:   spec.ReadBuf,
			WriteBufferSize:  512,
			WriteBufferPool:  writePool,
			TLSClientConfig:  cloneTLS(g.tls),
		})
	}
	return g
}

// connect opens every client, at most spec.Concurrency at a time, and
// starts each one's read loop. It returns when every client has tried.
func (g *group) connect(ctx context.Context) {
	start := time.Now()
	conc := max(1, g.spec.Concurrency)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, g.spec.N) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				g.open(ctx, j)
			}
		}()
	}
	for j := 0; j < g.spec.N && ctx.Err() == nil; j++ {
		next <- j
	}
	close(next)
	wg.Wait()
	g.mu.Lock()
	g.connectWall = time.Since(start)
	g.mu.Unlock()
}

func (g *group) open(ctx context.Context, j int) {
	i := g.spec.Base + j
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, g.spec.Timeout)
	defer cancel()
	var c *client
	var err error
	if t := g.spec.Transport; t == "sse" || t == "http_stream" {
		c, err = g.streamHandshake(ctx, i, g.nets[j%len(g.nets)])
	} else {
		c, err = g.handshake(ctx, i, g.dialers[j%len(g.dialers)])
	}
	d := time.Since(t0)
	g.mu.Lock()
	if err != nil {
		g.connectErrs++
		if len(g.errSamples) < 5 {
			g.errSamples = append(g.errSamples, fmt.Sprintf("client %d: %v", i, err))
		}
	} else {
		g.connectH.Record(int64(d))
	}
	g.mu.Unlock()
	if err != nil {
		return
	}
	g.clients[j] = c
	g.wg.Add(1)
	if c.stream != nil {
		go g.streamReadLoop(c)
		return
	}
	go g.readLoop(c)
}

// handshake dials, connects and subscribes client i; it returns once the
// subscription is confirmed.
func (g *group) handshake(ctx context.Context, i int, d *websocket.Dialer) (*client, error) {
	if g.tlsErr != nil {
		return nil, g.tlsErr
	}
	url := g.spec.WS[i%len(g.spec.WS)]
	conn, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %v (HTTP %d)", url, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %v", url, err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		conn.SetReadDeadline(dl)
		conn.SetWriteDeadline(dl)
	}
	token, err := g.token(i)
	if err != nil {
		return nil, err
	}
	tok, _ := json.Marshal(token)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"token":`+string(tok)+`,"name":"herald-bench"}}`)); err != nil {
		return nil, fmt.Errorf("write connect: %w", err)
	}
	channel := g.spec.channelOf(i)
	needConnect, needSub := true, true
	for needConnect || needSub {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("handshake: %w", closeErr(err))
		}
		for len(msg) > 0 {
			var fr []byte
			fr, msg = cutFrame(msg)
			if len(fr) == 0 {
				continue
			}
			var f serverFrame
			if err := json.Unmarshal(fr, &f); err != nil {
				return nil, fmt.Errorf("handshake: bad frame %.100q", fr)
			}
			switch {
			case f.Error != nil:
				hint := ""
				if f.Error.Code == 104 && g.spec.JWTSecret == "" {
					hint = " (anonymous connections may subscribe only in namespaces with allow_anonymous, e.g. chat:; or run the server with --jwt-secret and pass -jwt-secret)"
				}
				return nil, fmt.Errorf("request %d: error %d: %s%s", f.ID, f.Error.Code, f.Error.Message, hint)
			case f.Disconnect != nil:
				return nil, fmt.Errorf("disconnected: %d %s", f.Disconnect.Code, f.Disconnect.Reason)
			case f.ID == 1 && f.Connect != nil:
				needConnect = false
				if !g.spec.Personal {
					sub, _ := json.Marshal(channel)
					if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"id":2,"subscribe":{"channel":`+string(sub)+`}}`)); err != nil {
						return nil, fmt.Errorf("write subscribe: %w", err)
					}
				}
			case f.ID == 2 && f.Subscribe != nil:
				needSub = false
			case f.Subscribed != nil && g.spec.Personal && f.Subscribed.Channel == channel:
				needSub = false
			}
		}
	}
	conn.SetReadDeadline(time.Time{})
	conn.SetWriteDeadline(time.Time{})
	ok = true
	return &client{idx: i, conn: conn}, nil
}

// token signs client i's token (empty without a JWT secret).
func (g *group) token(i int) (string, error) {
	if g.spec.JWTSecret == "" {
		return "", nil
	}
	claims := jwt.RegisteredClaims{Subject: userOf(i), ExpiresAt: jwt.NewNumericDate(time.Now().Add(24 * time.Hour))}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(g.spec.JWTSecret))
}

// closeErr shortens gorilla's close errors.
func closeErr(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Errorf("closed by server: %d %s", ce.Code, ce.Text)
	}
	return err
}

// readLoop is the lean read path: one pooled buffer per message, frames
// split on "\n", the send time parsed by hand, latencies recorded under one
// shard lock per message.
func (g *group) readLoop(c *client) {
	defer g.wg.Done()
	defer c.gone.Store(true)
	sh := g.lat.shard(c.idx)
	for {
		_, r, err := c.conn.NextReader()
		if err != nil {
			g.noteClose(c, err)
			return
		}
		now := time.Now().UnixNano()
		bp := bufPool.Get().(*[]byte)
		msg, err := readAll(r, (*bp)[:0])
		if err != nil {
			*bp = msg[:0]
			bufPool.Put(bp)
			g.noteClose(c, err)
			return
		}
		var n, presence int64
		var slow [][]byte
		rest := msg
		sh.mu.Lock()
		for len(rest) > 0 {
			var fr []byte
			fr, rest = cutFrame(rest)
			if len(fr) == 0 {
				continue
			}
			if bytes.HasPrefix(fr, pubPrefix) {
				if sh.record(now, fr) {
					n++
					if off, ok := parseOffset(fr); ok {
						g.seq(c, off)
					}
				} else {
					g.foreign.Add(1)
				}
				continue
			}
			if isPresenceEvent(fr) {
				presence++
				continue
			}
			slow = append(slow, fr)
		}
		sh.mu.Unlock()
		for _, fr := range slow {
			n += g.slowFrame(c, sh, now, fr)
		}
		// Presence first: drain returns once received is complete, and the
		// result it reads then must include this message's join pushes.
		if presence > 0 {
			g.presence.Add(presence)
		}
		c.received.Add(n)
		*bp = msg[:0]
		bufPool.Put(bp)
	}
}

// slowFrame handles a frame that is not a plain publication push and
// returns 1 if it was one after all.
func (g *group) slowFrame(c *client, sh *recShard, now int64, fr []byte) int64 {
	var f serverFrame
	if json.Unmarshal(fr, &f) != nil {
		return 0
	}
	switch {
	case f.Pub != nil:
		sh.mu.Lock()
		ok := sh.record(now, f.Pub)
		sh.mu.Unlock()
		if !ok {
			g.foreign.Add(1)
			return 0
		}
		if off, ok := parseOffset(f.Pub); ok {
			g.seq(c, off)
		}
		return 1
	case f.Unsubscribed != nil:
		g.mu.Lock()
		g.unsubscribed++
		if len(g.closeSamples) < 5 {
			g.closeSamples = append(g.closeSamples, "unsubscribed "+f.Unsubscribed.Channel+": "+f.Unsubscribed.Reason)
		}
		g.mu.Unlock()
	case f.Disconnect != nil && !g.closing.Load():
		g.mu.Lock()
		if len(g.closeSamples) < 5 {
			g.closeSamples = append(g.closeSamples, fmt.Sprintf("disconnect %d: %s", f.Disconnect.Code, f.Disconnect.Reason))
		}
		g.mu.Unlock()
	}
	return 0
}

// noteClose records why a connection ended, unless the bench closed it.
func (g *group) noteClose(c *client, err error) {
	if g.closing.Load() {
		return
	}
	code := websocket.CloseAbnormalClosure
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	g.mu.Lock()
	g.closeCodes[code]++
	if len(g.closeSamples) < 5 {
		g.closeSamples = append(g.closeSamples, fmt.Sprintf("client %d: %v", c.idx, err))
	}
	g.mu.Unlock()
}

// readAll reads r to its end into b, growing it as needed.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// result reports the connect phase, and with withCounts the deliveries so
// far.
func (g *group) result(withCounts bool) *groupResult {
	g.mu.Lock()
	r := &groupResult{
		Base:          g.spec.Base,
		ConnectErrors: g.connectErrs,
		ErrorSamples:  append([]string(nil), g.errSamples...),
		Connect:       new(Histogram),
		ConnectWall:   g.connectWall,
		Unsubscribed:  g.unsubscribed,
		CloseCodes:    map[int]int{},
		CloseSamples:  append([]string(nil), g.closeSamples...),
	}
	r.Connect.Merge(&g.connectH)
	for c, n := range g.closeCodes {
		r.CloseCodes[c] = n
	}
	g.mu.Unlock()
	for _, c := range g.clients {
		if c != nil {
			r.Connected++
		}
	}
	if withCounts {
		r.Received = make([]int64, g.spec.N)
		for j, c := range g.clients {
			r.Received[j] = -1 // never connected: nothing expected
			if c != nil {
				r.Received[j] = c.received.Load()
			}
		}
		r.Latency, r.LatencySend, r.LastRecv = g.lat.snapshot()
		r.Foreign = g.foreign.Load()
		r.Presence = g.presence.Load()
		r.Duplicates, r.Reorders, r.Gaps = g.dups.Load(), g.reorders.Load(), g.gaps.Load()
	}
	return r
}

// drain waits until every live client has received what expected says
// (expected[j] for client Base+j; nil waits for nothing), or until the
// deadline, and returns the counts.
func (g *group) drain(ctx context.Context, expected []int64, wait time.Duration) *groupResult {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for expected != nil && time.Now().Before(deadline) && ctx.Err() == nil {
		done := true
		for j, c := range g.clients {
			if c != nil && !c.gone.Load() && j < len(expected) && c.received.Load() < expected[j] {
				done = false
				break
			}
		}
		if done {
			break
		}
		<-tick.C
	}
	return g.result(true)
}

// close closes every connection with a normal close and waits (bounded)
// for the read loops. It is idempotent.
func (g *group) close() { g.closed.Do(g.closeAll) }

func (g *group) closeAll() {
	g.closing.Store(true)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench done")
	var wg sync.WaitGroup
	work := make(chan *client)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				if c.stream != nil {
					_ = c.stream.nc.Close()
					continue
				}
				_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
				_ = c.conn.Close()
			}
		}()
	}
	for _, c := range g.clients {
		if c != nil {
			work <- c
		}
	}
	close(work)
	wg.Wait()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}
