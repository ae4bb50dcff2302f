//go:build !race

// The race detector enlarges stack frames and guards; this check is about
// production builds.

package wsbridge_test

import (
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/herald-io/herald/node"
)

// TestIdleReaderStack checks that idle connections' readers fit Go's
// minimum 2 KB stack. The runtime starts every new goroutine with the
// average stack in use at the last GC (plus a guard, rounded up to a power
// of 2): a parked reader using over ~1.1 KB, because its read path is one
// frame deeper or because request handling grew its stack, makes that 4 KB
// for readers and writers alike, and idle memory per connection grows by
// 2 KB. See readLoop.
func TestIdleReaderStack(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1000 connections")
	}
	cfg := testConfig()
	cfg.Bridge.Anonymous = true
	n := startNode(t, cfg, node.Serve)
	for i := 0; i < 1000; i++ {
		c := connect(t, n, "", "")
		c.subscribe("chat:idle", nil)
	}
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	if got := s[0].Value.Uint64(); got > 2048 {
		t.Fatalf("starting stack size %d bytes with 1000 idle connections: the readers' stacks in use grew past ~1.1 KB", got)
	}
}
