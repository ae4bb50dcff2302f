package enginetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// Factory makes the engines the suite runs on.
type Factory struct {
	// Name is what Engine.Name must report.
	Name string
	// New returns a started engine delivering to h, with state of its own
	// (no other test's channels), closed at t's cleanup.
	New func(t *testing.T, h engine.Handler) engine.Engine
	// Peer, for engines whose nodes share state, returns another started
	// engine (another node) on the state of of, delivering to h, closed at
	// t's cleanup. Nil for an engine of one node: the suite's cases
	// across nodes are skipped.
	Peer func(t *testing.T, of engine.Engine, h engine.Handler) engine.Engine
}

// Run runs the contract suite: one subtest per part of the contract.
func Run(t *testing.T, f Factory) {
	cases := []struct {
		name  string
		peers bool
		run   func(t *testing.T, f Factory)
	}{
		{"Identity", false, testIdentity},
		{"EmptyChannel", false, testEmptyChannel},
		{"PublishDeliversInOrder", false, testPublishDelivers},
		{"ConcurrentPublishersOneOrder", false, testConcurrentOrder},
		{"Idempotency", false, testIdempotency},
		{"HistoryPages", false, testHistoryPages},
		{"NoHistory", false, testNoHistory},
		{"Presence", false, testPresence},
		{"Commands", false, testCommands},
		{"Channels", false, testChannels},
		{"SubscribeRefcount", false, testSubscribeRefcount},
		{"BatchPublish", false, testBatchPublish},
		{"AcrossNodes", true, testAcrossNodes},
		{"EmptyEpochAcrossNodes", true, testEmptyEpochAcrossNodes},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.peers && f.Peer == nil {
				t.Skip("an engine of one node")
			}
			c.run(t, f)
		})
	}
}

var ctx = context.Background()

func mustPublish(t *testing.T, e engine.Engine, pub *heraldv1.Publication, opts engine.PublishOptions) engine.PublishResult {
	t.Helper()
	res, err := e.Publish(ctx, pub, opts)
	if err != nil {
		t.Fatalf("publish to %s: %v", pub.Channel, err)
	}
	return res
}

func mustSubscribe(t *testing.T, e engine.Engine, channel string) {
	t.Helper()
	if err := e.Subscribe(ctx, channel); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	t.Cleanup(func() { _ = e.Unsubscribe(context.Background(), channel) })
}

func checkNoViolation(t *testing.T, r *Recorder) {
	t.Helper()
	if v := r.Violation(); v != "" {
		t.Fatal(v)
	}
}

var withHistory = engine.PublishOptions{HistorySize: 3, HistoryTTL: time.Minute, DedupeWindow: time.Minute}

func testIdentity(t *testing.T, f Factory) {
	e := f.New(t, Nop{})
	if e.Name() != f.Name {
		t.Fatalf("Name() = %q, want %q", e.Name(), f.Name)
	}
	if err := e.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// A channel without state reads as offset 0 of its empty epoch, stable
// from one read to the next; a position read before the first publish
// resumes into the state that publish begins; a position of another epoch
// does not.
func testEmptyChannel(t *testing.T, f Factory) {
	e := f.New(t, Nop{})
	const ch = "chat:empty"
	before, err := e.History(ctx, ch, engine.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if before.Position.Offset != 0 || before.Position.Epoch == "" || len(before.Publications) != 0 || before.Oldest != 0 {
		t.Fatalf("empty channel = %+v", before)
	}
	if again, err := e.History(ctx, ch, engine.HistoryQuery{}); err != nil || again.Position.Epoch != before.Position.Epoch {
		t.Fatalf("empty channel position %v, then %v %v", before.Position, again.Position, err)
	}
	if res, err := e.History(ctx, ch, engine.HistoryQuery{Since: before.Position, Limit: 10}); err != nil || len(res.Publications) != 0 {
		t.Fatalf("since its own empty position: %+v %v", res, err)
	}
	if _, err := e.History(ctx, ch, engine.HistoryQuery{Since: &heraldv1.StreamPosition{Epoch: "other.1"}}); !errors.Is(err, engine.ErrEpochMismatch) {
		t.Fatalf("empty channel since another empty epoch: %v, want ErrEpochMismatch", err)
	}
	var epoch string
	for i := 1; i <= 5; i++ {
		res := mustPublish(t, e, Pub(ch, fmt.Sprint(i)), withHistory)
		if i == 1 {
			epoch = res.Position.Epoch
		}
		if res.Position.Offset != uint64(i) || res.Position.Epoch != epoch || epoch == before.Position.Epoch {
			t.Fatalf("publish %d: %v (first epoch %q, empty %q)", i, res.Position, epoch, before.Position.Epoch)
		}
	}
	res, err := e.History(ctx, ch, engine.HistoryQuery{Since: before.Position, Limit: 10})
	if err != nil || len(res.Publications) != 3 || res.Publications[0].Offset != 3 || res.Position.Epoch != epoch { // history keeps 3
		t.Fatalf("history since the empty position: %+v, %v", res, err)
	}
	if _, err := e.History(ctx, ch, engine.HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 0, Epoch: "other.1"}, Limit: 10}); !errors.Is(err, engine.ErrEpochMismatch) {
		t.Fatalf("offset 0 of another empty epoch: %v, want ErrEpochMismatch", err)
	}
	if res, err := e.History(ctx, ch, engine.HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 1, Epoch: "other"}, Limit: 10}); !errors.Is(err, engine.ErrEpochMismatch) || res.Position == nil || res.Position.Epoch != epoch {
		t.Fatalf("another epoch: %+v %v, want ErrEpochMismatch with the position", res, err)
	}
}

// Publish fills the publication's position and delivers it, once, in
// offset order, as it was published.
func testPublishDelivers(t *testing.T, f Factory) {
	rec := &Recorder{}
	e := f.New(t, rec)
	const ch = "chat:deliver"
	mustSubscribe(t, e, ch)
	var epoch string
	for i := 1; i <= 20; i++ {
		p := Pub(ch, fmt.Sprint(i))
		p.Tags = map[string]string{"k": fmt.Sprint(i)}
		p.TimeUnixMs = int64(1000 + i)
		res := mustPublish(t, e, p, withHistory)
		if i == 1 {
			epoch = res.Position.Epoch
		}
		if res.Position.Offset != uint64(i) || p.Offset != uint64(i) || p.Epoch != epoch || res.Position.Epoch != epoch || res.Duplicate {
			t.Fatalf("publish %d: %v dup=%v pub %d %q", i, res.Position, res.Duplicate, p.Offset, p.Epoch)
		}
	}
	WaitFor(t, "20 deliveries", func() bool { return len(rec.Pubs(ch)) >= 20 })
	got := rec.Pubs(ch)
	if len(got) != 20 {
		t.Fatalf("%d deliveries, want 20", len(got))
	}
	for i, p := range got {
		if p.Offset != uint64(i+1) || p.Epoch != epoch || p.Channel != ch || string(p.GetRawJson()) != strconv.Quote(fmt.Sprint(i+1)) ||
			p.Tags["k"] != fmt.Sprint(i+1) || p.TimeUnixMs != int64(1001+i) {
			t.Fatalf("delivery %d = %v", i, p)
		}
	}
	// An unsubscribed channel of the same engine is not delivered.
	mustPublish(t, e, Pub("chat:nobody", "x"), withHistory)
	checkNoViolation(t, rec)
}

// Publishers on many goroutines to a few channels: every channel's
// deliveries are its offsets 1..n in order, one at a time.
func testConcurrentOrder(t *testing.T, f Factory) {
	rec := &Recorder{}
	e := f.New(t, rec)
	const channels, publishers, each = 8, 8, 40
	for c := range channels {
		mustSubscribe(t, e, fmt.Sprintf("chat:order%d", c))
	}
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ch := fmt.Sprintf("chat:order%d", (p+i)%channels)
				if _, err := e.Publish(ctx, Pub(ch, fmt.Sprint(p, i)), withHistory); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := publishers * each
	WaitFor(t, "every delivery", func() bool { return len(rec.Pubs("")) >= total })
	for c := range channels {
		ch := fmt.Sprintf("chat:order%d", c)
		for i, p := range rec.Pubs(ch) {
			if p.Offset != uint64(i+1) {
				t.Fatalf("%s: delivery %d has offset %d", ch, i, p.Offset)
			}
		}
	}
	checkNoViolation(t, rec)
}

// A publish with an idempotency key seen within the window answers the
// first position, as a duplicate, and delivers nothing.
func testIdempotency(t *testing.T, f Factory) {
	rec := &Recorder{}
	e := f.New(t, rec)
	const ch = "chat:idem"
	mustSubscribe(t, e, ch)
	keyed := engine.PublishOptions{HistorySize: 3, HistoryTTL: time.Minute, IdempotencyKey: "k1", DedupeWindow: time.Minute}
	r1 := mustPublish(t, e, Pub(ch, "once"), keyed)
	r2 := mustPublish(t, e, Pub(ch, "once"), keyed)
	if r1.Duplicate || !r2.Duplicate || r2.Position.Offset != r1.Position.Offset || r2.Position.Epoch != r1.Position.Epoch {
		t.Fatalf("first %v dup=%v, retry %v dup=%v", r1.Position, r1.Duplicate, r2.Position, r2.Duplicate)
	}
	other := keyed
	other.IdempotencyKey = "k2"
	if r3 := mustPublish(t, e, Pub(ch, "other"), other); r3.Duplicate || r3.Position.Offset != r1.Position.Offset+1 {
		t.Fatalf("another key: %v dup=%v", r3.Position, r3.Duplicate)
	}
	// Without a window the key is not remembered.
	nowindow := engine.PublishOptions{IdempotencyKey: "k3"}
	mustPublish(t, e, Pub(ch, "a"), nowindow)
	if r := mustPublish(t, e, Pub(ch, "a"), nowindow); r.Duplicate {
		t.Fatal("a key without a dedupe window was remembered")
	}
	WaitFor(t, "4 deliveries", func() bool { return len(rec.Pubs(ch)) >= 4 })
	time.Sleep(50 * time.Millisecond) // a stray duplicate would come right behind
	if n := len(rec.Pubs(ch)); n != 4 {
		t.Fatalf("%d deliveries, want 4 (the retry must not be delivered)", n)
	}
}

// History pages: size 3 keeps the last three; since, limit, reverse and
// offsets no channel has.
func testHistoryPages(t *testing.T, f Factory) {
	e := f.New(t, Nop{})
	const ch = "chat:pages"
	var epoch string
	for i := 1; i <= 6; i++ {
		epoch = mustPublish(t, e, Pub(ch, fmt.Sprint(i)), withHistory).Position.Epoch
	}
	pos := func(o uint64) *heraldv1.StreamPosition { return &heraldv1.StreamPosition{Offset: o, Epoch: epoch} }
	cases := []struct {
		name string
		q    engine.HistoryQuery
		want []uint64
	}{
		{"all", engine.HistoryQuery{Limit: 10}, []uint64{4, 5, 6}},
		{"no epoch", engine.HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 4}, Limit: 10}, []uint64{5, 6}},
		{"since 4", engine.HistoryQuery{Since: pos(4), Limit: 10}, []uint64{5, 6}},
		{"since 4 limit 1", engine.HistoryQuery{Since: pos(4), Limit: 1}, []uint64{5}},
		{"since 1 (trimmed)", engine.HistoryQuery{Since: pos(1), Limit: 10}, []uint64{4, 5, 6}},
		{"since top", engine.HistoryQuery{Since: pos(6), Limit: 10}, nil},
		{"since beyond", engine.HistoryQuery{Since: pos(1 << 62), Limit: 10}, nil},
		// Offsets no channel has (the API refuses them) must not
		// overflow an engine's arithmetic either.
		{"since 2^63", engine.HistoryQuery{Since: pos(1 << 63), Limit: 10}, nil},
		{"since 2^64-1", engine.HistoryQuery{Since: pos(math.MaxUint64), Limit: 10}, nil},
		{"reverse since 2^63", engine.HistoryQuery{Since: pos(1 << 63), Limit: 10, Reverse: true}, []uint64{6, 5, 4}},
		{"reverse since 2^64-1", engine.HistoryQuery{Since: pos(math.MaxUint64), Limit: 2, Reverse: true}, []uint64{6, 5}},
		{"reverse", engine.HistoryQuery{Limit: 2, Reverse: true}, []uint64{6, 5}},
		{"reverse since 6", engine.HistoryQuery{Since: pos(6), Limit: 10, Reverse: true}, []uint64{5, 4}},
		{"reverse since 1", engine.HistoryQuery{Since: pos(1), Limit: 10, Reverse: true}, nil},
		{"limit 0", engine.HistoryQuery{}, nil},
	}
	for _, c := range cases {
		res, err := e.History(ctx, ch, c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []uint64
		for _, p := range res.Publications {
			got = append(got, p.Offset)
			if p.Epoch != epoch || p.Channel != ch || string(p.GetRawJson()) != strconv.Quote(fmt.Sprint(p.Offset)) {
				t.Fatalf("%s: publication %v", c.name, p)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) || res.Oldest != 4 || res.Position.Offset != 6 || res.Position.Epoch != epoch {
			t.Fatalf("%s: got %v oldest %d pos %v, want %v oldest 4 pos 6", c.name, got, res.Oldest, res.Position, c.want)
		}
	}
	if _, err := e.History(ctx, ch, engine.HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 1, Epoch: "other"}, Limit: 10}); !errors.Is(err, engine.ErrEpochMismatch) {
		t.Fatalf("other epoch: err = %v", err)
	}
}

// Without history, offsets still count and nothing is retained.
func testNoHistory(t *testing.T, f Factory) {
	e := f.New(t, Nop{})
	for i := 1; i <= 3; i++ {
		if res := mustPublish(t, e, Pub("nohist", "x"), engine.PublishOptions{}); res.Position.Offset != uint64(i) {
			t.Fatalf("publish without history: %v", res.Position)
		}
	}
	h, err := e.History(ctx, "nohist", engine.HistoryQuery{Limit: 10})
	if err != nil || len(h.Publications) != 0 || h.Oldest != 0 || h.Position.Offset != 3 {
		t.Fatalf("history without history: %+v %v", h, err)
	}
	// History turned off later drops what was kept.
	mustPublish(t, e, Pub("later", "1"), withHistory)
	mustPublish(t, e, Pub("later", "2"), engine.PublishOptions{})
	if h, err := e.History(ctx, "later", engine.HistoryQuery{Limit: 10}); err != nil || len(h.Publications) != 0 || h.Position.Offset != 2 {
		t.Fatalf("history after it was turned off: %+v %v", h, err)
	}
}

// Presence: entries listed sorted by client, join and leave events when
// asked, none otherwise; removing an absent client is no error.
func testPresence(t *testing.T, f Factory) {
	rec := &Recorder{}
	e := f.New(t, rec)
	const ch = "chat:who"
	mustSubscribe(t, e, ch)
	alice := &heraldv1.ClientInfo{Client: "c1", User: "alice", Info: structpb.NewStringValue("n1")}
	bob := &heraldv1.ClientInfo{Client: "c2", User: "bob"}
	quiet := &heraldv1.ClientInfo{Client: "c3", User: "quiet"}
	for _, c := range []*heraldv1.ClientInfo{bob, alice} {
		if err := e.AddPresence(ctx, ch, c, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.AddPresence(ctx, ch, quiet, false); err != nil {
		t.Fatal(err)
	}
	got, err := e.Presence(ctx, ch)
	if err != nil || len(got) != 3 || got[0].Client != "c1" || got[0].Info.GetStringValue() != "n1" || got[1].User != "bob" || got[2].Client != "c3" {
		t.Fatalf("presence = %v, %v", got, err)
	}
	for _, c := range []*heraldv1.ClientInfo{bob, quiet} {
		if err := e.RemovePresence(ctx, ch, c, c != quiet); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.RemovePresence(ctx, ch, &heraldv1.ClientInfo{Client: "absent"}, true); err != nil {
		t.Fatalf("removing an absent client: %v", err)
	}
	got, _ = e.Presence(ctx, ch)
	if len(got) != 1 || got[0].Client != "c1" {
		t.Fatalf("presence after leaves = %v", got)
	}
	WaitFor(t, "join and leave events", func() bool { return len(rec.Joins()) >= 2 && len(rec.Leaves()) >= 1 })
	time.Sleep(50 * time.Millisecond) // a stray event would come right behind
	joins, leaves := rec.Joins(), rec.Leaves()
	var names []string
	for _, j := range joins {
		names = append(names, j.Client.Client)
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[c1 c2]" || len(leaves) != 1 || leaves[0].Client.Client != "c2" || leaves[0].Channel != ch {
		t.Fatalf("joins %v, leaves %v: want joins of c1 and c2 and one leave of c2", joins, leaves)
	}
	if got, err := e.Presence(ctx, "chat:nobody"); err != nil || len(got) != 0 {
		t.Fatalf("presence of an empty channel: %v %v", got, err)
	}
}

// Commands reach the handler of the node that sent them.
func testCommands(t *testing.T, f Factory) {
	rec := &Recorder{}
	e := f.New(t, rec)
	for _, u := range []string{"alice", "bob", "carol"} {
		cmd := &heraldv1.BridgeSessionResponse{Msg: &heraldv1.BridgeSessionResponse_Disconnect{Disconnect: &heraldv1.DisconnectRequest{User: u}}}
		if err := e.Command(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	WaitFor(t, "three commands", func() bool { return len(rec.Commands()) >= 3 })
	var users []string
	for _, c := range rec.Commands() {
		users = append(users, c.GetDisconnect().GetUser())
	}
	sort.Strings(users)
	if fmt.Sprint(users) != "[alice bob carol]" {
		t.Fatalf("commands for %v", users)
	}
}

// Channels lists channels with history or presence, with their position
// and client count.
func testChannels(t *testing.T, f Factory) {
	e := f.New(t, Nop{})
	var epoch string
	for range 6 {
		epoch = mustPublish(t, e, Pub("chat:listed", "x"), withHistory).Position.Epoch
	}
	if err := e.AddPresence(ctx, "chat:listed", &heraldv1.ClientInfo{Client: "c1"}, false); err != nil {
		t.Fatal(err)
	}
	if err := e.AddPresence(ctx, "chat:present", &heraldv1.ClientInfo{Client: "c2"}, false); err != nil {
		t.Fatal(err)
	}
	states, more, err := e.Channels(ctx, engine.ChannelsQuery{})
	if err != nil || more {
		t.Fatal(more, err)
	}
	byName := map[string]engine.ChannelState{}
	for _, st := range states {
		byName[st.Name] = st
	}
	if st, ok := byName["chat:listed"]; !ok || st.Position.Offset != 6 || st.Position.Epoch != epoch || st.Clients != 1 {
		t.Fatalf("chat:listed = %+v (listed %v)", st, ok)
	}
	if st, ok := byName["chat:present"]; !ok || st.Clients != 1 || st.Position.Offset != 0 {
		t.Fatalf("chat:present = %+v (listed %v)", st, ok)
	}

	// In name order, as many as asked for, those the query selects.
	for _, i := range []int{3, 0, 4, 1, 2} {
		mustPublish(t, e, Pub(fmt.Sprintf("chat:p-%02d", i), "x"), withHistory)
	}
	mustPublish(t, e, Pub("chat:q-00", "x"), withHistory)
	list := func(q engine.ChannelsQuery) (string, bool) {
		t.Helper()
		names, more := ChannelNames(t, e, q)
		return strings.Join(names, " "), more
	}
	odd := func(name string) bool { return name[len(name)-1]%2 == 1 }
	for _, tc := range []struct {
		q    engine.ChannelsQuery
		want string
		more bool
	}{
		{engine.ChannelsQuery{Prefix: "chat:p-", Limit: 2}, "chat:p-00 chat:p-01", true},
		{engine.ChannelsQuery{Prefix: "chat:p-", After: "chat:p-01", Limit: 2}, "chat:p-02 chat:p-03", true},
		{engine.ChannelsQuery{Prefix: "chat:p-", After: "chat:p-03", Limit: 2}, "chat:p-04", false},
		{engine.ChannelsQuery{Prefix: "chat:p-"}, "chat:p-00 chat:p-01 chat:p-02 chat:p-03 chat:p-04", false},
		{engine.ChannelsQuery{Prefix: "chat:p-", Keep: odd, Limit: 1}, "chat:p-01", true},
		{engine.ChannelsQuery{Prefix: "chat:p-", Keep: odd, After: "chat:p-01", Limit: 1}, "chat:p-03", false},
		{engine.ChannelsQuery{After: "chat:p-04", Limit: 5}, "chat:present chat:q-00", false},
		{engine.ChannelsQuery{Prefix: "chat:p-", After: "chat:a"}, "chat:p-00 chat:p-01 chat:p-02 chat:p-03 chat:p-04", false},
		{engine.ChannelsQuery{Prefix: "chat:p-", After: "chat:z"}, "", false},
		{engine.ChannelsQuery{}, "chat:listed chat:p-00 chat:p-01 chat:p-02 chat:p-03 chat:p-04 chat:present chat:q-00", false},
	} {
		if got, more := list(tc.q); got != tc.want || more != tc.more {
			t.Fatalf("Channels(after %q, prefix %q, keep %v, limit %d) = %q, more %v; want %q, more %v",
				tc.q.After, tc.q.Prefix, tc.q.Keep != nil, tc.q.Limit, got, more, tc.want, tc.more)
		}
	}
}

// Subscribe and Unsubscribe are counted: while one Subscribe is not undone
// the channel is delivered, whatever the churn of the others; many
// channels subscribe at once.
func testSubscribeRefcount(t *testing.T, f Factory) {
	rec := &Recorder{}
	e := f.New(t, rec)
	const ch = "chat:refs"
	mustSubscribe(t, e, ch)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if err := e.Subscribe(ctx, ch); err != nil {
					t.Error(err)
					return
				}
				_ = e.Unsubscribe(ctx, ch)
			}
		}()
	}
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.Subscribe(ctx, fmt.Sprintf("chat:many%d", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Whatever the churn sent last, publications keep coming.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		mustPublish(t, e, Pub(ch, "still here"), engine.PublishOptions{})
		time.Sleep(100 * time.Millisecond)
	}
	n := len(rec.Pubs(ch))
	mustPublish(t, e, Pub(ch, "last"), engine.PublishOptions{})
	WaitFor(t, "delivery after the churn", func() bool { return len(rec.Pubs(ch)) > n })
	for i := range 200 {
		mustPublish(t, e, Pub(fmt.Sprintf("chat:many%d", i), "x"), engine.PublishOptions{})
	}
	WaitFor(t, "one delivery on each of 200 channels", func() bool {
		seen := map[string]bool{}
		for _, p := range rec.Pubs("") {
			seen[p.Channel] = true
		}
		return len(seen) == 201
	})
	for i := range 200 {
		_ = e.Unsubscribe(ctx, fmt.Sprintf("chat:many%d", i))
	}
}

// An engine that publishes in batches keeps each channel's order, answers
// each publication on its own, and delivers like Publish.
func testBatchPublish(t *testing.T, f Factory) {
	rec := &Recorder{}
	e := f.New(t, rec)
	b, ok := e.(engine.BatchPublisher)
	if !ok {
		t.Skip("the engine does not publish in batches")
	}
	mustSubscribe(t, e, "chat:b0")
	mustSubscribe(t, e, "chat:b1")
	var pubs []*heraldv1.Publication
	var opts []engine.PublishOptions
	for i := range 300 {
		pubs = append(pubs, Pub(fmt.Sprintf("chat:b%d", i%2), fmt.Sprint(i)))
		o := withHistory
		if i == 150 {
			o.IdempotencyKey = "same"
		}
		if i == 152 {
			o.IdempotencyKey = "same" // a duplicate within the batch
		}
		opts = append(opts, o)
	}
	results, errs := b.PublishBatch(ctx, pubs, opts)
	last := map[string]uint64{}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("publication %d: %v", i, errs[i])
		}
		ch := pubs[i].Channel
		if i == 152 {
			if !r.Duplicate || r.Position.Offset != results[150].Position.Offset {
				t.Fatalf("duplicate in a batch: %v dup=%v, first %v", r.Position, r.Duplicate, results[150].Position)
			}
			continue
		}
		if r.Duplicate || r.Position.Offset != last[ch]+1 || pubs[i].Offset != r.Position.Offset {
			t.Fatalf("publication %d on %s: %v after %d", i, ch, r.Position, last[ch])
		}
		last[ch] = r.Position.Offset
	}
	WaitFor(t, "299 deliveries", func() bool { return len(rec.Pubs("")) >= 299 })
	for _, ch := range []string{"chat:b0", "chat:b1"} {
		for i, p := range rec.Pubs(ch) {
			if p.Offset != uint64(i+1) {
				t.Fatalf("%s: delivery %d has offset %d", ch, i, p.Offset)
			}
		}
	}
	checkNoViolation(t, rec)
}

// Two nodes on shared state: one order, one history, one dedupe window,
// one presence; commands and events reach both.
func testAcrossNodes(t *testing.T, f Factory) {
	ra, rb := &Recorder{}, &Recorder{}
	a := f.New(t, ra)
	b := f.Peer(t, a, rb)
	const ch = "chat:shared"
	mustSubscribe(t, a, ch)
	mustSubscribe(t, b, ch)
	var wg sync.WaitGroup
	for _, e := range []engine.Engine{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := e.Publish(ctx, Pub(ch, fmt.Sprint(i)), withHistory); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	WaitFor(t, "100 deliveries on both nodes", func() bool { return len(ra.Pubs(ch)) >= 100 && len(rb.Pubs(ch)) >= 100 })
	pa, pb := ra.Pubs(ch), rb.Pubs(ch)
	for i := range pa {
		if pa[i].Offset != uint64(i+1) || pb[i].Offset != pa[i].Offset || string(pb[i].GetRawJson()) != string(pa[i].GetRawJson()) {
			t.Fatalf("delivery %d: %v on A, %v on B", i, pa[i], pb[i])
		}
	}
	h, err := b.History(ctx, ch, engine.HistoryQuery{Limit: 10})
	if err != nil || len(h.Publications) != 3 || h.Position.Offset != 100 {
		t.Fatalf("history on B: %+v %v", h, err)
	}
	keyed := engine.PublishOptions{HistorySize: 3, HistoryTTL: time.Minute, IdempotencyKey: "order-42", DedupeWindow: time.Minute}
	r1 := mustPublish(t, a, Pub(ch, "once"), keyed)
	if r2 := mustPublish(t, b, Pub(ch, "once"), keyed); !r2.Duplicate || r2.Position.Offset != r1.Position.Offset {
		t.Fatalf("retry on B: %v dup=%v, first %v", r2.Position, r2.Duplicate, r1.Position)
	}
	if err := a.AddPresence(ctx, ch, &heraldv1.ClientInfo{Client: "a1", User: "u1"}, true); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Presence(ctx, ch); err != nil || len(got) != 1 || got[0].Client != "a1" {
		t.Fatalf("presence on B: %v %v", got, err)
	}
	WaitFor(t, "the join on B", func() bool { return len(rb.Joins()) == 1 })
	cmd := &heraldv1.BridgeSessionResponse{Msg: &heraldv1.BridgeSessionResponse_Disconnect{Disconnect: &heraldv1.DisconnectRequest{User: "u1"}}}
	if err := b.Command(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "the command on both nodes", func() bool { return len(ra.Commands()) == 1 && len(rb.Commands()) == 1 })
	checkNoViolation(t, ra)
	checkNoViolation(t, rb)
}

// The empty epoch is the same on every node, and a position read on one
// resumes on another.
func testEmptyEpochAcrossNodes(t *testing.T, f Factory) {
	a := f.New(t, Nop{})
	b := f.Peer(t, a, Nop{})
	for _, ch := range []string{"chat:e1", "chat:e2", "other"} {
		pa, err := a.History(ctx, ch, engine.HistoryQuery{})
		if err != nil {
			t.Fatal(err)
		}
		pb, err := b.History(ctx, ch, engine.HistoryQuery{})
		if err != nil || pb.Position.Epoch != pa.Position.Epoch {
			t.Fatalf("%s: empty epoch %q on A, %q on B (%v)", ch, pa.Position.Epoch, pb.Position.Epoch, err)
		}
		mustPublish(t, a, Pub(ch, "1"), withHistory)
		if res, err := b.History(ctx, ch, engine.HistoryQuery{Since: pa.Position, Limit: 10}); err != nil || len(res.Publications) != 1 {
			t.Fatalf("%s: resume on B from A's empty position: %+v %v", ch, res, err)
		}
	}
}
