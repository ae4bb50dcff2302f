package wsbridge_test

import (
	"fmt"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
)

// TestPersonalChannelsShareOneUpstream checks that a user's personal
// channel costs the bridge and the core no goroutine: every channel's
// upstream subscription rides the bridge's one SubscribeMany stream. With
// one Subscribe stream per channel, each connection cost 4 goroutines (its
// reader, the bridge's channel goroutine, grpc-go's stream watcher, the
// core's handler).
func TestPersonalChannelsShareOneUpstream(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	personal := func(user string) *client {
		c := connect(t, n, "", token(t, user, time.Minute, nil))
		c.waitFor("the personal channel", func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed().GetChannel() == "user:"+user })
		return c
	}
	first := personal("u0")
	publish(t, be, "user:u0", `{"n":0}`)
	first.nextPub("user:u0")
	before := settledGoroutines()
	const users = 200
	clients := make([]*client, users)
	for i := range clients {
		clients[i] = personal(fmt.Sprintf("u%d", i+1))
	}
	after := settledGoroutines()
	if per := float64(after-before) / users; per > 1.5 {
		t.Fatalf("%.2f goroutines per connection with a personal channel (%d → %d); want about 1 (its reader)", per, before, after)
	}
	for i, c := range clients {
		ch := fmt.Sprintf("user:u%d", i+1)
		publish(t, be, ch, fmt.Sprintf(`{"n":%d}`, i))
		if p := c.nextPub(ch); p.Offset != 1 {
			t.Fatalf("%s: offset %d, want 1", ch, p.Offset)
		}
	}
}

// TestUpstreamSubscriptionEndedResumes checks that when the core ends one
// channel's subscription on the shared stream (ABORTED: here a publication
// from another epoch), the bridge resubscribes that channel from the last
// position it delivered while the other channels carry on, and browsers
// see no gap and no duplicate.
func TestUpstreamSubscriptionEndedResumes(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	be := backend(t, n, "")
	c := connect(t, n, "", token(t, "u1", time.Minute, nil))
	c.subscribe("chat:aborted", nil)
	c.subscribe("chat:steady", nil)
	for i := 1; i <= 2; i++ {
		publish(t, be, "chat:aborted", fmt.Sprintf(`{"n":%d}`, i))
		if p := c.nextPub("chat:aborted"); p.Offset != uint64(i) {
			t.Fatalf("offset %d, want %d", p.Offset, i)
		}
	}
	// The core's hub sees a publication of another epoch: subscriptions
	// still in the old one end with ABORTED.
	n.Core().HandlePublication(&heraldv1.Publication{Channel: "chat:aborted", Offset: 1, Epoch: "another-epoch",
		Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{"n":"stray"}`)}})
	publish(t, be, "chat:steady", `{"n":1}`)
	if p := c.nextPub("chat:steady"); p.Offset != 1 {
		t.Fatalf("steady: offset %d, want 1", p.Offset)
	}
	for i := 3; i <= 5; i++ {
		publish(t, be, "chat:aborted", fmt.Sprintf(`{"n":%d}`, i))
	}
	for i := 3; i <= 5; i++ {
		fr := c.waitFor("publication in chat:aborted", func(f *heraldv1.ServerFrame) bool {
			if sd := f.GetSubscribed(); sd.GetChannel() == "chat:aborted" {
				t.Fatalf("unexpected subscribed push %v: the resume was recoverable", sd)
			}
			return f.GetPub().GetChannel() == "chat:aborted"
		})
		if p := fr.GetPub(); p.Offset != uint64(i) || p.Epoch == "another-epoch" {
			t.Fatalf("offset %d epoch %q, want %d in the channel's epoch", p.Offset, p.Epoch, i)
		}
	}
}
