package wsbridge

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// The bridge is behind (its writers yield to batch) while the publications
// it fans out are late, and on time again once they are not, with
// hysteresis; an age below zero (the core's clock ahead) is on time.
func TestBridgeBehindFollowsPublicationAge(t *testing.T) {
	b := &Bridge{}
	steps := []struct {
		age  int64
		want bool
	}{
		{0, false},
		{behindAfterMs - 1, false},
		{behindAfterMs, true},
		{caughtUpMs + 1, true},
		{caughtUpMs, false},
		{500, true},
		{-20, false},
	}
	for i, st := range steps {
		b.noteAge(st.age)
		if got := b.behind.Load(); got != st.want {
			t.Fatalf("step %d (age %d ms): behind %v, want %v", i, st.age, got, st.want)
		}
	}
}

// A channel's fan-out tells the bridge how late its publications are, and
// every frame goes out whether writers yield or not.
func TestFanoutNotesLatePublications(t *testing.T) {
	cfg := config.Default()
	br := &Bridge{cfg: cfg.Bridge, log: slog.New(slog.DiscardHandler)}
	br.ctx, br.cancel = context.WithCancel(context.Background())
	defer br.cancel()
	ns := config.DefaultNamespace("chat")
	ch := &channel{h: &hub{b: br}, name: "chat:late", ns: &ns, subs: map[*session]*sub{}}
	sessions := make([]*session, 3)
	for i := range sessions {
		sessions[i] = streamSession(br, transportHTTPStream, format(i%2), ch.name)
		ch.subs[sessions[i]] = &sub{live: true}
	}
	drained := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, s := range sessions {
			for s.t.queued() != 0 {
				if time.Now().After(deadline) {
					t.Fatal("frames left unsent")
				}
				runtime.Gosched()
			}
		}
	}
	for i, tc := range []struct {
		published time.Time
		want      bool
	}{
		// "On time" is a publication from the future (a core's clock
		// ahead): a publication of now can be a few ms old by the time
		// it is fanned out on a loaded machine.
		{time.Now().Add(time.Second), false},
		{time.Now().Add(-time.Second), true}, // a backlog
		{time.Now().Add(-time.Second), true},
		{time.Now().Add(time.Second), false}, // caught up
	} {
		ch.deliver(&heraldv1.Publication{Channel: ch.name, Offset: uint64(i + 1), Epoch: "e", TimeUnixMs: tc.published.UnixMilli(),
			Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{"n":1}`)}})
		if got := br.behind.Load(); got != tc.want {
			t.Errorf("publication %d, %v old: behind %v, want %v", i+1, time.Since(tc.published).Round(time.Millisecond), got, tc.want)
		}
		drained()
	}
	br.wg.Wait()
}
