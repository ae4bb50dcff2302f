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

var subprotocolNames = [2]string{SubprotocolJSON, SubprotocolProto}

var (
	// Open WebSocket connections and subscriptions, by subprotocol.
	wsConns, wsSubs [2]atomic.Int64

	metricFramesSent [2]prometheus.Counter

	metricCloses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_closes_total",
		Help: "WebSocket connections closed by the bridge, by close code (docs/protocol.md lists them).",
	}, []string{"code"})
	metricSlowCloses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_ws_slow_consumer_closes_total",
		Help: "Connections closed because their outbound queue overflowed (close code 4004).",
	})
	metricAuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_auth_failures_total",
		Help: "Connect frames refused, by reason (missing_token, invalid_token, expired_token).",
	}, []string{"reason"})
	metricRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_refused_total",
		Help: "WebSocket upgrades refused before the upgrade, by limit (max_connections, max_conns_per_ip, accept_rate, shutting_down) or origin (a page whose origin is not allowed).",
	}, []string{"reason"})
	metricRateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ws_rate_limited_total",
		Help: "Browser requests refused by a rate limit (error 108), by limit (request_rate, user_publish_rate).",
	}, []string{"limit"})
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

	// closeCounters holds a resolved counter per documented close code, so
	// that counting a close is a map read and an atomic add.
	closeCounters = map[CloseCode]prometheus.Counter{}
)

// bridges are the live bridges of the process, for the gauges that need
// their state at scrape time.
var bridges struct {
	mu  sync.Mutex
	set map[*Bridge]struct{}
}

func init() {
	for f, name := range subprotocolNames {
		f := f
		l := prometheus.Labels{"subprotocol": name}
		metricFramesSent[f] = prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "herald_ws_frames_sent_total",
			Help:        "Server frames written to browsers (publications, replies, pushes), by subprotocol; several may share one WebSocket message.",
			ConstLabels: l,
		})
		prometheus.MustRegister(metricFramesSent[f],
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "herald_ws_connections",
				Help:        "Open WebSocket connections, by subprotocol (including ones not yet authenticated).",
				ConstLabels: l,
			}, func() float64 { return float64(wsConns[f].Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "herald_ws_subscriptions",
				Help:        "Connection-channel subscriptions, by subprotocol.",
				ConstLabels: l,
			}, func() float64 { return float64(wsSubs[f].Load()) }),
		)
	}
	for _, c := range closeCodes {
		closeCounters[c.Code] = metricCloses.WithLabelValues(strconv.Itoa(int(c.Code)))
	}
	for _, r := range []string{"missing_token", "invalid_token", "expired_token"} {
		metricAuthFailures.WithLabelValues(r)
	}
	for _, r := range []string{"max_connections", "max_conns_per_ip", "accept_rate", "shutting_down"} {
		metricRefused.WithLabelValues(r)
	}
	prometheus.MustRegister(metricCloses, metricSlowCloses, metricAuthFailures, metricRefused, metricRateLimited,
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
	)
}

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

// queuedBytes sums the unsent bytes of every connection; it runs at scrape
// time only.
func queuedBytes() float64 {
	var n int
	eachBridge(func(b *Bridge) {
		b.eachConn(func(c *conn) {
			c.mu.Lock()
			n += c.qbytes
			c.mu.Unlock()
		})
	})
	return float64(n)
}

// onClose counts and logs a close by the bridge. It runs once per
// connection, from closeWith.
func (c *conn) onClose(code CloseCode, reason string) {
	if m, ok := closeCounters[code]; ok {
		m.Inc()
	} else {
		metricCloses.WithLabelValues(strconv.Itoa(int(code))).Inc()
	}
	if code == CloseSlowConsumer {
		metricSlowCloses.Inc()
	}
	// reason never holds a token: token errors are written by verify,
	// which reports what is wrong, not the token.
	c.b.log.Debug("connection closing", "conn", c.id, "user", c.user, "code", int(code), "reason", reason)
}

// authFailed counts and logs a refused connect.
func (c *conn) authFailed(reason string, err error) {
	metricAuthFailures.WithLabelValues(reason).Inc()
	if err != nil {
		c.b.log.Debug("connect refused", "conn", c.id, "reason", reason, "err", err)
	} else {
		c.b.log.Debug("connect refused", "conn", c.id, "reason", reason)
	}
}

// authOK logs an authenticated connection.
func (c *conn) authOK() {
	c.b.log.Debug("connected", "conn", c.id, "user", c.user, "anonymous", c.ident == nil, "subprotocol", subprotocolNames[c.format])
}

// observeDelivery records the publish-to-fan-out latency of pub, once per
// publication per bridge.
func observeDelivery(pub *heraldv1.Publication) {
	if pub.TimeUnixMs <= 0 {
		return
	}
	d := time.Now().UnixMilli() - pub.TimeUnixMs
	metricDeliveryLatency.Observe(float64(max(d, 0)) / 1000)
}
