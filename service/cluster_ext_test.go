package service_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestMain stops the Redis Cluster that the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	redistest.StopShared()
	os.Exit(code)
}

// owners returns the primary that serves each channel's keys.
func owners(t *testing.T, c *redistest.Cluster, prefix string, channels []string) map[string]string {
	t.Helper()
	ctx := context.Background()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer rc.Close()
	out := map[string]string{}
	for _, ch := range channels {
		slot, err := rc.ClusterKeySlot(ctx, prefix+":{"+ch+"}:m").Result()
		if err != nil {
			t.Fatal(err)
		}
		if out[ch], err = c.SlotOwner(ctx, int(slot)); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// watcher follows a channel through Subscribe streams, resubscribing from
// its last position when a stream ends (ABORTED when the node lost the
// channel's continuity, UNAVAILABLE while the engine cannot subscribe),
// and records what it saw: every publication, and how it was told of a
// break.
type watcher struct {
	channel string
	mu      sync.Mutex
	got     []*heraldv1.Publication
	epoch   string
	last    uint64
	aborts  int      // streams ended with ABORTED
	lost    int      // resumes answered recovered=false
	gaps    []string // silent gaps: a publication that does not follow the last
	bad     error    // an error a client would not expect
}

func watch(t *testing.T, client heraldv1.HeraldServiceClient, channel string) *watcher {
	t.Helper()
	w := &watcher{channel: channel}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	ready := make(chan struct{})
	go func() {
		defer close(done)
		var since *heraldv1.StreamPosition
		for first := true; ctx.Err() == nil; first = false {
			if !first {
				select {
				case <-ctx.Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			stream, err := client.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: channel, Since: since, PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW})
			if err != nil {
				continue
			}
			ev, err := stream.Recv()
			if err != nil {
				w.failed(err)
				continue
			}
			sub := ev.GetSubscribed()
			w.mu.Lock()
			if since == nil {
				w.epoch, w.last = sub.Position.Epoch, sub.Position.Offset
			} else if !sub.Recovered {
				w.lost++
				w.epoch, w.last = sub.Position.Epoch, sub.Position.Offset
			}
			w.mu.Unlock()
			if since == nil {
				close(ready)
			}
			for {
				ev, err := stream.Recv()
				if err != nil {
					w.failed(err)
					break
				}
				p := ev.GetPublication()
				if p == nil {
					continue
				}
				w.mu.Lock()
				if p.Epoch != w.epoch && !(w.last == 0 && p.Offset == 1) || p.Epoch == w.epoch && p.Offset != w.last+1 {
					w.gaps = append(w.gaps, fmt.Sprintf("offset %d of %s after %d of %s", p.Offset, p.Epoch, w.last, w.epoch))
				}
				w.epoch, w.last = p.Epoch, p.Offset
				w.got = append(w.got, p)
				w.mu.Unlock()
			}
			w.mu.Lock()
			since = &heraldv1.StreamPosition{Offset: w.last, Epoch: w.epoch}
			w.mu.Unlock()
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not subscribed within 10s", channel)
	}
	return w
}

// failed records how a stream ended.
func (w *watcher) failed(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch status.Code(err) {
	case codes.Aborted:
		w.aborts++
	case codes.Unavailable, codes.Canceled:
	default:
		if w.bad == nil {
			w.bad = err
		}
	}
}

// at returns the position the watcher has reached.
func (w *watcher) at() (string, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epoch, w.last
}

// ack is one acknowledged publication of a PublishStream.
type ack struct {
	channel, text string
	pos           *heraldv1.StreamPosition
}

// streamer publishes through one PublishStream, round-robin over
// channels, and records the acknowledgements.
type streamer struct {
	stream grpc.BidiStreamingClient[heraldv1.PublishStreamRequest, heraldv1.PublishStreamResponse]
	cancel context.CancelFunc
	sendMu sync.Mutex
	seq    uint64

	mu       sync.Mutex
	sent     map[uint64]sentReq
	acks     []ack
	failures int
	first    string        // the first failure's message
	slowest  time.Duration // from send to a failed acknowledgement
	bad      string        // an error code other than unavailable
	lastOK   time.Time
	done     chan struct{}
}

type sentReq struct {
	channel, text string
	at            time.Time
}

func startStreamer(t *testing.T, client heraldv1.HeraldServiceClient) *streamer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &streamer{stream: stream, cancel: cancel, sent: map[uint64]sentReq{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			s.mu.Lock()
			req := s.sent[resp.Sequence]
			delete(s.sent, resp.Sequence)
			if ok := resp.GetOk(); ok != nil {
				s.acks = append(s.acks, ack{req.channel, req.text, ok.Position})
				s.lastOK = time.Now()
			} else {
				e := resp.GetError()
				if e.GetCode() != "unavailable" && s.bad == "" {
					s.bad = e.GetCode() + ": " + e.GetMessage()
				}
				if s.failures == 0 {
					s.first = e.GetMessage()
				}
				s.failures++
				s.slowest = max(s.slowest, time.Since(req.at))
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// send publishes text to channel on the stream.
func (s *streamer) send(t *testing.T, channel, text string) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.seq++
	s.mu.Lock()
	s.sent[s.seq] = sentReq{channel, text, time.Now()}
	s.mu.Unlock()
	err := s.stream.Send(&heraldv1.PublishStreamRequest{Sequence: s.seq, Publish: &heraldv1.PublishRequest{Channel: channel, Payload: jsonPayload(strconv.Quote(text))}})
	if err != nil {
		t.Errorf("send: %v", err)
	}
}

// run sends to channels round-robin, every interval, until stop closes.
func (s *streamer) run(t *testing.T, channels []string, every time.Duration, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			s.send(t, channels[i%len(channels)], fmt.Sprint(i))
		}
	}()
	return done
}

// finish closes the stream's sending side and waits for every
// acknowledgement.
func (s *streamer) finish(t *testing.T) {
	t.Helper()
	_ = s.stream.CloseSend()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatal("acknowledgements did not end within 30s")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sent) != 0 {
		t.Fatalf("%d publications never acknowledged", len(s.sent))
	}
}

// acked returns the acknowledgements of channel, in order.
func (s *streamer) acked(channel string) []ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ack
	for _, a := range s.acks {
		if a.channel == channel {
			out = append(out, a)
		}
	}
	return out
}

// caughtUp waits until w has reached the channel's last acknowledgement.
func caughtUp(t *testing.T, w *watcher, acks []ack) {
	t.Helper()
	last := acks[len(acks)-1].pos
	deadline := time.Now().Add(20 * time.Second)
	for {
		epoch, off := w.at()
		if epoch == last.Epoch && off >= last.Offset {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the watcher is at %d of %s, the last acknowledgement %d of %s", w.channel, off, epoch, last.Offset, last.Epoch)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkWatched checks a watcher of a channel: no silent gap, no unexpected
// error, and, when strict, not even a told break.
func checkWatched(t *testing.T, w *watcher, strict bool) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.gaps) > 0 {
		t.Errorf("%s: silent gaps: %v", w.channel, w.gaps)
	}
	if w.bad != nil {
		t.Errorf("%s: stream error %v", w.channel, w.bad)
	}
	if strict && (w.aborts > 0 || w.lost > 0) {
		t.Errorf("%s: %d streams aborted, %d resumes not recovered; want none", w.channel, w.aborts, w.lost)
	}
}

// allHistory reads a channel's whole history, in pages small enough for
// large payloads.
func allHistory(t *testing.T, client heraldv1.HeraldServiceClient, channel string) []*heraldv1.Publication {
	t.Helper()
	var out []*heraldv1.Publication
	var since *heraldv1.StreamPosition
	for {
		h, err := client.History(context.Background(), &heraldv1.HistoryRequest{Channel: channel, Since: since, Limit: 50, PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Publications...)
		if len(h.Publications) == 0 {
			return out
		}
		last := h.Publications[len(h.Publications)-1]
		since = &heraldv1.StreamPosition{Offset: last.Offset, Epoch: last.Epoch}
	}
}

// TestClusterNodesOneService runs three Herald nodes on a Redis Cluster:
// channels on every shard, concurrent publishers on every node (unary and
// PublishStream), subscribers on every node that all see each channel in
// one order; history and resumption from another node; presence and
// Disconnect across nodes.
func TestClusterNodesOneService(t *testing.T) {
	rc := redistest.SharedCluster(t)
	c := startNodesOn(t, nil, rc.Addrs(), 3, nil)
	var channels []string
	for i := range 9 {
		channels = append(channels, fmt.Sprintf("room:c%d", i))
	}
	shards := map[string]bool{}
	for _, p := range owners(t, rc, c.prefix, channels) {
		shards[p] = true
	}
	if len(shards) < 3 {
		t.Fatalf("the channels are on %d shards; pick others", len(shards))
	}
	var watchers []*watcher
	for i := range c.nodes {
		for _, ch := range channels {
			watchers = append(watchers, watch(t, c.clients[i], ch))
		}
	}
	const each = 60
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(2)
		go func() { // unary
			defer wg.Done()
			for k := range each {
				ch := channels[(i+k)%len(channels)]
				if _, err := c.clients[i].Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(fmt.Sprintf(`"u%d-%d"`, i, k))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() { // a stream
			defer wg.Done()
			s := startStreamer(t, c.clients[i])
			for k := range each {
				s.send(t, channels[(i+2*k)%len(channels)], fmt.Sprintf("s%d-%d", i, k))
			}
			s.finish(t)
			if s.failures > 0 {
				t.Errorf("node %d: %d stream publishes failed: %s", i, s.failures, s.first)
			}
		}()
	}
	wg.Wait()
	// Every subscriber of a channel sees the same publications in the same
	// order.
	total := 3 * each * 2
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := 0
		for _, w := range watchers {
			w.mu.Lock()
			n += len(w.got)
			w.mu.Unlock()
		}
		if n == total*len(c.nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries, want %d", n, total*len(c.nodes))
		}
		time.Sleep(20 * time.Millisecond)
	}
	order := map[string]string{}
	for _, w := range watchers {
		checkWatched(t, w, true)
		var b strings.Builder
		for _, p := range w.got {
			fmt.Fprintf(&b, "%d:%s ", p.Offset, p.GetRawJson())
		}
		if o, ok := order[w.channel]; ok && o != b.String() {
			t.Fatalf("%s: two nodes saw two orders", w.channel)
		}
		order[w.channel] = b.String()
	}

	// History and resumption on another node.
	ctx := context.Background()
	h, err := c.clients[2].History(ctx, &heraldv1.HistoryRequest{Channel: channels[0], Limit: 1000})
	if err != nil || len(h.Publications) == 0 {
		t.Fatalf("history on C: %v %v", h, err)
	}
	pos := h.Publications[0]
	r := c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: channels[0], Since: &heraldv1.StreamPosition{Offset: pos.Offset, Epoch: pos.Epoch}})
	if !r.subscribed.Recovered || r.subscribed.Position.Offset != h.Position.Offset {
		t.Fatalf("resume on B: %v", r.subscribed)
	}
	if p := r.next(t); p.Offset != pos.Offset+1 {
		t.Fatalf("replayed %v after %d", p, pos.Offset)
	}

	// Presence of a bridge on A, seen from C; a Disconnect on C reaches A's
	// bridge.
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bs, err := c.clients[0].BridgeSession(bctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: "bridge-a"}}})
	up := &heraldv1.PresenceUpdate{}
	for _, ch := range channels {
		up.Joins = append(up.Joins, &heraldv1.PresenceEvent{Channel: ch, Client: &heraldv1.ClientInfo{Client: "a1", User: "alice"}})
	}
	_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: up}})
	waitFor(t, func() bool {
		for _, ch := range channels {
			r, err := c.clients[2].Presence(ctx, &heraldv1.PresenceRequest{Channel: ch})
			if err != nil || len(r.Clients) != 1 || r.Clients[0].User != "alice" {
				return false
			}
		}
		return true
	})
	for _, user := range []string{"alice", "bob", "carol", "dave"} { // their control channels differ
		if _, err := c.clients[2].Disconnect(ctx, &heraldv1.DisconnectRequest{User: user}); err != nil {
			t.Fatal(err)
		}
		cmd, err := bs.Recv()
		if cmd.GetNamespaces() != nil { // the session's first message
			cmd, err = bs.Recv()
		}
		if err != nil || cmd.GetDisconnect().GetUser() != user {
			t.Fatalf("command on A: %v %v, want the disconnect of %s", cmd, err, user)
		}
	}
}

// TestClusterReshardMidStream moves the slots of two channels to other
// primaries while a PublishStream on node A publishes to them and nodes B
// and C are subscribed: acknowledgements are ok or UNAVAILABLE (fast), the
// stream goes on, and the subscribers see every publication in order with
// no break at all (the slot's keys, history included, moved with it).
func TestClusterReshardMidStream(t *testing.T) {
	rc := redistest.SharedCluster(t)
	c := startNodesOn(t, nil, rc.Addrs(), 3, nil)
	channels := []string{"room:r0", "room:r1", "room:r2", "room:r3"}
	own := owners(t, rc, c.prefix, channels)
	var watchers []*watcher
	for _, i := range []int{1, 2} {
		for _, ch := range channels {
			watchers = append(watchers, watch(t, c.clients[i], ch))
		}
	}
	s := startStreamer(t, c.clients[0])
	stop := make(chan struct{})
	sending := s.run(t, channels, time.Millisecond, stop)
	time.Sleep(300 * time.Millisecond)
	prims, err := rc.Primaries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rcl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	defer rcl.Close()
	for _, ch := range channels[:2] {
		to := prims[0]
		if to == own[ch] {
			to = prims[1]
		}
		slot := int(rcl.ClusterKeySlot(context.Background(), c.prefix+":{"+ch+"}:m").Val())
		if err := rc.MoveSlot(slot, to, func() { time.Sleep(100 * time.Millisecond) }); err != nil {
			t.Fatal(err)
		}
	}
	moved := time.Now()
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.lastOK.After(moved.Add(200 * time.Millisecond))
	})
	close(stop)
	<-sending
	s.finish(t)
	t.Logf("%d of %d publishes failed during the moves (slowest %v; first: %s)", s.failures, s.seq, s.slowest, s.first)
	if s.bad != "" {
		t.Fatalf("a publish failed with %s", s.bad)
	}
	if s.slowest > 3*time.Second {
		t.Fatalf("a failed publish took %v", s.slowest)
	}
	for _, w := range watchers {
		caughtUp(t, w, s.acked(w.channel))
		checkWatched(t, w, true)
		got := map[uint64]bool{}
		w.mu.Lock()
		for _, p := range w.got {
			got[p.Offset] = true
		}
		w.mu.Unlock()
		for _, a := range s.acked(w.channel) {
			if !got[a.pos.Offset] {
				t.Fatalf("%s: acknowledged offset %d not delivered", w.channel, a.pos.Offset)
			}
		}
	}
}

// TestClusterFailoverMidPublishStream kills (-9) a primary in the middle
// of a PublishStream on node A, with subscribers on nodes B and C; its
// replica takes over. Just before, the replica is paused while large
// publications go to the primary, so that the end of the replication
// stream is still on the primary when it dies (on loopback a replica is
// otherwise always caught up). Acknowledgements are ok or UNAVAILABLE, the
// failures fast, and publishes succeed again once the replica took over.
// Subscribers see no silent gap: either every publication, or ABORTED and
// recovered=false on resume. With redis.wait_replicas 1 every acknowledged
// publication is in history afterwards; without it the test logs how many
// acknowledged publications were lost, and requires the subscribers of
// their channels to have been told.
func TestClusterFailoverMidPublishStream(t *testing.T) {
	rc := redistest.StartCluster(t, redistest.ClusterOptions{})
	for _, wait := range []int{0, 1} {
		t.Run(fmt.Sprintf("wait_replicas=%d", wait), func(t *testing.T) {
			c := startNodesOn(t, nil, rc.Addrs(), 3, func(cfg *config.Config) { cfg.Redis.WaitReplicas = wait })
			slots, err := rc.Slots(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			victim, replica := "", ""
			for _, s := range slots {
				if len(s.Replicas) > 0 {
					victim, replica = s.Primary, s.Replicas[0]
					break
				}
			}
			var onVictim, elsewhere []string
			candidates := make([]string, 40)
			for i := range candidates {
				candidates[i] = fmt.Sprintf("room:f%d-%d", wait, i)
			}
			own := owners(t, rc, c.prefix, candidates)
			for _, ch := range candidates {
				if own[ch] == victim && len(onVictim) < 2 {
					onVictim = append(onVictim, ch)
				} else if own[ch] != victim && len(elsewhere) < 2 {
					elsewhere = append(elsewhere, ch)
				}
			}
			channels := append(append([]string(nil), onVictim...), elsewhere...)
			var watchers []*watcher
			for _, i := range []int{1, 2} {
				for _, ch := range channels {
					watchers = append(watchers, watch(t, c.clients[i], ch))
				}
			}
			s := startStreamer(t, c.clients[0])
			stop := make(chan struct{})
			sending := s.run(t, channels, time.Millisecond, stop)
			time.Sleep(500 * time.Millisecond)
			rc.Node(replica).Pause()
			big := strings.Repeat("x", 60000)
			for end := time.Now().Add(400 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
				s.send(t, onVictim[0], big)
			}
			killed := time.Now()
			rc.Node(victim).Kill()
			rc.Node(replica).Resume()
			t.Cleanup(func() { // back, as a replica, for the next run
				rc.Node(victim).Restart()
				if err := rc.WaitHealthy(30 * time.Second); err != nil {
					t.Error(err)
				}
			})
			if err := rc.WaitHealthy(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			promoted := time.Now()
			deadline := time.Now().Add(20 * time.Second)
			for {
				okAfter := 0
				s.mu.Lock()
				for _, a := range s.acks {
					if a.channel == onVictim[0] || a.channel == onVictim[1] {
						okAfter++
					}
				}
				recovered := s.lastOK.After(promoted.Add(500 * time.Millisecond))
				s.mu.Unlock()
				if recovered && okAfter > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("publishes not acknowledged within 20s of the failover")
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			close(stop)
			<-sending
			s.finish(t)
			t.Logf("failover in %v; %d of %d publishes failed (slowest %v; first: %s)", promoted.Sub(killed).Round(time.Millisecond), s.failures, s.seq, s.slowest, s.first)
			if s.bad != "" {
				t.Fatalf("a publish failed with %s", s.bad)
			}
			if s.slowest > 5*time.Second {
				t.Fatalf("a failed publish took %v", s.slowest)
			}
			lostBy := map[string]int{}
			for _, w := range watchers {
				acks := s.acked(w.channel)
				caughtUp(t, w, acks)
				checkWatched(t, w, false)
				// Is every acknowledged publication in history, at its
				// offset, with its payload?
				kept := map[uint64]string{}
				for _, p := range allHistory(t, c.clients[1], w.channel) {
					kept[p.Offset] = string(p.GetRawJson())
				}
				lost := 0
				for _, a := range acks {
					if kept[a.pos.Offset] != strconv.Quote(a.text) {
						lost++
					}
				}
				w.mu.Lock()
				told := w.aborts > 0 || w.lost > 0
				w.mu.Unlock()
				if lost > 0 && !told {
					t.Errorf("%s: %d acknowledged publications lost, and the subscriber was not told", w.channel, lost)
				}
				if own[w.channel] != victim && told {
					t.Errorf("%s is not on the failed primary, and its subscriber was told of a break", w.channel)
				}
				lostBy[w.channel] = lost
				t.Logf("%s (%s): %d acknowledged, %d of them lost; subscriber got %d, %d aborts, %d resumes not recovered",
					w.channel, map[bool]string{true: "on the failed primary", false: "elsewhere"}[own[w.channel] == victim], len(acks), lost, len(w.got), w.aborts, w.lost)
			}
			if wait > 0 {
				for ch, n := range lostBy {
					if n > 0 {
						t.Errorf("%s: %d acknowledged publications lost with redis.wait_replicas %d", ch, n, wait)
					}
				}
			}
		})
	}
}
