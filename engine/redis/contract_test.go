package redis

import (
	"testing"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	"github.com/herald-io/herald/internal/redistest"
)

// TestContract runs the engine contract suite on one Redis and on a Redis
// Cluster (three primaries, three replicas).
func TestContract(t *testing.T) {
	run := func(t *testing.T, cfg func() config.Redis) {
		enginetest.Run(t, enginetest.Factory{
			Name: "redis",
			New: func(t *testing.T, h engine.Handler) engine.Engine {
				return startEngine(t, cfg(), Options{}, h)
			},
			Peer: func(t *testing.T, of engine.Engine, h engine.Handler) engine.Engine {
				c := cfg()
				c.Prefix = of.(*Engine).prefix
				return startEngine(t, c, Options{}, h)
			},
		})
	}
	t.Run("one Redis", func(t *testing.T) {
		srv := redistest.Start(t)
		run(t, func() config.Redis { return singleConfig(srv.Addr) })
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.SharedCluster(t)
		run(t, func() config.Redis { return clusterConfig(c.Addrs()) })
	})
}
