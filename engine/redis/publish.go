package redis

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
)

// Publishing runs publish.lua: dedupe, offset, epoch, history append and
// SPUBLISH to the channel's shard channel in one atomic step, in the
// channel's slot. A publish is sent at most once (see once): after a
// network error its fate is unknown, and the publisher is told so
// (engine.MaybeStored) rather than risking a second copy.
//
// With redis.wait_replicas N, the publications sent to one primary are
// followed, on the same connection, by WAIT N wait_timeout, and are
// acknowledged only when WAIT says N replicas have them; otherwise the
// publisher learns that they may or may not have been stored (they were
// stored on the primary and delivered live; a failover before replication
// would lose them). On a cluster the publications are grouped by primary
// for that, since WAIT covers only the writes of its own connection.

func ms(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return max(d.Milliseconds(), 1)
}

func (e *Engine) metaTTL(historyTTL time.Duration) time.Duration {
	return max(e.opts.MetaTTL, historyTTL)
}

// pubCall is one publication's script call.
type pubCall struct {
	keys []string
	args []any
}

// publishCall returns the keys and arguments of the publish script.
func (e *Engine) publishCall(pub *heraldv1.Publication, opts engine.PublishOptions) (pubCall, error) {
	data, err := proto.Marshal(pub)
	if err != nil {
		return pubCall{}, err
	}
	ch := pub.Channel
	keys := []string{e.key(ch, "m"), e.key(ch, "h"), e.key(ch, "d:"), e.eraKey(ch)}
	window := "0"
	if opts.IdempotencyKey != "" && opts.DedupeWindow > 0 {
		keys[2] = e.key(ch, "d:"+opts.IdempotencyKey)
		window = strconv.FormatInt(ms(opts.DedupeWindow), 10)
	}
	touch := "0"
	if e.wait > 0 {
		touch = "1"
	}
	return pubCall{keys, []any{data, opts.HistorySize, ms(opts.HistoryTTL), ms(e.metaTTL(opts.HistoryTTL)),
		engine.NewEpoch(), window, e.key(ch, "s"), engine.NewEpoch(), touch}}, nil
}

// publishFailed is the error of a publish whose script call failed.
func (e *Engine) publishFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil || notRun(err) {
		return e.fail(ctx, "publish", err)
	}
	e.reloadTopology()
	return engine.MaybeStored("the connection to Redis failed after the publication was sent", fmt.Errorf("redis publish: %w", err))
}

// published applies the script's reply to pub.
func (e *Engine) published(ctx context.Context, pub *heraldv1.Publication, res []any) (engine.PublishResult, error) {
	offset, epoch, dup, err := publishReply(res)
	if err != nil {
		return engine.PublishResult{}, e.fail(ctx, "publish", err)
	}
	if !dup {
		pub.Offset, pub.Epoch = offset, epoch
	}
	return engine.PublishResult{Position: &heraldv1.StreamPosition{Offset: offset, Epoch: epoch}, Duplicate: dup}, nil
}

// Publish implements engine.Broker.
func (e *Engine) Publish(ctx context.Context, pub *heraldv1.Publication, opts engine.PublishOptions) (engine.PublishResult, error) {
	if e.wait > 0 {
		res, errs := e.PublishBatch(ctx, []*heraldv1.Publication{pub}, []engine.PublishOptions{opts})
		return res[0], errs[0]
	}
	call, err := e.publishCall(pub, opts)
	if err != nil {
		return engine.PublishResult{}, err
	}
	res, err := runOnce(ctx, e.client, publishScript, publishLua, call.keys, call.args...).Slice()
	if err != nil {
		return engine.PublishResult{}, e.publishFailed(ctx, err)
	}
	r, err := e.published(ctx, pub, res)
	if err == nil {
		e.register(ctx, []registration{{pub.Channel, e.metaTTL(opts.HistoryTTL)}})
	}
	return r, err
}

// PublishBatch publishes pubs in one round trip (one per primary of a
// cluster): the publish script pipelined once per publication. Redis runs
// them one after the other, so offsets follow the order of pubs within
// each channel. Every result comes with its own error.
func (e *Engine) PublishBatch(ctx context.Context, pubs []*heraldv1.Publication, opts []engine.PublishOptions) ([]engine.PublishResult, []error) {
	results := make([]engine.PublishResult, len(pubs))
	errs := make([]error, len(pubs))
	calls := make([]pubCall, len(pubs))
	var idx []int
	for i, pub := range pubs {
		var err error
		if calls[i], err = e.publishCall(pub, opts[i]); err != nil {
			errs[i] = err
			continue
		}
		idx = append(idx, i)
	}
	cmds := make([]*goredis.Cmd, len(pubs))
	if e.wait > 0 {
		e.publishDurable(ctx, calls, idx, cmds, errs)
	} else {
		e.pipelinePublish(ctx, e.client, calls, idx, cmds)
	}
	var regs []registration
	for _, i := range idx {
		if errs[i] != nil {
			continue
		}
		res, err := cmds[i].Slice()
		if err != nil {
			errs[i] = e.publishFailed(ctx, err)
			continue
		}
		if results[i], errs[i] = e.published(ctx, pubs[i], res); errs[i] == nil {
			regs = append(regs, registration{pubs[i].Channel, e.metaTTL(opts[i].HistoryTTL)})
		}
	}
	e.register(ctx, regs)
	return results, errs
}

// pipelinePublish runs the calls idx on p in one pipeline, setting cmds.
// Those that met a Redis without the script (NOSCRIPT: they did not run)
// run again by source, in order, in a second pipeline. (Should another
// client load the script in the middle of the first pipeline, a later
// publication of a channel could run before an earlier one that met
// NOSCRIPT: both are stored once, in that order.)
func (e *Engine) pipelinePublish(ctx context.Context, p goredis.Cmdable, calls []pubCall, idx []int, cmds []*goredis.Cmd) {
	pipe := p.Pipeline()
	for _, i := range idx {
		cmds[i] = evalShaOnce(ctx, pipe, publishScript, calls[i].keys, calls[i].args...)
	}
	_, _ = pipe.Exec(ctx)
	var again []int
	for _, i := range idx {
		if goredis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return
	}
	pipe = p.Pipeline()
	for _, i := range again {
		cmds[i] = evalOnce(ctx, pipe, publishLua, calls[i].keys, calls[i].args...)
	}
	_, _ = pipe.Exec(ctx)
}

// publishDurable publishes the calls idx, each on the primary of its
// channel, each primary's followed by a WAIT on the same connection; a
// publication that ran but that WAIT does not confirm gets an error.
func (e *Engine) publishDurable(ctx context.Context, calls []pubCall, idx []int, cmds []*goredis.Cmd, errs []error) {
	groups := map[*goredis.Client][]int{}
	for _, i := range idx {
		node, err := e.primary(ctx, calls[i].keys[0])
		if err != nil {
			errs[i] = e.fail(ctx, "publish", err)
			continue
		}
		groups[node] = append(groups[node], i)
	}
	var wg sync.WaitGroup
	for node, group := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.publishOnPrimary(ctx, node, calls, group, cmds, errs)
		}()
	}
	wg.Wait()
}

func (e *Engine) publishOnPrimary(ctx context.Context, node *goredis.Client, calls []pubCall, idx []int, cmds []*goredis.Cmd, errs []error) {
	pipe := node.Pipeline()
	for _, i := range idx {
		cmds[i] = evalShaOnce(ctx, pipe, publishScript, calls[i].keys, calls[i].args...)
	}
	wait := e.waitCmd(ctx, pipe)
	_, _ = pipe.Exec(ctx)
	waits := make(map[int]*goredis.IntCmd, len(idx))
	var again []int
	for _, i := range idx {
		waits[i] = wait
		if goredis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		pipe = node.Pipeline()
		for _, i := range again {
			cmds[i] = evalOnce(ctx, pipe, publishLua, calls[i].keys, calls[i].args...)
		}
		wait := e.waitCmd(ctx, pipe)
		_, _ = pipe.Exec(ctx)
		for _, i := range again {
			waits[i] = wait
		}
	}
	for _, i := range idx {
		if cmds[i].Err() != nil {
			continue // publishFailed reports it
		}
		w := waits[i]
		if n, err := w.Result(); err != nil || n < int64(e.wait) {
			e.reloadTopology()
			errs[i] = engine.MaybeStored(fmt.Sprintf("it reached %d of the %d replicas of redis.wait_replicas within redis.wait_timeout (%v)", n, e.wait, e.waitFor), err)
		}
	}
}

// waitCmd queues WAIT wait_replicas wait_timeout on pipe.
func (e *Engine) waitCmd(ctx context.Context, pipe goredis.Pipeliner) *goredis.IntCmd {
	cmd := goredis.NewIntCmd(ctx, "wait", e.wait, ms(e.waitFor))
	_ = pipe.Process(ctx, cmd)
	return cmd
}

// primary returns the client of the primary that serves key.
func (e *Engine) primary(ctx context.Context, key string) (*goredis.Client, error) {
	if e.cluster == nil {
		return e.single, nil
	}
	return e.cluster.MasterForKey(ctx, key)
}

func publishReply(res []any) (offset uint64, epoch string, dup bool, err error) {
	if len(res) != 4 {
		return 0, "", false, fmt.Errorf("unexpected reply %v", res)
	}
	o, ok1 := res[0].(int64)
	ep, ok2 := res[1].(string)
	d, ok3 := res[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return 0, "", false, fmt.Errorf("unexpected reply %v", res)
	}
	return uint64(o), ep, d == 1, nil
}

// registration is a channel to list in the registry for at least ttl.
type registration struct {
	channel string
	ttl     time.Duration
}

// register records channels in the registry behind Channels, each at most
// once per registerEvery per node, in one round trip; failures only delay
// the listing.
func (e *Engine) register(ctx context.Context, regs []registration) {
	now := time.Now()
	var todo []registration
	for _, r := range regs {
		if v, ok := e.registered.Load(r.channel); ok && now.UnixMilli() < v.(int64) {
			continue
		}
		if e.nregistered.Add(1) > 100_000 {
			e.registered.Clear()
			e.nregistered.Store(0)
		}
		e.registered.Store(r.channel, now.Add(registerEvery).UnixMilli())
		todo = append(todo, r)
	}
	if len(todo) == 0 {
		return
	}
	cmds := make([]*goredis.IntCmd, len(todo))
	names := make([]*goredis.IntCmd, len(todo))
	_, _ = e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, r := range todo {
			// Outlive the next refresh, which comes registerEvery later at most.
			ttl := max(r.ttl, 2*registerEvery)
			key := e.registryKey(r.channel)
			cmds[i] = p.ZAddGT(ctx, key, goredis.Z{Score: float64(now.Add(ttl).UnixMilli()), Member: r.channel})
			names[i] = p.ZAdd(ctx, namesKey(key), goredis.Z{Member: r.channel})
		}
		return nil
	})
	for i, cmd := range cmds {
		if cmd.Err() != nil || names[i].Err() != nil {
			e.registered.Delete(todo[i].channel)
		}
	}
}
