package web_test

import (
	"bytes"
	"context"
	"flag"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/herald-io/herald/node"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the README's screenshots (docs/console.png, docs/console-admin.png) from TestScreenshots")

// TestScreenshots renders the README's two screenshots from real nodes in
// Chromium: the chat demo between two tabs (docs/console.png) and the
// admin mode of a production deployment (docs/console-admin.png). It
// checks that each is a PNG of a plausible size; with -update-screenshots
// it writes them, so that they show what the console does today:
//
//	go test ./web -run TestScreenshots -update-screenshots
func TestScreenshots(t *testing.T) {
	// Each scene in a subtest, so that its browser and nodes are gone
	// before the next one counts connections (metrics are per process).
	shots := map[string][]byte{}
	for name, scene := range map[string]func(*testing.T) []byte{"console.png": chatScreenshot, "console-admin.png": adminScreenshot} {
		t.Run(name, func(t *testing.T) { shots[name] = scene(t) })
	}
	for name, b := range shots {
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: not a PNG: %v", name, err)
		}
		if r := img.Bounds(); r.Dx() < 1000 || r.Dy() < 500 {
			t.Fatalf("%s is %dx%d, want at least 1000x500", name, r.Dx(), r.Dy())
		}
		if !*updateScreenshots {
			continue
		}
		path := filepath.Join("..", "docs", name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", path, len(b))
	}
}

func screenshot(t *testing.T, tab context.Context) []byte {
	t.Helper()
	b, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// chatScreenshot: alice and bob chat in two tabs of the demo (herald serve,
// default configuration, anonymous), and a backend says hi over gRPC.
func chatScreenshot(t *testing.T) []byte {
	alice := newBrowser(t)
	bob := newTab(t, alice, "bob")
	n := startNode(t, node.Serve, nil)
	base := "http://" + n.HTTPAddr.String()
	openConsole(t, alice, base, "alice", "")
	openConsole(t, bob, base, "bob", "")
	say := func(tab context.Context, text string) {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("chat-text"), text), chromedp.Click(chromedp.CSS("#chat-form button"))); err != nil {
			t.Fatal(err)
		}
	}
	say(alice, "hello from alice")
	waitFor(t, bob, "alice's message", chatShows("alice", "hello from alice"))
	say(bob, "hi alice, bob here")
	publish(t, dialWithKey(t, n, ""), "chat:lobby", map[string]any{"user": "backend", "text": "hi from gRPC"})
	waitFor(t, alice, "every message", chatShows("bob", "hi alice, bob here")+" && "+chatShows("backend", "hi from gRPC")+
		` && document.querySelectorAll("#chat-who li").length === 2`)
	return screenshot(t, alice)
}

// adminScreenshot: the admin mode of a split production deployment (API
// keys, JWTs) with two users in chat:lobby, one of them also in news, the
// channel list, chat:lobby's presence and history, and a publication to
// news made from the view.
func adminScreenshot(t *testing.T) []byte {
	alice := newBrowser(t)
	bob := newTab(t, alice, "bob")
	ops := newTab(t, alice, "ops")
	d := startAdminDeployment(t)
	publish(t, d.backend, "chat:lobby", map[string]any{"user": "backend", "text": "deploy finished", "build": 1842})
	publish(t, d.backend, "chat:support", map[string]any{"user": "carol", "text": "is the status page up?"})
	openConsole(t, alice, d.base, "alice", browserToken(t, "alice"))
	openConsole(t, bob, d.base, "bob", browserToken(t, "bob"))
	subscribeInConsole(t, alice, "news")
	waitFor(t, alice, "alice's subscription to news", `window.herald.getSubscription("news")?.state === "subscribed"`)
	openConsole(t, ops, d.base, "ops", browserToken(t, "ops"))
	if err := chromedp.Do(ops, chromedp.Click(chromedp.ID("admin-toggle"))); err != nil {
		t.Fatal(err)
	}
	enterKey(t, ops, adminKey, false)
	waitFor(t, ops, "chat:lobby with 3 clients", channelCell("chat:lobby", "clients")+` === "3"`)
	adminPublish(t, ops, "news", `{"notice": "maintenance at noon"}`)
	waitFor(t, alice, "the notice", channelBlock("news")+`?.querySelector("li.pub") !== null`)
	clickNow(t, ops, `#admin-channels tr[data-channel="chat:lobby"]`)
	waitFor(t, ops, "chat:lobby's presence and history", `document.querySelectorAll('.detail[data-channel="chat:lobby"] tr[data-user]').length === 3 &&
		document.querySelectorAll('.detail[data-channel="chat:lobby"] .history li').length === 1`)
	waitFor(t, ops, "3 connections and a publication rate", stat("connections")+` === "3" && `+stat("rate")+` !== "–"`)
	return screenshot(t, ops)
}
