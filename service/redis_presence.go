package service

import (
	"context"
	"sort"
	"strconv"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/proto"
)

// Presence of the Redis engine: one hash per channel (P:{C}:p), each entry
// holding its expiry (from Redis's clock) and the ClientInfo. The node that
// added an entry rewrites it every PresenceRefresh; readers skip and delete
// expired ones, so a dead node's entries disappear at most PresenceTTL after
// its last refresh (default 30s). No leave event is sent for them.

func (e *redisEngine) AddPresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
	info, err := proto.Marshal(client)
	if err != nil {
		return err
	}
	err = presenceAddScript.Run(ctx, e.client, []string{e.key(channel, "p")}, ms(e.opts.PresenceTTL), client.Client, info).Err()
	if err != nil {
		return e.fail(ctx, "presence", err)
	}
	e.pmu.Lock()
	e.local[presenceKey{channel, client.Client}] = client
	e.pmu.Unlock()
	e.register(ctx, channel, e.opts.PresenceTTL)
	if joinLeave {
		return e.presenceEvent(ctx, channel, client, 'j')
	}
	return nil
}

func (e *redisEngine) RemovePresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
	e.pmu.Lock()
	delete(e.local, presenceKey{channel, client.Client})
	e.pmu.Unlock()
	n, err := e.client.HDel(ctx, e.key(channel, "p"), client.Client).Result()
	if err != nil {
		return e.fail(ctx, "presence", err)
	}
	if n > 0 && joinLeave {
		return e.presenceEvent(ctx, channel, client, 'l')
	}
	return nil
}

// presenceEvent sends a join ('j') or leave ('l') to the nodes that
// deliver the channel.
func (e *redisEngine) presenceEvent(ctx context.Context, channel string, client *heraldv1.ClientInfo, kind byte) error {
	data, err := proto.Marshal(&heraldv1.PresenceEvent{Channel: channel, Client: client})
	if err != nil {
		return err
	}
	msg := make([]byte, 0, 1+len(data))
	msg = append(append(msg, kind), data...)
	if err := e.client.SPublish(ctx, e.key(channel, "s"), msg).Err(); err != nil {
		return e.fail(ctx, "presence event", err)
	}
	return nil
}

func (e *redisEngine) Presence(ctx context.Context, channel string) ([]*heraldv1.ClientInfo, error) {
	res, err := presenceGetScript.Run(ctx, e.client, []string{e.key(channel, "p")}).StringSlice()
	if err != nil {
		return nil, e.fail(ctx, "presence", err)
	}
	out := make([]*heraldv1.ClientInfo, 0, len(res))
	for _, s := range res {
		ci := &heraldv1.ClientInfo{}
		if err := proto.Unmarshal([]byte(s), ci); err != nil {
			continue
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Client < out[j].Client })
	return out, nil
}

// refreshLoop rewrites this node's presence entries every PresenceRefresh
// (which also restores them after Redis lost them) and trims the registry.
func (e *redisEngine) refreshLoop() {
	t := time.NewTicker(e.opts.PresenceRefresh)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		e.refresh()
	}
}

func (e *redisEngine) refresh() {
	e.pmu.Lock()
	byChannel := make(map[string][]any)
	for k, ci := range e.local {
		info, err := proto.Marshal(ci)
		if err != nil {
			continue
		}
		byChannel[k.channel] = append(byChannel[k.channel], k.client, info)
	}
	e.pmu.Unlock()
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.PresenceRefresh)
	defer cancel()
	ttl := ms(e.opts.PresenceTTL)
	const batch = 500
	pipe := e.client.Pipeline()
	flush := func() {
		if pipe.Len() == 0 {
			return
		}
		if _, err := pipe.Exec(ctx); err != nil {
			e.log.Warn("redis: presence refresh failed", "err", err)
		}
	}
	for ch, pairs := range byChannel {
		args := append([]any{ttl}, pairs...)
		presenceAddScript.Eval(ctx, pipe, []string{e.key(ch, "p")}, args...)
		if pipe.Len() >= batch {
			flush()
		}
		e.register(ctx, ch, e.opts.PresenceTTL)
	}
	flush()
	_ = e.client.ZRemRangeByScore(ctx, e.registryKey(), "-inf", "("+strconv.FormatInt(time.Now().UnixMilli(), 10)).Err()
}
