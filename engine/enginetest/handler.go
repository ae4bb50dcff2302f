// Package enginetest is the contract suite that every engine passes: an
// engine's own test calls Run with a Factory that makes started engines
// (and, for engines that share state between nodes, peers), and gets one
// subtest per part of the contract of package engine.
//
// It also holds the small handlers and helpers that engine tests share.
package enginetest

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// Recorder is an engine.Handler that records what it receives. It is safe
// for concurrent use; read it through its methods.
type Recorder struct {
	mu     sync.Mutex
	pubs   []*heraldv1.Publication
	joins  []*heraldv1.PresenceEvent
	leaves []*heraldv1.PresenceEvent
	cmds   []*heraldv1.BridgeSessionResponse
	resets []string
	busy   map[string]bool // channels being delivered, to catch concurrent calls
	bad    string          // the first contract violation seen
}

func (r *Recorder) enter(channel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy == nil {
		r.busy = map[string]bool{}
	}
	if r.busy[channel] && r.bad == "" {
		r.bad = "two deliveries of channel " + channel + " at once"
	}
	r.busy[channel] = true
}

func (r *Recorder) leave(channel string) {
	r.mu.Lock()
	r.busy[channel] = false
	r.mu.Unlock()
}

// HandlePublication implements engine.Handler.
func (r *Recorder) HandlePublication(p *heraldv1.Publication) {
	r.enter(p.Channel)
	defer r.leave(p.Channel)
	r.mu.Lock()
	r.pubs = append(r.pubs, p)
	r.mu.Unlock()
}

// HandlePresence implements engine.Handler.
func (r *Recorder) HandlePresence(ev *heraldv1.PresenceEvent, join bool) {
	r.mu.Lock()
	if join {
		r.joins = append(r.joins, ev)
	} else {
		r.leaves = append(r.leaves, ev)
	}
	r.mu.Unlock()
}

// HandleCommand implements engine.Handler.
func (r *Recorder) HandleCommand(c *heraldv1.BridgeSessionResponse) {
	r.mu.Lock()
	r.cmds = append(r.cmds, c)
	r.mu.Unlock()
}

// HandleReset implements engine.Handler.
func (r *Recorder) HandleReset(channel string) {
	r.enter(channel)
	defer r.leave(channel)
	r.mu.Lock()
	r.resets = append(r.resets, channel)
	r.mu.Unlock()
}

// Pubs returns the publications received so far, of channel ("" for all).
func (r *Recorder) Pubs(channel string) []*heraldv1.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*heraldv1.Publication
	for _, p := range r.pubs {
		if channel == "" || p.Channel == channel {
			out = append(out, p)
		}
	}
	return out
}

// Joins and Leaves return the presence events received so far.
func (r *Recorder) Joins() []*heraldv1.PresenceEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*heraldv1.PresenceEvent(nil), r.joins...)
}

// Leaves: see Joins.
func (r *Recorder) Leaves() []*heraldv1.PresenceEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*heraldv1.PresenceEvent(nil), r.leaves...)
}

// Commands returns the commands received so far.
func (r *Recorder) Commands() []*heraldv1.BridgeSessionResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*heraldv1.BridgeSessionResponse(nil), r.cmds...)
}

// Resets returns the channels of the HandleReset calls so far.
func (r *Recorder) Resets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.resets...)
}

// Violation returns the first breach of the Handler contract seen (two
// calls for one channel at once), or "".
func (r *Recorder) Violation() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

// Nop is an engine.Handler that drops everything.
type Nop struct{}

func (Nop) HandlePublication(*heraldv1.Publication)       {}
func (Nop) HandlePresence(*heraldv1.PresenceEvent, bool)  {}
func (Nop) HandleCommand(*heraldv1.BridgeSessionResponse) {}
func (Nop) HandleReset(string)                            {}

// Pub returns a publication to channel whose payload is text as a JSON
// string.
func Pub(channel, text string) *heraldv1.Publication {
	return &heraldv1.Publication{Channel: channel, Payload: &heraldv1.Publication_RawJson{RawJson: []byte(strconv.Quote(text))}}
}

// WaitFor polls cond until it holds, failing t after 10 seconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ChannelNames returns the names e.Channels lists for q, and its more.
func ChannelNames(t testing.TB, e engine.Engine, q engine.ChannelsQuery) ([]string, bool) {
	t.Helper()
	states, more, err := e.Channels(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(states))
	for _, st := range states {
		names = append(names, st.Name)
	}
	return names, more
}
