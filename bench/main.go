package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

const usage = `Usage: herald bench MODE [flags]

Loads a running Herald over loopback as real clients do and prints a
summary and one line "RESULT {json}" per run.

Modes:
  idle      -n N [-hold D] [-pid PID]     N subscribed connections (-transport websocket, sse, http_stream): connect
                                          time, server memory per connection
  fanout    -n N -rate R -dur D           N subscribers of one channel, a gRPC
                                          publisher at R msgs/s
  channels  -n N -rate R -dur D -jwt-secret S
                                          N users on their personal channels
                                          user:bench-<i>, publications round-robin
  publish   -dur D [-concurrency C] [-subs K] [-kinds unary,stream]
                                          gRPC publish throughput and ack latency
  floor     [-http ADDR] [-grpc ADDR]     run the floor, a minimal reference broadcaster
                                          (see -floor), in the foreground

fanout and channels publish with -publisher stream (one PublishStream),
unary (one gRPC Publish per publication) or rest (one POST per
publication), -concurrency workers for the last two.

Comparisons: -floor measures the floor as well, in a process of its own
started fresh for each run; -serve CONFIG starts a fresh "herald serve
--config CONFIG" for each run (-serve-bin names the binaries, several for
a before/after comparison); -runs K repeats, interleaved (floor, herald,
floor, herald… for each publisher in turn), and a COMPARE summary gives
each server's figures and their ratios to the floor's, run by run.

A run is ok only with every client connected, no loss, no disconnects, no
publish errors, the publisher on schedule (lag p99 <= -max-lag) and the
latency p99 <= -p99. Beyond ~19,900 connections use -procs.

Flags:
`

// options are the flags of every mode.
type options struct {
	mode        string
	args        string
	ws          []string
	grpcAddr    string
	httpAddrs   []string
	apiKey      string
	pids        []int
	jsonOnly    bool
	n           int
	rate        float64
	dur         time.Duration
	size        int
	drain       time.Duration
	p99         time.Duration
	maxLag      time.Duration
	procs       int
	src         string
	channel     string
	ownChannels bool
	jwtSecret   string
	connConc    int
	timeout     time.Duration
	readBuf     int
	transport   string
	h2          bool
	latencyFrom string
	settle      time.Duration
	hold        time.Duration
	concurrency int
	kinds       []string
	subs        int
	spread      int
	window      int
	rateSet     bool
	concSet     bool
	cpuProfile  string

	// TLS (tls.go): tls is -tls; tlsCA the PEM roots the clients trust
	// (-tls-ca, or the certificate made for -serve; empty: the system's);
	// tlsBase the clients' configuration; tlsCfg the current target's
	// (nil: plain, as the floor); tlsCert and tlsKey the files given to
	// each herald serve, in tlsDir.
	tls             bool
	tlsCAFile       string
	tlsCA           []byte
	tlsBase, tlsCfg *tls.Config
	tlsCert, tlsKey string
	tlsDir          string

	// Comparison runs (compare.go).
	publishers  []string
	publisher   string // this run's
	floor       bool
	serveConfig string
	serveBins   []string
	runs        int
	pause       time.Duration
	pprofDir    string
	pprofAddr   string
	restAddr    string
	target      string // this run's
	runTag      string // this run's, for profile names
}

// Main runs `herald bench` with the arguments after "bench".
func Main(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "floor" {
		return runFloor(ctx, args[1:], os.Stdout) // a server: its runtime as it comes
	}
	setMemoryLimit()
	if len(args) > 0 && args[0] == "-child" {
		return runChild(ctx, os.Stdin, os.Stdout)
	}
	fs := flag.NewFlagSet("herald bench", flag.ContinueOnError)
	o, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if o.tlsDir != "" {
		defer os.RemoveAll(o.tlsDir)
	}
	out := io.Writer(os.Stdout)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	switch o.mode {
	case "idle", "fanout", "channels":
		if o.comparing() {
			return runCompare(ctx, o, out)
		}
		_, err := runOne(ctx, o, out)
		return err
	case "publish":
		return runPublish(ctx, o, out)
	}
	fs.Usage()
	return fmt.Errorf("unknown bench mode %q", o.mode)
}

// runOne runs idle, fanout or channels once, against o's server.
func runOne(ctx context.Context, o *options, w io.Writer) (*Result, error) {
	if o.mode == "idle" {
		return runIdle(ctx, o, w)
	}
	return runDelivery(ctx, o, w)
}

func parseFlags(fs *flag.FlagSet, args []string) (*options, error) {
	o := &options{}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	ws := fs.String("ws", "ws://127.0.0.1:7401/ws", "WebSocket URLs of bridges, comma-separated; connections are spread over them")
	fs.StringVar(&o.grpcAddr, "grpc", "127.0.0.1:7400", "gRPC address of the core (publisher)")
	httpAddrs := fs.String("http", "", "HTTP addresses serving /metrics, comma-separated (default: the hosts of -ws; \"none\" to skip)")
	fs.StringVar(&o.apiKey, "api-key", os.Getenv("HERALD_API_KEY"), "API key for gRPC ($HERALD_API_KEY)")
	pids := fs.String("pid", "", "server process ids, comma-separated, for RSS and CPU from /proc")
	fs.BoolVar(&o.jsonOnly, "json-only", false, "print only the RESULT line")
	fs.IntVar(&o.n, "n", 1000, "WebSocket connections (idle, fanout, channels)")
	fs.Float64Var(&o.rate, "rate", 10, "publications per second (fanout, channels; publish: 0 = as fast as possible)")
	fs.DurationVar(&o.dur, "dur", 10*time.Second, "publishing duration")
	fs.IntVar(&o.size, "size", 64, "payload size in bytes")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "longest wait for the last deliveries after publishing ends")
	fs.DurationVar(&o.p99, "p99", time.Second, "limit of latency p99 (ack latency in publish mode); 0 disables")
	fs.DurationVar(&o.maxLag, "max-lag", 10*time.Millisecond, "limit of publisher lag p99; 0 disables")
	fs.IntVar(&o.procs, "procs", 1, "child bench processes holding the connections (each has its own open-files limit)")
	fs.StringVar(&o.src, "src", "auto", "client source addresses: a count K (127.0.0.1-127.0.0.K), FIRST-LAST, a list, \"\" for the kernel's choice, or auto (one per 10,000 connections)")
	fs.StringVar(&o.channel, "channel", "", "channel (default: bench, idle for idle; prefixed chat: without -jwt-secret, because out of the box only the chat namespace admits anonymous subscribers)")
	fs.BoolVar(&o.ownChannels, "own-channels", false, "idle: subscribe each connection to its own channel idle-<i> instead of one shared channel")
	fs.StringVar(&o.jwtSecret, "jwt-secret", os.Getenv("HERALD_JWT_SECRET"), "HS256 secret of the server: clients connect as user bench-<i> (required for channels) ($HERALD_JWT_SECRET)")
	fs.IntVar(&o.connConc, "conn-concurrency", 64, "handshakes in flight per process")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Second, "limit of one connection's dial, connect and subscribe")
	fs.IntVar(&o.readBuf, "read-buf", 4096, "client read buffer per connection in bytes")
	fs.StringVar(&o.transport, "transport", "websocket", "how clients connect (idle, fanout, channels): websocket (-ws), sse (GET /sse beside -ws) or http_stream (POST /stream beside -ws)")
	fs.StringVar(&o.latencyFrom, "latency-from", "schedule", "fanout, channels: count delivery latency from when a publication was due on the schedule (schedule: a publisher that falls behind adds its wait; the latency from the send is reported beside it) or from when it was sent (send)")
	fs.BoolVar(&o.h2, "h2", false, "with -tls and -transport sse or http_stream: each client speaks HTTP/2 (negotiated by ALPN, one connection a client, as browsers over TLS do); without it HTTP/1.1")
	fs.BoolVar(&o.tls, "tls", false, "Herald speaks TLS: clients dial wss:// (and https:// streams), publishers gRPC with TLS and HTTPS; with -serve the bench makes a certificate for 127.0.0.1 and starts each herald serve with it; the floor stays plain")
	fs.StringVar(&o.tlsCAFile, "tls-ca", "", "with -tls and without -serve: PEM certificates that verify the server (default: the system's roots)")
	fs.DurationVar(&o.settle, "settle", time.Second, "pause after connecting, before measuring")
	fs.DurationVar(&o.hold, "hold", 0, "idle: how long to hold the connections after measuring")
	fs.IntVar(&o.concurrency, "concurrency", 1, "publish: concurrent unary workers, or PublishStream streams")
	kinds := fs.String("kinds", "unary,stream", "publish: which publishers to run")
	fs.IntVar(&o.subs, "subs", 0, "publish: gRPC Subscribe streams on the channel")
	fs.IntVar(&o.spread, "spread", 1, "publish: publications go round-robin to this many channels <channel>-<i> (spreads a Redis Cluster's load over its shards); with -subs, 1")
	fs.IntVar(&o.window, "window", 10000, "publications in flight on a PublishStream")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the bench's own CPU profile to this file (clients held in this process only)")
	publishers := fs.String("publisher", "stream", "fanout, channels: stream (one PublishStream), unary (a gRPC Publish per publication), rest (a POST per publication); a list runs each in turn")
	fs.BoolVar(&o.floor, "floor", false, "also measure the floor (a minimal broadcaster the bench starts in its own process, fresh for each run) and report ratios to it")
	fs.StringVar(&o.serveConfig, "serve", "", "start a fresh `herald serve --config FILE` for each run (loopback ports; -jwt-secret and -api-key passed on) instead of using -ws and -grpc")
	serveBins := fs.String("serve-bin", "", "with -serve: herald binaries to start, comma-separated, each measured in turn (default: this one)")
	fs.IntVar(&o.runs, "runs", 1, "rounds of runs; within a round every target (floor, then each herald) runs each publisher")
	fs.DurationVar(&o.pause, "pause", 2*time.Second, "pause between the runs of a comparison")
	fs.StringVar(&o.pprofDir, "pprof-dir", "", "save the server's CPU and allocation profiles of each run here (servers the bench starts, or -pprof-addr)")
	fs.StringVar(&o.pprofAddr, "pprof-addr", "", "pprof address of the server at -ws (its pprof_addr), for -pprof-dir")

	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fs.Usage()
			return nil, flag.ErrHelp
		}
		fs.Usage()
		return nil, errors.New("bench: want a MODE: idle, fanout, channels, publish or floor")
	}
	o.mode = args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("bench: unexpected arguments %v", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) {
		o.rateSet = o.rateSet || f.Name == "rate"
		o.concSet = o.concSet || f.Name == "concurrency"
	})
	o.publishers = splitList(*publishers)
	for _, p := range o.publishers {
		if p != "stream" && p != "unary" && p != "rest" {
			return nil, fmt.Errorf("bench: -publisher: %q is not stream, unary or rest", p)
		}
	}
	if len(o.publishers) == 0 {
		o.publishers = []string{"stream"}
	}
	o.publisher = o.publishers[0]
	o.serveBins = splitList(*serveBins)
	if len(o.serveBins) > 0 && o.serveConfig == "" {
		return nil, errors.New("bench: -serve-bin needs -serve CONFIG")
	}
	if o.runs < 1 {
		return nil, errors.New("bench: -runs must be at least 1")
	}
	if o.mode == "publish" && (o.floor || o.serveConfig != "" || o.runs > 1) {
		return nil, errors.New("bench: publish measures the server at -grpc, started by you: -floor, -serve and -runs are for idle, fanout and channels")
	}
	o.args = redactArgs(args)
	o.ws = splitList(*ws)
	if len(o.ws) == 0 {
		return nil, errors.New("bench: -ws is empty")
	}
	switch *httpAddrs {
	case "":
		seen := map[string]bool{}
		for _, u := range o.ws {
			if a := httpAddrOf(u); !seen[a] {
				seen[a] = true
				o.httpAddrs = append(o.httpAddrs, a)
			}
		}
	case "none":
	default:
		o.httpAddrs = splitList(*httpAddrs)
	}
	if len(o.httpAddrs) > 0 {
		o.restAddr = o.httpAddrs[0]
	} else {
		o.restAddr = httpAddrOf(o.ws[0])
	}
	for _, p := range splitList(*pids) {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("bench: -pid %q: want process ids", p)
		}
		o.pids = append(o.pids, pid)
	}
	if o.spread < 1 || o.spread > 1 && o.subs > 0 {
		return nil, errors.New("bench: -spread must be at least 1, and 1 with -subs")
	}
	o.kinds = splitList(*kinds)
	for _, k := range o.kinds {
		if k != "unary" && k != "stream" {
			return nil, fmt.Errorf("bench: -kinds: %q is neither unary nor stream", k)
		}
	}
	if o.channel == "" {
		o.channel = "bench"
		if o.mode == "idle" {
			o.channel = "idle"
		}
		if o.jwtSecret == "" && o.mode != "publish" {
			o.channel = "chat:" + o.channel
		}
	}
	switch {
	case o.n < 1:
		return nil, errors.New("bench: -n must be at least 1")
	case o.procs < 1:
		return nil, errors.New("bench: -procs must be at least 1")
	case o.transport != "websocket" && o.transport != "sse" && o.transport != "http_stream":
		return nil, fmt.Errorf("bench: -transport %q: want websocket, sse or http_stream", o.transport)
	case o.h2 && (!o.tls || o.transport == "websocket"):
		return nil, errors.New("bench: -h2 needs -tls and -transport sse or http_stream")
	case o.latencyFrom != "schedule" && o.latencyFrom != "send":
		return nil, fmt.Errorf("bench: -latency-from %q: want schedule or send", o.latencyFrom)
	case o.size < 0 || o.concurrency < 1 || o.connConc < 1 || o.readBuf < 64:
		return nil, errors.New("bench: -size, -concurrency, -conn-concurrency or -read-buf out of range")
	case (o.mode == "fanout" || o.mode == "channels") && (o.rate <= 0 || o.dur <= 0):
		return nil, errors.New("bench: -rate and -dur must be positive")
	case o.mode == "channels" && o.jwtSecret == "":
		return nil, errors.New("bench: channels needs -jwt-secret (the server's --jwt-secret): personal channels belong to authenticated users")
	}
	// Last: with -serve it writes a key into a temporary directory, which
	// Main removes only once the flags were taken.
	if err := o.setupTLS(); err != nil {
		return nil, err
	}
	return o, nil
}

// redactArgs joins args for the report with secret flag values hidden.
func redactArgs(args []string) string {
	out := make([]string, len(args))
	hideNext := false
	for i, a := range args {
		out[i] = a
		if hideNext {
			out[i], hideNext = "***", false
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "jwt-secret" || name == "api-key") {
			if hasValue {
				out[i] = a[:strings.Index(a, "=")+1] + "***"
			} else {
				hideNext = true
			}
		}
	}
	return strings.Join(out, " ")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// progress writes a line to stderr, where it does not mix with RESULT.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
