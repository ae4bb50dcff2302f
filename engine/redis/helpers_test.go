package redis

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
)

var prefixSeq atomic.Int64

// newPrefix returns a key prefix no other test uses.
func newPrefix() string {
	return fmt.Sprintf("t%d-%d", time.Now().UnixNano(), prefixSeq.Add(1))
}

// startEngine returns a started engine on cfg, closed at cleanup.
func startEngine(t testing.TB, cfg config.Redis, opts Options, h engine.Handler) *Engine {
	t.Helper()
	e, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// singleConfig and clusterConfig name one Redis and a cluster, with a
// fresh prefix.
func singleConfig(addr string) config.Redis {
	return config.Redis{Addrs: []string{addr}, Prefix: newPrefix()}
}

func clusterConfig(addrs []string) config.Redis {
	return config.Redis{Addrs: addrs, Cluster: true, Prefix: newPrefix()}
}
