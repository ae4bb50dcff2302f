package service

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"google.golang.org/protobuf/proto"
)

// The Redis engine keeps channel state in Redis so that any number of nodes
// on one Redis form one service. Layout, for prefix P and channel C (the
// hash tag {C} puts all of a channel's keys, and its pub/sub channel, in one
// Cluster slot):
//
//	P:{C}:m        hash: e = epoch, o = last offset, c = when the epoch
//	               began (ms). Expires MetaTTL (at least the history TTL)
//	               after the last publish.
//	P:{C}:h        stream: the history, entry ID "<offset>-0", field d = the
//	               Publication (protobuf). MAXLEN = history size; the key
//	               expires history TTL after the last publish.
//	P:{C}:d:<key>  string "<offset> <epoch>": an idempotency key, for the
//	               dedupe window.
//	P:{C}:p        hash: client id -> "<expiry ms>:<ClientInfo protobuf>",
//	               presence; the key expires 2x PresenceTTL after the last write.
//	P:{C}:s        sharded pub/sub channel (SPUBLISH/SSUBSCRIBE): "p" +
//	               Publication, "j"/"l" + PresenceEvent (join/leave).
//	P:control      pub/sub channel (PUBLISH): BridgeSessionResponse commands
//	               for every node.
//	P:channels     sorted set: channel -> expiry (unix ms), the registry
//	               behind Channels. Written outside the scripts, so it may
//	               live in another slot.
//	P:era          string, no expiry: the era of empty epochs (see
//	               emptyEpoch), random; set if missing at Start and when a
//	               publish begins a channel's state, so it changes when
//	               Redis loses its data.
//
// Publish runs one Lua script (redis_publish.lua) that dedupes, increments
// the offset, creates the epoch when the channel has none, appends to the
// stream and SPUBLISHes the publication with its offset and epoch, so every
// node sees one order. A channel whose meta key is gone (expired, FLUSHALL,
// a new Redis) gets a new random epoch on its next publish. Reads (history,
// presence, the registry) never write a channel's keys: a channel without
// state reads as offset 0 of its empty epoch.
//
// Fan-out uses a fixed number of pub/sub connections (redisShards); a
// channel always maps to the same one, whose receive goroutine delivers it,
// so a channel's publications reach the Handler in order. See
// redis_pubsub.go.
//
// Redis Cluster and Valkey: the scripts touch only keys of one hash tag and
// SPUBLISH a channel of the same tag, as Cluster requires; the registry is
// written separately. Cluster itself is not supported yet (one address
// only): it needs a cluster client and pub/sub connections per node,
// grouping SSUBSCRIBE batches by slot. Valkey 7.2+ works like Redis 7.
// Redis 7.0 or later is needed (SPUBLISH, ZADD GT).
type redisEngine struct {
	client  *redis.Client
	prefix  string
	opts    RedisOptions
	log     *slog.Logger
	seed    maphash.Seed
	shards  []*psShard
	control string // pub/sub channel of commands

	h atomic.Pointer[handlerBox]

	// registered: channel -> unix ms until which the registry entry need
	// not be refreshed; nregistered bounds it.
	registered  sync.Map
	nregistered atomic.Int64

	pmu          sync.Mutex // guards local
	local        map[presenceKey]*heraldv1.ClientInfo
	presenceKick chan struct{} // capacity 1: refresh presence now

	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type handlerBox struct{ Handler }

var _ Engine = (*redisEngine)(nil)

// RedisOptions tune the Redis engine. Zero values take the defaults.
type RedisOptions struct {
	// PresenceTTL is how long a presence entry lives without a refresh,
	// which bounds how long a dead node's entries stay. Default 30s.
	PresenceTTL time.Duration
	// PresenceRefresh is how often a node rewrites its entries. Default 10s
	// (a third of PresenceTTL when only that is set).
	PresenceRefresh time.Duration
	// MetaTTL is how long a channel's epoch and offset outlive its last
	// publish (at least the history TTL). Default 24h.
	MetaTTL time.Duration
	// Timeout bounds each Redis command, dial included. Default 1s.
	Timeout time.Duration
	// Shards is the number of pub/sub connections. Default 4.
	Shards int
	// HasPresence reports whether a channel's namespace keeps presence;
	// the presence sweep skips channels where it is false. Default: every
	// channel.
	HasPresence func(channel string) bool
	// Log receives connection problems. Default: discard.
	Log *slog.Logger
}

// redisDefaults are the defaults of RedisOptions; tests shorten them.
var redisDefaults = RedisOptions{
	PresenceTTL:     30 * time.Second,
	PresenceRefresh: 10 * time.Second,
	MetaTTL:         24 * time.Hour,
	Timeout:         time.Second,
	Shards:          4,
}

// maxChannelsListed bounds what Channels reads from the registry.
const maxChannelsListed = 10000

// registerEvery is how often a node refreshes a channel in the registry.
const registerEvery = time.Minute

//go:embed redis_publish.lua
var publishLua string

//go:embed redis_history.lua
var historyLua string

//go:embed redis_presence_add.lua
var presenceAddLua string

//go:embed redis_presence_get.lua
var presenceGetLua string

var (
	publishScript     = redis.NewScript(publishLua)
	historyScript     = redis.NewScript(historyLua)
	presenceAddScript = redis.NewScript(presenceAddLua)
	presenceGetScript = redis.NewScript(presenceGetLua)
)

// redisLogger sends go-redis's own messages (dial failures while Redis is
// down, mostly) to slog at debug level: the engine reports outages itself,
// through errors, readiness and warnings.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug("go-redis: "+fmt.Sprintf(format, v...), "component", "redis")
}

// go-redis has one process-wide logger: the first engine's logger wins.
var redisLogOnce sync.Once

// NewRedisEngine returns the Redis engine for cfg. It does not connect:
// a node starts while Redis is down, reports not ready, and recovers when
// Redis is back.
func NewRedisEngine(cfg config.Redis, opts RedisOptions) (Engine, error) {
	switch {
	case len(cfg.Addrs) == 0:
		return nil, errors.New("redis: no address")
	case len(cfg.Addrs) > 1:
		return nil, errors.New("redis: several addresses (Redis Cluster) are not supported yet; give one address")
	case strings.ContainsAny(cfg.Prefix, "{}"):
		return nil, fmt.Errorf("redis: prefix %q must not contain '{' or '}' (they delimit hash tags)", cfg.Prefix)
	}
	d := redisDefaults
	if opts.PresenceTTL <= 0 {
		opts.PresenceTTL = d.PresenceTTL
	}
	if opts.PresenceRefresh <= 0 {
		opts.PresenceRefresh = min(d.PresenceRefresh, opts.PresenceTTL/3)
	}
	if opts.MetaTTL <= 0 {
		opts.MetaTTL = d.MetaTTL
	}
	if opts.Timeout <= 0 {
		opts.Timeout = d.Timeout
	}
	if opts.Shards <= 0 {
		opts.Shards = d.Shards
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{opts.Log}) })
	ro := &redis.Options{
		Addr:                  cfg.Addrs[0],
		Password:              cfg.Password,
		DB:                    cfg.DB,
		Protocol:              2,
		DialTimeout:           opts.Timeout,
		DialerRetries:         1,
		ReadTimeout:           opts.Timeout,
		WriteTimeout:          opts.Timeout,
		PoolTimeout:           opts.Timeout,
		ContextTimeoutEnabled: true,
		// A retried publish could be applied twice: fail instead, and let
		// the publisher retry with its idempotency key.
		MaxRetries:               -1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if cfg.TLS {
		ro.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	prefix := cfg.Prefix
	e := &redisEngine{
		client:  redis.NewClient(ro),
		prefix:  prefix,
		opts:    opts,
		log:     opts.Log,
		seed:    maphash.MakeSeed(),
		control: prefix + ":control",
		local:   make(map[presenceKey]*heraldv1.ClientInfo),

		presenceKick: make(chan struct{}, 1),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	for i := 0; i < opts.Shards; i++ {
		e.shards = append(e.shards, newPSShard(e, i == 0))
	}
	return e, nil
}

func (e *redisEngine) Name() string { return "redis" }

// key returns the key of one of a channel's structures.
func (e *redisEngine) key(channel, kind string) string {
	return e.prefix + ":{" + channel + "}:" + kind
}

func (e *redisEngine) registryKey() string { return e.prefix + ":channels" }

func (e *redisEngine) eraKey() string { return e.prefix + ":era" }

// setEra makes the era if there is none (Redis lost it, or is new).
func (e *redisEngine) setEra(ctx context.Context) error {
	return e.client.SetNX(ctx, e.eraKey(), newEpoch(), 0).Err()
}

// period numbers the stretch of time (ms since 1970) an empty epoch stands
// for: half the meta TTL, since a channel's state lives at least MetaTTL
// (see emptyEpoch), and clocks of nodes and Redis may differ by much less
// than the other half.
func (e *redisEngine) period(ms int64) int64 { return ms / max(e.opts.MetaTTL.Milliseconds()/2, 1) }

// emptyEpochAt returns the empty epoch at ms, or, while Redis has no era
// (between losing its data and the next publish or start), a random epoch
// that no position resumes from.
func (e *redisEngine) emptyEpochAt(ctx context.Context, ms int64) (string, error) {
	era, err := e.client.Get(ctx, e.eraKey()).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return newEpoch(), nil
	case err != nil:
		return "", err
	}
	return emptyEpoch(era, e.period(ms)), nil
}

func (e *redisEngine) handler() Handler {
	if b := e.h.Load(); b != nil {
		return b.Handler
	}
	return nil
}

// Start begins delivery to h: the pub/sub connections, and the presence
// refresh. It waits (at most Timeout) for the control subscription, and
// does not fail when Redis is down.
func (e *redisEngine) Start(ctx context.Context, h Handler) error {
	e.h.Store(&handlerBox{h})
	go func() {
		select {
		case <-ctx.Done():
			e.cancel()
		case <-e.ctx.Done():
		}
	}()
	for _, s := range e.shards {
		e.wg.Add(2)
		go func() { defer e.wg.Done(); s.receiveLoop() }()
		go func() { defer e.wg.Done(); s.syncLoop() }()
		s.wake()
	}
	e.wg.Add(1)
	go func() { defer e.wg.Done(); e.refreshLoop() }()
	// The era, so that empty epochs are stable from the first read on:
	// best effort, within the same wait as the control subscription.
	era := make(chan struct{})
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer close(era)
		ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
		defer cancel()
		if err := e.setEra(ctx); err != nil && e.ctx.Err() == nil {
			e.log.Warn("redis: could not check the era key; the next publish of a new channel sets it", "err", err)
		}
	}()
	t := time.NewTimer(e.opts.Timeout)
	defer t.Stop()
	for ready, eraSet := e.shards[0].controlReady, era; ready != nil || eraSet != nil; {
		select {
		case <-ready:
			ready = nil
		case <-eraSet:
			eraSet = nil
		case <-t.C:
			if ready != nil {
				e.log.Warn("redis: control subscription not confirmed yet; continuing", "addr", e.client.Options().Addr)
			}
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// fail turns a Redis error into one that wraps ErrUnavailable, unless the
// caller's context ended.
func (e *redisEngine) fail(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !strings.HasPrefix(rerr.Error(), "LOADING") && !strings.HasPrefix(rerr.Error(), "OOM") {
		e.log.Error("redis: command failed", "op", op, "err", err)
	}
	return fmt.Errorf("redis %s: %w: %v", op, ErrUnavailable, err)
}

func ms(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return max(d.Milliseconds(), 1)
}

func (e *redisEngine) metaTTL(historyTTL time.Duration) time.Duration {
	return max(e.opts.MetaTTL, historyTTL)
}

// publishArgs returns the keys and arguments of the publish script.
func (e *redisEngine) publishArgs(pub *heraldv1.Publication, opts PublishOptions) ([]string, []any, error) {
	data, err := proto.Marshal(pub)
	if err != nil {
		return nil, nil, err
	}
	ch := pub.Channel
	keys := []string{e.key(ch, "m"), e.key(ch, "h"), e.key(ch, "d:")}
	window := "0"
	if opts.IdempotencyKey != "" && opts.DedupeWindow > 0 {
		keys[2] = e.key(ch, "d:"+opts.IdempotencyKey)
		window = strconv.FormatInt(ms(opts.DedupeWindow), 10)
	}
	return keys, []any{data, opts.HistorySize, ms(opts.HistoryTTL), ms(e.metaTTL(opts.HistoryTTL)),
		newEpoch(), window, e.key(ch, "s")}, nil
}

// published applies the script's reply to pub.
func (e *redisEngine) published(ctx context.Context, pub *heraldv1.Publication, opts PublishOptions, res []any) (PublishResult, error) {
	offset, epoch, dup, created, err := publishReply(res)
	if err != nil {
		return PublishResult{}, e.fail(ctx, "publish", err)
	}
	if !dup {
		pub.Offset, pub.Epoch = offset, epoch
	}
	if created {
		// The channel's state began: make sure there is an era (Redis may
		// have lost its data), so that empty epochs read from now on can
		// resume. Best effort: without one they never resume.
		_ = e.setEra(ctx)
	}
	e.register(ctx, pub.Channel, e.metaTTL(opts.HistoryTTL))
	return PublishResult{Position: &heraldv1.StreamPosition{Offset: offset, Epoch: epoch}, Duplicate: dup}, nil
}

func (e *redisEngine) Publish(ctx context.Context, pub *heraldv1.Publication, opts PublishOptions) (PublishResult, error) {
	keys, args, err := e.publishArgs(pub, opts)
	if err != nil {
		return PublishResult{}, err
	}
	res, err := publishScript.Run(ctx, e.client, keys, args...).Slice()
	if err != nil {
		return PublishResult{}, e.fail(ctx, "publish", err)
	}
	return e.published(ctx, pub, opts, res)
}

// PublishBatch publishes pubs in order in one round trip: the publish
// script pipelined once per publication. Redis runs them one after the
// other, so offsets follow the order of pubs within each channel. Every
// result comes with its own error.
func (e *redisEngine) PublishBatch(ctx context.Context, pubs []*heraldv1.Publication, opts []PublishOptions) ([]PublishResult, []error) {
	results := make([]PublishResult, len(pubs))
	errs := make([]error, len(pubs))
	cmds := make([]*redis.Cmd, len(pubs))
	pipe := e.client.Pipeline()
	for i, pub := range pubs {
		keys, args, err := e.publishArgs(pub, opts[i])
		if err != nil {
			errs[i] = err
			continue
		}
		cmds[i] = publishScript.EvalSha(ctx, pipe, keys, args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		res, err := cmd.Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis does not have the script (first use, or it restarted),
			// so neither this publication nor any after it ran. Publish
			// them one by one, in order; Run loads the script.
			for j := i; j < len(pubs); j++ {
				if cmds[j] != nil {
					results[j], errs[j] = e.Publish(ctx, pubs[j], opts[j])
				}
			}
			return results, errs
		}
		if err != nil {
			errs[i] = e.fail(ctx, "publish", err)
			continue
		}
		results[i], errs[i] = e.published(ctx, pubs[i], opts[i], res)
	}
	return results, errs
}

func publishReply(res []any) (offset uint64, epoch string, dup, created bool, err error) {
	if len(res) != 4 {
		return 0, "", false, false, fmt.Errorf("unexpected reply %v", res)
	}
	o, ok1 := res[0].(int64)
	ep, ok2 := res[1].(string)
	d, ok3 := res[2].(int64)
	c, ok4 := res[3].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return 0, "", false, false, fmt.Errorf("unexpected reply %v", res)
	}
	return uint64(o), ep, d == 1, c == 1, nil
}

// register records channel in the registry behind Channels, at most once
// per registerEvery per node; failures only delay the listing.
func (e *redisEngine) register(ctx context.Context, channel string, ttl time.Duration) {
	now := time.Now()
	if v, ok := e.registered.Load(channel); ok && now.UnixMilli() < v.(int64) {
		return
	}
	if e.nregistered.Add(1) > 100_000 {
		e.registered.Clear()
		e.nregistered.Store(0)
	}
	e.registered.Store(channel, now.Add(registerEvery).UnixMilli())
	// Outlive the next refresh, which comes registerEvery later at most.
	ttl = max(ttl, 2*registerEvery)
	err := e.client.ZAddGT(ctx, e.registryKey(), redis.Z{Score: float64(now.Add(ttl).UnixMilli()), Member: channel}).Err()
	if err != nil {
		e.registered.Delete(channel)
	}
}

func (e *redisEngine) History(ctx context.Context, channel string, q HistoryQuery) (HistoryResult, error) {
	since, sinceEpoch := "", ""
	if q.Since != nil {
		since = strconv.FormatUint(q.Since.Offset, 10)
		sinceEpoch = q.Since.Epoch
	}
	reverse := "0"
	if q.Reverse {
		reverse = "1"
	}
	res, err := historyScript.Run(ctx, e.client, []string{e.key(channel, "m"), e.key(channel, "h")},
		since, sinceEpoch, max(q.Limit, 0), reverse,
	).Slice()
	if err != nil {
		return HistoryResult{}, e.fail(ctx, "history", err)
	}
	out, match, created, err := historyReply(res)
	if err != nil {
		return HistoryResult{}, e.fail(ctx, "history", err)
	}
	switch {
	case out.Position.Epoch == "": // no state
		z, err := e.emptyEpochAt(ctx, time.Now().UnixMilli())
		if err != nil {
			return HistoryResult{}, e.fail(ctx, "history", err)
		}
		out.Position.Epoch = z
		if q.Since != nil && q.Since.Epoch != "" && q.Since.Epoch != z {
			return out, ErrEpochMismatch
		}
	case match == 1:
		return out, ErrEpochMismatch
	case match == 2:
		// since is offset 0 of another epoch: it continues this one only
		// if it is the empty epoch of the period the state began in.
		born, err := e.emptyEpochAt(ctx, created)
		if err != nil {
			return HistoryResult{}, e.fail(ctx, "history", err)
		}
		if q.Since.Epoch != born {
			out.Publications = nil
			return out, ErrEpochMismatch
		}
	}
	return out, nil
}

func historyReply(res []any) (out HistoryResult, match, created int64, err error) {
	bad := fmt.Errorf("unexpected history reply")
	if len(res) != 6 {
		return HistoryResult{}, 0, 0, bad
	}
	offset, ok1 := res[0].(int64)
	epoch, ok2 := res[1].(string)
	oldest, ok3 := res[2].(int64)
	match, ok4 := res[3].(int64)
	entries, ok5 := res[4].([]any)
	created, ok6 := res[5].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return HistoryResult{}, 0, 0, bad
	}
	out = HistoryResult{
		Position: &heraldv1.StreamPosition{Offset: uint64(offset), Epoch: epoch},
		Oldest:   uint64(oldest),
	}
	if len(entries) > 0 {
		out.Publications = make([]*heraldv1.Publication, 0, len(entries))
	}
	for _, x := range entries {
		s, ok := x.(string)
		if !ok {
			return HistoryResult{}, 0, 0, bad
		}
		pub := &heraldv1.Publication{}
		if err := proto.Unmarshal([]byte(s), pub); err != nil {
			return HistoryResult{}, 0, 0, fmt.Errorf("history entry: %w", err)
		}
		out.Publications = append(out.Publications, pub)
	}
	return out, match, created, nil
}

func (e *redisEngine) Command(ctx context.Context, cmd *heraldv1.BridgeSessionResponse) error {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return err
	}
	if err := e.client.Publish(ctx, e.control, data).Err(); err != nil {
		return e.fail(ctx, "command", err)
	}
	return nil
}

func (e *redisEngine) Channels(ctx context.Context) ([]ChannelState, error) {
	now := time.Now().UnixMilli()
	names, err := e.client.ZRangeByScore(ctx, e.registryKey(), &redis.ZRangeBy{
		Min: strconv.FormatInt(now, 10), Max: "+inf", Count: maxChannelsListed,
	}).Result()
	if err != nil {
		return nil, e.fail(ctx, "channels", err)
	}
	metas := make([]*redis.SliceCmd, len(names))
	clients := make([]*redis.IntCmd, len(names))
	_, err = e.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			metas[i] = p.HMGet(ctx, e.key(name, "m"), "e", "o")
			clients[i] = p.HLen(ctx, e.key(name, "p"))
		}
		return nil
	})
	if err != nil {
		return nil, e.fail(ctx, "channels", err)
	}
	out := make([]ChannelState, 0, len(names))
	for i, name := range names {
		v := metas[i].Val()
		epoch, _ := v[0].(string)
		offset, _ := strconv.ParseUint(fmt.Sprint(v[1]), 10, 64)
		n := int(clients[i].Val())
		if epoch == "" && n == 0 {
			continue
		}
		out = append(out, ChannelState{Name: name, Position: &heraldv1.StreamPosition{Offset: offset, Epoch: epoch}, Clients: n})
	}
	return out, nil
}

func (e *redisEngine) Ping(ctx context.Context) error {
	if err := e.client.Ping(ctx).Err(); err != nil {
		return e.fail(ctx, "ping", err)
	}
	return nil
}

// Close stops delivery and the presence refresh. It leaves this node's
// presence entries to expire (the server removes them first on a graceful
// shutdown).
func (e *redisEngine) Close() error {
	e.closeOnce.Do(func() {
		e.cancel()
		for _, s := range e.shards {
			s.close()
		}
		e.wg.Wait()
		_ = e.client.Close()
	})
	return nil
}
