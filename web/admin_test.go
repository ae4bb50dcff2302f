package web_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
)

// The console's admin mode, in Chromium, against the production shape of
// startAdminDeployment (deploy_test.go).

// consoleReady is true once the console is connected and in its chat room.
const consoleReady = `document.getElementById("state").textContent === "connected" &&
	window.herald.getSubscription("chat:lobby")?.state === "subscribed"`

// openConsole opens the console in tab as user (a JWT in ?token=; "" for
// anonymous) and waits for it to join chat:lobby.
func openConsole(t *testing.T, tab context.Context, base, name, token string) {
	t.Helper()
	u := base + "/?name=" + url.QueryEscape(name)
	if token != "" {
		u += "&token=" + token
	}
	if err := chromedp.Do(tab, chromedp.Navigate(u)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, name+"'s console to connect and join chat:lobby", consoleReady)
}

// subscribeInConsole subscribes the console to channel through its form.
func subscribeInConsole(t *testing.T, tab context.Context, channel string) {
	t.Helper()
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.ID("sub-channel"), channel),
		chromedp.Click(chromedp.CSS("#sub-form button")),
	); err != nil {
		t.Fatal(err)
	}
}

// channelBlock is the console's block of a channel, as a JS expression.
func channelBlock(channel string) string {
	return fmt.Sprintf(`document.querySelector('.channel[data-channel=%q]')`, channel)
}

// enterKey types key into the admin form and submits it.
func enterKey(t *testing.T, tab context.Context, key string, remember bool) {
	t.Helper()
	clearInput(t, tab, "admin-key")
	var actions []chromedp.Action[chromedp.Void]
	if key != "" {
		actions = append(actions, chromedp.SendKeys(chromedp.ID("admin-key"), key))
	}
	if remember != eval[bool](t, tab, `document.getElementById("admin-remember").checked`) {
		actions = append(actions, chromedp.Click(chromedp.ID("admin-remember")))
	}
	actions = append(actions, chromedp.Click(chromedp.CSS("#admin-login button[type=submit]")))
	if err := chromedp.Do(tab, actions...); err != nil {
		t.Fatal(err)
	}
}

// stat is the admin view's figure named key, as a JS expression.
func stat(key string) string {
	return fmt.Sprintf(`document.querySelector('#admin-stats [data-stat=%q] dd')?.textContent`, key)
}

// channelRow is a cell of the admin channel list, as a JS expression.
func channelCell(channel, col string) string {
	return fmt.Sprintf(`document.querySelector('#admin-channels tr[data-channel=%q] td[data-col=%q]')?.textContent`, channel, col)
}

// chatShows is true once the chat log shows text from who.
func chatShows(who, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("#chat-log .msg")].some((li) =>
		li.querySelector(".who").textContent === %q && li.querySelector(".text").textContent === %q)`, who, text)
}

// TestAdminConsole drives the admin mode as an operator would: a wrong key
// and a key without the admin scope are refused with the server's own
// error; the admin key shows Info, the channel list with the subscriber
// counts of real WebSocket clients (filtered by a pattern), a channel's
// presence and history, live connection and publication figures; it
// publishes as a backend to namespaces browsers may not publish to,
// unsubscribes one user and disconnects another (whose tab is closed with
// 4005 and stays disconnected). The key is never in the URL or
// localStorage, and stays in sessionStorage only when asked.
func TestAdminConsole(t *testing.T) {
	alice := newBrowser(t)
	bob := newTab(t, alice, "bob")
	ops := newTab(t, alice, "ops")
	d := startAdminDeployment(t)

	publish(t, d.backend, "chat:lobby", map[string]any{"user": "backend", "text": "first"})
	publish(t, d.backend, "chat:lobby", map[string]any{"user": "backend", "text": "second", "n": 2})
	openConsole(t, alice, d.base, "alice", browserToken(t, "alice"))
	openConsole(t, bob, d.base, "bob", browserToken(t, "bob"))
	openConsole(t, ops, d.base, "ops", browserToken(t, "ops"))
	subscribeInConsole(t, alice, "news")
	waitFor(t, alice, "alice's subscription to news", `window.herald.getSubscription("news")?.state === "subscribed"`)

	if eval[bool](t, ops, `document.getElementById("admin").checkVisibility()`) {
		t.Fatal("the admin view is open before anyone asked for it")
	}
	if err := chromedp.Do(ops, chromedp.Click(chromedp.ID("admin-toggle"))); err != nil {
		t.Fatal(err)
	}

	// Refused keys: the server's message, its HTTP status and gRPC code.
	for _, tt := range []struct{ key, want string }{
		{"not-a-key-of-this-node", `HTTP 401: invalid API key (UNAUTHENTICATED)`},
		{readOnlyKey, `HTTP 403: API key "dashboard" may not use admin calls (PERMISSION_DENIED)`},
		{"", "HTTP 401: missing API key: send `authorization: Bearer <key>` (UNAUTHENTICATED)"},
	} {
		enterKey(t, ops, tt.key, false)
		waitFor(t, ops, "the error of key "+tt.key, fmt.Sprintf(`document.getElementById("admin-error").checkVisibility() &&
			document.getElementById("admin-error").textContent === %q`, tt.want))
		if eval[bool](t, ops, `document.getElementById("admin-body").checkVisibility()`) {
			t.Fatalf("key %q opened the admin view", tt.key)
		}
	}

	enterKey(t, ops, adminKey, false)
	waitFor(t, ops, "the admin view", `document.getElementById("admin-body").checkVisibility() && !document.getElementById("admin-error").checkVisibility() &&
		!document.getElementById("admin-login").checkVisibility()`)
	info, err := d.backend.Info(context.Background(), &heraldv1.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := eval[string](t, ops, `document.getElementById("admin-node").textContent`); got != info.Node {
		t.Fatalf("admin view shows node %q, Info says %q", got, info.Node)
	}
	if eval[bool](t, ops, `document.getElementById("admin-open-notice").checkVisibility()`) {
		t.Fatal("the view says the node has no API keys, but it has")
	}
	checkKeyNotStored(t, ops, false)

	// The channel list counts the real subscribers: alice, bob and ops in
	// chat:lobby, alice alone in news.
	waitFor(t, ops, "chat:lobby with 3 clients and 2 publications", channelCell("chat:lobby", "clients")+` === "3" && `+channelCell("chat:lobby", "offset")+` === "2"`)
	waitFor(t, ops, "news with 1 client", channelCell("news", "clients")+` === "1"`)
	waitFor(t, ops, "3 connections", stat("connections")+` === "3"`)
	waitFor(t, ops, "Info's counts", stat("bridges")+` === "1" && `+stat("channels")+` !== "0"`)
	if err := chromedp.Do(ops, chromedp.SendKeys(chromedp.ID("admin-pattern"), "chat:*")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ops, "the list filtered by chat:*", `(() => {
		const names = [...document.querySelectorAll("#admin-channels tr[data-channel]")].map((tr) => tr.dataset.channel);
		return names.includes("chat:lobby") && names.every((n) => n.startsWith("chat:"));
	})()`)
	// Past a page (500), the list shows the first page and says so.
	for i := range 501 {
		publish(t, d.backend, fmt.Sprintf("chat:many-%03d", i), map[string]any{"n": i})
	}
	waitFor(t, ops, "the first 500 channels, and that more follow", `document.getElementById("admin-channel-count").textContent === "(the first 500 by name; more follow, narrow with a pattern matching chat:*)" &&
		document.querySelectorAll("#admin-channels tr[data-channel]").length === 500 && document.querySelector('#admin-channels tr[data-channel="chat:lobby"]') !== null`)

	// A crowd past a page (500) in a channel's presence, joined by a
	// second bridge: the detail shows the first page and says so.
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	bs, err := dialWithKey(t, d.core, edgeKey).BridgeSession(bctx)
	if err != nil {
		t.Fatal(err)
	}
	crowd := &heraldv1.PresenceUpdate{}
	for i := range 501 {
		crowd.Joins = append(crowd.Joins, &heraldv1.PresenceEvent{Channel: "chat:crowd", Client: &heraldv1.ClientInfo{Client: fmt.Sprintf("crowd-%03d", i), User: fmt.Sprintf("u%03d", i)}})
	}
	for _, m := range []*heraldv1.BridgeSessionRequest{
		{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: "crowd-bridge"}}},
		{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: crowd}},
	} {
		if err := bs.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ops, "chat:crowd in the list", `document.querySelector('#admin-channels tr[data-channel="chat:crowd"]') !== null`)
	clickNow(t, ops, `#admin-channels tr[data-channel="chat:crowd"]`)
	waitFor(t, ops, "the first 500 of chat:crowd's presence, and that more follow", `document.querySelectorAll('.detail[data-channel="chat:crowd"] tr[data-client]').length === 500 &&
		document.querySelector('.detail[data-channel="chat:crowd"] [data-more]')?.textContent === "the first 500 connections by client id; more follow"`)
	bcancel() // the core counts one bridge again

	// Publications per second, from /metrics.
	before, err := strconv.Atoi(eval[string](t, ops, stat("publications")))
	if err != nil {
		t.Fatalf("publications figure: %v", err)
	}
	for i := range 5 {
		publish(t, d.backend, "chat:load", map[string]any{"n": i})
	}
	waitFor(t, ops, "5 more publications and a rate", fmt.Sprintf(`Number(%s) >= %d && Number(%s) > 0`, stat("publications"), before+5, stat("rate")))

	// A channel's presence and history, newest first, pretty-printed.
	clickNow(t, ops, `#admin-channels tr[data-channel="chat:lobby"]`)
	waitFor(t, ops, "chat:lobby's presence", `(() => {
		const users = [...document.querySelectorAll('.detail[data-channel="chat:lobby"] tr[data-user]')].map((tr) => tr.dataset.user).sort();
		return users.join() === "alice,bob,ops";
	})()`)
	hist := eval[[]string](t, ops, `[...document.querySelectorAll('.detail[data-channel="chat:lobby"] .history li')].map((li) => li.dataset.offset + " " + li.querySelector("pre").textContent)`)
	if len(hist) != 2 || hist[0] != "2 {\n  \"n\": 2,\n  \"text\": \"second\",\n  \"user\": \"backend\"\n}" || !strings.HasPrefix(hist[1], "1 {\n") {
		t.Fatalf("history shown: %q, want offsets 2 then 1, pretty-printed", hist)
	}

	// Publish as a backend, where browsers may not: news (the "" namespace
	// has no allow_publish) reaches alice's subscription; chat:lobby
	// reaches every chat.
	adminPublish(t, ops, "news", `{"notice": "maintenance at noon"}`)
	waitFor(t, ops, "the publish result", `document.getElementById("admin-pub-result").textContent.startsWith("published to news at offset 1 ")`)
	waitFor(t, alice, "the backend's publication in alice's news feed", channelBlock("news")+`?.querySelector("li.pub code")?.textContent === '{"notice":"maintenance at noon"}'`)
	adminPublish(t, ops, "chat:lobby", `{"user": "ops", "text": "from the admin console"}`)
	for name, tab := range map[string]context.Context{"alice": alice, "bob": bob} {
		waitFor(t, tab, "the admin's message in "+name+"'s chat", chatShows("ops", "from the admin console"))
	}

	// Unsubscribe alice from news: her connection stays, the subscription
	// ends.
	if err := chromedp.Do(ops,
		chromedp.SendKeys(chromedp.ID("admin-user-id"), "alice"),
		chromedp.SendKeys(chromedp.ID("admin-user-channel"), "news"),
		chromedp.Click(chromedp.ID("admin-unsubscribe")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ops, "the unsubscribe result", `document.getElementById("admin-user-result").textContent === "unsubscribed alice from news on every bridge"`)
	waitFor(t, alice, "alice's news subscription to end", channelBlock("news")+`?.querySelector(".sub-state").textContent === "unsubscribed" && window.herald.getSubscription("news") === undefined`)
	if s := eval[string](t, alice, `window.herald.state`); s != "connected" {
		t.Fatalf("alice's connection is %s after an unsubscribe", s)
	}

	// Disconnect bob from the presence list: his tab is closed with 4005
	// and does not come back (reconnect: false).
	clickNow(t, ops, `.detail[data-channel="chat:lobby"] tr[data-user="bob"] button[data-action="disconnect"]`)
	waitFor(t, bob, "bob's tab to be disconnected with 4005", `window.herald.state === "disconnected" &&
		[...document.querySelectorAll("#event-log li")].some((li) => li.textContent.includes("disconnected (4005 "))`)
	waitFor(t, ops, "2 connections and 2 clients in chat:lobby", stat("connections")+` === "2" && `+channelCell("chat:lobby", "clients")+` === "2"`)
	if got := eval[string](t, ops, `document.getElementById("admin-user-result").textContent`); got != "disconnected bob on every bridge" {
		t.Fatalf("disconnect result: %q", got)
	}

	// Leaving forgets the key; with "keep in this tab" it survives a
	// reload in sessionStorage (only there).
	if err := chromedp.Do(ops, chromedp.Click(chromedp.ID("admin-leave"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ops, "the login form again", `!document.getElementById("admin-body").checkVisibility() && document.getElementById("admin-login").checkVisibility()`)
	checkKeyNotStored(t, ops, false)
	enterKey(t, ops, adminKey, true)
	waitFor(t, ops, "the admin view", `document.getElementById("admin-body").checkVisibility()`)
	checkKeyNotStored(t, ops, true)
	if err := chromedp.Do(ops, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ops, "the admin view after a reload", `document.getElementById("admin-body").checkVisibility() && `+stat("bridges")+` === "1"`)
	checkKeyNotStored(t, ops, true)

	// The console of the bridge alone (no REST API there) says so.
	if err := chromedp.Do(bob, chromedp.Navigate("http://"+d.bridge.HTTPAddr.String()+"/?connect=0"), chromedp.Click(chromedp.ID("admin-toggle"))); err != nil {
		t.Fatal(err)
	}
	enterKey(t, bob, adminKey, false)
	waitFor(t, bob, "the error of a bridge without REST", `document.getElementById("admin-error").textContent.startsWith("HTTP 404: 404 page not found (this node serves no REST API: a bridge alone?")`)
}

// clickNow clicks the element of a CSS selector in one turn of the page's
// event loop: the admin view re-renders its lists while it polls, and
// chromedp.Click (find, then click) could hit an element just replaced.
func clickNow(t *testing.T, tab context.Context, selector string) {
	t.Helper()
	if !eval[bool](t, tab, fmt.Sprintf(`(() => { const e = document.querySelector(%q); e?.click(); return !!e; })()`, selector)) {
		t.Fatalf("nothing to click at %s", selector)
	}
}

// clearInput empties an input, as selecting its text and deleting it would.
func clearInput(t *testing.T, tab context.Context, id string) {
	t.Helper()
	eval[bool](t, tab, fmt.Sprintf(`(() => { document.getElementById(%q).value = ""; return true; })()`, id))
}

// adminPublish publishes JSON text through the admin view's form.
func adminPublish(t *testing.T, tab context.Context, channel, text string) {
	t.Helper()
	clearInput(t, tab, "admin-pub-channel")
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.ID("admin-pub-channel"), channel),
		chromedp.SetValue(chromedp.ID("admin-pub-data"), text),
		chromedp.Click(chromedp.CSS("#admin-publish button[type=submit]")),
	); err != nil {
		t.Fatal(err)
	}
}

// checkKeyNotStored fails if the admin key is in the tab's URL, its
// localStorage or a cookie, or (unless inSession) its sessionStorage.
func checkKeyNotStored(t *testing.T, tab context.Context, inSession bool) {
	t.Helper()
	where := eval[[]string](t, tab, fmt.Sprintf(`(() => {
		const key = %q, found = [];
		if (location.href.includes(key) || decodeURIComponent(location.href).includes(key)) found.push("URL");
		if (document.cookie.includes(key)) found.push("cookie");
		for (const [name, store] of [["localStorage", localStorage], ["sessionStorage", sessionStorage]]) {
			for (let i = 0; i < store.length; i++) if (store.getItem(store.key(i)).includes(key)) found.push(name);
		}
		return found;
	})()`, adminKey))
	want := []string{}
	if inSession {
		want = []string{"sessionStorage"}
	}
	if strings.Join(where, ",") != strings.Join(want, ",") {
		t.Fatalf("admin key found in %v, want only %v", where, want)
	}
}

// TestConsoleDemoDefaults runs the console against `herald serve` with the
// default configuration, as the README's tour does: every channel it
// suggests to an anonymous visitor can be subscribed, while news (the ""
// namespace, closed to anonymous connections) is refused with 104 and can
// be dismissed; the log filter keeps only matching lines; and the admin
// mode enters without a key, saying that the node has none.
func TestConsoleDemoDefaults(t *testing.T) {
	tab := newBrowser(t)
	n := startNode(t, node.Serve, nil)
	base := "http://" + n.HTTPAddr.String()
	openConsole(t, tab, base, "dora", "")

	suggested := eval[[]string](t, tab, `[...document.querySelectorAll("#channel-suggestions option")].map((o) => o.value)`)
	if len(suggested) == 0 {
		t.Fatal("the console suggests no channel")
	}
	if p := eval[string](t, tab, `document.getElementById("sub-channel").placeholder`); strings.Contains(p, "news") {
		t.Fatalf("placeholder %q suggests news, which anonymous visitors may not subscribe to", p)
	}
	for _, ch := range suggested {
		subscribeInConsole(t, tab, ch)
		waitFor(t, tab, "the suggested "+ch, fmt.Sprintf(`%s?.querySelector(".sub-state")?.textContent === "subscribed" || %[1]s?.querySelector(".sub-state")?.textContent === "failed"`, channelBlock(ch)))
		if s := eval[string](t, tab, channelBlock(ch)+`.querySelector(".sub-state").textContent`); s != "subscribed" {
			t.Fatalf("suggested channel %s: %s (%s)", ch, s, eval[string](t, tab, channelBlock(ch)+`.title`))
		}
	}

	subscribeInConsole(t, tab, "news")
	waitFor(t, tab, "news to be refused", channelBlock("news")+`?.querySelector(".sub-state")?.textContent === "failed"`)
	if got := eval[string](t, tab, channelBlock("news")+`.title`); got != `not allowed to subscribe to "news" (code 104)` {
		t.Fatalf("news refused with %q", got)
	}
	if got := eval[string](t, tab, channelBlock("news")+`.querySelector("button.danger").textContent`); got != "Dismiss" {
		t.Fatalf("a failed subscription offers %q, want Dismiss", got)
	}
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`.channel[data-channel="news"] button.danger`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, "the failed block to go", channelBlock("news")+` === null`)
	// Connecting again re-creates the console's channels: not the
	// dismissed one.
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("connect"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, "the reconnection", consoleReady+` && `+channelBlock(suggested[0])+` !== null`)
	if eval[bool](t, tab, channelBlock("news")+` !== null`) {
		t.Fatal("a dismissed subscription came back after reconnecting")
	}

	// The log filter.
	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("log-filter"), "CONNECTED AS")); err != nil {
		t.Fatal(err)
	}
	shown := eval[[]string](t, tab, `[...document.querySelectorAll("#event-log li:not([hidden])")].map((li) => li.textContent)`)
	hidden := eval[int](t, tab, `document.querySelectorAll("#event-log li[hidden]").length`)
	if len(shown) != 2 || hidden == 0 {
		t.Fatalf("filtered log shows %q and hides %d lines, want the two 'connected as' lines", shown, hidden)
	}
	for _, l := range shown {
		if !strings.Contains(l, "connected as anonymous") {
			t.Fatalf("filtered log shows %q", l)
		}
	}
	if got := eval[string](t, tab, `document.getElementById("log-count").textContent`); !strings.HasPrefix(got, "2 of ") {
		t.Fatalf("log count %q", got)
	}

	// Pretty-printed payloads in the feed.
	publish(t, dialWithKey(t, n, ""), "chat:lobby", map[string]any{"user": "backend", "text": "hi"})
	feedPayload := `document.querySelector('.channel[data-channel="chat:lobby"] li.pub code.payload')?.textContent`
	waitFor(t, tab, "the publication in the feed", feedPayload+` === '{"text":"hi","user":"backend"}'`)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("pretty-json"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, "the pretty-printed payload", feedPayload+` === '{\n  "text": "hi",\n  "user": "backend"\n}'`)

	// Admin mode on a node without API keys: no key needed, and it says so.
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("admin-toggle"))); err != nil {
		t.Fatal(err)
	}
	enterKey(t, tab, "", false)
	waitFor(t, tab, "the admin view with its warning", `document.getElementById("admin-body").checkVisibility() && document.getElementById("admin-open-notice").checkVisibility()`)
	waitFor(t, tab, "chat:lobby with its one client", channelCell("chat:lobby", "clients")+` === "1"`)
}
