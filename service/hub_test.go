package service

import (
	"strings"
	"testing"

	"github.com/herald-io/herald/engine/memory"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestEventSizeCountsPayload checks that every kind of payload counts
// against a queue's byte bound with its size (the oneof members without
// a case of their own through reflection).
func TestEventSizeCountsPayload(t *testing.T) {
	const n = 60_000
	text := strings.Repeat("x", n)
	for name, p := range map[string]*heraldv1.Publication{
		"binary":   {Payload: &heraldv1.Publication_Binary{Binary: []byte(text)}},
		"raw_json": {Payload: &heraldv1.Publication_RawJson{RawJson: []byte(text)}},
		"data":     {Payload: &heraldv1.Publication_Data{Data: structpb.NewStringValue(text)}},
	} {
		if got := eventSize(event{pub: p}); got < n || got > n+256 {
			t.Errorf("%s: eventSize = %d, want %d plus a little", name, got, n)
		}
	}
	tagged := &heraldv1.Publication{Tags: map[string]string{"k": text}, Publisher: &heraldv1.ClientInfo{User: text}}
	if got := eventSize(event{pub: tagged}); got < 2*n {
		t.Errorf("tags and publisher: eventSize = %d, want at least %d", got, 2*n)
	}
	if got := eventSize(event{presence: &heraldv1.PresenceEvent{Client: &heraldv1.ClientInfo{User: text}}}); got < n {
		t.Errorf("presence: eventSize = %d, want at least %d", got, n)
	}
}

// TestEmptyChannelsShareStartPosition: channels nobody published to share
// one start position (a personal channel per user would otherwise cost
// one each), and the first publication of each still takes the fast path
// to its subscriber.
func TestEmptyChannelsShareStartPosition(t *testing.T) {
	e := memory.New(memory.Options{})
	h := newHub(e, 16, 1<<20)
	if err := e.Start(t.Context(), hubHandler{h}); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	subs := make([]*subscriber, 3)
	for i := range subs {
		subs[i] = &subscriber{channel: "user:" + string(rune('a'+i)), q: newSubQueue(16, 1<<20), done: make(chan struct{})}
		if err := h.add(t.Context(), subs[i]); err != nil {
			t.Fatal(err)
		}
	}
	last := func(ch string) *heraldv1.Publication {
		sh := h.shard(ch)
		sh.mu.RLock()
		defer sh.mu.RUnlock()
		return sh.chans[ch].last.Load()
	}
	if a, b := last("user:a"), last("user:b"); a == nil || a != b || a.Offset != 0 {
		t.Fatalf("start positions %v and %v: want one shared, at offset 0", a, b)
	}
	for _, s := range subs[:2] {
		if _, err := e.Publish(t.Context(), &heraldv1.Publication{Channel: s.channel, Payload: &heraldv1.Publication_RawJson{RawJson: []byte("1")}}, PublishOptions{HistorySize: 10}); err != nil {
			t.Fatal(err)
		}
		got := s.q.take(nil, nil, nil)
		if len(got) != 1 || got[0].pub.Offset != 1 {
			t.Fatalf("%s: delivered %v, want offset 1", s.channel, got)
		}
	}
	if c := last("user:c"); c.Offset != 0 || c.Epoch == "" {
		t.Fatalf("the shared start position changed: %v", c)
	}
}

// hubHandler is a Handler that is only a hub.
type hubHandler struct{ *hub }

func (hubHandler) HandleCommand(*heraldv1.BridgeSessionResponse) {}
