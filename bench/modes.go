package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// run is the state shared by one run's steps.
type run struct {
	o   *options
	res *Result
}

func newRun(o *options) *run {
	return &run{o: o, res: &Result{Mode: o.mode, Target: o.target, Time: time.Now().UTC(), Load1: loadAverage(), Args: o.args, Limits: Limits{P99: o.p99, MaxLag: o.maxLag}}}
}

func (r *run) warn(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.res.Warnings = append(r.res.Warnings, s)
	progress("warning: %s", s)
}

// clients raises the open-files limit, caps N to what the processes can
// hold, and builds the client set: in this process, or in -procs children.
func (r *run) clients(spec groupSpec) (clientSet, error) {
	o := r.o
	limit, err := raiseFileLimit()
	if err != nil {
		r.warn("raising the open-files limit: %v", err)
	}
	progress("open-files limit raised to %d (the hard limit)", limit)
	n := o.n
	r.res.NWanted = n
	if limit > fdReserve {
		perProc := int(limit) - fdReserve
		if (n+o.procs-1)/o.procs > perProc {
			n = perProc * o.procs
			r.warn("the open-files limit %d caps connections at %d per process: N lowered from %d to %d; use -procs %d", limit, perProc, o.n, n, (o.n+perProc-1)/perProc)
		}
	}
	r.res.N, r.res.Procs = n, o.procs
	var srcs []string
	if o.src == "auto" {
		srcs = autoSources(n)
	} else if srcs, err = parseSources(o.src); err != nil {
		return nil, err
	}
	spec.WS, spec.Concurrency, spec.Timeout, spec.ReadBuf = o.ws, o.connConc, o.timeout, o.readBuf
	spec.Transport, spec.H2 = o.transport, o.h2
	spec.JWTSecret = o.jwtSecret
	if o.tlsCfg != nil {
		spec.TLS, spec.TLSCA = true, o.tlsCA
	}
	if o.procs == 1 {
		spec.Base, spec.N, spec.Src = 0, n, srcs
		return &localSet{g: newGroup(spec)}, nil
	}
	ps := &procSet{}
	for k := range o.procs {
		s := spec
		s.Base = k * n / o.procs
		s.N = (k+1)*n/o.procs - s.Base
		s.Src = splitSources(srcs, k, o.procs)
		ps.specs = append(ps.specs, s)
	}
	return ps, nil
}

func (r *run) connectStats(cr *groupResult) {
	c := &ConnectStats{Connected: cr.Connected, Errors: cr.ConnectErrors, Samples: cr.ErrorSamples, TotalS: cr.ConnectWall.Seconds(), Time: percentiles(cr.Connect)}
	if c.TotalS > 0 {
		c.PerS = float64(c.Connected) / c.TotalS
	}
	r.res.Connect = c
}

func (r *run) closeStats(gr *groupResult) {
	for _, n := range gr.CloseCodes {
		r.res.Disconnects += n
	}
	if len(gr.CloseCodes) > 0 {
		r.res.CloseCodes = gr.CloseCodes
	}
	r.res.CloseSamples = gr.CloseSamples
	r.res.Unsubscribed = gr.Unsubscribed
	r.res.Foreign = gr.Foreign
	r.res.Presence = gr.Presence
}

func (r *run) finish(w io.Writer) *Result {
	r.res.decide()
	r.res.print(w, r.o.jsonOnly)
	return r.res
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runIdle connects N subscribed clients and measures what they cost the
// server.
func runIdle(ctx context.Context, o *options, w io.Writer) (*Result, error) {
	r := newRun(o)
	set, err := r.clients(groupSpec{Channel: o.channel, OwnChannels: o.ownChannels, Personal: false})
	if err != nil {
		return nil, err
	}
	defer set.close()
	before := sampleServer(ctx, o, true, r.warn)
	progress("connecting %d clients over %d process(es)", r.res.N, o.procs)
	cr, err := set.connect(ctx)
	if err != nil {
		return nil, err
	}
	r.connectStats(cr)
	progress("connected %d (%d failed) in %.2fs; settling %v", cr.Connected, cr.ConnectErrors, cr.ConnectWall.Seconds(), o.settle)
	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}
	after := sampleServer(ctx, o, true, r.warn)
	r.res.Memory = memoryStats(before, after, cr.Connected)
	if o.pprofDir != "" && o.pprofAddr != "" {
		r.res.Profiles = fetchProfiles(ctx, o, 0, r.warn) // the heap with every connection held
	}
	if o.hold > 0 {
		progress("holding for %v", o.hold)
		if err := sleepCtx(ctx, o.hold); err != nil {
			return nil, err
		}
	}
	gr, err := set.drain(ctx, nil, 0)
	if err != nil {
		return nil, err
	}
	r.closeStats(gr)
	set.close()
	return r.finish(w), nil
}

func memoryStats(before, after serverSample, conns int) *MemoryStats {
	if before.rss == 0 && after.metrics == nil {
		return nil
	}
	per := func(a, b float64) float64 {
		if conns == 0 {
			return 0
		}
		return (b - a) / float64(conns)
	}
	m := &MemoryStats{RSSBefore: before.rss, RSSAfter: after.rss}
	if after.rss > 0 {
		m.RSSPerConn = per(float64(before.rss), float64(after.rss))
	}
	if after.metrics != nil && before.metrics != nil {
		m.HeapBefore, m.HeapAfter = before.metrics["go_memstats_heap_inuse_bytes"], after.metrics["go_memstats_heap_inuse_bytes"]
		m.StackBefore, m.StackAfter = before.metrics["go_memstats_stack_inuse_bytes"], after.metrics["go_memstats_stack_inuse_bytes"]
		m.GoroutinesBefor, m.GoroutinesAfter = before.metrics["go_goroutines"], after.metrics["go_goroutines"]
		m.HeapPerConn = per(m.HeapBefore, m.HeapAfter)
		m.StackPerConn = per(m.StackBefore, m.StackAfter)
		m.GoroutinesPer = per(m.GoroutinesBefor, m.GoroutinesAfter)
	}
	return m
}

// runDelivery is fanout (N subscribers of one channel) and channels (N
// personal channels): connect, publish on schedule, drain, report.
func runDelivery(ctx context.Context, o *options, w io.Writer) (*Result, error) {
	r := newRun(o)
	personal := o.mode == "channels"
	set, err := r.clients(groupSpec{Channel: o.channel, Personal: personal})
	if err != nil {
		return nil, err
	}
	defer set.close()
	n := r.res.N
	r.res.Rate, r.res.DurS, r.res.Size = o.rate, o.dur.Seconds(), o.size
	if personal {
		r.res.Channels = n
	} else {
		r.res.Channels = 1
	}
	client, cctx, closeConn, err := dialCore(ctx, o.grpcAddr, o.apiKey, o.tlsCfg)
	if err != nil {
		return nil, err
	}
	defer closeConn()

	progress("connecting %d clients over %d process(es)", n, o.procs)
	cr, err := set.connect(ctx)
	if err != nil {
		return nil, err
	}
	r.connectStats(cr)
	progress("connected %d (%d failed) in %.2fs; settling %v", cr.Connected, cr.ConnectErrors, cr.ConnectWall.Seconds(), o.settle)
	if cr.Connected == 0 {
		r.res.decide()
		r.res.print(w, o.jsonOnly)
		return r.res, errors.New("no client connected")
	}
	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}

	targets := 1
	channel := func(int) string { return o.channel }
	if personal {
		targets = n
		names := make([]string, n)
		for i := range names {
			names[i] = "user:" + userOf(i)
		}
		channel = func(i int) string { return names[i%n] }
	}
	publish := func(ctx context.Context) (*pubResult, error) {
		p := &streamPublisher{client: client, channel: channel, targets: targets, size: o.size, window: o.window, fromSchedule: o.latencyFrom == "schedule"}
		return p.run(ctx, o.rate, o.dur)
	}
	workers := 1
	switch o.publisher {
	case "unary", "rest":
		workers = o.concurrency
		if !o.concSet {
			workers = defaultCallWorkers
		}
		call := unaryPublisher(client)
		if o.publisher == "rest" {
			rp := newRESTPublisher(o.restAddr, o.apiKey, workers, o.tlsCfg)
			defer rp.close()
			call = rp.call
		}
		p := &callPublisher{call: call, channel: channel, targets: targets, size: o.size, workers: workers, fromSchedule: o.latencyFrom == "schedule"}
		publish = func(ctx context.Context) (*pubResult, error) { return p.run(ctx, o.rate, o.dur), nil }
	}
	if err := set.mark(ctx); err != nil {
		return nil, err
	}
	resumeGC := pauseGC()
	defer resumeGC() // on an error return
	var profiles chan []string
	if o.pprofDir != "" && o.pprofAddr != "" {
		profiles = make(chan []string, 1)
		go func() { profiles <- fetchProfiles(ctx, o, max(1, int(o.dur.Seconds())), r.warn) }()
	}
	s0 := sampleServer(ctx, o, false, r.warn)
	cpu0 := cpuSeconds()
	progress("publishing %.0f/s for %v (%s, %d worker(s))", o.rate, o.dur, o.publisher, workers)
	pr, perr := publish(cctx)
	if pr == nil {
		return nil, perr
	}
	expected := make([]int64, n)
	for i := range expected {
		if personal {
			expected[i] = pr.okPer[i]
		} else {
			expected[i] = pr.ok
		}
	}
	progress("sent %d (%d acked); draining up to %v", pr.sent, pr.ok, o.drain)
	gr, err := set.drain(ctx, expected, o.drain)
	allocated, forced := resumeGC()
	if err != nil {
		return nil, err
	}
	r.res.BenchAllocBytes, r.res.BenchGCForced = allocated+gr.GCAlloc, forced+gr.GCForced
	s1 := sampleServer(ctx, o, false, r.warn)
	cpu1 := cpuSeconds()
	set.close()
	if profiles != nil {
		r.res.Profiles = <-profiles
	}

	r.res.Publisher = publisherStats(o.publisher, workers, pr, perr)
	r.res.fillDeliveries(expected, gr.Received)
	r.res.Duplicates, r.res.Reorders, r.res.Gaps = gr.Duplicates, gr.Reorders, gr.Gaps
	r.res.Latency = percentiles(gr.Latency)
	r.res.LatencySend = percentiles(gr.LatencySend)
	if gr.LastRecv > 0 {
		if span := float64(gr.LastRecv-pr.start.UnixNano()) / 1e9; span > 0 {
			r.res.DeliveriesPerS = float64(r.res.Received) / span
		}
	}
	r.closeStats(gr)
	r.costs(s0, s1, cpu1-cpu0+gr.CPU, r.res.Received)
	if len(o.pids) > 0 && pr.ok > 0 {
		r.res.ServerUsPerPub = r.res.ServerCPUS * 1e6 / float64(pr.ok)
	}
	return r.finish(w), nil
}

// defaultCallWorkers is how many unary or REST publishers run side by side
// in fanout and channels without -concurrency: enough to keep 5,000
// publications/s on schedule at ~1 ms per call.
const defaultCallWorkers = 16

// costs fills the CPU figures of the window between two samples.
func (r *run) costs(s0, s1 serverSample, benchCPU float64, deliveries int64) {
	win := s1.at.Sub(s0.at).Seconds()
	r.res.WindowS = win
	r.res.BenchCPUS = benchCPU
	if win > 0 {
		r.res.BenchCores = benchCPU / win
		r.res.StealCores = max(0, s1.steal-s0.steal) / win
	}
	if len(r.o.pids) > 0 {
		r.res.ServerCPUS = s1.cpu - s0.cpu
		if win > 0 {
			r.res.ServerCores = r.res.ServerCPUS / win
		}
		if deliveries > 0 {
			r.res.ServerUsPerDeliv = r.res.ServerCPUS * 1e6 / float64(deliveries)
		}
	}
}

func publisherStats(kind string, workers int, pr *pubResult, err error) *PublisherStats {
	p := &PublisherStats{Kind: kind, Workers: workers, Planned: pr.planned, Sent: pr.sent, Acked: pr.ok, Errors: pr.errs, Samples: pr.errSamp,
		Lag: percentiles(&pr.lag), Ack: percentiles(&pr.ack)}
	if span := pr.end.Sub(pr.start).Seconds(); span > 0 {
		p.PerS = float64(pr.ok) / span
	}
	if err != nil {
		p.StreamEr = err.Error()
	}
	return p
}

// runPublish measures gRPC publishing: unary with -concurrency workers and
// PublishStream with -concurrency streams, each for -dur, optionally with
// -subs gRPC subscribers on the channel.
func runPublish(ctx context.Context, o *options, w io.Writer) error {
	client, cctx, closeConn, err := dialCore(ctx, o.grpcAddr, o.apiKey, o.tlsCfg)
	if err != nil {
		return err
	}
	defer closeConn()
	rate := o.rate
	if !o.rateSet {
		rate = 0 // publish defaults to as fast as possible
	}
	for _, kind := range o.kinds {
		r := newRun(o)
		r.res.Mode = "publish"
		r.res.Args = o.args + " [" + kind + "]"
		r.res.Rate, r.res.DurS, r.res.Size, r.res.Channels = rate, o.dur.Seconds(), o.size, o.spread
		subs, err := startSubscribers(cctx, client, o.channel, o.subs)
		if err != nil {
			return err
		}
		resumeGC := pauseGC()
		s0 := sampleServer(ctx, o, false, r.warn)
		cpu0 := cpuSeconds()
		progress("publish %s: %d worker(s), rate %v, for %v, %d subscriber(s)", kind, o.concurrency, rateText(rate), o.dur, o.subs)
		var pr *pubResult
		var perr error
		if kind == "unary" {
			pr = (&callPublisher{call: unaryPublisher(client), channel: publishChannel(o), targets: max(1, o.spread), size: o.size, workers: o.concurrency}).run(cctx, rate, o.dur)
		} else {
			pr, perr = runStreams(cctx, client, o, rate)
		}
		if pr == nil {
			resumeGC()
			subs.stop()
			return perr
		}
		expected := make([]int64, o.subs)
		for i := range expected {
			expected[i] = pr.ok
		}
		received, lat, last := subs.wait(ctx, pr.ok, o.drain)
		r.res.BenchAllocBytes, r.res.BenchGCForced = resumeGC()
		s1 := sampleServer(ctx, o, false, r.warn)
		cpu1 := cpuSeconds()
		r.res.Publisher = publisherStats(kind, o.concurrency, pr, perr)
		if o.subs > 0 {
			r.res.fillDeliveries(expected, received)
			r.res.Latency = percentiles(lat)
			r.res.Disconnects, r.res.CloseSamples = subs.cut()
			if span := float64(last-pr.start.UnixNano()) / 1e9; last > 0 && span > 0 {
				r.res.DeliveriesPerS = float64(r.res.Received) / span
			}
		}
		if rate <= 0 {
			r.res.Limits.MaxLag = 0 // no schedule to keep
		}
		r.costs(s0, s1, cpu1-cpu0, r.res.Received)
		if len(o.pids) > 0 && pr.ok > 0 {
			r.res.ServerUsPerPub = r.res.ServerCPUS * 1e6 / float64(pr.ok)
		}
		if rate <= 0 {
			r.res.Publisher.Lag = nil
		}
		r.finish(w)
	}
	return nil
}

// publishChannel names the channel of publication i: -channel, or with
// -spread N one of N channels <channel>-<i%N>.
func publishChannel(o *options) func(i int) string {
	if o.spread <= 1 {
		return func(int) string { return o.channel }
	}
	names := make([]string, o.spread)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", o.channel, i)
	}
	return func(i int) string { return names[i%len(names)] }
}

func rateText(r float64) string {
	if r <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%.0f/s", r)
}

// runStreams runs -concurrency PublishStreams side by side and merges them.
func runStreams(ctx context.Context, client heraldv1.HeraldServiceClient, o *options, rate float64) (*pubResult, error) {
	parts := make([]*pubResult, o.concurrency)
	errs := make([]error, o.concurrency)
	var wg sync.WaitGroup
	for k := range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &streamPublisher{client: client, channel: publishChannel(o), targets: 1, size: o.size, window: o.window}
			parts[k], errs[k] = p.run(ctx, rate/float64(o.concurrency), o.dur)
		}()
	}
	wg.Wait()
	total := &pubResult{okPer: make([]int64, 1)}
	for _, p := range parts {
		if p == nil {
			continue
		}
		if total.start.IsZero() || p.start.Before(total.start) {
			total.start = p.start
		}
		if p.end.After(total.end) {
			total.end = p.end
		}
		total.planned += p.planned
		total.sent += p.sent
		total.ok += p.ok
		total.errs += p.errs
		total.lag.Merge(&p.lag)
		total.ack.Merge(&p.ack)
		for _, e := range p.errSamp {
			if len(total.errSamp) < 5 {
				total.errSamp = append(total.errSamp, e)
			}
		}
	}
	total.okPer[0] = total.ok
	return total, errors.Join(errs...)
}

// grpcSubs are gRPC Subscribe streams counting publications.
type grpcSubs struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	counts   []atomic.Int64
	ended    []atomic.Bool
	lat      *recorder
	cutCount atomic.Int64
	mu       sync.Mutex
	samples  []string // why subscribers were cut; guarded by mu
}

func startSubscribers(ctx context.Context, client heraldv1.HeraldServiceClient, channel string, k int) (*grpcSubs, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &grpcSubs{cancel: cancel, counts: make([]atomic.Int64, k), ended: make([]atomic.Bool, k), lat: newRecorder(max(1, k))}
	for i := range k {
		stream, err := client.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: channel, PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW})
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("Subscribe: %w", err)
		}
		first, err := stream.Recv()
		if err != nil || first.GetSubscribed() == nil {
			s.stop()
			return nil, fmt.Errorf("Subscribe: no subscribed event: %v", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.ended[i].Store(true)
			sh := s.lat.shard(i)
			for {
				ev, err := stream.Recv()
				if err != nil {
					if ctx.Err() == nil {
						s.cutCount.Add(1)
						s.mu.Lock()
						if len(s.samples) < 5 {
							s.samples = append(s.samples, fmt.Sprintf("gRPC subscriber %d: %v", i, err))
						}
						s.mu.Unlock()
					}
					return
				}
				p := ev.GetPublication()
				if p == nil {
					continue
				}
				now := time.Now().UnixNano()
				sh.mu.Lock()
				ok := sh.record(now, p.GetRawJson())
				sh.mu.Unlock()
				if ok {
					s.counts[i].Add(1)
				}
			}
		}()
	}
	return s, nil
}

// wait waits until every live subscriber has want publications or for at
// most d, then stops them and returns their counts.
func (s *grpcSubs) wait(ctx context.Context, want int64, d time.Duration) ([]int64, *Histogram, int64) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		done := true
		for i := range s.counts {
			if !s.ended[i].Load() && s.counts[i].Load() < want {
				done = false
			}
		}
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.stop()
	out := make([]int64, len(s.counts))
	for i := range s.counts {
		out[i] = s.counts[i].Load()
	}
	h, _, last := s.lat.snapshot()
	return out, h, last
}

func (s *grpcSubs) stop() {
	s.cancel()
	s.wg.Wait()
}

// cut returns how many subscribers the server ended, and why.
func (s *grpcSubs) cut() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.cutCount.Load()), append([]string(nil), s.samples...)
}
