package web_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/deploytest"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/internal/syncbuf"
	"github.com/herald-io/herald/node"
	"google.golang.org/protobuf/types/known/structpb"
)

// These tests drive herald.js and the console in a real headless Chromium
// (Debian's chromium) against real nodes on loopback, and publish over real
// gRPC. Without Chromium they skip, unless HERALD_REQUIRE_BROWSER=1 (CI),
// which makes that a failure. The README's screenshots come from
// TestScreenshots (screenshot_test.go).

const chromiumPath = "/usr/bin/chromium"

// testTimeout bounds each test's browser work; a failing wait reports
// what it waited for long before that.
const testTimeout = 45 * time.Second

// newBrowser starts a headless Chromium with a fresh profile and returns the
// context of its first tab, bounded by testTimeout. The page's console
// output is logged if the test fails.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("HERALD_REQUIRE_BROWSER") == "1" {
			t.Fatalf("HERALD_REQUIRE_BROWSER=1 but Chromium is missing: %v (apt-get install chromium)", err)
		}
		t.Skipf("browser test skipped: no Chromium at %s (apt-get install chromium; HERALD_REQUIRE_BROWSER=1 makes this a failure)", chromiumPath)
	}
	// Not t.TempDir: Chromium's helper processes can still write to the
	// profile for a moment after the browser exits, and t.TempDir's cleanup
	// fails the test on "directory not empty". Retry the removal instead.
	profile, err := os.MkdirTemp("", "herald-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		// The production shape serves HTTPS and WSS with a test CA that
		// the profile does not trust.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1440, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// Start the browser on a context without a deadline: the first Run's
	// context owns the browser's life.
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	watchConsole(t, browserCtx, "tab1")
	ctx, cancel := context.WithTimeout(browserCtx, testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newTab opens another tab in the browser of ctx.
func newTab(t *testing.T, ctx context.Context, name string) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("opening %s: %v", name, err)
	}
	watchConsole(t, tab, name)
	return tab
}

// watchConsole collects the tab's console messages and exceptions, and logs
// them when the test fails.
func watchConsole(t *testing.T, ctx context.Context, name string) {
	var mu sync.Mutex
	var lines []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			lines = append(lines, m.String())
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			t.Logf("%s console: %s", name, l)
		}
	})
}

// startNode starts a node on loopback ports chosen by the system, with cfg
// changed by mutate, and shuts it down at the end of the test (Shutdown is
// idempotent, so a test may stop it earlier).
func startNode(t *testing.T, mode node.Mode, mutate func(*config.Config)) *node.Node {
	t.Helper()
	cfg := config.Default()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	n, err := node.Start(context.Background(), cfg, mode, nil)
	if err != nil {
		t.Fatalf("starting node: %v", err)
	}
	t.Cleanup(func() { stopNode(t, n) })
	return n
}

func stopNode(t *testing.T, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("node shutdown: %v", err)
	}
}

// user is the name of a browser's user: name in production (its token's
// sub), "" (anonymous) in the demo.
func user(d *deploytest.Deployment, name string) string {
	if d.Production {
		return name
	}
	return ""
}

// publish publishes data over gRPC and returns the publication's offset.
func publish(t *testing.T, c heraldv1.HeraldServiceClient, channel string, data map[string]any) uint64 {
	t.Helper()
	v, err := structpb.NewValue(data)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Publish(ctx, &heraldv1.PublishRequest{Channel: channel, Payload: &heraldv1.PublishRequest_Data{Data: v}})
	if err != nil {
		t.Fatalf("publish to %s: %v", channel, err)
	}
	return res.GetPosition().GetOffset()
}

// waitFor polls the JavaScript expression until it is truthy.
func waitFor(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(25*time.Millisecond),
		chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// eval evaluates expr, awaiting it if it is a promise, into a T.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// clientScript loads herald.js into the page and subscribes to channel
// in the given format ("json" or "protobuf"), recording what arrives in
// window.t; token is the browser's JWT ("" anonymous), handed out again on
// every reconnect as an app's getToken does. Backoff is short so that
// tests reconnect quickly.
func clientScript(channel, token, format string) string {
	return transportScript(channel, token, fmt.Sprintf(`{ format: %q }`, format))
}

type gotPub struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
	N      int    `json:"n"`
	// Binary is a binary payload's bytes; Time its timeUnixMs.
	Binary []int `json:"binary"`
	Time   int64 `json:"time"`
}

type subscribedCtx struct {
	Channel      string `json:"channel"`
	Recovered    bool   `json:"recovered"`
	Recoverable  bool   `json:"recoverable"`
	Resubscribed bool   `json:"resubscribed"`
}

// checkSequence checks that pubs are exactly n = 1..want, with consecutive
// offsets in one epoch.
func checkSequence(t *testing.T, pubs []gotPub, want int) {
	t.Helper()
	var ns []int
	for _, p := range pubs {
		ns = append(ns, p.N)
	}
	wantNs := make([]int, want)
	for i := range wantNs {
		wantNs[i] = i + 1
	}
	if !slices.Equal(ns, wantNs) {
		t.Fatalf("received n = %v, want %v (each once, in order)", ns, wantNs)
	}
	for i := 1; i < len(pubs); i++ {
		if pubs[i].Epoch != pubs[0].Epoch || pubs[i].Offset != pubs[i-1].Offset+1 {
			t.Fatalf("publication %d at %d/%s after %d/%s: offsets must be consecutive in one epoch", i, pubs[i].Offset, pubs[i].Epoch, pubs[i-1].Offset, pubs[i-1].Epoch)
		}
	}
}

// TestBrowserClientReceivesInOrder: herald.js connects, subscribes, and
// receives publications made over gRPC, in order, with the time the node
// gave them; publish (JSON, raw JSON text kept exactly, binary), history
// and presence work from the browser. It runs in every deployment shape:
// serve and split, the loopback demo and production (API keys, a JWT with
// audience and issuer, HTTPS and WSS, the split bridge on TLS to its core
// with its own key), in both of herald.js's formats.
func TestBrowserClientReceivesInOrder(t *testing.T) {
	deploytest.Run(t, deploytest.Shapes, nil, func(t *testing.T, d *deploytest.Deployment) {
		testReceivesInOrder(t, d)
	})
}

func testReceivesInOrder(t *testing.T, d *deploytest.Deployment) {
	ctx := newBrowser(t)
	core := d.Backend(t)
	base := d.BrowserURL()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?connect=0")); err != nil {
		t.Fatal(err)
	}
	for _, format := range formatNames {
		t.Run(format, func(t *testing.T) {
			testReceivesInOrderAs(t, ctx, d, core, format)
		})
	}
}

func testReceivesInOrderAs(t *testing.T, ctx context.Context, d *deploytest.Deployment, core heraldv1.HeraldServiceClient, format string) {
	channel := "chat:order-" + format
	eval[bool](t, ctx, clientScript(channel, d.Token(t, user(d, "ann"), nil), format))
	defer eval[bool](t, ctx, `(window.t.h.disconnect(), true)`)
	waitFor(t, ctx, "the subscription", `window.t.subscribed.length === 1`)
	if got := eval[[]string](t, ctx, `window.t.formats`); !slices.Equal(got, []string{format}) {
		t.Fatalf("connected in %v, want %s", got, format)
	}

	const count = 10
	var offsets []uint64
	before := time.Now().UnixMilli()
	for i := 1; i <= count; i++ {
		offsets = append(offsets, publish(t, core, channel, map[string]any{"n": i}))
	}
	after := time.Now().UnixMilli()
	waitFor(t, ctx, "every publication", fmt.Sprintf(`window.t.pubs.length >= %d`, count))
	pubs := eval[[]gotPub](t, ctx, `window.t.pubs`)
	checkSequence(t, pubs, count)
	if pubs[0].Offset != offsets[0] {
		t.Fatalf("first offset in the browser %d, gRPC said %d", pubs[0].Offset, offsets[0])
	}
	// Publications carry the node's time (herald.js dropped it once).
	for _, p := range pubs {
		if p.Time < before || p.Time > after {
			t.Fatalf("publication %d has timeUnixMs %d, want the node's time between %d and %d", p.N, p.Time, before, after)
		}
	}

	// Publish from the browser: it comes back through the subscription.
	off := eval[uint64](t, ctx, fmt.Sprintf(`window.t.h.publish(%q, { n: %d }).then((r) => r.offset)`, channel, count+1))
	if off != offsets[count-1]+1 {
		t.Fatalf("browser publish at offset %d, want %d", off, offsets[count-1]+1)
	}
	waitFor(t, ctx, "the browser's own publication", fmt.Sprintf(`window.t.pubs.length === %d`, count+1))
	checkSequence(t, eval[[]gotPub](t, ctx, `window.t.pubs`), count+1)

	hist := eval[[]int](t, ctx, `window.t.sub.history({ limit: 100 }).then((r) => r.publications.map((p) => p.data.n))`)
	if want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; !slices.Equal(hist, want) {
		t.Fatalf("history = %v, want %v", hist, want)
	}
	if times := eval[[]int64](t, ctx, `window.t.sub.history({ limit: 100 }).then((r) => r.publications.map((p) => p.timeUnixMs))`); len(times) != count+1 || times[0] != pubs[0].Time {
		t.Fatalf("history times %v, want the publications' own (first %d)", times, pubs[0].Time)
	}

	// Raw JSON text is published as written (numbers beyond 2^53, key
	// order), binary as its bytes: a backend reads both back exactly.
	const raw = `{"n":12, "id":12345678901234567891,"a":1}`
	eval[uint64](t, ctx, fmt.Sprintf(`window.t.h.publish(%q, %q, { raw: true }).then((r) => r.offset)`, channel, raw))
	eval[uint64](t, ctx, fmt.Sprintf(`window.t.h.publish(%q, new Uint8Array([0, 1, 2, 255])).then((r) => r.offset)`, channel))
	waitFor(t, ctx, "the raw and binary publications", fmt.Sprintf(`window.t.pubs.length === %d`, count+3))
	pubs = eval[[]gotPub](t, ctx, `window.t.pubs`)
	if p := pubs[count+1]; p.N != 12 || p.Binary != nil {
		t.Fatalf("raw publication received as %+v", p)
	}
	if p := pubs[count+2]; !slices.Equal(p.Binary, []int{0, 1, 2, 255}) {
		t.Fatalf("binary publication received as %+v", p)
	}
	hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := core.History(hctx, &heraldv1.HistoryRequest{Channel: channel, Since: &heraldv1.StreamPosition{Offset: offsets[count-1] + 1, Epoch: pubs[0].Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.GetPublications(); len(got) != 2 || got[0].GetJson() != `{"n":12,"id":12345678901234567891,"a":1}` || !bytes.Equal(got[1].GetBinary(), []byte{0, 1, 2, 255}) {
		t.Fatalf("over gRPC the browser's publications are %v, want the raw text (compacted) and the bytes", got)
	}

	// Presence is reported to the core asynchronously: poll it.
	clients := eval[int](t, ctx, `(async () => {
  for (;;) {
    const c = await window.t.sub.presence();
    if (c.length === 1 && c[0].client === window.t.h.client) return c.length;
    await new Promise((r) => setTimeout(r, 50));
  }
})()`)
	if clients != 1 {
		t.Fatalf("presence: %d clients", clients)
	}
	stats := eval[map[string]int](t, ctx, `window.t.sub.presenceStats()`)
	if stats["clients"] != 1 {
		t.Fatalf("presence stats = %v, want 1 client", stats)
	}
}

// TestBrowserClientRecoversAcrossBridgeRestart runs a split deployment (a
// core node and a bridge node), restarts the bridge on the same address
// while publications keep going to the core, and checks that the page
// receives exactly the missed ones, once, in order, with recovered=true.
// It runs as the split demo and the split production shape, in both
// formats (the console watching in another tab speaks the same).
func TestBrowserClientRecoversAcrossBridgeRestart(t *testing.T) {
	deploytest.Run(t, []deploytest.Shape{{Split: true}, {Split: true, Production: true}}, nil, func(t *testing.T, d *deploytest.Deployment) {
		testRecoversAcrossBridgeRestart(t, d)
	})
}

func testRecoversAcrossBridgeRestart(t *testing.T, d *deploytest.Deployment) {
	ctx := newBrowser(t)
	core := d.Backend(t)
	bridge := d.Bridge
	addr := bridge.HTTPAddr.String()
	base := d.BrowserURL()
	token := d.Token(t, user(d, "bea"), nil)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?connect=0")); err != nil {
		t.Fatal(err)
	}
	parent := t // the restarted bridge outlives each subtest
	for _, format := range formatNames {
		t.Run(format, func(t *testing.T) {
			channel := "chat:recover-" + format
			eval[bool](t, ctx, clientScript(channel, token, format))
			defer eval[bool](t, ctx, `(window.t.h.disconnect(), true)`)
			waitFor(t, ctx, "the subscription", `window.t.subscribed.length === 1`)
			for i := 1; i <= 3; i++ {
				publish(t, core, channel, map[string]any{"n": i})
			}
			waitFor(t, ctx, "the live publications", `window.t.pubs.length === 3`)
			// The console, watching the same channel in another tab, shows the
			// recovery to the user.
			console := newTab(t, ctx, "console")
			if err := chromedp.Do(console, chromedp.Navigate(base+"/?channel="+channel+"&format="+format+"&token="+token)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, console, "the console's history of the channel", `document.querySelectorAll("#chat-log .msg").length === 3`)
			if got := eval[string](t, console, `window.herald.format`); got != format {
				t.Fatalf("the console connected in %q, want %s", got, format)
			}

			stopNode(t, bridge)
			waitFor(t, ctx, "the client to notice the bridge is gone", `window.t.h.state !== "connected"`)
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
			waitFor(t, console, "the console's recovery notice and every message once",
				`!document.getElementById("chat-notice").hidden &&
		 document.getElementById("chat-notice").textContent.includes("missed messages recovered") &&
		 [...document.querySelectorAll("#chat-log .msg .meta")].map((m) => m.textContent).join() === "#1,#2,#3,#4,#5,#6,#7,#8,#9"`)
			if got := eval[[]string](t, ctx, `window.t.formats`); !slices.Equal(got, []string{format, format}) {
				t.Fatalf("connections in %v, want %s twice", got, format)
			}
			t.Logf("client states: %v", eval[[]string](t, ctx, `window.t.states`))
		})
	}
}

// TestConsoleChatAcrossTabs opens the console in two tabs, one speaking
// herald.json and the other herald.proto: a message sent in one appears in
// the other, and a gRPC publish to chat:lobby appears in both. It runs in
// every deployment shape (in production, each tab's console is given its
// user's JWT with ?token=).
func TestConsoleChatAcrossTabs(t *testing.T) {
	deploytest.Run(t, deploytest.Shapes, nil, func(t *testing.T, d *deploytest.Deployment) {
		testConsoleChatAcrossTabs(t, d)
	})
}

func testConsoleChatAcrossTabs(t *testing.T, d *deploytest.Deployment) {
	tab1 := newBrowser(t)
	tab2 := newTab(t, tab1, "tab2")
	core := d.Backend(t)
	base := d.BrowserURL()

	const ready = `document.getElementById("state").textContent === "connected" &&
		window.herald.getSubscription("chat:lobby")?.state === "subscribed"`
	for i, tab := range []context.Context{tab1, tab2} {
		name := []string{"alice", "bob"}[i]
		if err := chromedp.Do(tab, chromedp.Navigate(base+"/?name="+name+"&format="+formatNames[i]+"&token="+d.Token(t, user(d, name), nil))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tab, name+"'s console to connect and join chat:lobby", ready)
		if got := eval[string](t, tab, `window.herald.format`); got != formatNames[i] {
			t.Fatalf("%s's console connected in %q, want %s", name, got, formatNames[i])
		}
	}

	// chatHas is true once the chat log shows text from who.
	chatHas := func(who, text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#chat-log .msg")].some((li) =>
			li.querySelector(".who").textContent === %q && li.querySelector(".text").textContent === %q)`, who, text)
	}

	if err := chromedp.Do(tab1,
		chromedp.SendKeys(chromedp.ID("chat-text"), "hello from alice"),
		chromedp.Click(chromedp.CSS("#chat-form button")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab2, "alice's message in bob's tab", chatHas("alice", "hello from alice"))
	waitFor(t, tab1, "alice's message in her own tab", chatHas("alice", "hello from alice"))

	publish(t, core, "chat:lobby", map[string]any{"user": "backend", "text": "hi from gRPC"})
	for i, tab := range []context.Context{tab1, tab2} {
		waitFor(t, tab, fmt.Sprintf("the gRPC message in tab %d", i+1), chatHas("backend", "hi from gRPC"))
		// The console's channel feed shows the same publications with
		// offsets.
		waitFor(t, tab, fmt.Sprintf("the console feed in tab %d", i+1),
			`document.querySelectorAll('.channel[data-channel="chat:lobby"] .feed li.pub').length === 2`)
		waitFor(t, tab, fmt.Sprintf("two people online in tab %d", i+1),
			`document.querySelectorAll("#chat-who li").length === 2`)
	}

	// The channel feed and its History lines show each publication's own
	// time (the node's), not the time they were shown: publications had
	// no time in herald.js, so History showed the time of the click.
	hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := core.History(hctx, &heraldv1.HistoryRequest{Channel: "chat:lobby", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range h.GetPublications() {
		want = append(want, time.UnixMilli(p.GetTimeUnixMs()).UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	const block = `.channel[data-channel="chat:lobby"] .feed`
	for i, tab := range []context.Context{tab1, tab2} {
		if got := eval[[]string](t, tab, `[...document.querySelectorAll('`+block+` li.pub time')].map((e) => e.getAttribute("datetime"))`); !slices.Equal(got, want) {
			t.Errorf("tab %d: live publications show times %v, want theirs %v", i+1, got, want)
		}
		eval[bool](t, tab, `([...document.querySelectorAll('.channel[data-channel="chat:lobby"] header button')].find((b) => b.textContent === "History").click(), true)`)
		waitFor(t, tab, "the History lines", fmt.Sprintf(`document.querySelectorAll('%s li.hist').length === %d`, block, len(want)))
		got := eval[[]string](t, tab, `[...document.querySelectorAll('`+block+` li.hist time')].map((e) => e.getAttribute("datetime") + " " + e.textContent)`)
		shown := eval[[]string](t, tab, fmt.Sprintf(`%s.map((iso) => iso + " " + new Date(iso).toLocaleTimeString())`, mustJSON(want)))
		if !slices.Equal(got, shown) {
			t.Errorf("tab %d: History shows %v, want the publications' times %v", i+1, got, shown)
		}
	}

	// The page's own log records nothing alarming.
	events := eval[[]string](t, tab1, `[...document.querySelectorAll("#event-log li.bad")].map((li) => li.textContent)`)
	if len(events) > 0 {
		t.Fatalf("console reported errors: %s", strings.Join(events, "; "))
	}
}

// TestConsoleOnLoopbackNames: with the Origin allowlist taken from the
// configuration (never from the request), the console still works when
// opened at http://127.0.0.1:PORT (in herald.json) and at
// http://localhost:PORT (in herald.proto).
func TestConsoleOnLoopbackNames(t *testing.T) {
	ctx := newBrowser(t)
	n := startNode(t, node.Serve, nil)
	_, port, _ := net.SplitHostPort(n.HTTPAddr.String())
	for i, host := range []string{"127.0.0.1", "localhost"} {
		tab := ctx
		if i > 0 {
			tab = newTab(t, ctx, host)
		}
		if err := chromedp.Do(tab, chromedp.Navigate("http://"+host+":"+port+"/?format="+formatNames[i])); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tab, "the console at "+host+" to connect and join chat:lobby", `document.getElementById("state").textContent === "connected" &&
			window.herald.getSubscription("chat:lobby")?.state === "subscribed"`)
	}
}

// TestHeraldJSFromAnotherOrigin: a page on another origin imports
// /herald.js from the node (a CORS request: the module carries
// Access-Control-Allow-Origin: *) and, its origin being listed in
// bridge.allowed_origins, subscribes over WebSocket. A node that does not
// list it refuses the WebSocket and logs the refusal at info with the
// origin and the option to set.
func TestHeraldJSFromAnotherOrigin(t *testing.T) {
	ctx := newBrowser(t)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><title>app</title><p>an app on another origin</p>`))
	}))
	t.Cleanup(page.Close)
	var logs syncbuf.Buffer
	allowed := startNode(t, node.Serve, func(c *config.Config) { c.Bridge.AllowedOrigins = []string{page.URL} })
	refusing, err := node.Start(context.Background(), func() config.Config {
		c := config.Default()
		c.GRPCAddr, c.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		return c
	}(), node.Serve, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, refusing) })
	if err := chromedp.Do(ctx, chromedp.Navigate(page.URL+"/")); err != nil {
		t.Fatal(err)
	}
	script := func(n *node.Node, format string) string {
		return fmt.Sprintf(`(async () => {
  const { Herald } = await import("http://%[1]s/herald.js");
  const h = new Herald("ws://%[1]s/ws", { minReconnectDelay: 50, maxReconnectDelay: 200, format: %[2]q });
  const r = (window.r = window.r || {});
  const key = %[1]q + "/" + %[2]q;
  r[key] = { subscribed: false, closes: [] };
  h.on("disconnected", (c) => r[key].closes.push(c.code));
  h.on("connecting", (c) => { if (c.code) r[key].closes.push(c.code); });
  h.subscribe("chat:lobby", { onSubscribed: () => { r[key].subscribed = true; } });
  h.connect();
  return true;
})()`, n.HTTPAddr.String(), format)
	}
	for _, format := range formatNames {
		eval[bool](t, ctx, script(allowed, format))
		waitFor(t, ctx, "a subscription from the other origin in "+format, fmt.Sprintf(`window.r[%q].subscribed`, allowed.HTTPAddr.String()+"/"+format))
		eval[bool](t, ctx, script(refusing, format))
		waitFor(t, ctx, "the refused WebSocket to close in "+format, fmt.Sprintf(`window.r[%q].closes.length > 0`, refusing.HTTPAddr.String()+"/"+format))
		if eval[bool](t, ctx, fmt.Sprintf(`window.r[%q].subscribed`, refusing.HTTPAddr.String()+"/"+format)) {
			t.Fatal("subscribed on a node that does not allow the origin")
		}
	}
	for end := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "WebSocket refused"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no refusal logged:\n%s", logs.String())
		}
	}
	if l := logs.String(); !strings.Contains(l, "origin="+page.URL) || !strings.Contains(l, "bridge.allowed_origins") || !strings.Contains(l, "level=INFO") {
		t.Fatalf("refusal log without the origin or the option:\n%s", l)
	}
}

// TestConsolePresenceAfterRedisRestart: a console on each of two nodes
// sharing a real Redis (one in herald.json, one in herald.proto) lists
// itself, the other console and two other clients (one on each node) as
// "Online (4)". redis-server restarts without persistence, so every
// presence entry is lost. On main the console then showed "Online (0)"
// for good while Presence listed them again; now the nodes re-create
// their entries with join events as soon as Redis is back and the
// consoles refetch their lists at the resubscription, so they show
// "Online (4)" again.
func TestConsolePresenceAfterRedisRestart(t *testing.T) {
	ctx := newBrowser(t)
	r := redistest.Start(t)
	prefix := fmt.Sprintf("console%d", time.Now().UnixNano())
	var nodes []*node.Node
	for range 2 {
		nodes = append(nodes, startNode(t, node.Serve, func(c *config.Config) {
			c.Engine = "redis"
			c.Redis.Addrs = []string{r.Addr}
			c.Redis.Prefix = prefix
		}))
	}
	for _, n := range nodes {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+n.HTTPAddr.String()+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Close() })
		deploytest.WatchPresence(t, ws, "", "chat:lobby")
	}
	tabs := []context.Context{ctx, newTab(t, ctx, "tab2")}
	for i, tab := range tabs {
		if err := chromedp.Do(tab, chromedp.Navigate("http://"+nodes[i].HTTPAddr.String()+"/?name=carol-"+formatNames[i]+"&format="+formatNames[i])); err != nil {
			t.Fatal(err)
		}
	}
	const four = `document.getElementById("chat-count").textContent === "(4)" && document.querySelectorAll("#chat-who li").length === 4`
	for i, tab := range tabs {
		waitFor(t, tab, "Online (4) in "+formatNames[i], four)
	}
	r.Stop()
	time.Sleep(500 * time.Millisecond) // the nodes notice the loss
	r.Start()
	// History went with Redis: the consoles are told they could not
	// recover, clear their rooms and reload history and presence.
	for i, tab := range tabs {
		waitFor(t, tab, "the console's notice of the lost history in "+formatNames[i], `!document.getElementById("chat-notice").hidden &&
		document.getElementById("chat-notice").textContent.includes("could not be recovered")`)
		waitFor(t, tab, "Online (4) after the Redis restart in "+formatNames[i], four)
		if got := eval[string](t, tab, `document.getElementById("chat-count").textContent`); got != "(4)" {
			t.Fatalf("console in %s shows Online %s", formatNames[i], got)
		}
	}
}
