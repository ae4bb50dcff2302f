package node

import "github.com/prometheus/client_golang/prometheus"

var metricReady = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "herald_ready",
	Help: "1 while the node is ready (engine reachable, not draining), else 0: what /readyz and gRPC health report.",
})

func init() { prometheus.MustRegister(metricReady) }
