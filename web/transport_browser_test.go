package web_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/deploytest"
	"github.com/herald-io/herald/internal/freeport"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// transportScript is clientScript with herald.js options (a JS object
// literal), recording the transport and the format of each connection.
func transportScript(channel, token, opts string) string {
	return fmt.Sprintf(`(async () => {
  const { Herald } = await import("/herald.js");
  const t = (window.t = { pubs: [], subscribed: [], states: [], transports: [], formats: [] });
  const token = %q;
  const h = (t.h = new Herald("/ws", { getToken: async () => token, minReconnectDelay: 50, maxReconnectDelay: 400, timeout: 5000, ...%s }));
  h.on("state", (c) => t.states.push(c.state + (c.code ? " " + c.code : "")));
  h.on("connected", (c) => { t.transports.push(c.transport); t.formats.push(c.format); });
  t.sub = h.subscribe(%q, {
    onPublication: (p) => t.pubs.push({ offset: p.offset, epoch: p.epoch, n: p.data?.n ?? 0, binary: p.binary && [...p.binary], time: p.timeUnixMs }),
    onSubscribed: (c) => t.subscribed.push(c),
  });
  h.connect();
  await h.ready();
  return true;
})()`, token, opts, channel)
}

var transports = []string{"websocket", "http_stream", "sse"}

// transportFormats are the transports crossed with herald.js's formats,
// each with the format the connection must use: SSE carries herald.json
// whatever the option says.
var transportFormats = func() (out []struct{ transport, format, want string }) {
	for _, tr := range transports {
		for _, f := range formatNames {
			want := f
			if tr == "sse" {
				want = "json"
			}
			out = append(out, struct{ transport, format, want string }{tr, f, want})
		}
	}
	return out
}()

// TestBrowserTransports: herald.js forced onto each transport, in each
// format, connects, subscribes, receives publications made over gRPC in
// order, publishes (its own publication comes back through the
// subscription; a binary one too), and reads history and presence; in
// every deployment shape (in production, over TLS, where Chromium speaks
// HTTP/2 to /stream, /sse and /command).
func TestBrowserTransports(t *testing.T) {
	deploytest.Run(t, deploytest.Shapes, nil, testTransports)
}

func testTransports(t *testing.T, d *deploytest.Deployment) {
	ctx := newBrowser(t)
	core := d.Backend(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(d.BrowserURL()+"/?connect=0")); err != nil {
		t.Fatal(err)
	}
	for _, tf := range transportFormats {
		tr := tf.transport
		t.Run(tr+"/"+tf.format, func(t *testing.T) {
			channel := "chat:tr-" + tr + "-" + tf.format
			token := d.Token(t, user(d, "tara-"+tr), nil)
			eval[bool](t, ctx, transportScript(channel, token, fmt.Sprintf(`{ transports: [%q], format: %q }`, tr, tf.format)))
			waitFor(t, ctx, "the subscription", `window.t.subscribed.length === 1`)
			if got := eval[[]string](t, ctx, `window.t.transports`); !slices.Equal(got, []string{tr}) {
				t.Fatalf("connected over %v, want %s", got, tr)
			}
			if got := eval[[]string](t, ctx, `window.t.formats`); !slices.Equal(got, []string{tf.want}) {
				t.Fatalf("connected in %v, want %s", got, tf.want)
			}
			for i := 1; i <= 5; i++ {
				publish(t, core, channel, map[string]any{"n": i})
			}
			waitFor(t, ctx, "the publications", `window.t.pubs.length >= 5`)
			off := eval[uint64](t, ctx, fmt.Sprintf(`window.t.h.publish(%q, { n: 6 }).then((r) => r.offset)`, channel))
			if off != 6 {
				t.Fatalf("browser publish at offset %d, want 6", off)
			}
			waitFor(t, ctx, "the browser's own publication", `window.t.pubs.length === 6`)
			checkSequence(t, eval[[]gotPub](t, ctx, `window.t.pubs`), 6)
			hist := eval[[]int](t, ctx, `window.t.sub.history({ limit: 100 }).then((r) => r.publications.map((p) => p.data.n))`)
			if want := []int{1, 2, 3, 4, 5, 6}; !slices.Equal(hist, want) {
				t.Fatalf("history = %v, want %v", hist, want)
			}
			if off := eval[uint64](t, ctx, fmt.Sprintf(`window.t.h.publish(%q, new Uint8Array([255, 0, 10, 13])).then((r) => r.offset)`, channel)); off != 7 {
				t.Fatalf("binary publish at offset %d, want 7", off)
			}
			waitFor(t, ctx, "the binary publication", `window.t.pubs.length === 7`)
			if p := eval[[]gotPub](t, ctx, `window.t.pubs`)[6]; !slices.Equal(p.Binary, []int{255, 0, 10, 13}) {
				t.Fatalf("binary publication received as %+v", p)
			}
			clients := eval[int](t, ctx, `(async () => {
  for (;;) {
    const c = await window.t.sub.presence();
    if (c.some((x) => x.client === window.t.h.client)) return c.length;
    await new Promise((r) => setTimeout(r, 50));
  }
})()`)
			if clients < 1 {
				t.Fatalf("presence: %d clients", clients)
			}
			eval[bool](t, ctx, `(window.t.h.disconnect(), true)`)
		})
	}
}

// TestBrowserTransportsRecoverAcrossBridgeRestart: on each transport, in
// each format, a split deployment's bridge is drained (the client is told 4006) and
// restarted on the same address while publications go on; the page gets
// exactly the missed publications, once, in order, with recovered=true.
func TestBrowserTransportsRecoverAcrossBridgeRestart(t *testing.T) {
	deploytest.Run(t, []deploytest.Shape{{Split: true}, {Split: true, Production: true}}, nil, testTransportsRecover)
}

func testTransportsRecover(t *testing.T, d *deploytest.Deployment) {
	ctx := newBrowser(t)
	core := d.Backend(t)
	bridge := d.Bridge
	addr := bridge.HTTPAddr.String()
	if err := chromedp.Do(ctx, chromedp.Navigate(d.BrowserURL()+"/?connect=0")); err != nil {
		t.Fatal(err)
	}
	parent := t // the restarted bridge outlives each subtest
	for _, tf := range transportFormats {
		tr := tf.transport
		t.Run(tr+"/"+tf.format, func(t *testing.T) {
			channel := "chat:recover-" + tr + "-" + tf.format
			token := d.Token(t, user(d, "rita-"+tr), nil)
			eval[bool](t, ctx, transportScript(channel, token, fmt.Sprintf(`{ transports: [%q], format: %q }`, tr, tf.format)))
			waitFor(t, ctx, "the subscription", `window.t.subscribed.length === 1`)
			for i := 1; i <= 3; i++ {
				publish(t, core, channel, map[string]any{"n": i})
			}
			waitFor(t, ctx, "the live publications", `window.t.pubs.length === 3`)
			stopNode(t, bridge)
			waitFor(t, ctx, "the drain's 4006", `window.t.states.includes("connecting 4006")`)
			for i := 4; i <= 8; i++ {
				publish(t, core, channel, map[string]any{"n": i})
			}
			bridge = d.StartBridge(parent, addr, nil)
			waitFor(t, ctx, "the resubscription", `window.t.subscribed.length === 2`)
			subs := eval[[]subscribedCtx](t, ctx, `window.t.subscribed`)
			if s := subs[1]; !s.Resubscribed || !s.Recovered || !s.Recoverable {
				t.Fatalf("after the restart: %+v, want resubscribed, recovered and recoverable", s)
			}
			waitFor(t, ctx, "the missed publications", `window.t.pubs.length >= 8`)
			publish(t, core, channel, map[string]any{"n": 9})
			waitFor(t, ctx, "a live publication after the recovery", `window.t.pubs.length >= 9`)
			checkSequence(t, eval[[]gotPub](t, ctx, `window.t.pubs`), 9)
			if got := eval[[]string](t, ctx, `window.t.transports`); len(got) != 2 || got[0] != tr || got[1] != tr {
				t.Fatalf("connections over %v, want %s twice", got, tr)
			}
			if got := eval[[]string](t, ctx, `window.t.formats`); !slices.Equal(got, []string{tf.want, tf.want}) {
				t.Fatalf("connections in %v, want %s twice", got, tf.want)
			}
			eval[bool](t, ctx, `(window.t.h.disconnect(), true)`)
		})
	}
}

// TestBrowserEventSourceResumes: a page with nothing but EventSource
// names its channel in the URL; when the bridge of a split deployment is
// drained and restarted, the browser's own reconnect (Last-Event-ID)
// brings exactly the missed publications, after a `subscribed` event with
// recovered=true.
func TestBrowserEventSourceResumes(t *testing.T) {
	deploytest.Run(t, []deploytest.Shape{{Split: true}, {Split: true, Production: true}}, nil, testEventSourceResumes)
}

func testEventSourceResumes(t *testing.T, d *deploytest.Deployment) {
	ctx := newBrowser(t)
	core := d.Backend(t)
	addr := d.Bridge.HTTPAddr.String()
	const channel = "chat:eventsource"
	if err := chromedp.Do(ctx, chromedp.Navigate(d.BrowserURL()+"/?connect=0")); err != nil {
		t.Fatal(err)
	}
	q := url.Values{"channel": {channel}}
	if tok := d.Token(t, user(d, "eve"), nil); tok != "" {
		q.Set("token", tok)
	}
	eval[bool](t, ctx, fmt.Sprintf(`(() => {
  const t = (window.t = { pubs: [], subscribed: [], disconnects: [], opens: 0 });
  const es = (t.es = new EventSource("/sse?" + %q));
  es.onopen = () => t.opens++;
  es.onmessage = (e) => {
    const f = JSON.parse(e.data);
    if (f.pub && f.pub.channel === %q) t.pubs.push({ offset: Number(f.pub.offset), epoch: f.pub.epoch, n: f.pub.data.n });
    if (f.subscribed && f.subscribed.channel === %q) t.subscribed.push({ channel: f.subscribed.channel, recovered: !!f.subscribed.recovered, recoverable: !!f.subscribed.recoverable, resubscribed: t.opens > 1 });
    if (f.disconnect) t.disconnects.push(f.disconnect.code);
  };
  return true;
})()`, q.Encode(), channel, channel))
	waitFor(t, ctx, "the subscription", `window.t.subscribed.length === 1`)
	for i := 1; i <= 3; i++ {
		publish(t, core, channel, map[string]any{"n": i})
	}
	waitFor(t, ctx, "the live publications", `window.t.pubs.length === 3`)
	stopNode(t, d.Bridge)
	waitFor(t, ctx, "the drain's disconnect event", `window.t.disconnects.includes(4006)`)
	for i := 4; i <= 8; i++ {
		publish(t, core, channel, map[string]any{"n": i})
	}
	d.StartBridge(t, addr, nil)
	waitFor(t, ctx, "the browser's own reconnect", `window.t.subscribed.length === 2`)
	subs := eval[[]subscribedCtx](t, ctx, `window.t.subscribed`)
	if s := subs[1]; !s.Recovered || !s.Recoverable {
		t.Fatalf("after the restart: %+v, want recovered", s)
	}
	waitFor(t, ctx, "the missed publications", `window.t.pubs.length >= 8`)
	publish(t, core, channel, map[string]any{"n": 9})
	waitFor(t, ctx, "a live publication after the recovery", `window.t.pubs.length >= 9`)
	checkSequence(t, eval[[]gotPub](t, ctx, `window.t.pubs`), 9)
}

// noUpgradeProxy is a reverse proxy that drops the Upgrade header (as
// some corporate proxies do: the WebSocket upgrade fails) and refuses the
// paths in blocked with 502. It listens at once (its origin must be known
// to the node: public_origins) and forwards once target is set.
type noUpgradeProxy struct {
	URL    string
	target atomic.Pointer[httputil.ReverseProxy]
}

func newNoUpgradeProxy(t *testing.T, blocked ...string) *noUpgradeProxy {
	t.Helper()
	p := &noUpgradeProxy{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.URL = "http://" + lis.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp := p.target.Load()
		if rp == nil || slices.Contains(blocked, r.URL.Path) {
			http.Error(w, "blocked by the proxy", http.StatusBadGateway)
			return
		}
		r.Header.Del("Upgrade")
		r.Header.Del("Connection")
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

func (p *noUpgradeProxy) forwardTo(target string) {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	p.target.Store(rp)
}

// TestBrowserFallback: behind a proxy that does not pass WebSockets,
// herald.js with its default transports ends up on HTTP streaming; when
// the proxy also refuses /stream, on SSE. Both work in both formats
// (SSE in herald.json): subscribe, receive, publish.
func TestBrowserFallback(t *testing.T) {
	ctx := newBrowser(t)
	tests := []struct {
		name  string
		proxy *noUpgradeProxy
		want  string
	}{
		{"no websocket", newNoUpgradeProxy(t), "http_stream"},
		{"no websocket, no stream", newNoUpgradeProxy(t, "/stream"), "sse"},
	}
	n := startNode(t, node.Serve, func(c *config.Config) {
		for _, tc := range tests {
			c.PublicOrigins = append(c.PublicOrigins, tc.proxy.URL) // browsers reach the node through the proxies
		}
	})
	core := dialCore(t, n)
	for _, tc := range tests {
		tc.proxy.forwardTo("http://" + n.HTTPAddr.String())
	}
	for _, tc := range tests {
		for _, format := range formatNames {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				testFallback(t, ctx, core, tc.proxy, tc.want, format)
			})
		}
	}
}

func testFallback(t *testing.T, ctx context.Context, core heraldv1.HeraldServiceClient, proxy *noUpgradeProxy, want, format string) {
	if err := chromedp.Do(ctx, chromedp.Navigate(proxy.URL+"/?connect=0")); err != nil {
		t.Fatal(err)
	}
	channel := "chat:fallback-" + want + "-" + format
	eval[bool](t, ctx, transportScript(channel, "", fmt.Sprintf(`{ format: %q }`, format)))
	waitFor(t, ctx, "the subscription", `window.t.subscribed.length === 1`)
	// Every connection is over the fallback (and in the format it can
	// carry). A second one is allowed: on a loaded machine the client's
	// own timeouts (5 s here) can drop the first and reconnect, as they
	// should; the states say why.
	wantFormat := format
	if want == "sse" {
		wantFormat = "json"
	}
	got, formats := eval[[]string](t, ctx, `window.t.transports`), eval[[]string](t, ctx, `window.t.formats`)
	states := eval[[]string](t, ctx, `window.t.states`)
	if len(got) == 0 || slices.ContainsFunc(got, func(tr string) bool { return tr != want }) {
		t.Fatalf("connected over %v, want %s (states %v)", got, want, states)
	}
	if slices.ContainsFunc(formats, func(f string) bool { return f != wantFormat }) {
		t.Fatalf("connected in %v, want %s", formats, wantFormat)
	}
	if len(got) > 1 {
		t.Logf("connected %d times over %s; states %v", len(got), want, states)
	}
	for i := 1; i <= 3; i++ {
		publish(t, core, channel, map[string]any{"n": i})
	}
	if off := eval[uint64](t, ctx, fmt.Sprintf(`window.t.h.publish(%q, { n: 4 }).then((r) => r.offset)`, channel)); off != 4 {
		t.Fatalf("publish at %d, want 4", off)
	}
	waitFor(t, ctx, "the publications", `window.t.pubs.length >= 4`)
	checkSequence(t, eval[[]gotPub](t, ctx, `window.t.pubs`), 4)
	if states := strings.Join(eval[[]string](t, ctx, `window.t.states`), ","); !strings.Contains(states, "connected") {
		t.Fatalf("states %s", states)
	}
}

// dialCore is a gRPC client of a demo node (no keys, no TLS).
func dialCore(t *testing.T, n *node.Node) heraldv1.HeraldServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return heraldv1.NewHeraldServiceClient(conn)
}

// countingProxy forwards everything to a node (WebSocket upgrades too)
// and counts the requests per path, answered or not (502 while the node
// is down).
type countingProxy struct {
	URL    string
	mu     sync.Mutex
	counts map[string]int
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	p := &countingProxy{counts: map[string]int{}}
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[r.URL.Path]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *countingProxy) count(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[path]
}

// TestBrowserKeepsItsTransport: a client that connected over WebSocket
// keeps to it while the node is down (a restart refuses every transport
// alike): it retries the WebSocket with backoff and tries neither HTTP
// streaming nor SSE, and reconnects over WebSocket when the node is
// back. (It used to fall back at once on the first failure and could
// stay on SSE after a bridge restart.)
func TestBrowserKeepsItsTransport(t *testing.T) {
	ctx := newBrowser(t)
	addr, err := freeport.Addr() // the bridge restarts on it
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCountingProxy(t, "http://"+addr)
	start := func() *node.Node {
		return startNode(t, node.Serve, func(c *config.Config) {
			c.HTTPAddr = addr
			c.PublicOrigins = []string{proxy.URL}
		})
	}
	n := start()
	if err := chromedp.Do(ctx, chromedp.Navigate(proxy.URL+"/?connect=0")); err != nil {
		t.Fatal(err)
	}
	eval[bool](t, ctx, transportScript("chat:keep", "", `{}`))
	waitFor(t, ctx, "the subscription", `window.t.subscribed.length === 1`)
	if got := eval[[]string](t, ctx, `window.t.transports`); !slices.Equal(got, []string{"websocket"}) {
		t.Fatalf("connected over %v, want websocket", got)
	}
	ws, stream, sse := proxy.count("/ws"), proxy.count("/stream"), proxy.count("/sse")
	stopNode(t, n)
	waitFor(t, ctx, "the client to notice", `window.t.h.state !== "connected"`)
	for end := time.Now().Add(20 * time.Second); proxy.count("/ws") < ws+3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d WebSocket attempts while the node was down, want 3", proxy.count("/ws")-ws)
		}
	}
	if s, e := proxy.count("/stream")-stream, proxy.count("/sse")-sse; s != 0 || e != 0 {
		t.Fatalf("while the node was down the client tried /stream %d and /sse %d times, want none (it had connected over WebSocket)", s, e)
	}
	start()
	waitFor(t, ctx, "the reconnection", `window.t.transports.length === 2`)
	if got := eval[[]string](t, ctx, `window.t.transports`); !slices.Equal(got, []string{"websocket", "websocket"}) {
		t.Fatalf("connected over %v, want websocket twice", got)
	}
	waitFor(t, ctx, "the resubscription", `window.t.subscribed.length === 2`)
}
