package redis

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
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

// Channels implements engine.Engine. Each registry key has an index of
// its names in name order (namesKey); Channels reads the indexes a chunk
// at a time from the query's place (after its After, from its Prefix),
// merges them, and reads the state of the names selected until it has
// the page, skipping (and dropping from the index) names whose state has
// gone. No call reads more than a chunk, whatever the registry's size.
func (e *Engine) Channels(ctx context.Context, q engine.ChannelsQuery) ([]engine.ChannelState, bool, error) {
	if !e.namesFilled.Load() {
		if err := e.backfillNames(ctx); err != nil {
			return nil, false, e.fail(ctx, "channels", err)
		}
	}
	want := q.Limit
	if want <= 0 {
		want = maxChannelsListed
	}
	// A read takes at least minNamesRead names, so that a small page
	// under a pattern few names match does not cost a round trip a name.
	chunk := min(max(want, minNamesRead), 1000)
	// One cursor per index; heads are the names read and not yet taken.
	type cursor struct {
		key   string
		from  string // ZRANGEBYLEX min of the next read
		heads []string
		done  bool
	}
	start := "-"
	if q.After != "" && q.After >= q.Prefix {
		start = "(" + q.After
	} else if q.Prefix != "" {
		start = "[" + q.Prefix
	}
	curs := make([]*cursor, len(e.registry))
	for i, key := range e.registry {
		curs[i] = &cursor{key: namesKey(key), from: start}
	}
	// fill reads the next chunk of every cursor whose heads ran out.
	fill := func() error {
		var reads []*cursor
		cmds := make([]*goredis.StringSliceCmd, 0, len(curs))
		_, err := e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, c := range curs {
				if len(c.heads) == 0 && !c.done {
					reads = append(reads, c)
					cmds = append(cmds, p.ZRangeByLex(ctx, c.key, &goredis.ZRangeBy{Min: c.from, Max: "+", Count: int64(chunk)}))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, c := range reads {
			names := cmds[i].Val()
			if len(names) < chunk {
				c.done = true
			}
			if len(names) > 0 {
				c.from = "(" + names[len(names)-1]
			}
			for _, name := range names {
				if !strings.HasPrefix(name, q.Prefix) {
					c.done = true // past the prefix: in name order, none after it has it
					break
				}
				if q.Selects(name) {
					c.heads = append(c.heads, name)
				}
			}
		}
		return nil
	}
	// next takes the smallest head of all indexes; "" when none is left.
	next := func() (string, error) {
		for {
			var best *cursor
			pending := false
			for _, c := range curs {
				if len(c.heads) == 0 {
					pending = pending || !c.done
					continue
				}
				if best == nil || c.heads[0] < best.heads[0] {
					best = c
				}
			}
			if pending {
				// An index without heads may hold a smaller name: read on.
				if err := fill(); err != nil {
					return "", err
				}
				continue
			}
			if best == nil {
				return "", nil
			}
			name := best.heads[0]
			best.heads = best.heads[1:]
			return name, nil
		}
	}
	out := make([]engine.ChannelState, 0, min(want, 1000))
	for len(out) < want {
		var batch []string
		for len(batch) < want-len(out) {
			name, err := next()
			if err != nil {
				return nil, false, e.fail(ctx, "channels", err)
			}
			if name == "" {
				break
			}
			batch = append(batch, name)
		}
		if len(batch) == 0 {
			return out, false, nil
		}
		states, err := e.channelStates(ctx, batch)
		if err != nil {
			return nil, false, e.fail(ctx, "channels", err)
		}
		out = append(out, states...)
	}
	name, err := next()
	if err != nil {
		return nil, false, e.fail(ctx, "channels", err)
	}
	return out, name != "", nil
}

// channelStates reads the state of the named channels, leaving out those
// that have none any more; their names leave the index too, unless the
// registry still lists them as live (a channel whose state is being
// created again).
func (e *Engine) channelStates(ctx context.Context, names []string) ([]engine.ChannelState, error) {
	metas := make([]*goredis.SliceCmd, len(names))
	clients := make([]*goredis.IntCmd, len(names))
	scores := make([]*goredis.FloatCmd, len(names))
	_, err := e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, name := range names {
			metas[i] = p.HMGet(ctx, e.key(name, "m"), "e", "o")
			clients[i] = p.HLen(ctx, e.key(name, "p"))
			scores[i] = p.ZScore(ctx, e.registryKey(name), name)
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, err
	}
	now := float64(time.Now().UnixMilli())
	var out []engine.ChannelState
	var stale []string
	for i, name := range names {
		v := metas[i].Val()
		epoch := ""
		var offset uint64
		if len(v) >= 2 {
			epoch, _ = v[0].(string)
			offset, _ = strconv.ParseUint(fmt.Sprint(v[1]), 10, 64)
		}
		n := int(clients[i].Val())
		if epoch == "" && n == 0 {
			if score, err := scores[i].Result(); err != nil || score < now {
				stale = append(stale, name)
			}
			continue
		}
		out = append(out, engine.ChannelState{Name: name, Position: &heraldv1.StreamPosition{Offset: offset, Epoch: epoch}, Clients: n})
	}
	if len(stale) > 0 {
		_, _ = e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, name := range stale {
				p.ZRem(ctx, namesKey(e.registryKey(name)), name)
			}
			return nil
		})
	}
	return out, nil
}

// namesKey is the index of a registry key's names: the same names, score
// 0, so that they can be read in name order from any place (ZRANGEBYLEX).
// It shares the registry key's slot (and hash tag).
func namesKey(registryKey string) string { return registryKey + ":names" }

// backfillNames fills the index of every registry key that has more
// names than its index (a registry written before the indexes existed, or
// by a node of that version during a rolling upgrade), a chunk at a time.
// Channels runs it until it has once succeeded, every sweep after that.
func (e *Engine) backfillNames(ctx context.Context) error {
	for _, key := range e.registry {
		cards := make([]*goredis.IntCmd, 2)
		if _, err := e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			cards[0] = p.ZCard(ctx, key)
			cards[1] = p.ZCard(ctx, namesKey(key))
			return nil
		}); err != nil {
			return err
		}
		if cards[1].Val() >= cards[0].Val() {
			continue
		}
		for at := int64(0); ; at += 1000 {
			names, err := e.client.ZRange(ctx, key, at, at+999).Result()
			if err != nil {
				return err
			}
			if len(names) > 0 {
				zs := make([]goredis.Z, len(names))
				for i, name := range names {
					zs[i] = goredis.Z{Member: name}
				}
				if err := e.client.ZAdd(ctx, namesKey(key), zs...).Err(); err != nil {
					return err
				}
			}
			if len(names) < 1000 {
				break
			}
		}
	}
	e.namesFilled.Store(true)
	return nil
}

// sweepRegistry removes the registry's expired entries, and their names
// from its indexes, at most 1000 a call and 100 calls a key per sweep.
func (e *Engine) sweepRegistry(ctx context.Context) {
	_ = e.backfillNames(ctx)
	now := time.Now().UnixMilli()
	for _, key := range e.registry {
		for range 100 {
			n, err := registrySweepScript.Run(ctx, e.client, []string{key, namesKey(key)}, now).Int()
			if err != nil || n < 1000 {
				break
			}
		}
	}
}
