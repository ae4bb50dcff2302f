package redis

import (
	"context"

	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/proto"
)

// checkLost runs when a channel's delivery resumes after its connection
// failed or it moved (before HandleReset): if the channel's log no longer
// holds last, the last publication this node delivered, in its epoch
// (Redis lost it: a failover to a replica that had not received it, a
// restart that lost the end of its AOF), the channel gets a new epoch.
// Otherwise publications after the loss would reuse the lost offsets in
// the same epoch, and a reader holding a lost position would be told that
// it recovered while it missed them. With the new epoch the hub ends the
// channel's streams and readers learn recovered=false.
//
// It compares what it can: the offset (the log ends before last), and the
// entry at last's offset when history keeps it (a retry of the lost
// publication, with its idempotency key, that took its offset again is the
// same publication: no loss). A loss behind a channel without history that
// is published to again, up to last's offset, before the check runs goes
// unseen.
func (e *Engine) checkLost(channel string, last *heraldv1.Publication) {
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
	defer cancel()
	keys := []string{e.key(channel, "m"), e.key(channel, "h")}
	res, err := checkScript.Run(ctx, e.client, keys, last.Epoch, last.Offset).Slice()
	if err != nil || len(res) != 3 {
		return // the hub's catch-up meets the same outage and ends the streams
	}
	epoch, _ := res[0].(string)
	offset, _ := res[1].(int64)
	if epoch != last.Epoch {
		return // a new epoch already: the hub sees it
	}
	lost := uint64(offset) < last.Offset
	if d, ok := res[2].(string); ok && !lost {
		kept := &heraldv1.Publication{}
		lost = proto.Unmarshal([]byte(d), kept) != nil || !samePublication(kept, last)
	}
	if !lost {
		return
	}
	e.log.Warn("redis: a channel's log lost publications this node delivered (failover before replication?); the channel begins a new epoch",
		"channel", channel, "delivered", last.Offset, "log_ends_at", offset)
	if err := runOnce(ctx, e.client, bumpScript, bumpLua, keys, last.Epoch, engine.NewEpoch()).Err(); err != nil {
		e.log.Error("redis: could not begin a new epoch after a loss", "channel", channel, "err", err)
	}
}

// samePublication reports whether a and b are one publication, whenever
// each was stamped (a retry gets a new time_unix_ms).
func samePublication(a, b *heraldv1.Publication) bool {
	if a.TimeUnixMs == b.TimeUnixMs {
		return proto.Equal(a, b)
	}
	a2 := proto.Clone(a).(*heraldv1.Publication)
	a2.TimeUnixMs = b.TimeUnixMs
	return proto.Equal(a2, b)
}
