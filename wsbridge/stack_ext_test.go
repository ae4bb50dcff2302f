//go:build !race

// The race detector enlarges stack frames and guards; this check is about
// production builds.

package wsbridge_test

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/herald-io/herald/node"
)

// TestIdleReaderStack checks that idle SSE connections hold no goroutine
// (their readers park, as WebSockets' do: idlepoll_linux.go) and that Go's
// starting stack size stays 2 KB with them. The runtime starts every new
// goroutine with the average stack in use at the last GC (plus a guard,
// rounded up to a power of 2): readers that waited in Read with over ~1.1
// KB of stack (over TLS, before they parked, they did) made that 4 KB for
// readers and writers alike. The clients here are raw sockets, so that no
// client goroutine counts.
func TestIdleReaderStack(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1000 connections")
	}
	n := startNode(t, testConfig(), node.Serve)
	base := runtime.NumGoroutine()
	const conns = 1000
	for i := 0; i < conns; i++ {
		rawSSE(t, n, fmt.Sprintf("u%d", i), "chat:idle")
	}
	if g := runtime.NumGoroutine(); g > base+conns/10 {
		t.Fatalf("%d goroutines with %d idle SSE connections, %d before: their readers should park", g, conns, base)
	}
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	if got := s[0].Value.Uint64(); got > 2048 {
		t.Fatalf("starting stack size %d bytes with 1000 idle connections: the readers' stacks in use grew past ~1.1 KB", got)
	}
}
