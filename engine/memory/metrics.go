package memory

import "github.com/prometheus/client_golang/prometheus"

// The memory engine's Prometheus metrics, registered with the default
// registry. They are process-wide: a process runs one node (tests that
// start several share them, and Close takes an engine's share out).
var (
	metricEngineChannels = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_engine_channels",
		Help: "Channels whose state (epoch, offset, history, idempotency keys) the memory engine holds; bounded by limits.max_channels_per_node.",
	})
	metricIdempotencyKeys = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_idempotency_keys",
		Help: "Idempotency keys the memory engine remembers; bounded by limits.max_idempotency_keys.",
	})
	metricKeysEvicted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_idempotency_keys_evicted_total",
		Help: "Idempotency keys the memory engine forgot before their dedupe window ended, or did not remember, to stay within a limit (limits.max_idempotency_keys_per_channel, limits.max_idempotency_keys). A retry of such a publication is published again.",
	}, []string{"limit"})
)

func init() {
	prometheus.MustRegister(metricEngineChannels, metricIdempotencyKeys, metricKeysEvicted)
}
