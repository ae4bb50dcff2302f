package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Result is one run's report; it is printed as `RESULT <json>`.
type Result struct {
	Mode string `json:"mode"`
	// Target names the server measured: "herald" (the one at -ws and
	// -grpc, or one the bench started), "herald[BINARY]" with several
	// -serve-bin, or "floor" (the bench's reference broadcaster).
	Target string    `json:"target,omitempty"`
	Time   time.Time `json:"time"`
	// Round is the run's round in a comparison (-runs).
	Round int `json:"round,omitempty"`
	// Load1 is the machine's 1-minute load average when the run began.
	Load1    float64 `json:"load1"`
	Args     string  `json:"args"`
	N        int     `json:"n,omitempty"`
	NWanted  int     `json:"n_requested,omitempty"`
	Procs    int     `json:"procs,omitempty"`
	Rate     float64 `json:"rate,omitempty"`
	DurS     float64 `json:"dur_s,omitempty"`
	Size     int     `json:"size,omitempty"`
	Channels int     `json:"channels,omitempty"`

	Connect *ConnectStats `json:"connect,omitempty"`

	// Publisher.
	Publisher *PublisherStats `json:"publisher,omitempty"`

	// Deliveries to WebSocket (or gRPC Subscribe) clients.
	Expected       int64        `json:"expected,omitempty"`
	Received       int64        `json:"received,omitempty"`
	Loss           int64        `json:"loss"`
	Extra          int64        `json:"extra,omitempty"` // deliveries beyond what was expected
	ClientsShort   int          `json:"clients_with_loss,omitempty"`
	DeliveriesPerS float64      `json:"deliveries_per_s,omitempty"`
	Latency        *Percentiles `json:"latency_ms,omitempty"`
	// LatencySend is the latency from the send, when Latency counts from
	// the schedule: what a publisher that fell behind waited is left out.
	LatencySend  *Percentiles `json:"latency_send_ms,omitempty"`
	Disconnects  int          `json:"disconnects"`
	CloseCodes   map[int]int  `json:"close_codes,omitempty"`
	CloseSamples []string     `json:"close_samples,omitempty"`
	Unsubscribed int          `json:"unsubscribed,omitempty"`
	Foreign      int64        `json:"foreign_pubs,omitempty"`
	// Offsets checked per client: repeated, backwards, skipped.
	Duplicates int64 `json:"duplicates"`
	Reorders   int64 `json:"reorders"`
	Gaps       int64 `json:"gaps"`
	Presence   int64 `json:"presence_events,omitempty"`

	// Costs over the measured window.
	WindowS float64 `json:"window_s,omitempty"`
	// StealCores is the CPU the hypervisor gave to other machines over
	// the window, in cores: the machine's own noise, which no ratio
	// corrects for (a run with it is slower or cheaper for reasons of
	// its own).
	StealCores       float64 `json:"steal_cores,omitempty"`
	ServerCPUS       float64 `json:"server_cpu_s,omitempty"`
	ServerCores      float64 `json:"server_cores,omitempty"`
	ServerUsPerDeliv float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ServerUsPerPub   float64 `json:"server_cpu_us_per_publication,omitempty"`
	BenchCPUS        float64 `json:"bench_cpu_s,omitempty"`
	BenchCores       float64 `json:"bench_cores,omitempty"`
	// The bench collects no garbage in the window (pauseGC): what it
	// allocated meanwhile, and the collections its memory limit forced.
	BenchAllocBytes uint64 `json:"bench_alloc_bytes,omitempty"`
	BenchGCForced   uint64 `json:"bench_gc_forced,omitempty"`

	Memory *MemoryStats `json:"memory,omitempty"`

	// Profiles are the server's pprof profiles taken during the run
	// (-pprof-dir); a profiled run's CPU figures include the profiler.
	Profiles []string `json:"profiles,omitempty"`

	Limits   Limits   `json:"limits"`
	OK       bool     `json:"ok"`
	Failed   []string `json:"failed"`
	Warnings []string `json:"warnings,omitempty"`
}

// ConnectStats is the connect phase: dial, connect, subscribe confirmed.
type ConnectStats struct {
	Connected int          `json:"connected"`
	Errors    int          `json:"errors"`
	Samples   []string     `json:"error_samples,omitempty"`
	TotalS    float64      `json:"total_s"`
	PerS      float64      `json:"per_s"`
	Time      *Percentiles `json:"time_ms"`
}

// PublisherStats is what the publisher did and how well it kept time.
type PublisherStats struct {
	Kind     string       `json:"kind"` // stream or unary
	Workers  int          `json:"workers,omitempty"`
	Planned  int          `json:"planned"`
	Sent     int          `json:"sent"`
	Acked    int64        `json:"acked"`
	Errors   int64        `json:"errors"`
	Samples  []string     `json:"error_samples,omitempty"`
	PerS     float64      `json:"per_s"`
	Lag      *Percentiles `json:"lag_ms,omitempty"`
	Ack      *Percentiles `json:"ack_ms"`
	StreamEr string       `json:"stream_error,omitempty"`
}

// MemoryStats is the server's memory before and after the connections.
type MemoryStats struct {
	RSSBefore       int64   `json:"rss_before,omitempty"`
	RSSAfter        int64   `json:"rss_after,omitempty"`
	RSSPerConn      float64 `json:"rss_per_conn,omitempty"`
	HeapBefore      float64 `json:"heap_inuse_before,omitempty"`
	HeapAfter       float64 `json:"heap_inuse_after,omitempty"`
	HeapPerConn     float64 `json:"heap_per_conn,omitempty"`
	StackBefore     float64 `json:"stack_inuse_before,omitempty"`
	StackAfter      float64 `json:"stack_inuse_after,omitempty"`
	StackPerConn    float64 `json:"stack_per_conn,omitempty"`
	GoroutinesBefor float64 `json:"goroutines_before,omitempty"`
	GoroutinesAfter float64 `json:"goroutines_after,omitempty"`
	GoroutinesPer   float64 `json:"goroutines_per_conn,omitempty"`
}

// Percentiles of a histogram, in milliseconds.
type Percentiles struct {
	N    uint64  `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func percentiles(h *Histogram) *Percentiles {
	if h == nil {
		return nil
	}
	ms := func(v int64) float64 { return float64(v) / 1e6 }
	return &Percentiles{
		N:    h.Count(),
		Mean: h.Mean() / 1e6,
		P50:  ms(h.Quantile(0.50)),
		P90:  ms(h.Quantile(0.90)),
		P99:  ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)),
		Max:  ms(h.Max()),
	}
}

// Limits are the conditions a run must meet to be ok.
type Limits struct {
	// P99 bounds the latency p99 (delivery, or ack in publish mode).
	P99 time.Duration `json:"p99"`
	// MaxLag bounds the publisher lag p99.
	MaxLag time.Duration `json:"max_lag"`
}

// decide fills OK and Failed: a run is ok only with every client
// connected, no loss, no disconnects, no publish errors, the publisher on
// schedule and the p99 under the limit.
func (r *Result) decide() {
	var failed []string
	if c := r.Connect; c != nil && c.Errors > 0 {
		failed = append(failed, fmt.Sprintf("connect: %d of %d clients failed to connect", c.Errors, c.Errors+c.Connected))
	}
	if r.Loss > 0 {
		failed = append(failed, fmt.Sprintf("loss: %d of %d expected deliveries missing (%d clients short)", r.Loss, r.Expected, r.ClientsShort))
	}
	if r.Extra > 0 {
		failed = append(failed, fmt.Sprintf("duplicates: %d deliveries more than expected", r.Extra))
	}
	if r.Duplicates > 0 || r.Reorders > 0 || r.Gaps > 0 {
		failed = append(failed, fmt.Sprintf("order: %d repeated, %d out-of-order and %d skipped offsets", r.Duplicates, r.Reorders, r.Gaps))
	}
	if r.Disconnects > 0 {
		codes := ""
		if len(r.CloseCodes) > 0 {
			codes = fmt.Sprintf(" (close codes %v)", r.CloseCodes)
		}
		failed = append(failed, fmt.Sprintf("disconnects: %d clients disconnected by the server%s", r.Disconnects, codes))
	}
	if r.Unsubscribed > 0 {
		failed = append(failed, fmt.Sprintf("unsubscribed: the server ended %d subscriptions", r.Unsubscribed))
	}
	if p := r.Publisher; p != nil {
		if p.Errors > 0 || p.StreamEr != "" {
			failed = append(failed, fmt.Sprintf("publish errors: %d refused%s", p.Errors, prefixed(", stream: ", p.StreamEr)))
		}
		if p.Sent < p.Planned {
			failed = append(failed, fmt.Sprintf("publisher behind: sent %d of %d planned", p.Sent, p.Planned))
		}
		if p.Lag != nil && r.Limits.MaxLag > 0 && p.Lag.P99 > ms(r.Limits.MaxLag) {
			failed = append(failed, fmt.Sprintf("publisher lag: p99 %.2f ms > %v", p.Lag.P99, r.Limits.MaxLag))
		}
	}
	lat := r.Latency
	what := "latency"
	if r.Mode == "publish" && r.Publisher != nil {
		lat, what = r.Publisher.Ack, "ack latency"
	}
	if lat != nil && r.Limits.P99 > 0 && lat.P99 > ms(r.Limits.P99) {
		failed = append(failed, fmt.Sprintf("p99: %s p99 %.2f ms > %v", what, lat.P99, r.Limits.P99))
	}
	r.Failed = failed
	if r.Failed == nil {
		r.Failed = []string{}
	}
	r.OK = len(failed) == 0
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// fillDeliveries computes loss, extra and the clients short from
// per-client counts against per-client expectations. A negative count marks
// a client that never connected (a connect failure, reported as such): it
// is expected to receive nothing.
func (r *Result) fillDeliveries(expected, received []int64) {
	for i := range received {
		got := received[i]
		if got < 0 {
			continue
		}
		var want int64
		if i < len(expected) {
			want = expected[i]
		}
		r.Expected += want
		r.Received += got
		switch {
		case got < want:
			r.Loss += want - got
			r.ClientsShort++
		case got > want:
			r.Extra += got - want
		}
	}
	for i := len(received); i < len(expected); i++ { // clients no process reported on
		r.Expected += expected[i]
		r.Loss += expected[i]
		r.ClientsShort++
	}
}

// print writes the human summary (unless jsonOnly) and the RESULT line.
func (r *Result) print(w io.Writer, jsonOnly bool) {
	if !jsonOnly {
		r.summary(w)
	}
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "RESULT %s\n", b)
}

func (r *Result) summary(w io.Writer) {
	fmt.Fprintf(w, "== herald bench %s  %s\n", r.Mode, r.Args)
	if r.Target != "" {
		fmt.Fprintf(w, "target     %s, load average %.2f at the start\n", r.Target, r.Load1)
	}
	if c := r.Connect; c != nil {
		if c.Time == nil {
			c.Time = &Percentiles{}
		}
		fmt.Fprintf(w, "connect    %d connected, %d failed in %.2fs (%.0f/s); per connection p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			c.Connected, c.Errors, c.TotalS, c.PerS, c.Time.P50, c.Time.P99, c.Time.Max)
		for _, s := range c.Samples {
			fmt.Fprintf(w, "           error: %s\n", s)
		}
	}
	if m := r.Memory; m != nil {
		if m.RSSAfter > 0 {
			fmt.Fprintf(w, "server RSS %s -> %s: %.0f B per connection\n", mib(float64(m.RSSBefore)), mib(float64(m.RSSAfter)), m.RSSPerConn)
		}
		if m.HeapAfter > 0 {
			fmt.Fprintf(w, "go heap    %s -> %s: %.0f B per connection (in use)\n", mib(m.HeapBefore), mib(m.HeapAfter), m.HeapPerConn)
			fmt.Fprintf(w, "go stacks  %s -> %s: %.0f B per connection\n", mib(m.StackBefore), mib(m.StackAfter), m.StackPerConn)
			fmt.Fprintf(w, "goroutines %.0f -> %.0f: %.2f per connection\n", m.GoroutinesBefor, m.GoroutinesAfter, m.GoroutinesPer)
		}
	}
	if p := r.Publisher; p != nil {
		if p.Ack == nil {
			p.Ack = &Percentiles{}
		}
		fmt.Fprintf(w, "publisher  %s: %d/%d sent, %d acked, %d errors, %.0f/s", p.Kind, p.Sent, p.Planned, p.Acked, p.Errors, p.PerS)
		if p.Lag != nil && r.Rate > 0 {
			fmt.Fprintf(w, "; lag p50 %.3f p99 %.3f max %.3f ms", p.Lag.P50, p.Lag.P99, p.Lag.Max)
		}
		fmt.Fprintf(w, "; ack p50 %.3f p99 %.3f max %.3f ms\n", p.Ack.P50, p.Ack.P99, p.Ack.Max)
		for _, s := range p.Samples {
			fmt.Fprintf(w, "           error: %s\n", s)
		}
		if p.StreamEr != "" {
			fmt.Fprintf(w, "           stream: %s\n", p.StreamEr)
		}
	}
	if r.Expected > 0 || r.Received > 0 {
		fmt.Fprintf(w, "delivered  %d of %d expected (loss %d, extra %d; offsets repeated %d, out of order %d, skipped %d), %.0f deliveries/s\n",
			r.Received, r.Expected, r.Loss, r.Extra, r.Duplicates, r.Reorders, r.Gaps, r.DeliveriesPerS)
	}
	if l := r.Latency; l != nil && l.N > 0 {
		fmt.Fprintf(w, "latency    p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms (mean %.2f)\n", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	}
	if l := r.LatencySend; l != nil && l.N > 0 {
		fmt.Fprintf(w, "  from the send: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms (mean %.2f)\n", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	}
	if r.Disconnects > 0 || r.Unsubscribed > 0 {
		codes := make([]int, 0, len(r.CloseCodes))
		for c := range r.CloseCodes {
			codes = append(codes, c)
		}
		sort.Ints(codes)
		var parts []string
		for _, c := range codes {
			parts = append(parts, fmt.Sprintf("%d×%d", r.CloseCodes[c], c))
		}
		fmt.Fprintf(w, "disconnect %d [%s], %d subscriptions ended by the server\n", r.Disconnects, strings.Join(parts, ", "), r.Unsubscribed)
		for _, s := range r.CloseSamples {
			fmt.Fprintf(w, "           %s\n", s)
		}
	}
	if r.WindowS > 0 {
		fmt.Fprintf(w, "cpu        over %.2fs: server %.2fs (%.2f cores", r.WindowS, r.ServerCPUS, r.ServerCores)
		if r.ServerUsPerDeliv > 0 {
			fmt.Fprintf(w, ", %.2f µs per delivery", r.ServerUsPerDeliv)
		}
		if r.ServerUsPerPub > 0 {
			fmt.Fprintf(w, ", %.2f µs per publication", r.ServerUsPerPub)
		}
		fmt.Fprintf(w, "), bench %.2fs (%.2f cores)", r.BenchCPUS, r.BenchCores)
		if r.StealCores > 0 {
			fmt.Fprintf(w, "; stolen by the hypervisor %.3f cores", r.StealCores)
		}
		if r.BenchAllocBytes > 0 {
			fmt.Fprintf(w, "; the bench's garbage collector off meanwhile, %.0f MB allocated, %d forced collections", float64(r.BenchAllocBytes)/1e6, r.BenchGCForced)
		}
		fmt.Fprintln(w)
	}
	for _, p := range r.Profiles {
		fmt.Fprintf(w, "profile    %s\n", p)
	}
	if r.Presence > 0 {
		fmt.Fprintf(w, "note       %d join/leave pushes received: the namespace has join_leave on (on a shared channel, N clients connecting cost the server O(N²) frames)\n", r.Presence)
	}
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "warning    %s\n", s)
	}
	if r.OK {
		fmt.Fprintln(w, "ok")
	} else {
		fmt.Fprintf(w, "NOT OK     %s\n", strings.Join(r.Failed, "; "))
	}
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
