package memory

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// startedMemoryEngine returns a memory engine on clock whose sweep the
// test runs by hand (Start's ticker is not started).
func startedMemoryEngine(t *testing.T, clock *testClock, opts Options) *Engine {
	t.Helper()
	e := newEngine(clock.now, opts)
	e.h = enginetest.Nop{}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// ringLen is the length of a channel's history ring (0 without state).
func (e *Engine) ringLen(channel string) int {
	c := e.channel(channel, false)
	if c == nil {
		return 0
	}
	defer c.mu.Unlock()
	return len(c.ring)
}

// held reports whether the engine holds an entry for channel.
func (e *Engine) held(channel string) bool {
	c := e.channel(channel, false)
	if c != nil {
		c.mu.Unlock()
	}
	return c != nil
}

// TestMemoryHistoryGrowsLazily is issue 9, item 9: the history ring of a
// channel grows with its publications (doubling, up to history_size) and
// shrinks when they expire, instead of being allocated at history_size on
// the first publication.
func TestMemoryHistoryGrowsLazily(t *testing.T) {
	clock := newTestClock()
	e := startedMemoryEngine(t, clock, Options{})
	ctx := context.Background()
	opts := engine.PublishOptions{HistorySize: 100_000, HistoryTTL: time.Minute}
	for i, want := range []int{1, 2, 4, 4, 8} {
		if _, err := e.Publish(ctx, enginetest.Pub("big", fmt.Sprint(i)), opts); err != nil {
			t.Fatal(err)
		}
		if got := e.ringLen("big"); got != want {
			t.Fatalf("after %d publications the ring holds %d entries, want %d", i+1, got, want)
		}
	}
	clock.advance(2 * time.Minute) // all five expire
	e.sweep()
	if got := e.ringLen("big"); got != 0 {
		t.Fatalf("after the history TTL the ring holds %d entries, want 0", got)
	}
	// A ring mostly expired shrinks.
	for i := range 64 {
		if _, err := e.Publish(ctx, enginetest.Pub("big", fmt.Sprint(i)), opts); err != nil {
			t.Fatal(err)
		}
	}
	clock.advance(50 * time.Second)
	for i := range 3 {
		if _, err := e.Publish(ctx, enginetest.Pub("big", fmt.Sprint(i)), opts); err != nil {
			t.Fatal(err)
		}
	}
	clock.advance(20 * time.Second) // the 64 expire, the 3 stay
	e.sweep()
	if got := e.ringLen("big"); got > 8 {
		t.Fatalf("3 entries left in a ring of %d", got)
	}
	res, err := e.History(ctx, "big", engine.HistoryQuery{Limit: 10})
	if err != nil || len(res.Publications) != 3 || res.Oldest != 70 || res.Position.Offset != 72 {
		t.Fatalf("history after shrinking: %+v %v", res, err)
	}
}

// TestMemoryHistoryModel checks the ring against a plain list, through
// growth, wrap-around, expiry and shrinking, for every query shape.
func TestMemoryHistoryModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	for size := 1; size <= 9; size++ {
		clock := newTestClock()
		e := startedMemoryEngine(t, clock, Options{})
		type entry struct {
			offset uint64
			at     time.Time
		}
		var model []entry         // what the channel should retain
		steps := map[uint64]int{} // offset -> the step that published it
		var top uint64
		ttl := 10 * time.Second
		for step := range 200 {
			switch rng.IntN(4) {
			case 0:
				clock.advance(time.Duration(rng.IntN(4000)) * time.Millisecond)
			default:
				pub := enginetest.Pub("m", fmt.Sprint(step))
				if step%3 != 0 {
					// Kept as its payload and time; the others with
					// tags, kept encoded.
					pub.TimeUnixMs = clock.now().UnixMilli()
				} else {
					pub.Tags = map[string]string{"step": fmt.Sprint(step)}
				}
				res, err := e.Publish(ctx, pub, engine.PublishOptions{HistorySize: size, HistoryTTL: ttl})
				if err != nil {
					t.Fatal(err)
				}
				top = res.Position.Offset
				steps[top] = step
				model = append(model, entry{top, clock.now()})
				if len(model) > size {
					model = model[1:]
				}
			}
			if rng.IntN(5) == 0 {
				e.sweep()
			}
			for len(model) > 0 && clock.now().Sub(model[0].at) > ttl {
				model = model[1:]
			}
			var oldest uint64
			if len(model) > 0 {
				oldest = model[0].offset
			}
			since := uint64(rng.IntN(int(top) + 3))
			limit := 1 + rng.IntN(size+2)
			for _, reverse := range []bool{false, true} {
				var want []uint64
				for i := range model {
					m := model[i]
					if reverse {
						m = model[len(model)-1-i]
					}
					if (!reverse && m.offset > since || reverse && m.offset < since) && len(want) < limit {
						want = append(want, m.offset)
					}
				}
				res, err := e.History(ctx, "m", engine.HistoryQuery{Since: &heraldv1.StreamPosition{Offset: since}, Limit: limit, Reverse: reverse})
				if err != nil {
					t.Fatal(err)
				}
				var got []uint64
				for _, p := range res.Publications {
					got = append(got, p.Offset)
					// History sets the offset from the entry's place in
					// the ring: the payload must be the one published
					// at that offset, the channel and epoch the
					// channel's.
					if want := strconv.Quote(fmt.Sprint(steps[p.Offset])); string(p.GetRawJson()) != want || p.Channel != "m" || p.Epoch != res.Position.Epoch ||
						(steps[p.Offset]%3 == 0) != (p.TimeUnixMs == 0) || (steps[p.Offset]%3 == 0) != (p.Tags["step"] == fmt.Sprint(steps[p.Offset])) {
						t.Fatalf("size %d step %d: offset %d carries %s (time %d) on %q in epoch %q, want %s of step %d on \"m\" in %q",
							size, step, p.Offset, p.GetRawJson(), p.TimeUnixMs, p.Channel, p.Epoch, want, steps[p.Offset], res.Position.Epoch)
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(want) || res.Oldest != oldest || res.Position.Offset != top {
					t.Fatalf("size %d step %d since %d limit %d reverse %v: got %v oldest %d top %d, want %v oldest %d top %d",
						size, step, since, limit, reverse, got, res.Oldest, res.Position.Offset, want, oldest, top)
				}
			}
		}
	}
}

// TestMemoryIdleChannelsForgotten is the schedule of issue 9, item 9, as
// docs/operations.md states it: a channel's state is forgotten at the
// first sweep after it has had no subscription, no presence, no history
// and no idempotency key left, and no publication for 10 minutes (its
// history TTL if longer); the gauge of channels held follows.
func TestMemoryIdleChannelsForgotten(t *testing.T) {
	clock := newTestClock()
	e := startedMemoryEngine(t, clock, Options{})
	ctx := context.Background()
	opts := engine.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	for _, ch := range []string{"idle", "subscribed", "keyed", "present"} {
		o := opts
		if ch == "keyed" {
			o.IdempotencyKey, o.DedupeWindow = "k", 15*time.Minute
		}
		if _, err := e.Publish(ctx, enginetest.Pub(ch, "x"), o); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Subscribe(ctx, "subscribed"); err != nil {
		t.Fatal(err)
	}
	if err := e.AddPresence(ctx, "present", &heraldv1.ClientInfo{Client: "c1"}, false); err != nil {
		t.Fatal(err)
	}
	if got := e.channels.Load(); got != 4 {
		t.Fatalf("%d channels with state, want 4", got)
	}
	clock.advance(9 * time.Minute)
	e.sweep()
	if !e.held("idle") {
		t.Fatal("forgotten before 10 minutes")
	}
	clock.advance(time.Minute + time.Second)
	e.sweep()
	for ch, want := range map[string]bool{"idle": false, "subscribed": true, "keyed": true, "present": true} {
		if e.held(ch) != want {
			t.Errorf("%s held = %v after 10 minutes idle, want %v", ch, !want, want)
		}
	}
	clock.advance(5 * time.Minute) // the key's 15-minute window passed
	_ = e.Unsubscribe(ctx, "subscribed")
	_ = e.RemovePresence(ctx, "present", &heraldv1.ClientInfo{Client: "c1"}, false)
	e.sweep()
	if e.held("keyed") {
		t.Error("a channel whose idempotency key expired is still held")
	}
	clock.advance(10*time.Minute + time.Second) // idle since the unsubscribe and leave
	e.sweep()
	if e.held("subscribed") || e.held("present") || e.channels.Load() != 0 {
		t.Errorf("still held: subscribed %v, present %v, %d channels", e.held("subscribed"), e.held("present"), e.channels.Load())
	}
}

// TestMemoryReadsCreateNoState is issue 9, items 9 and 12, for the memory
// engine: reading a channel that has no state (History, Presence) leaves
// nothing behind, and a subscription holds only an entry that goes with
// it. The epoch such a channel reports is stable across reads.
func TestMemoryReadsCreateNoState(t *testing.T) {
	clock := newTestClock()
	e := startedMemoryEngine(t, clock, Options{})
	ctx := context.Background()
	var epoch string
	for i := range 20_000 {
		ch := fmt.Sprintf("never:%d", i)
		res, err := e.History(ctx, ch, engine.HistoryQuery{Limit: 10})
		if err != nil || res.Position.Offset != 0 {
			t.Fatalf("history: %+v %v", res, err)
		}
		if epoch == "" {
			epoch = res.Position.Epoch
		} else if res.Position.Epoch != epoch {
			t.Fatalf("empty epoch %q, then %q", epoch, res.Position.Epoch)
		}
		if _, err := e.Presence(ctx, ch); err != nil {
			t.Fatal(err)
		}
		_ = e.Subscribe(ctx, ch)
		_ = e.Unsubscribe(ctx, ch)
	}
	n := 0
	for i := range e.shards {
		n += len(e.shards[i].chans)
	}
	if n != 0 || e.channels.Load() != 0 {
		t.Fatalf("%d entries and %d channels with state after reads only", n, e.channels.Load())
	}
}

// TestMemoryEmptyEpochResumes: a position read from a channel without
// state resumes into the state begun in the same period, and never across
// a life of the state it did not see (another period, or another
// process).
func TestMemoryEmptyEpochResumes(t *testing.T) {
	ctx := context.Background()
	opts := engine.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	resume := func(e *Engine, ch string, since *heraldv1.StreamPosition) error {
		_, err := e.History(ctx, ch, engine.HistoryQuery{Since: since, Limit: 10})
		return err
	}
	empty := func(e *Engine, ch string) *heraldv1.StreamPosition {
		res, err := e.History(ctx, ch, engine.HistoryQuery{})
		if err != nil || res.Position.Offset != 0 {
			t.Fatalf("empty position: %+v %v", res, err)
		}
		return res.Position
	}
	clock := newTestClock()
	e := startedMemoryEngine(t, clock, Options{})

	// Read, then the first publication in the same period: continues.
	pos := empty(e, "a")
	clock.advance(time.Second)
	if _, err := e.Publish(ctx, enginetest.Pub("a", "1"), opts); err != nil {
		t.Fatal(err)
	}
	if err := resume(e, "a", pos); err != nil {
		t.Fatalf("resume into the state begun in the same period: %v", err)
	}
	// A position of a later offset in that empty epoch is not one.
	if err := resume(e, "a", &heraldv1.StreamPosition{Offset: 1, Epoch: pos.Epoch}); !errors.Is(err, engine.ErrEpochMismatch) {
		t.Fatalf("offset 1 of the empty epoch: %v, want engine.ErrEpochMismatch", err)
	}

	// Read; the state begins and is forgotten; read again: not continued.
	pos = empty(e, "b")
	if _, err := e.Publish(ctx, enginetest.Pub("b", "1"), opts); err != nil {
		t.Fatal(err)
	}
	clock.advance(idleFor + sweepEvery)
	e.sweep()
	if e.held("b") {
		t.Fatal("b still held")
	}
	if err := resume(e, "b", pos); !errors.Is(err, engine.ErrEpochMismatch) {
		t.Fatalf("resume across a forgotten life of b's state: %v, want engine.ErrEpochMismatch", err)
	}

	// Read; the state begins in a later period: not continued.
	pos = empty(e, "c")
	clock.advance(idleFor)
	if _, err := e.Publish(ctx, enginetest.Pub("c", "1"), opts); err != nil {
		t.Fatal(err)
	}
	if err := resume(e, "c", pos); !errors.Is(err, engine.ErrEpochMismatch) {
		t.Fatalf("resume into state begun a period later: %v, want engine.ErrEpochMismatch", err)
	}

	// Another process (restart): another era.
	pos = empty(e, "d")
	other := startedMemoryEngine(t, clock, Options{})
	if err := resume(other, "d", pos); !errors.Is(err, engine.ErrEpochMismatch) {
		t.Fatalf("resume on another engine: %v, want engine.ErrEpochMismatch", err)
	}
}

// TestMemoryIdempotencyKeysExpire is issue 9, item 10: idempotency keys
// are forgotten by the sweep once their window passed, not only when the
// next keyed publish of their channel comes (600,000 keys used to stay
// until then), and the count of keys held follows.
func TestMemoryIdempotencyKeysExpire(t *testing.T) {
	clock := newTestClock()
	e := startedMemoryEngine(t, clock, Options{})
	ctx := context.Background()
	window := 2 * time.Minute
	publish := func(ch, key string) engine.PublishResult {
		t.Helper()
		res, err := e.Publish(ctx, enginetest.Pub(ch, key), engine.PublishOptions{IdempotencyKey: key, DedupeWindow: window})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for i := range 1000 {
		publish(fmt.Sprintf("keys:%d", i%10), fmt.Sprint(i))
	}
	clock.advance(window / 2)
	if res := publish("keys:3", "3"); !res.Duplicate || res.Position.Offset != 1 {
		t.Fatalf("retry within the window: %+v", res)
	}
	if e.keys.Load() != 1000 {
		t.Fatalf("%d keys held, want 1000", e.keys.Load())
	}
	clock.advance(window/2 + time.Second)
	e.sweep()
	held := 0
	for i := range 10 {
		c := e.channel(fmt.Sprintf("keys:%d", i), false)
		if c == nil {
			continue
		}
		if c.dd != nil {
			held += len(c.dd.offsets) + len(c.dd.order)
		}
		c.mu.Unlock()
	}
	if held != 0 || e.keys.Load() != 0 {
		t.Fatalf("after the window and a sweep: %d keys in maps and lists, %d counted, want none", held, e.keys.Load())
	}
	if res := publish("keys:3", "3"); res.Duplicate {
		t.Fatalf("a key past its window is still a duplicate: %+v", res)
	}
}

// TestMemoryRetainedHistoryIsCompact: a retained publication is one heap
// object without pointers, not a decoded message (four objects, 268 bytes
// for a 67-byte payload, all of which every collection scanned). 20,000
// publications retained on 200 channels.
func TestMemoryRetainedHistoryIsCompact(t *testing.T) {
	const channels, perChannel = 200, 100
	ctx := context.Background()
	clock := newTestClock()
	e := startedMemoryEngine(t, clock, Options{})
	payload := `{"type":"notification","id":1234567,"text":"hello there, 64 bytes"}`
	opts := engine.PublishOptions{HistorySize: perChannel, HistoryTTL: time.Hour}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for range perChannel {
		for c := range channels {
			pub := &heraldv1.Publication{Channel: "user:" + strconv.Itoa(c), Payload: &heraldv1.Publication_RawJson{RawJson: []byte(payload)}, TimeUnixMs: clock.now().UnixMilli()}
			if _, err := e.Publish(ctx, pub, opts); err != nil {
				t.Fatal(err)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	n := float64(channels * perChannel)
	objects := (float64(m1.HeapObjects) - float64(m0.HeapObjects)) / n
	bytes := (float64(m1.HeapAlloc) - float64(m0.HeapAlloc)) / n
	t.Logf("%.2f heap objects, %.0f bytes per retained publication", objects, bytes)
	if objects > 1.5 || bytes > float64(len(payload))+96 {
		t.Fatalf("%.2f heap objects and %.0f bytes per retained publication of a %d-byte payload, want at most 1.5 and %d",
			objects, bytes, len(payload), len(payload)+96)
	}
	res, err := e.History(ctx, "user:7", engine.HistoryQuery{Limit: perChannel})
	if err != nil || len(res.Publications) != perChannel || string(res.Publications[99].GetRawJson()) != payload {
		t.Fatalf("history of user:7: %d publications, %v", len(res.Publications), err)
	}
	runtime.KeepAlive(e)
}

// TestMemoryHistoryKeepsEveryField: what History returns is the
// publication as published, whichever way its entry keeps it (a plain
// payload and time as the payload's bytes, anything else encoded), and
// the plain ones take the way without encoding.
func TestMemoryHistoryKeepsEveryField(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	e := startedMemoryEngine(t, clock, Options{})
	ms := clock.now().UnixMilli()
	big := make([]byte, 64<<10)
	copy(big[1000:], `{"in":"a large buffer"}`)
	value, err := structpb.NewValue(map[string]any{"n": 1.5})
	if err != nil {
		t.Fatal(err)
	}
	raw := func(s string) *heraldv1.Publication_RawJson { return &heraldv1.Publication_RawJson{RawJson: []byte(s)} }
	cases := []struct {
		name string
		pub  *heraldv1.Publication
		kind histKind
	}{
		{"json", &heraldv1.Publication{Payload: raw(`{"b":1,"a":12345678901234567890}`), TimeUnixMs: ms}, histJSON},
		{"json a second late", &heraldv1.Publication{Payload: raw(`[1]`), TimeUnixMs: ms - 1000}, histJSON},
		{"binary", &heraldv1.Publication{Payload: &heraldv1.Publication_Binary{Binary: []byte{0, 0xff, 'x'}}, TimeUnixMs: ms + 3}, histBinary},
		{"empty binary", &heraldv1.Publication{Payload: &heraldv1.Publication_Binary{Binary: []byte{}}, TimeUnixMs: ms}, histBinary},
		{"json in a large buffer", &heraldv1.Publication{Payload: &heraldv1.Publication_RawJson{RawJson: big[1000 : 1000+23]}, TimeUnixMs: ms}, histJSON},
		{"no time", &heraldv1.Publication{Payload: raw(`"t"`)}, histJSON},
		{"a time 30 days off", &heraldv1.Publication{Payload: raw(`"t"`), TimeUnixMs: ms + 30*24*3600*1000}, histJSON},
		{"tags", &heraldv1.Publication{Payload: raw(`1`), Tags: map[string]string{"k": "v"}, TimeUnixMs: ms}, histEncoded},
		{"publisher", &heraldv1.Publication{Payload: raw(`2`), Publisher: &heraldv1.ClientInfo{Client: "c1", User: "u1"}, TimeUnixMs: ms}, histEncoded},
		{"data", &heraldv1.Publication{Payload: &heraldv1.Publication_Data{Data: value}, TimeUnixMs: ms}, histEncoded},
		{"json string", &heraldv1.Publication{Payload: &heraldv1.Publication_Json{Json: `{"s":"x"}`}, TimeUnixMs: ms}, histEncoded},
	}
	for i, c := range cases {
		want := proto.Clone(c.pub).(*heraldv1.Publication)
		c.pub.Channel = "keep:" + strconv.Itoa(i)
		res, err := e.Publish(ctx, c.pub, engine.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want.Channel, want.Offset, want.Epoch = c.pub.Channel, res.Position.Offset, res.Position.Epoch
		clock.advance(time.Millisecond)
		h, err := e.History(ctx, c.pub.Channel, engine.HistoryQuery{Limit: 10})
		if err != nil || len(h.Publications) != 1 {
			t.Fatalf("%s: history %d publications, %v", c.name, len(h.Publications), err)
		}
		if got := h.Publications[0]; !proto.Equal(got, want) {
			t.Errorf("%s: history gives %v, want %v", c.name, got, want)
		}
		ch := e.channel(c.pub.Channel, false)
		entry := ch.ring[ch.head]
		ch.mu.Unlock()
		if entry.kind != c.kind {
			t.Errorf("%s: kept as kind %d, want %d", c.name, entry.kind, c.kind)
		}
		if c.name == "json in a large buffer" && cap(entry.b) > 64 {
			t.Errorf("%s: the entry keeps %d bytes of the buffer alive for a 23-byte payload", c.name, cap(entry.b))
		}
	}
}

// TestMemoryChannelsModel: Channels against a sorted list of the same
// channels, for queries of every kind over 400 random names (some only
// subscribed, without state, which are never listed), so that the page's
// heap keeps exactly the first Limit names and says more when, and only
// when, more follow.
func TestMemoryChannelsModel(t *testing.T) {
	ctx := context.Background()
	e := newEngine(time.Now, Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	var names []string
	seen := map[string]bool{}
	for len(names) < 400 {
		name := fmt.Sprintf("%s:%c%d", []string{"chat", "news", "user"}[rng.IntN(3)], 'a'+rng.IntN(26), rng.IntN(1000))
		if seen[name] {
			continue
		}
		seen[name] = true
		if rng.IntN(8) == 0 { // subscribed only: no state
			if err := e.Subscribe(ctx, name); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := e.Publish(ctx, &heraldv1.Publication{Channel: name, Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`1`)}}, engine.PublishOptions{HistorySize: 1, HistoryTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	even := func(name string) bool { return len(name)%2 == 0 }
	for i := range 500 {
		q := engine.ChannelsQuery{Limit: []int{0, 1, 2, 7, 50, 399, 1000}[rng.IntN(7)]}
		if rng.IntN(2) == 0 {
			q.After = names[rng.IntN(len(names))]
		}
		if rng.IntN(2) == 0 {
			q.Prefix = []string{"chat:", "news:b", "user:z", "x"}[rng.IntN(4)]
		}
		if rng.IntN(3) == 0 {
			q.Keep = even
		}
		var want []string
		for _, name := range names {
			if q.Selects(name) {
				want = append(want, name)
			}
		}
		wantMore := q.Limit > 0 && len(want) > q.Limit
		if wantMore {
			want = want[:q.Limit]
		}
		got, more := enginetest.ChannelNames(t, e, q)
		if !slices.Equal(got, want) || more != wantMore {
			t.Fatalf("query %d (after %q, prefix %q, keep %v, limit %d): %d names, more %v; want %d, more %v\ngot  %v\nwant %v",
				i, q.After, q.Prefix, q.Keep != nil, q.Limit, len(got), more, len(want), wantMore, got, want)
		}
	}
}
