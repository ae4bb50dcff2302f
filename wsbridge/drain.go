package wsbridge

import (
	"context"
	"sync"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// StopAccepting makes the bridge refuse new connections (HTTP 503), on
// every transport, while its sessions stay open: the first step of a drain. Shutdown
// does it too.
func (b *Bridge) StopAccepting() { b.closing.Store(true) }

// CatchUp waits until every channel with history has fanned out the
// publications its core had accepted when CatchUp was called, or until ctx
// ends. A node that has stopped accepting publishes calls it before
// Shutdown, so that every acknowledged publication reaches the browsers
// before they are told to reconnect. Channels without history have no
// position to wait for and are not waited for.
func (b *Bridge) CatchUp(ctx context.Context) {
	var chans []*channel
	b.hub.each(func(ch *channel) {
		if ch.ns.HistorySize > 0 {
			chans = append(chans, ch)
		}
	})
	work := make(chan *channel)
	var wg sync.WaitGroup
	for range min(8, len(chans)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ch := range work {
				b.catchUpChannel(ctx, ch)
			}
		}()
	}
	for _, ch := range chans {
		select {
		case work <- ch:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
}

func (b *Bridge) catchUpChannel(ctx context.Context, ch *channel) {
	res, err := b.core.History(ctx, &heraldv1.HistoryRequest{Channel: ch.name, Limit: 1, Reverse: true})
	if err != nil || res.Position == nil {
		return
	}
	want := res.Position
	for {
		ch.mu.Lock()
		done := ch.closed || !ch.isUp || ch.epoch != want.Epoch || ch.last >= want.Offset
		ch.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}
