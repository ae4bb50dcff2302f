package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
)

// The bench's own garbage collector does not run while it measures.
//
// The bench is a Go program too: its clients, publishers and histograms
// allocate (~27 MB/s at 5,000 notifications/s to 10,000 clients), and on
// a machine where it shares the CPUs with the server each of its
// collections (a mark phase of tens of milliseconds, a quarter of the
// CPUs and more) takes CPU from the server in bursts. The server then
// falls behind for a moment and catches up with fewer, fuller writes,
// which flatters servers that coalesce: with the bench collecting,
// Herald's CPU per notification measured 1.06–1.14× the floor's; with it
// off in the window, 1.16–1.20× (alternating runs, BENCHMARKS.md,
// "Session 19"). Real clients do not pause the server's CPUs, so in a
// measured window (from mark to the end of the drain) the bench collects
// before and after, and not in between, unless its heap reaches
// benchMemoryLimit (the runtime then collects as it must, so a long run
// is bounded all the same). The servers' own collections stay: they are
// what a deployment pays.

// benchMemoryLimit is the heap at which the bench collects even in a
// measured window: a quarter of the machine's memory, at most 4 GiB.
// GOMEMLIMIT, when set, is left as it is.
func benchMemoryLimit() int64 {
	limit := int64(4 << 30)
	if total := memTotal(); total > 0 && total/4 < limit {
		limit = total / 4
	}
	return limit
}

// setMemoryLimit applies benchMemoryLimit unless GOMEMLIMIT is set.
func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(benchMemoryLimit())
	}
}

// pauseGC collects, then turns the collector off (as far as the memory
// limit allows) until the returned function first runs, which turns it
// back on and reports how many bytes were allocated meanwhile and how
// many collections the limit forced; later calls do nothing.
func pauseGC() (resume func() (allocated, forced uint64)) {
	runtime.GC()
	before := gcSample()
	old := debug.SetGCPercent(-1)
	done := false
	return func() (uint64, uint64) {
		if done {
			return 0, 0
		}
		done = true
		after := gcSample()
		debug.SetGCPercent(old)
		runtime.GC()
		return after.allocs - before.allocs, after.cycles - before.cycles
	}
}

type gcStats struct{ allocs, cycles uint64 }

func gcSample() gcStats {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	var g gcStats
	if s[0].Value.Kind() == metrics.KindUint64 {
		g.allocs = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		g.cycles = s[1].Value.Uint64()
	}
	return g
}

// memTotal is the machine's memory in bytes from /proc/meminfo (0 where
// there is none).
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
