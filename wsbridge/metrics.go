package wsbridge

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// The bridge's Prometheus metrics. Like the core's, they are process-wide:
// gauges sum over every bridge of the process (a test may run several).
//
// Nothing here costs a lock or an allocation per subscriber: counts that
// change per connection or subscription are plain atomics read at scrape
// time, frames sent are added once per write (a batch), and the latency is
// observed once per publication per bridge.

var subprotocolNames = [numFormats]string{SubprotocolJSON, SubprotocolProto}

var (
	// Open sessions and subscriptions, by transport and subprotocol.
	metricConns, metricSubs [numTransports][numFormats]atomic.Int64

	metricFramesSent [numTransports][numFormats]prometheus.Counter

	// metricCloses counts closes by the bridge per transport, by close code.
	metricCloses     [numTransports]*prometheus.CounterVec
	metricSlowCloses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_ws_slow_consumer_closes_total",
		Help: "Connections closed because their outbound queue overflowed (close code 4004).",
	})
	metricRecoveriesTooBig = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_ws_recoveries_too_large_total",
		Help: "Subscriptions that went live with recovered=false because the publications to recover were more than the connection may have queued in replies (16 times bridge.queue_bytes).",
	})
	metricAuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_auth_failures_total",
		Help: "Connect frames refused, by reason (missing_token, invalid_token, expired_token; hook_refused: the connect hook refused; hook_unavailable: it gave no answer).",
	}, []string{"reason"})
	metricRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_refused_total",
		Help: "WebSocket upgrades refused before the upgrade, by limit (max_connections, max_conns_per_ip, accept_rate, shutting_down) or origin (a page whose origin is not allowed).",
	}, []string{"reason"})
	metricRateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_rate_limited_total",
		Help: "Browser requests refused by a rate limit (error 108), by limit (request_rate, user_publish_rate).",
	}, []string{"limit"})
	metricCommands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_commands_total",
		Help: "Command POSTs for SSE and HTTP-streaming sessions, by result: local (queued for a session of this bridge), forwarded_out (sent to the core for another bridge), forwarded_in (received for a session of this bridge), bad_token, bad_format, too_large, body_timeout, bad_body, queue_full, forward_limited, forward_unavailable.",
	}, []string{"result"})
	metricUpstreamRestarts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_ws_upstream_restarts_total",
		Help: "Upstream resumes: the bridge's SubscribeMany stream to the core broke and was reopened, or the core ended one channel's subscription on it and the channel resubscribed.",
	})
	metricInvalidPayloads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_ws_invalid_payloads_total",
		Help: "Publications whose JSON payload is not valid JSON in UTF-8 (stored before payloads were checked), delivered to browsers as binary instead so that no text frame breaks; once per publication fanned out, and once per replay or history read that carries it.",
	})
	metricDeliveryLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "herald_delivery_latency_seconds",
		Help:    "From a publication's acceptance by a core (its time_unix_ms) to its fan-out at this bridge; once per publication per bridge. Millisecond resolution; across nodes it includes clock skew.",
		Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})

	// closeCounters holds a resolved counter per transport and documented
	// close code, so that counting a close is a map read and an atomic add.
	closeCounters [numTransports]map[CloseCode]prometheus.Counter
)

// bridges are the live bridges of the process, for the gauges that need
// their state at scrape time.
var bridges struct {
	mu  sync.Mutex
	set map[*Bridge]struct{}
}

// metricPrefix names each transport's metric families: herald_ws_*,
// herald_sse_*, herald_http_stream_*.
var metricPrefix = [numTransports]string{"herald_ws_", "herald_sse_", "herald_http_stream_"}

// transportFormats are the subprotocols each transport carries (SSE is
// text: herald.json only).
var transportFormats = [numTransports][]format{{formatJSON, formatProto}, {formatJSON}, {formatJSON, formatProto}}

func init() {
	for k := range numTransports {
		what := [numTransports]string{"WebSocket connections", "SSE streams", "HTTP streams"}[k]
		for _, f := range transportFormats[k] {
			l := prometheus.Labels{"subprotocol": subprotocolNames[f]}
			metricFramesSent[k][f] = prometheus.NewCounter(prometheus.CounterOpts{
				Name:        metricPrefix[k] + "frames_sent_total",
				Help:        "Server frames written to browsers on " + what + " (publications, replies, pushes), by subprotocol; several may share one write.",
				ConstLabels: l,
			})
			prometheus.MustRegister(metricFramesSent[k][f],
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name:        metricPrefix[k] + "connections",
					Help:        "Open " + what + ", by subprotocol (including ones not yet authenticated).",
					ConstLabels: l,
				}, func() float64 { return float64(metricConns[k][f].Load()) }),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name:        metricPrefix[k] + "subscriptions",
					Help:        "Session-channel subscriptions of " + what + ", by subprotocol.",
					ConstLabels: l,
				}, func() float64 { return float64(metricSubs[k][f].Load()) }),
			)
		}
		metricCloses[k] = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix[k] + "closes_total",
			Help: what + " closed by the bridge, by close code (docs/protocol.md lists them).",
		}, []string{"code"})
		prometheus.MustRegister(metricCloses[k])
		closeCounters[k] = map[CloseCode]prometheus.Counter{}
		for _, c := range closeCodes {
			closeCounters[k][c.Code] = metricCloses[k].WithLabelValues(strconv.Itoa(int(c.Code)))
		}
	}
	for _, r := range []string{"missing_token", "invalid_token", "expired_token", "hook_refused", "hook_unavailable"} {
		metricAuthFailures.WithLabelValues(r)
	}
	for _, r := range []string{"max_connections", "max_conns_per_ip", "accept_rate", "shutting_down"} {
		metricRefused.WithLabelValues(r)
	}
	prometheus.MustRegister(metricCommands, metricSlowCloses, metricRecoveriesTooBig, metricAuthFailures, metricRefused, metricRateLimited,
		metricUpstreamRestarts, metricDeliveryLatency, metricInvalidPayloads,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_ws_channels",
			Help: "Channels with an upstream subscription to the core (one per channel per bridge, all on one SubscribeMany stream).",
		}, func() float64 {
			var n int64
			eachBridge(func(b *Bridge) { n += b.nChannels.Load() })
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_ws_queued_bytes",
			Help: "Bytes queued to browsers and not yet written, over all connections.",
		}, queuedBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_ws_behind",
			Help: "Bridges (one per process, unless embedded) whose publications reach their fan-out late: 10 ms or more after they were published, until one is 2 ms or less. Meanwhile the writer pool writes for the sessions on sockets of their own.",
		}, func() float64 {
			var n int
			eachBridge(func(b *Bridge) {
				if b.behind.Load() {
					n++
				}
			})
			return float64(n)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_ws_pool_detaches_total",
			Help: "Writes of the writer pool that the socket did not take at once (a client reading slower than it is sent to, while the bridge is behind): the session got a writer of its own, the pool a new worker.",
		}, func() float64 { return float64(metricPoolDetaches.Load()) }),
	)
}

// metricPoolDetaches counts transport.detach calls that gave a pool
// worker's place away.
var metricPoolDetaches atomic.Int64

// trackBridge adds b to the bridges the gauges read; untrackBridge removes it.
func trackBridge(b *Bridge) {
	bridges.mu.Lock()
	defer bridges.mu.Unlock()
	if bridges.set == nil {
		bridges.set = make(map[*Bridge]struct{})
	}
	bridges.set[b] = struct{}{}
}

func untrackBridge(b *Bridge) {
	bridges.mu.Lock()
	defer bridges.mu.Unlock()
	delete(bridges.set, b)
}

func eachBridge(f func(*Bridge)) {
	bridges.mu.Lock()
	defer bridges.mu.Unlock()
	for b := range bridges.set {
		f(b)
	}
}

// queuedBytes sums the unsent bytes of every session; it runs at scrape
// time only.
func queuedBytes() float64 {
	var n int
	eachBridge(func(b *Bridge) {
		b.eachSession(func(s *session) { n += s.t.queued() })
	})
	return float64(n)
}

// onClose counts and logs a close by the bridge. It runs once per
// session, from closeWith.
func (s *session) onClose(code CloseCode, reason string) {
	k := s.t.kind
	if m, ok := closeCounters[k][code]; ok {
		m.Inc()
	} else {
		metricCloses[k].WithLabelValues(strconv.Itoa(int(code))).Inc()
	}
	if code == CloseSlowConsumer {
		metricSlowCloses.Inc()
	}
	// reason never holds a token: token errors are written by verify,
	// which reports what is wrong, not the token.
	s.b.log.Debug("connection closing", "conn", s.id, "transport", k.String(), "user", s.user, "code", int(code), "reason", reason)
}

// authFailed counts and logs a refused connect.
func (s *session) authFailed(r *refusal) {
	metricAuthFailures.WithLabelValues(r.metric).Inc()
	if r.err != nil {
		s.b.log.Debug("connect refused", "conn", s.id, "transport", s.t.kind.String(), "reason", r.metric, "err", r.err)
	} else {
		s.b.log.Debug("connect refused", "conn", s.id, "transport", s.t.kind.String(), "reason", r.metric)
	}
}

// authOK logs an authenticated session.
func (s *session) authOK() {
	s.b.log.Debug("connected", "conn", s.id, "transport", s.t.kind.String(), "user", s.user, "anonymous", !s.ident.named(), "subprotocol", subprotocolNames[s.format])
}

// observeDelivery records the publish-to-fan-out latency of pub, once per
// publication per bridge, and returns it in milliseconds (ok false: pub
// carries no time).
func observeDelivery(pub *heraldv1.Publication) (ms int64, ok bool) {
	if pub.TimeUnixMs <= 0 {
		return 0, false
	}
	d := time.Now().UnixMilli() - pub.TimeUnixMs
	metricDeliveryLatency.Observe(float64(max(d, 0)) / 1000)
	return d, true
}
