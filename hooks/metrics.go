package hooks

import (
	"sync/atomic"

	"github.com/herald-io/herald/config"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	metricCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_hook_calls_total",
		Help: "Calls made to the application's backend, by hook (connect, refresh, subscribe, publish, rpc).",
	}, []string{"hook"})
	metricErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_hook_errors_total",
		Help: "Hook calls without an answer, by hook and code: unavailable (unreachable, or an error status), timeout, bad_answer (undecodable or breaking the hook's rules), overloaded (hooks.max_in_flight reached: not made), circuit_open (not made).",
	}, []string{"hook", "code"})
	metricRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_hook_refusals_total",
		Help: "Answers of the application's backend that refused (a connect, refresh, subscribe or publish refused, an rpc error), by hook.",
	}, []string{"hook"})
	metricDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "herald_hook_duration_seconds",
		Help:    "Latency of calls made to the application's backend, answered or not, by hook.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"hook"})
	metricCircuit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_hook_circuit_state",
		Help: "State of the circuit to the application's backend, by backend (hooks.grpc_addr or http_url): 0 closed, 1 half-open (one call probes), 2 open (calls refused at once).",
	}, []string{"backend"})
	inFlight atomic.Int64
)

func init() {
	for _, h := range config.HookNames {
		metricCalls.WithLabelValues(h)
		metricRefusals.WithLabelValues(h)
		metricDuration.WithLabelValues(h)
		for _, k := range kinds {
			metricErrors.WithLabelValues(h, k.String())
		}
	}
	prometheus.MustRegister(metricCalls, metricErrors, metricRefusals, metricDuration, metricCircuit,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_hook_in_flight",
			Help: "Hook calls in flight to the application's backend, over every bridge of the process (each bounded by hooks.max_in_flight).",
		}, func() float64 { return float64(inFlight.Load()) }))
}
