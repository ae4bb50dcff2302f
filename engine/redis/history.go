package redis

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
)

// History implements engine.Broker. One script reads the position, the
// page and the slot's era; it writes nothing.
func (e *Engine) History(ctx context.Context, channel string, q engine.HistoryQuery) (engine.HistoryResult, error) {
	since, sinceEpoch := "", ""
	if q.Since != nil {
		since = strconv.FormatUint(q.Since.Offset, 10)
		sinceEpoch = q.Since.Epoch
	}
	reverse := "0"
	if q.Reverse {
		reverse = "1"
	}
	res, err := historyScript.Run(ctx, e.client, []string{e.key(channel, "m"), e.key(channel, "h"), e.eraKey(channel)},
		since, sinceEpoch, max(q.Limit, 0), reverse,
	).Slice()
	if err != nil {
		return engine.HistoryResult{}, e.fail(ctx, "history", err)
	}
	out, match, created, era, err := historyReply(res)
	if err != nil {
		return engine.HistoryResult{}, e.fail(ctx, "history", err)
	}
	switch {
	case out.Position.Epoch == "": // no state
		z := e.emptyEpoch(era, time.Now().UnixMilli())
		out.Position.Epoch = z
		if q.Since != nil && q.Since.Epoch != "" && q.Since.Epoch != z {
			return out, engine.ErrEpochMismatch
		}
	case match == 1:
		return out, engine.ErrEpochMismatch
	case match == 2:
		// since is offset 0 of another epoch: it continues this one only
		// if it is the empty epoch of the period the state began in.
		if q.Since.Epoch != e.emptyEpoch(era, created) {
			out.Publications = nil
			return out, engine.ErrEpochMismatch
		}
	}
	return out, nil
}

func historyReply(res []any) (out engine.HistoryResult, match, created int64, era any, err error) {
	bad := fmt.Errorf("unexpected history reply")
	if len(res) != 7 {
		return engine.HistoryResult{}, 0, 0, nil, bad
	}
	offset, ok1 := res[0].(int64)
	epoch, ok2 := res[1].(string)
	oldest, ok3 := res[2].(int64)
	match, ok4 := res[3].(int64)
	entries, ok5 := res[4].([]any)
	created, ok6 := res[5].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return engine.HistoryResult{}, 0, 0, nil, bad
	}
	out = engine.HistoryResult{
		Position: &heraldv1.StreamPosition{Offset: uint64(offset), Epoch: epoch},
		Oldest:   uint64(oldest),
	}
	if len(entries) > 0 {
		out.Publications = make([]*heraldv1.Publication, 0, len(entries))
	}
	for _, x := range entries {
		s, ok := x.(string)
		if !ok {
			return engine.HistoryResult{}, 0, 0, nil, bad
		}
		pub := &heraldv1.Publication{}
		if err := proto.Unmarshal([]byte(s), pub); err != nil {
			return engine.HistoryResult{}, 0, 0, nil, fmt.Errorf("history entry: %w", err)
		}
		out.Publications = append(out.Publications, pub)
	}
	return out, match, created, res[6], nil
}

// Command implements engine.Broker: the command goes to one of the control
// channels, which every node subscribes to; the user's commands always to
// the same one, so that they keep their order.
func (e *Engine) Command(ctx context.Context, cmd *heraldv1.BridgeSessionResponse) error {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return err
	}
	user := cmd.GetDisconnect().GetUser() + cmd.GetUnsubscribe().GetUser()
	ch := e.controls[0]
	if len(e.controls) > 1 {
		h := fnv.New32a()
		_, _ = h.Write([]byte(user))
		ch = e.controls[h.Sum32()%uint32(len(e.controls))]
	}
	if err := e.client.SPublish(ctx, ch, data).Err(); err != nil {
		return e.fail(ctx, "command", err)
	}
	return nil
}

// Channels implements engine.Engine: the names of the registry (every
// registry key, at most maxChannelsRead in all, or it fails), those keep
// accepts in name order, then the state of as many as the page needs
// (with limit 0, of at most maxChannelsListed).
func (e *Engine) Channels(ctx context.Context, keep func(string) bool, limit int) ([]engine.ChannelState, bool, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	// Counted first, so that a registry too large is refused before it
	// is read.
	counts := make([]*goredis.IntCmd, len(e.registry))
	_, err := e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, key := range e.registry {
			counts[i] = p.ZCount(ctx, key, now, "+inf")
		}
		return nil
	})
	if err != nil {
		return nil, false, e.fail(ctx, "channels", err)
	}
	total := int64(0)
	for _, c := range counts {
		total += c.Val()
	}
	if total > maxChannelsRead {
		return nil, false, fmt.Errorf("%w: the Redis registry holds %d channels with state, more than the %d Channels reads", engine.ErrTooManyChannels, total, maxChannelsRead)
	}
	ranges := make([]*goredis.StringSliceCmd, len(e.registry))
	_, err = e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, key := range e.registry {
			ranges[i] = p.ZRangeByScore(ctx, key, &goredis.ZRangeBy{Min: now, Max: "+inf", Count: maxChannelsRead})
		}
		return nil
	})
	if err != nil {
		return nil, false, e.fail(ctx, "channels", err)
	}
	var names []string
	for _, r := range ranges {
		for _, name := range r.Val() {
			if keep == nil || keep(name) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	want := limit
	if want <= 0 {
		want = maxChannelsListed
	}
	// A name whose state expired since the registry was swept is skipped,
	// and the next ones read in its place.
	out := make([]engine.ChannelState, 0, min(want, len(names)))
	for len(names) > 0 && len(out) < want {
		batch := names[:min(len(names), want-len(out))]
		names = names[len(batch):]
		metas := make([]*goredis.SliceCmd, len(batch))
		clients := make([]*goredis.IntCmd, len(batch))
		_, err = e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, name := range batch {
				metas[i] = p.HMGet(ctx, e.key(name, "m"), "e", "o")
				clients[i] = p.HLen(ctx, e.key(name, "p"))
			}
			return nil
		})
		if err != nil {
			return nil, false, e.fail(ctx, "channels", err)
		}
		for i, name := range batch {
			v := metas[i].Val()
			if len(v) < 2 {
				continue
			}
			epoch, _ := v[0].(string)
			offset, _ := strconv.ParseUint(fmt.Sprint(v[1]), 10, 64)
			n := int(clients[i].Val())
			if epoch == "" && n == 0 {
				continue
			}
			out = append(out, engine.ChannelState{Name: name, Position: &heraldv1.StreamPosition{Offset: offset, Epoch: epoch}, Clients: n})
		}
	}
	return out, len(names) > 0, nil
}
