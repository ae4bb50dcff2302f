package redis

import (
	"context"
	"errors"
	"sort"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
)

// Presence of the Redis engine: one hash per channel (P:{C}:p), each entry
// holding its expiry (from Redis's clock) and the ClientInfo. Presence
// converges after engine restarts and node deaths:
//
//   - Every node rewrites its own entries every PresenceRefresh, at once
//     when its pub/sub connection comes back after a loss, and every
//     second while a refresh fails. An entry Redis lost (a restart without
//     persistence, a flush, an expiry while the node was cut off) is
//     created again, with a join event (presence_add.lua).
//   - Entries a node stops refreshing (it died, or lost Redis) expire
//     PresenceTTL after its last refresh. Reads skip them; every node's
//     refresh sweeps the channels it delivers (and those it holds entries
//     in), removing expired entries with a leave event each, exactly once
//     across nodes (presence_sweep.lua). So a dead node's clients
//     leave every subscriber's list within PresenceTTL + PresenceRefresh.
//
// Join and leave events go to the channel's shard channel whatever the
// namespace's join_leave; the hub delivers them only to subscribers of
// namespaces with join_leave that asked for them.

// AddPresence implements engine.Presence.
func (e *Engine) AddPresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
	info, err := proto.Marshal(client)
	if err != nil {
		return err
	}
	events := ""
	if joinLeave {
		events = e.key(channel, "s")
	}
	err = presenceAddScript.Run(ctx, e.client, []string{e.key(channel, "p")}, ms(e.opts.PresenceTTL), events, channel, client.Client, info).Err()
	if err != nil {
		return e.fail(ctx, "presence", err)
	}
	e.pmu.Lock()
	e.local[presenceKey{channel, client.Client}] = client
	e.pmu.Unlock()
	e.register(ctx, []registration{{channel, e.opts.PresenceTTL}})
	return nil
}

// RemovePresence implements engine.Presence.
func (e *Engine) RemovePresence(ctx context.Context, channel string, client *heraldv1.ClientInfo, joinLeave bool) error {
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
func (e *Engine) presenceEvent(ctx context.Context, channel string, client *heraldv1.ClientInfo, kind byte) error {
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

// Presence implements engine.Presence.
func (e *Engine) Presence(ctx context.Context, channel string) ([]*heraldv1.ClientInfo, error) {
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

// refreshPresenceSoon asks the refresh loop to run now (the pub/sub
// connection came back: Redis may have restarted empty).
func (e *Engine) refreshPresenceSoon() {
	select {
	case e.presenceKick <- struct{}{}:
	default:
	}
}

// refreshLoop refreshes presence every PresenceRefresh, when asked, and
// every second while it fails, and trims the registry.
func (e *Engine) refreshLoop() {
	retry := min(time.Second, e.opts.PresenceRefresh)
	t := time.NewTimer(e.opts.PresenceRefresh)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		case <-e.presenceKick:
			t.Stop()
		}
		next := e.opts.PresenceRefresh
		err := e.refresh()
		switch {
		case e.ctx.Err() != nil:
		case err != nil:
			if !failing { // once per outage, not every retry
				e.log.Warn("redis: presence refresh failed; retrying every second", "err", err)
			}
			failing, next = true, retry
		case failing:
			failing = false
			e.log.Info("redis: presence refreshed again")
		}
		t.Reset(next)
	}
}

// refresh rewrites this node's presence entries (creating again, with a
// join, those Redis lost) and sweeps expired entries, with their leaves,
// from the channels this node delivers or holds entries in.
func (e *Engine) refresh() error {
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
	sweep := make(map[string]bool, len(byChannel))
	for ch := range byChannel {
		sweep[ch] = true
	}
	for _, ch := range e.ps.channels() {
		if e.opts.HasPresence == nil || e.opts.HasPresence(ch) {
			sweep[ch] = true
		}
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.PresenceRefresh)
	defer cancel()
	ttl := ms(e.opts.PresenceTTL)
	const batch = 500
	var errs []error
	type added struct {
		channel string
		cmd     *goredis.Cmd
	}
	var adds []added
	pipe := e.client.Pipeline()
	flush := func() {
		if pipe.Len() == 0 {
			return
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			errs = append(errs, err)
		}
		for _, a := range adds {
			ids, err := a.cmd.StringSlice()
			if err != nil {
				continue
			}
			e.dropDeparted(ctx, a.channel, ids)
		}
		adds = adds[:0]
	}
	// The scripts are loaded first (on every primary of a cluster): EvalSha
	// in a pipeline fails with NOSCRIPT on a Redis that restarted, or a
	// promoted replica.
	if err := presenceAddScript.Load(ctx, e.client).Err(); err != nil {
		return err
	}
	if err := presenceSweepScript.Load(ctx, e.client).Err(); err != nil {
		return err
	}
	regs := make([]registration, 0, len(byChannel))
	for ch, pairs := range byChannel {
		args := append([]any{ttl, e.key(ch, "s"), ch}, pairs...)
		adds = append(adds, added{ch, presenceAddScript.EvalSha(ctx, pipe, []string{e.key(ch, "p")}, args...)})
		if pipe.Len() >= batch {
			flush()
		}
		regs = append(regs, registration{ch, e.opts.PresenceTTL})
	}
	e.register(ctx, regs)
	for ch := range sweep {
		presenceSweepScript.EvalSha(ctx, pipe, []string{e.key(ch, "p")}, e.key(ch, "s"), ch)
		if pipe.Len() >= batch {
			flush()
		}
	}
	flush()
	e.sweepRegistry(ctx)
	return errors.Join(errs...)
}

// dropDeparted removes entries a refresh created again for clients that
// left meanwhile (between the refresh's snapshot and its write), with
// their leave: the refresh announced them with a join.
func (e *Engine) dropDeparted(ctx context.Context, channel string, created []string) {
	for _, id := range created {
		e.pmu.Lock()
		_, here := e.local[presenceKey{channel, id}]
		e.pmu.Unlock()
		if !here {
			_ = e.RemovePresence(ctx, channel, &heraldv1.ClientInfo{Client: id}, true)
		}
	}
}
