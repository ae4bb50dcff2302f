package service

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// The core's Prometheus metrics. They are process-wide: a process runs one
// node (tests that start several share them).
var (
	metricPublications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_publications_total",
		Help: "Publications accepted by this node, by namespace (duplicates of an idempotency key excluded).",
	}, []string{"namespace"})
	metricPublishErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_publish_errors_total",
		Help: "Publishes refused, by gRPC code.",
	}, []string{"code"})
	metricPublishDuplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_publish_duplicates_total",
		Help: "Publishes answered from the dedupe window (idempotency key seen before).",
	})
	metricEngineDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "herald_engine_duration_seconds",
		Help:    "Latency of engine operations.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"engine", "op"})
	metricEngineErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_engine_errors_total",
		Help: "Engine operations that failed, by operation.",
	}, []string{"engine", "op"})
	metricStreams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_grpc_subscribe_streams",
		Help: "Open gRPC subscriptions: Subscribe streams and SubscribeMany subscriptions (a bridge holds one per channel).",
	})
	metricStreamEnds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_grpc_subscribe_ends_total",
		Help: "Subscribe streams, SubscribeMany streams and SubscribeMany subscriptions ended by the server, by reason (slow, reset, shutdown).",
	}, []string{"reason"})
	metricBridges = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_bridge_sessions",
		Help: "Bridges attached to this node through BridgeSession.",
	})
	metricKeyRateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_publish_rate_limited_total",
		Help: "Publishes refused because their API key was over its publish_rate, by key name.",
	}, []string{"key"})
	metricLimitRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_limit_refusals_total",
		Help: "Operations refused with RESOURCE_EXHAUSTED because they would go beyond a configured limit, by option (limits.max_channels_per_node), or keyless_grpc_streams (health and reflection calls without an API key beyond 256 at once, or 8 from one address).",
	}, []string{"limit"})
	metricBuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_build_info",
		Help: "Always 1; labels tell the version and Go version.",
	}, []string{"version", "goversion"})
)

func init() {
	prometheus.MustRegister(metricPublications, metricPublishErrors, metricPublishDuplicates,
		metricEngineDuration, metricEngineErrors, metricStreams, metricStreamEnds, metricBridges, metricKeyRateLimited, metricBuildInfo,
		metricLimitRefusals)
	metricBuildInfo.WithLabelValues(Version, runtime.Version()).Set(1)
}
