package bench

import (
	"runtime/debug"
	"testing"
)

var gcSink [][]byte

// TestPauseGC: in the window no collection runs however much is allocated
// (below the memory limit), the bytes are counted, and afterwards the
// collector is back as it was; a second resume does nothing.
func TestPauseGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	resume := pauseGC()
	for range 64 {
		gcSink = append(gcSink, make([]byte, 1<<20))
	}
	gcSink = nil
	allocated, forced := resume()
	if forced != 0 || allocated < 64<<20 {
		t.Fatalf("allocated %d B, %d collections in the window; want ≥ 64 MiB and none", allocated, forced)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GC percent after the window %d, want 100", p)
	}
	if a, f := resume(); a != 0 || f != 0 {
		t.Fatalf("a second resume reported %d, %d", a, f)
	}
	if l := benchMemoryLimit(); l <= 0 || l > 4<<30 {
		t.Fatalf("memory limit %d", l)
	}
}
