package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sort"
	"strings"
)

// comparing reports whether the flags ask for more than one plain run.
func (o *options) comparing() bool {
	return o.floor || o.serveConfig != "" || o.runs > 1 || len(o.publishers) > 1
}

// target is one server a comparison measures.
type target struct {
	name  string
	start func(ctx context.Context, o *options) (*server, error) // nil: the server at -ws and -grpc
}

func (o *options) targets() []target {
	var ts []target
	if o.floor {
		ts = append(ts, target{name: "floor", start: func(ctx context.Context, _ *options) (*server, error) { return startFloor(ctx) }})
	}
	switch {
	case o.serveConfig == "":
		ts = append(ts, target{name: "herald"})
	case len(o.serveBins) == 0:
		ts = append(ts, target{name: "herald", start: func(ctx context.Context, o *options) (*server, error) {
			return startHerald(ctx, o, "herald", selfExe())
		}})
	default:
		for _, bin := range o.serveBins {
			name := "herald"
			if len(o.serveBins) > 1 {
				name = "herald[" + filepath.Base(bin) + "]"
			}
			ts = append(ts, target{name: name, start: func(ctx context.Context, o *options) (*server, error) {
				return startHerald(ctx, o, name, bin)
			}})
		}
	}
	return ts
}

// runCompare runs every target with every publisher, -runs rounds,
// interleaved so that the machine's drift hits every target alike, then
// prints the comparison.
func runCompare(ctx context.Context, o *options, w io.Writer) error {
	pubs := o.publishers
	if o.mode == "idle" {
		pubs = []string{""}
	}
	ts := o.targets()
	var all []*Result
	first := true
	for round := 1; round <= o.runs; round++ {
		for _, pub := range pubs {
			for _, t := range ts {
				if !first {
					if err := sleepCtx(ctx, o.pause); err != nil {
						return err
					}
				}
				first = false
				ro := *o
				ro.publisher, ro.target = pub, t.name
				ro.runTag = fmt.Sprintf("r%d-%s", round, slug(t.name))
				if pub != "" {
					ro.runTag += "-" + pub
				}
				var srv *server
				if t.start != nil {
					var err error
					if srv, err = t.start(ctx, &ro); err != nil {
						return fmt.Errorf("%s: %w", t.name, err)
					}
					srv.ep.apply(&ro)
				}
				progress("round %d/%d: %s, publisher %s", round, o.runs, t.name, orDash(pub))
				res, err := runOne(ctx, &ro, w)
				if srv != nil {
					srv.stop()
				}
				if res != nil {
					res.Round = round
					all = append(all, res)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
			}
		}
	}
	c := compare(all)
	c.print(w, o.jsonOnly)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// Comparison is the summary of a comparison's runs, printed as
// `COMPARE <json>`.
type Comparison struct {
	Mode   string          `json:"mode"`
	Args   string          `json:"args"`
	Runs   []CompareRun    `json:"runs"`
	Ratios []CompareRatios `json:"ratios,omitempty"`
}

// CompareRun is one run's headline figures.
type CompareRun struct {
	Round       int     `json:"round"`
	Target      string  `json:"target"`
	Publisher   string  `json:"publisher,omitempty"`
	Load1       float64 `json:"load1"`
	OK          bool    `json:"ok"`
	CPUPerDeliv float64 `json:"cpu_us_per_delivery,omitempty"`
	CPUPerPub   float64 `json:"cpu_us_per_publication,omitempty"`
	ServerCores float64 `json:"server_cores,omitempty"`
	StealCores  float64 `json:"steal_cores,omitempty"`
	DelivPerS   float64 `json:"deliveries_per_s,omitempty"`
	P50         float64 `json:"p50_ms,omitempty"`
	P99         float64 `json:"p99_ms,omitempty"`
	P99Send     float64 `json:"p99_send_ms,omitempty"` // from the send (see Result.LatencySend)
	Lost        int64   `json:"lost"`
	Duplicates  int64   `json:"duplicates"`
	Reorders    int64   `json:"reorders"`
	RSSPerConn  float64 `json:"rss_per_conn,omitempty"`
	HeapPerConn float64 `json:"heap_per_conn,omitempty"`
}

// CompareRatios compares a target (or a publisher) with a baseline, round
// by round: each value is from two runs of the same round.
type CompareRatios struct {
	What     string    `json:"what"` // e.g. "herald/floor, unary" or "rest/unary, herald"
	CPU      []float64 `json:"cpu_per_delivery"`
	P50      []float64 `json:"p50,omitempty"`
	P99Extra []float64 `json:"p99_minus_ms,omitempty"` // p99 minus the baseline's, ms
	// P99SendExtra is P99Extra for the latency from the send.
	P99SendExtra []float64 `json:"p99_send_minus_ms,omitempty"`
	Deliv        []float64 `json:"deliveries_per_s,omitempty"`
	RSS          []float64 `json:"rss_per_conn,omitempty"`
}

func compare(all []*Result) *Comparison {
	c := &Comparison{}
	type key struct {
		round     int
		target    string
		publisher string
	}
	by := map[key]*CompareRun{}
	var targets, publishers []string
	seenT, seenP := map[string]bool{}, map[string]bool{}
	for _, r := range all {
		c.Mode, c.Args = r.Mode, r.Args
		cr := CompareRun{Round: r.Round, Target: r.Target, Load1: r.Load1, OK: r.OK,
			CPUPerDeliv: r.ServerUsPerDeliv, CPUPerPub: r.ServerUsPerPub, ServerCores: r.ServerCores, StealCores: r.StealCores,
			DelivPerS: r.DeliveriesPerS, Lost: r.Loss, Duplicates: r.Duplicates + r.Extra, Reorders: r.Reorders}
		if r.Publisher != nil {
			cr.Publisher = r.Publisher.Kind
		}
		if r.Latency != nil {
			cr.P50, cr.P99 = r.Latency.P50, r.Latency.P99
		}
		if r.LatencySend != nil {
			cr.P99Send = r.LatencySend.P99
		}
		if m := r.Memory; m != nil {
			cr.RSSPerConn, cr.HeapPerConn = m.RSSPerConn, m.HeapPerConn
		}
		c.Runs = append(c.Runs, cr)
		if !seenT[cr.Target] {
			seenT[cr.Target] = true
			targets = append(targets, cr.Target)
		}
		if !seenP[cr.Publisher] {
			seenP[cr.Publisher] = true
			publishers = append(publishers, cr.Publisher)
		}
	}
	for i := range c.Runs {
		r := &c.Runs[i]
		by[key{r.Round, r.Target, r.Publisher}] = r
	}
	rounds := 0
	for _, r := range c.Runs {
		rounds = max(rounds, r.Round)
	}
	ratios := func(what string, a, b func(round int) *CompareRun) {
		cr := CompareRatios{What: what}
		for round := 1; round <= rounds; round++ {
			x, y := a(round), b(round)
			if x == nil || y == nil {
				continue
			}
			cr.CPU = append(cr.CPU, ratio(x.CPUPerDeliv, y.CPUPerDeliv))
			if x.P50 > 0 && y.P50 > 0 {
				cr.P50 = append(cr.P50, ratio(x.P50, y.P50))
				cr.P99Extra = append(cr.P99Extra, round3(x.P99-y.P99))
			}
			if x.P99Send > 0 && y.P99Send > 0 {
				cr.P99SendExtra = append(cr.P99SendExtra, round3(x.P99Send-y.P99Send))
			}
			if x.DelivPerS > 0 && y.DelivPerS > 0 {
				cr.Deliv = append(cr.Deliv, ratio(x.DelivPerS, y.DelivPerS))
			}
			if x.RSSPerConn > 0 && y.RSSPerConn > 0 {
				cr.RSS = append(cr.RSS, ratio(x.RSSPerConn, y.RSSPerConn))
			}
		}
		if len(cr.CPU) > 0 || len(cr.RSS) > 0 {
			c.Ratios = append(c.Ratios, cr)
		}
	}
	get := func(t, p string) func(int) *CompareRun {
		return func(round int) *CompareRun { return by[key{round, t, p}] }
	}
	if seenT["floor"] {
		for _, t := range targets {
			if t == "floor" {
				continue
			}
			for _, p := range publishers {
				ratios(t+"/floor"+withPub(p), get(t, p), get("floor", p))
			}
		}
	}
	// Several Herald binaries: each against the first (before/after).
	var heralds []string
	for _, t := range targets {
		if t != "floor" {
			heralds = append(heralds, t)
		}
	}
	for _, t := range heralds[min(1, len(heralds)):] {
		for _, p := range publishers {
			ratios(t+"/"+heralds[0]+withPub(p), get(t, p), get(heralds[0], p))
		}
	}
	// REST against unary gRPC, per target.
	if seenP["rest"] && seenP["unary"] {
		for _, t := range targets {
			ratios("rest/unary, "+t, get(t, "rest"), get(t, "unary"))
		}
	}
	return c
}

func withPub(p string) string {
	if p == "" {
		return ""
	}
	return ", " + p
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (c *Comparison) print(w io.Writer, jsonOnly bool) {
	if !jsonOnly {
		fmt.Fprintf(w, "\n== comparison: herald bench %s\n", c.Args)
		fmt.Fprintf(w, "%-5s %-22s %-7s %6s %4s %10s %10s %8s %6s %9s %9s %6s %8s %6s %9s\n",
			"round", "target", "pub", "load", "ok", "µs/deliv", "µs/pub", "cores", "steal", "deliv/s", "p50 ms", "p99 ms", "p99 send", "lost", "RSS/conn")
		for _, r := range c.Runs {
			fmt.Fprintf(w, "%-5d %-22s %-7s %6.2f %4v %10.2f %10.2f %8.2f %6.3f %9.0f %9.2f %6.2f %8.2f %6d %9.0f\n",
				r.Round, r.Target, orDash(r.Publisher), r.Load1, r.OK, r.CPUPerDeliv, r.CPUPerPub, r.ServerCores, r.StealCores, r.DelivPerS, r.P50, r.P99, r.P99Send, r.Lost+r.Duplicates+r.Reorders, r.RSSPerConn)
		}
		for _, q := range c.Ratios {
			fmt.Fprintf(w, "ratio %-34s cpu/delivery %v (median %.3f)", q.What, q.CPU, median(q.CPU))
			if len(q.P50) > 0 {
				fmt.Fprintf(w, "; p50 %v (median %.3f); p99 - baseline %v ms (median %.3f)", q.P50, median(q.P50), q.P99Extra, median(q.P99Extra))
			}
			if len(q.P99SendExtra) > 0 {
				fmt.Fprintf(w, "; p99 from the send - baseline %v ms (median %.3f)", q.P99SendExtra, median(q.P99SendExtra))
			}
			if len(q.Deliv) > 0 {
				fmt.Fprintf(w, "; deliveries/s %v", q.Deliv)
			}
			if len(q.RSS) > 0 {
				fmt.Fprintf(w, "; RSS/conn %v", q.RSS)
			}
			fmt.Fprintln(w)
		}
	}
	b, _ := json.Marshal(c)
	fmt.Fprintf(w, "COMPARE %s\n", b)
}
