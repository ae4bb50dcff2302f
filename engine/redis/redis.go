package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Engine is the Redis engine. Make it with New.
type Engine struct {
	client  goredis.UniversalClient
	single  *goredis.Client        // one Redis; nil on a cluster
	cluster *goredis.ClusterClient // a cluster; nil on one Redis
	prefix  string
	opts    Options
	log     *slog.Logger
	wait    int           // redis.wait_replicas
	waitFor time.Duration // redis.wait_timeout

	registry []string // registry keys (one on one Redis, spread over a cluster)
	// namesFilled is set once the registry's name indexes were filled
	// from it (backfillNames).
	namesFilled atomic.Bool
	controls    []string // control channels (likewise)

	h atomic.Pointer[handlerBox]

	ps *pubsub

	// registered: channel -> unix ms until which the registry entry need
	// not be refreshed; nregistered bounds it.
	registered  sync.Map
	nregistered atomic.Int64

	pmu          sync.Mutex // guards local
	local        map[presenceKey]*heraldv1.ClientInfo
	presenceKick chan struct{} // capacity 1: refresh presence now

	lastReload atomic.Int64 // unix ns of the last topology reload asked for

	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type handlerBox struct{ engine.Handler }

type presenceKey struct{ channel, client string }

var (
	_ engine.Engine         = (*Engine)(nil)
	_ engine.BatchPublisher = (*Engine)(nil)
)

// Options tune the Redis engine. Zero values take the defaults.
type Options struct {
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
	// Conns is the number of pub/sub connections to each primary. Default
	// 4 on one Redis, 2 per primary of a cluster.
	Conns int
	// HasPresence reports whether a channel's namespace keeps presence;
	// the presence sweep skips channels where it is false. Default: every
	// channel.
	HasPresence func(channel string) bool
	// Log receives connection problems. Default: discard.
	Log *slog.Logger
}

// defaults are the defaults of Options; SetTimingForTest shortens them.
var defaults = Options{
	PresenceTTL:     30 * time.Second,
	PresenceRefresh: 10 * time.Second,
	MetaTTL:         24 * time.Hour,
	Timeout:         time.Second,
}

// SetTimingForTest shortens the presence timing of engines created
// afterwards, for tests (of this package and others) that watch entries
// expire; the returned function restores it. Not for production use.
func SetTimingForTest(presenceTTL, refresh time.Duration) (restore func()) {
	old := defaults
	defaults.PresenceTTL = presenceTTL
	defaults.PresenceRefresh = refresh
	return func() { defaults = old }
}

// spread is how many registry keys and control channels a cluster has:
// enough to reach every primary of clusters of up to a dozen primaries
// or so, and cheap (every node subscribes to every control channel).
const spread = 16

// maxChannelsListed bounds the channels whose state Channels reads for an
// answer in one piece (limit 0); minNamesRead is the fewest names it
// reads from an index at a time. Variables for the tests.
var (
	maxChannelsListed = 10000
	minNamesRead      = 100
)

// registerEvery is how often a node refreshes a channel in the registry.
const registerEvery = time.Minute

// redisLogger sends go-redis's own messages (dial failures while Redis is
// down, mostly) to slog at debug level: the engine reports outages itself,
// through errors, readiness and warnings.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug("go-redis: "+fmt.Sprintf(format, v...), "component", "redis")
}

// go-redis has one process-wide logger: the first engine's logger wins.
var redisLogOnce sync.Once

// IsCluster reports whether cfg names a Redis Cluster: redis.cluster, or
// more than one address.
func IsCluster(cfg config.Redis) bool { return cfg.Cluster || len(cfg.Addrs) > 1 }

// New returns the Redis engine for cfg. It does not connect: a node
// starts while Redis is down, reports not ready, and recovers when Redis
// is back.
func New(cfg config.Redis, opts Options) (*Engine, error) {
	cluster := IsCluster(cfg)
	switch {
	case len(cfg.Addrs) == 0:
		return nil, errors.New("redis: no address")
	case strings.ContainsAny(cfg.Prefix, "{}"):
		return nil, fmt.Errorf("redis: prefix %q must not contain '{' or '}' (they delimit hash tags)", cfg.Prefix)
	case cluster && cfg.DB != 0:
		return nil, errors.New("redis: a Redis Cluster has only database 0 (redis.db)")
	case cfg.WaitReplicas < 0:
		return nil, errors.New("redis: wait_replicas must not be negative")
	}
	d := defaults
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
	if opts.Conns <= 0 {
		opts.Conns = 4
		if cluster {
			opts.Conns = 2
		}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	redisLogOnce.Do(func() { goredis.SetLogger(redisLogger{opts.Log}) })
	waitFor := cfg.WaitTimeout.D()
	if cfg.WaitReplicas > 0 && waitFor <= 0 {
		waitFor = config.DefaultWaitTimeout
	}
	tlsConfig, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		prefix:  cfg.Prefix,
		opts:    opts,
		log:     opts.Log,
		wait:    cfg.WaitReplicas,
		waitFor: waitFor,
		local:   make(map[presenceKey]*heraldv1.ClientInfo),

		presenceKick: make(chan struct{}, 1),
	}
	// A WAIT answers within wait_timeout after the writes before it.
	readTimeout := opts.Timeout + waitFor
	if cluster {
		e.cluster = goredis.NewClusterClient(&goredis.ClusterOptions{
			Addrs:                 cfg.Addrs,
			Username:              cfg.Username,
			Password:              cfg.Password,
			Protocol:              2,
			DialTimeout:           opts.Timeout,
			DialerRetries:         1,
			ReadTimeout:           readTimeout,
			WriteTimeout:          opts.Timeout,
			PoolTimeout:           opts.Timeout,
			ContextTimeoutEnabled: true,
			// Redirects (MOVED, ASK) are followed; network errors are
			// retried only for commands that may run twice (see once).
			MaxRedirects:             3,
			MaxRetries:               -1,
			TLSConfig:                tlsConfig,
			DisableIdentity:          true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		})
		e.client = e.cluster
		tags := spreadTags(spread)
		for _, tag := range tags {
			e.registry = append(e.registry, e.prefix+":{"+tag+"}:channels")
			e.controls = append(e.controls, e.prefix+":{"+tag+"}:control")
		}
	} else {
		e.single = goredis.NewClient(&goredis.Options{
			Addr:                  cfg.Addrs[0],
			Username:              cfg.Username,
			Password:              cfg.Password,
			DB:                    cfg.DB,
			Protocol:              2,
			DialTimeout:           opts.Timeout,
			DialerRetries:         1,
			ReadTimeout:           readTimeout,
			WriteTimeout:          opts.Timeout,
			PoolTimeout:           opts.Timeout,
			ContextTimeoutEnabled: true,
			// A retried publish could be applied twice: fail instead, and
			// let the publisher retry with its idempotency key.
			MaxRetries:               -1,
			TLSConfig:                tlsConfig,
			DisableIdentity:          true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		})
		e.client = e.single
		e.registry = []string{e.prefix + ":channels"}
		e.controls = []string{e.prefix + ":control"}
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.ps = newPubSub(e)
	return e, nil
}

// clientTLS returns the TLS configuration of connections to Redis, or nil
// without redis.tls.
func clientTLS(cfg config.Redis) (*tls.Config, error) {
	if !cfg.TLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls_ca_file %s: no PEM certificate", cfg.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls_cert_file / tls_key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Name is "redis".
func (e *Engine) Name() string { return "redis" }

// key returns the key of one of a channel's structures.
func (e *Engine) key(channel, kind string) string {
	return e.prefix + ":{" + channel + "}:" + kind
}

// eraKey returns the key of the era of channel's empty epochs: one key on
// one Redis; on a cluster one per slot, in the slot (so that a shard that
// loses its data loses the era of its channels with them, and scripts
// read and write it with the channel's keys).
func (e *Engine) eraKey(channel string) string {
	if e.cluster == nil {
		return e.prefix + ":era"
	}
	return e.prefix + ":{" + slotTag(keySlot(e.key(channel, "m"))) + "}:era"
}

// registryKey returns the registry key that lists channel.
func (e *Engine) registryKey(channel string) string {
	return e.registry[shardOf(channel, len(e.registry))]
}

func shardOf(s string, n int) int {
	if n == 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return int(h.Sum32() % uint32(n))
}

func (e *Engine) handler() engine.Handler {
	if b := e.h.Load(); b != nil {
		return b.Handler
	}
	return nil
}

// Start begins delivery to h: the pub/sub connections, and the presence
// refresh. It waits (at most Timeout) for the control subscriptions and
// the eras, and does not fail when Redis is down.
func (e *Engine) Start(ctx context.Context, h engine.Handler) error {
	e.h.Store(&handlerBox{h})
	go func() {
		select {
		case <-ctx.Done():
			e.cancel()
		case <-e.ctx.Done():
		}
	}()
	e.ps.start()
	e.wg.Add(1)
	go func() { defer e.wg.Done(); e.refreshLoop() }()
	// The eras, so that empty epochs are stable from the first read on:
	// best effort, within the same wait as the control subscriptions.
	eras := make(chan struct{})
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer close(eras)
		ctx, cancel := context.WithTimeout(e.ctx, 2*e.opts.Timeout)
		defer cancel()
		if err := e.setEras(ctx); err != nil && e.ctx.Err() == nil {
			e.log.Warn("redis: could not check the era keys; the next publish of a new channel sets its slot's", "err", err)
		}
	}()
	t := time.NewTimer(2 * e.opts.Timeout)
	defer t.Stop()
	for ready, erasSet := e.ps.controlsReady(), eras; ready != nil || erasSet != nil; {
		select {
		case <-ready:
			ready = nil
		case <-erasSet:
			erasSet = nil
		case <-t.C:
			if ready != nil {
				e.log.Warn("redis: control subscriptions not confirmed yet; continuing")
			}
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// setEras makes the eras that are missing (Redis lost them, or is new):
// one on one Redis, one per slot on a cluster.
func (e *Engine) setEras(ctx context.Context) error {
	if e.cluster == nil {
		return e.client.SetNX(ctx, e.prefix+":era", engine.NewEpoch(), 0).Err()
	}
	_, err := e.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for s := range numSlots {
			p.SetNX(ctx, e.prefix+":{"+slotTag(s)+"}:era", engine.NewEpoch(), 0)
		}
		return nil
	})
	return err
}

// period numbers the stretch of time (ms since 1970) an empty epoch stands
// for: half the meta TTL, since a channel's state lives at least MetaTTL
// (see engine.EmptyEpoch), and clocks of nodes and Redis may differ by
// much less than the other half.
func (e *Engine) period(ms int64) int64 { return ms / max(e.opts.MetaTTL.Milliseconds()/2, 1) }

// emptyEpoch returns the empty epoch at ms for era, or, while Redis has no
// era there (between losing its data and the next publish or start), a
// random epoch that no position resumes from.
func (e *Engine) emptyEpoch(era any, ms int64) string {
	s, ok := era.(string)
	if !ok || s == "" {
		return engine.NewEpoch()
	}
	return engine.EmptyEpoch(s, e.period(ms))
}

// reloadTopology asks the cluster client to reload the slot map soon, at
// most every 100 ms: go-redis follows MOVED by itself, but after a
// primary died it keeps sending its slots' commands to it until its slot
// map is reloaded (every minute by itself).
func (e *Engine) reloadTopology() {
	if e.cluster == nil {
		return
	}
	now := time.Now().UnixNano()
	last := e.lastReload.Load()
	if now-last < int64(100*time.Millisecond) || !e.lastReload.CompareAndSwap(last, now) {
		return
	}
	e.cluster.ReloadState(e.ctx)
}

// notRun reports whether err is a failure that guarantees the command was
// not executed: Redis refused it (an error reply: MOVED, CLUSTERDOWN,
// NOSCRIPT, LOADING, …), or it was never sent (no connection).
func notRun(err error) bool {
	var rerr goredis.Error
	var op *net.OpError
	return errors.As(err, &rerr) || errors.As(err, &op) && op.Op == "dial" ||
		errors.Is(err, goredis.ErrPoolTimeout) || errors.Is(err, goredis.ErrClosed)
}

// fail turns a Redis error into one that wraps ErrUnavailable, unless the
// caller's context ended.
func (e *Engine) fail(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	e.reloadTopology()
	var rerr goredis.Error
	if errors.As(err, &rerr) && !topologyError(err) && !goredis.HasErrorPrefix(err, "LOADING") && !goredis.HasErrorPrefix(err, "OOM") {
		e.log.Error("redis: command failed", "op", op, "err", err)
	}
	return fmt.Errorf("redis %s: %w: %v", op, engine.ErrUnavailable, err)
}

// topologyError reports whether err is Redis telling that a slot is
// elsewhere or not served right now.
func topologyError(err error) bool {
	for _, p := range []string{"MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY"} {
		if goredis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// Ping reports whether Redis answers. On a cluster it asks one node: a
// cluster with a shard failing over still serves the others, and a node
// that turns not ready because of one shard would take every node out of
// its load balancer at once.
func (e *Engine) Ping(ctx context.Context) error {
	if e.cluster == nil {
		if err := e.single.Ping(ctx).Err(); err != nil {
			return e.fail(ctx, "ping", err)
		}
		return nil
	}
	var err error
	tried := map[*goredis.Client]bool{}
	for _, ch := range e.controls { // their slots reach every primary
		var c *goredis.Client
		if c, err = e.cluster.MasterForKey(ctx, ch); err != nil {
			break
		}
		if tried[c] {
			continue
		}
		tried[c] = true
		if err = c.Ping(ctx).Err(); err == nil {
			return nil
		}
	}
	return e.fail(ctx, "ping", err)
}

// Close stops delivery and the presence refresh. It leaves this node's
// presence entries to expire (the server removes them first on a graceful
// shutdown).
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.cancel()
		e.ps.close()
		e.wg.Wait()
		_ = e.client.Close()
	})
	return nil
}
