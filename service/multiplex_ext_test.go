package service_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// mux is an open SubscribeMany stream.
type mux struct {
	stream grpc.BidiStreamingClient[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse]
	cancel context.CancelFunc
}

func (ts *testServer) subscribeMany(t testing.TB, ctx context.Context) *mux {
	t.Helper()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)
	stream, err := ts.client.SubscribeMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &mux{stream: stream, cancel: cancel}
}

func (m *mux) subscribe(t testing.TB, id uint64, req *heraldv1.SubscribeRequest) {
	t.Helper()
	if req.PayloadFormat == heraldv1.PayloadFormat_PAYLOAD_FORMAT_UNSPECIFIED {
		req.PayloadFormat = heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW
	}
	if err := m.stream.Send(&heraldv1.SubscribeManyRequest{Id: id, Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: req}}); err != nil {
		t.Fatal(err)
	}
}

func (m *mux) unsubscribe(t testing.TB, id uint64) {
	t.Helper()
	if err := m.stream.Send(&heraldv1.SubscribeManyRequest{Id: id, Action: &heraldv1.SubscribeManyRequest_Unsubscribe{Unsubscribe: &heraldv1.SubscribeManyUnsubscribe{}}}); err != nil {
		t.Fatal(err)
	}
}

func (m *mux) recv(t testing.TB) *heraldv1.SubscribeManyResponse {
	t.Helper()
	resp, err := m.stream.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return resp
}

// muxState checks, per id, what a SubscribeMany client relies on:
// `subscribed` first, then offsets with no gap and no duplicate.
type muxState struct {
	subscribed map[uint64]*heraldv1.Subscribed
	last       map[uint64]uint64
	ended      map[uint64]*heraldv1.Error
	pubs       int
}

func newMuxState() *muxState {
	return &muxState{subscribed: map[uint64]*heraldv1.Subscribed{}, last: map[uint64]uint64{}, ended: map[uint64]*heraldv1.Error{}}
}

func (st *muxState) apply(t testing.TB, resp *heraldv1.SubscribeManyResponse) {
	t.Helper()
	id := resp.Id
	if e := resp.GetEnded(); e != nil {
		st.ended[id] = e
		return
	}
	ev := resp.GetEvent()
	if sd := ev.GetSubscribed(); sd != nil {
		if st.subscribed[id] != nil {
			t.Fatalf("id %d: second subscribed", id)
		}
		st.subscribed[id] = sd
		st.last[id] = sd.Position.Offset
		return
	}
	if st.subscribed[id] == nil {
		t.Fatalf("id %d: %v before subscribed", id, ev)
	}
	if p := ev.GetPublication(); p != nil {
		if p.Offset != st.last[id]+1 {
			t.Fatalf("id %d (%s): offset %d after %d", id, p.Channel, p.Offset, st.last[id])
		}
		st.last[id] = p.Offset
		st.pubs++
	}
}

func TestSubscribeManyChannelsInOrder(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	m := ts.subscribeMany(t, nil)
	const channels, each = 50, 20
	for i := range channels {
		m.subscribe(t, uint64(i+1), &heraldv1.SubscribeRequest{Channel: fmt.Sprintf("room:c%d", i)})
	}
	st := newMuxState()
	for len(st.subscribed) < channels {
		st.apply(t, m.recv(t))
	}
	for n := range each {
		for i := range channels {
			ts.publish(t, fmt.Sprintf("room:c%d", i), fmt.Sprint(n))
		}
	}
	for st.pubs < channels*each {
		resp := m.recv(t)
		if want := fmt.Sprintf("room:c%d", resp.Id-1); resp.GetEvent().GetPublication().GetChannel() != want {
			t.Fatalf("id %d got %v, want a publication of %s", resp.Id, resp, want)
		}
		st.apply(t, resp)
	}
	for i := range channels {
		if got := st.last[uint64(i+1)]; got != each {
			t.Fatalf("id %d: last offset %d, want %d", i+1, got, each)
		}
	}
}

func TestSubscribeManyResumeSeam(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	const before, during = 50, 300
	channels := []string{"room:seam-a", "room:seam-b", "room:seam-c"}
	var epochs []string
	for _, ch := range channels {
		var pos *heraldv1.StreamPosition
		for i := range before {
			pos = ts.publish(t, ch, fmt.Sprint(i))
		}
		epochs = append(epochs, pos.Epoch)
	}
	var wg sync.WaitGroup
	for _, ch := range channels {
		wg.Go(func() {
			for i := range during {
				ts.publish(t, ch, fmt.Sprint(before+i))
			}
		})
	}
	m := ts.subscribeMany(t, nil)
	// Several resumes per channel from different places, while publishing.
	type want struct {
		channel string
		since   uint64
	}
	wants := map[uint64]want{}
	id := uint64(0)
	for i, ch := range channels {
		for _, since := range []uint64{0, 10, 49} {
			id++
			wants[id] = want{ch, since}
			m.subscribe(t, id, &heraldv1.SubscribeRequest{Channel: ch, Since: &heraldv1.StreamPosition{Offset: since, Epoch: epochs[i]}})
		}
	}
	wg.Wait()
	last := map[uint64]uint64{}
	subscribed := map[uint64]bool{}
	for done := 0; done < len(wants); {
		resp := m.recv(t)
		w := wants[resp.Id]
		ev := resp.GetEvent()
		if sd := ev.GetSubscribed(); sd != nil {
			if !sd.Recovered {
				t.Fatalf("id %d: not recovered", resp.Id)
			}
			subscribed[resp.Id] = true
			last[resp.Id] = w.since
			continue
		}
		p := ev.GetPublication()
		if p == nil || !subscribed[resp.Id] {
			t.Fatalf("id %d: unexpected %v", resp.Id, resp)
		}
		if p.Channel != w.channel || p.Offset != last[resp.Id]+1 {
			t.Fatalf("id %d: %s offset %d after %d (want %s)", resp.Id, p.Channel, p.Offset, last[resp.Id], w.channel)
		}
		last[resp.Id] = p.Offset
		if p.Offset == before+during {
			done++
		}
	}
}

func TestSubscribeManyRecoveryRefused(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	ts.publish(t, "room:r", "1")
	m := ts.subscribeMany(t, nil)
	m.subscribe(t, 7, &heraldv1.SubscribeRequest{Channel: "room:r", Since: &heraldv1.StreamPosition{Offset: 1, Epoch: "not-the-epoch"}})
	resp := m.recv(t)
	sd := resp.GetEvent().GetSubscribed()
	if resp.Id != 7 || sd == nil || sd.Recovered || sd.Position.Offset != 1 {
		t.Fatalf("got %v, want subscribed for id 7 with recovered=false at offset 1", resp)
	}
	ts.publish(t, "room:r", "2")
	if p := m.recv(t).GetEvent().GetPublication(); p.GetOffset() != 2 {
		t.Fatalf("got %v, want offset 2", p)
	}
}

func TestSubscribeManyUnsubscribe(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	m := ts.subscribeMany(t, nil)
	m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "room:a"})
	m.subscribe(t, 2, &heraldv1.SubscribeRequest{Channel: "room:b"})
	st := newMuxState()
	for len(st.subscribed) < 2 {
		st.apply(t, m.recv(t))
	}
	m.unsubscribe(t, 1)
	waitFor(t, func() bool {
		info, err := ts.client.Info(context.Background(), &heraldv1.InfoRequest{})
		return err == nil && info.Streams == 1
	})
	ts.publish(t, "room:a", `"for nobody"`)
	ts.publish(t, "room:b", `"for 2"`)
	if resp := m.recv(t); resp.Id != 2 || resp.GetEvent().GetPublication().GetChannel() != "room:b" {
		t.Fatalf("got %v, want id 2's publication", resp)
	}
	// The id is free again.
	m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "room:a"})
	if resp := m.recv(t); resp.Id != 1 || resp.GetEvent().GetSubscribed() == nil {
		t.Fatalf("got %v, want id 1 subscribed again", resp)
	}
	// An id in use is refused, and the stream goes on.
	m.subscribe(t, 2, &heraldv1.SubscribeRequest{Channel: "room:c"})
	if resp := m.recv(t); resp.Id != 2 || resp.GetEnded().GetCode() != "invalid_argument" {
		t.Fatalf("got %v, want id 2 ended with invalid_argument", resp)
	}
	ts.publish(t, "room:b", `"still 2"`)
	if resp := m.recv(t); resp.Id != 2 || resp.GetEvent().GetPublication().GetOffset() != 2 {
		t.Fatalf("got %v, want id 2's second publication", resp)
	}
}

// dialAnother opens a second client connection to the server, so that a
// stream nobody reads cannot hold up the first one's flow control.
func dialAnother(t *testing.T, ts *testServer) heraldv1.HeraldServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(ts.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return heraldv1.NewHeraldServiceClient(conn)
}

func TestSubscribeManySlowStreamEnded(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.Limits.SubscriberQueue = 4 }))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	slow, err := dialAnother(t, ts).SubscribeMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fast := ts.subscribeMany(t, nil)
	for _, m := range []grpc.BidiStreamingClient[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse]{slow, fast.stream} {
		for i, ch := range []string{"room:s1", "room:s2"} {
			req := &heraldv1.SubscribeManyRequest{Id: uint64(i + 1), Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channel: ch, PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW}}}
			if err := m.Send(req); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := newMuxState()
	for len(st.subscribed) < 2 {
		st.apply(t, fast.recv(t))
	}
	waitFor(t, func() bool {
		info, err := ts.client.Info(context.Background(), &heraldv1.InfoRequest{})
		return err == nil && info.Streams == 4
	})
	// The fast stream is read all along; the slow one never, until the
	// server has ended it (its two subscriptions leave the hub).
	var received atomic.Int64
	go func() {
		for {
			resp, err := fast.stream.Recv()
			if err != nil {
				return
			}
			if resp.GetEvent().GetPublication() != nil {
				received.Add(1)
			}
		}
	}()
	body := `"` + strings.Repeat("x", 4000) + `"`
	published := 0
	ended := false
	for round := 0; round < 50 && !ended; round++ {
		for i := range 100 {
			ts.publish(t, fmt.Sprintf("room:s%d", i%2+1), body)
			published++
		}
		info, err := ts.client.Info(context.Background(), &heraldv1.InfoRequest{})
		ended = err == nil && info.Streams == 2
	}
	if !ended {
		t.Fatalf("the slow stream was not ended after %d publications", published)
	}
	for {
		_, err := slow.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("slow stream ended with %v, want RESOURCE_EXHAUSTED", err)
			}
			break
		}
	}
	// The fast stream got everything, and still gets what follows.
	ts.publish(t, "room:s1", `"last"`)
	published++
	waitFor(t, func() bool { return received.Load() == int64(published) })
}

func TestSubscribeManyPermissions(t *testing.T) {
	key := config.APIKey{Name: "small-reader", Key: "key-read-small-000001", Scopes: []string{"read:small"}}
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.APIKeys = append(c.APIKeys, key) }))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key.Key)
	m := ts.subscribeMany(t, ctx)
	m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "room:secret"})
	if resp := m.recv(t); resp.Id != 1 || resp.GetEnded().GetCode() != "permission_denied" {
		t.Fatalf("got %v, want id 1 ended with permission_denied", resp)
	}
	m.subscribe(t, 2, &heraldv1.SubscribeRequest{Channel: "small:open"})
	if resp := m.recv(t); resp.Id != 2 || resp.GetEvent().GetSubscribed() == nil {
		t.Fatalf("got %v, want id 2 subscribed", resp)
	}
	m.subscribe(t, 3, &heraldv1.SubscribeRequest{Channel: "bad name!"})
	if resp := m.recv(t); resp.Id != 3 || resp.GetEnded().GetCode() != "invalid_argument" {
		t.Fatalf("got %v, want id 3 ended with invalid_argument", resp)
	}
}

func TestSubscribeManyGoroutinesPerStreamNotPerSubscription(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	m := ts.subscribeMany(t, nil)
	m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "user:0"})
	if resp := m.recv(t); resp.GetEvent().GetSubscribed() == nil {
		t.Fatalf("got %v, want subscribed", resp)
	}
	settle := func() int {
		// Goroutines of finished subscribes exit right after their last
		// send; poll until the count is stable.
		n := runtime.NumGoroutine()
		for range 50 {
			time.Sleep(20 * time.Millisecond)
			m := runtime.NumGoroutine()
			if m == n {
				break
			}
			n = m
		}
		return n
	}
	before := settle()
	const n = 1000
	for i := range n {
		m.subscribe(t, uint64(i+2), &heraldv1.SubscribeRequest{Channel: fmt.Sprintf("user:%d", i+1)})
	}
	st := newMuxState()
	for len(st.subscribed) < n {
		st.apply(t, m.recv(t))
	}
	after := settle()
	if after-before >= 10 {
		t.Fatalf("%d goroutines before %d subscriptions, %d after", before, n, after)
	}
	// And they all deliver.
	for i := range n {
		ts.publish(t, fmt.Sprintf("user:%d", i+1), "1")
	}
	for st.pubs < n {
		st.apply(t, m.recv(t))
	}
}

func TestSubscribeManyCloseEndsWithUnavailable(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	m := ts.subscribeMany(t, nil)
	idle := ts.subscribeMany(t, nil) // no subscription at all
	m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "room:x"})
	if resp := m.recv(t); resp.GetEvent().GetSubscribed() == nil {
		t.Fatalf("got %v, want subscribed", resp)
	}
	idle.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "bad name!"})
	if resp := idle.recv(t); resp.GetEnded() == nil {
		t.Fatalf("got %v, want ended", resp)
	}
	ts.core.Close()
	for _, s := range []*mux{m, idle} {
		if _, err := s.stream.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want UNAVAILABLE", err)
		}
	}
}

func TestSubscribeManyAbortEndsOneSubscription(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	ts.publish(t, "room:lost", "0") // a stream at offset 0 would take up a new epoch's offset 1
	m := ts.subscribeMany(t, nil)
	m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "room:lost"})
	m.subscribe(t, 2, &heraldv1.SubscribeRequest{Channel: "room:kept"})
	st := newMuxState()
	for len(st.subscribed) < 2 {
		st.apply(t, m.recv(t))
	}
	// A publication of another epoch: the node can no longer continue
	// room:lost for a subscription in the old one.
	ts.core.HandlePublication(&heraldv1.Publication{Channel: "room:lost", Offset: 1, Epoch: "another", Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`1`)}})
	if resp := m.recv(t); resp.Id != 1 || resp.GetEnded().GetCode() != "aborted" {
		t.Fatalf("got %v, want id 1 ended with aborted", resp)
	}
	ts.publish(t, "room:kept", "1")
	if resp := m.recv(t); resp.Id != 2 || resp.GetEvent().GetPublication().GetOffset() != 1 {
		t.Fatalf("got %v, want id 2's publication", resp)
	}
	// Resubscribing from the last position works on the same stream.
	m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: "room:lost", Since: st.subscribed[1].Position})
	if resp := m.recv(t); resp.Id != 1 || resp.GetEvent().GetSubscribed() == nil {
		t.Fatalf("got %v, want id 1 subscribed again", resp)
	}
}
