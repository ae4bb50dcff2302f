package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns the new soft limit.
func raiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return rl.Cur, err
		}
	}
	return rl.Cur, nil
}

// fdReserve is how many descriptors a bench process keeps for itself
// (stdio, gRPC, epoll, metrics scrapes, pipes to children).
const fdReserve = 100

// cpuSeconds returns the user+system CPU time of this process.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; it is 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns utime+stime of pid in seconds, from /proc/PID/stat.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads fields 14 and 15 of a /proc/PID/stat line. The command
// name (field 2) may contain spaces, so fields are counted after its ")".
func parseStatCPU(b []byte) (float64, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	return float64(ut+st) / clockTicks, nil
}

// procRSS returns VmRSS of pid in bytes.
func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			kb, err := strconv.ParseInt(v, 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// metricNames are the Go runtime metrics of the server that the bench reads.
var metricNames = []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines"}

// parseMetrics picks the named unlabelled samples from a Prometheus text
// exposition.
func parseMetrics(r io.Reader, names []string) map[string]float64 {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || !want[name] {
			continue
		}
		val, _, _ = strings.Cut(strings.TrimSpace(val), " ") // drop a timestamp
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// scrapeMetrics fetches /metrics from every address and sums the samples.
func scrapeMetrics(ctx context.Context, hc *http.Client, scheme string, addrs []string) (map[string]float64, error) {
	sum := make(map[string]float64)
	var errs []error
	for _, a := range addrs {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+a+"/metrics", nil)
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			errs = append(errs, err)
			continue
		}
		m := parseMetrics(resp.Body, metricNames)
		resp.Body.Close()
		cancel()
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum, errors.Join(errs...)
}

// serverSample is the state of the server processes at one moment.
type serverSample struct {
	at      time.Time
	cpu     float64 // seconds, summed over pids
	steal   float64 // seconds the hypervisor ran others on this machine's CPUs, since boot
	rss     int64   // bytes, summed over pids
	metrics map[string]float64
}

// sampleServer reads /proc for o.pids and, with metrics, /metrics from
// o.httpAddrs (either may be empty). Failures are reported on warn and
// leave fields zero.
func sampleServer(ctx context.Context, o *options, metrics bool, warn func(string, ...any)) serverSample {
	pids, httpAddrs := o.pids, o.httpAddrs
	if !metrics {
		httpAddrs = nil
	}
	s := serverSample{at: time.Now(), steal: stealSeconds()}
	for _, pid := range pids {
		c, err := procCPU(pid)
		if err != nil {
			warn("server pid %d: %v", pid, err)
		}
		s.cpu += c
		r, err := procRSS(pid)
		if err != nil {
			warn("server pid %d: %v", pid, err)
		}
		s.rss += r
	}
	if len(httpAddrs) > 0 {
		hc, scheme := httpFor(o.tlsCfg)
		m, err := scrapeMetrics(ctx, hc, scheme, httpAddrs)
		if err != nil {
			warn("metrics: %v", err)
		}
		s.metrics = m
	}
	return s
}

// parseSources parses -src: "" (no binding), a count K (127.0.0.1 …
// 127.0.0.K), a range "A-B" or a comma-separated list of addresses.
func parseSources(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 254 {
			return nil, fmt.Errorf("-src %d: want 1 to 254 addresses", n)
		}
		return addrRange(netip.AddrFrom4([4]byte{127, 0, 0, 1}), n), nil
	}
	if a, b, ok := strings.Cut(s, "-"); ok {
		lo, err1 := netip.ParseAddr(strings.TrimSpace(a))
		hi, err2 := netip.ParseAddr(strings.TrimSpace(b))
		if err1 != nil || err2 != nil || !lo.Is4() || !hi.Is4() || hi.Less(lo) {
			return nil, fmt.Errorf("-src %q: want FIRST-LAST IPv4 addresses", s)
		}
		var out []string
		for x := lo; ; x = x.Next() {
			out = append(out, x.String())
			if x == hi || len(out) > 65536 {
				break
			}
		}
		return out, nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("-src: %v", err)
		}
		out = append(out, a.String())
	}
	return out, nil
}

func addrRange(first netip.Addr, n int) []string {
	out := make([]string, 0, n)
	for a := first; len(out) < n; a = a.Next() {
		out = append(out, a.String())
	}
	return out
}

// autoSources is the default source set for n connections: one loopback
// address per 10,000 connections, so that no address runs short of
// ephemeral ports (about 28,000 per address by default).
func autoSources(n int) []string {
	k := (n + 9999) / 10000
	if k <= 1 {
		return nil
	}
	return addrRange(netip.AddrFrom4([4]byte{127, 0, 0, 1}), min(k, 254))
}

// splitSources gives part k of K its own slice of srcs (shared round-robin
// when there are fewer addresses than parts).
func splitSources(srcs []string, k, parts int) []string {
	if len(srcs) == 0 {
		return nil
	}
	if len(srcs) < parts {
		return []string{srcs[k%len(srcs)]}
	}
	lo, hi := k*len(srcs)/parts, (k+1)*len(srcs)/parts
	return srcs[lo:hi]
}

// httpAddrOf derives the HTTP host:port of a ws:// URL.
func httpAddrOf(wsURL string) string {
	s := wsURL
	for _, p := range []string{"ws://", "wss://", "http://", "https://"} {
		s = strings.TrimPrefix(s, p)
	}
	host, _, _ := strings.Cut(s, "/")
	if _, _, err := net.SplitHostPort(host); err != nil {
		return host + ":80"
	}
	return host
}

// stealSeconds returns the CPU time the hypervisor gave to others while
// this machine's CPUs wanted to run (steal, in /proc/stat), summed over
// CPUs, since boot; 0 if unknown.
func stealSeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	return parseSteal(b)
}

// parseSteal reads steal from the first line of /proc/stat, "cpu user
// nice system idle iowait irq softirq steal …", in USER_HZ (100 a second
// on Linux).
func parseSteal(b []byte) float64 {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	v, err := strconv.ParseUint(f[8], 10, 64)
	if err != nil {
		return 0
	}
	return float64(v) / 100
}

// loadAverage returns the machine's 1-minute load average (0 if unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// fetchProfiles saves the server's pprof profiles from o.pprofAddr into
// o.pprofDir: with secs > 0 a CPU profile and an allocation profile of the
// next secs seconds (the allocations made in that window, a delta), else
// the heap in use now. It returns the files written.
func fetchProfiles(ctx context.Context, o *options, secs int, warn func(string, ...any)) []string {
	if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
		warn("pprof: %v", err)
		return nil
	}
	tag := o.runTag
	if tag == "" {
		tag = time.Now().Format("150405")
	}
	type want struct{ path, file string }
	var wants []want
	if secs > 0 {
		s := strconv.Itoa(secs)
		wants = []want{{"profile?seconds=" + s, tag + "-cpu.pprof"}, {"allocs?seconds=" + s, tag + "-allocs.pprof"}}
	} else {
		wants = []want{{"heap", tag + "-heap.pprof"}}
	}
	out := make([]string, len(wants))
	var wg sync.WaitGroup
	for i, wt := range wants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+o.pprofAddr+"/debug/pprof/"+wt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				warn("pprof %s: %v", wt.path, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				warn("pprof %s: HTTP %d", wt.path, resp.StatusCode)
				return
			}
			name := filepath.Join(o.pprofDir, wt.file)
			f, err := os.Create(name)
			if err != nil {
				warn("pprof: %v", err)
				return
			}
			_, err = io.Copy(f, resp.Body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				warn("pprof %s: %v", wt.path, err)
				return
			}
			out[i] = name
		}()
	}
	wg.Wait()
	var files []string
	for _, f := range out {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}
