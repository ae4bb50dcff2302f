package web_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/deploytest"
	"github.com/herald-io/herald/internal/hooktest"
	"github.com/herald-io/herald/internal/tlstest"
)

// hooksKey is the key the bridge sends to the application's backend in
// the production shape.
const hooksKey = "hooks-key-0123456789abcdef"

// startWithHooks starts a test backend and a deployment of shape whose
// bridges call it (over gRPC; in production over TLS, with a key):
// connect and refresh hooks, rpc methods, the `session` cookie passed.
func startWithHooks(t *testing.T, shape deploytest.Shape) (*hooktest.Server, *deploytest.Deployment) {
	t.Helper()
	opts := hooktest.Options{}
	var ca string
	if shape.Production {
		files := tlstest.NewFiles(t)
		opts.TLS, opts.APIKey, ca = files, hooksKey, files.CAFile
	}
	s := hooktest.Start(t, opts)
	d := deploytest.Start(t, shape, func(c *config.Config) {
		c.Hooks.GRPCAddr = s.GRPCAddr
		c.Hooks.Connect, c.Hooks.Refresh = true, true
		c.Hooks.RPCMethods = []string{"whoami", "echo", "fail"}
		c.Hooks.Cookies = []string{"session"}
		if shape.Production {
			c.Hooks.APIKey, c.Hooks.CAFile = hooksKey, ca
		}
	})
	return s, d
}

// TestBrowserCookieSessionAndRPC: a page whose user logged in to the
// application (a session cookie, no JWT) connects with herald.js on each
// transport: the bridge's connect hook reads the cookie and the page is
// connected as that user; herald.rpc reaches the backend and resolves with
// its answer, and rejects with a HeraldError carrying the backend's code;
// after a logout, the connect is refused (4001) and the client stops. It
// runs serve/demo and split/production (API keys, JWT keys configured but
// unused, TLS everywhere, the hooks over TLS with a key).
func TestBrowserCookieSessionAndRPC(t *testing.T) {
	for _, shape := range []deploytest.Shape{{}, {Split: true, Production: true}} {
		t.Run(strings.ReplaceAll(shape.String(), "/", "_"), func(t *testing.T) {
			s, d := startWithHooks(t, shape)
			ctx := newBrowser(t)
			// Logging in to the application sets its cookie for the host
			// (cookies do not depend on the port).
			if err := chromedp.Do(ctx, chromedp.Navigate(s.LoginURL+"?user=ann")); err != nil {
				t.Fatal(err)
			}
			if err := chromedp.Do(ctx, chromedp.Navigate(d.BrowserURL()+"/?connect=0")); err != nil {
				t.Fatal(err)
			}
			for _, tf := range []struct{ tr, format string }{
				{"websocket", "json"}, {"websocket", "protobuf"},
				{"http_stream", "json"}, {"http_stream", "protobuf"},
				{"sse", "json"},
			} {
				tr := tf.tr
				got := eval[map[string]any](t, ctx, fmt.Sprintf(`(async () => {
  const { Herald, HeraldError } = await import("/herald.js");
  const h = new Herald("/ws", { transports: [%q], format: %q, timeout: 5000, minReconnectDelay: 50 });
  h.connect();
  await h.ready();
  const who = await h.rpc("whoami");
  const echo = await h.rpc("echo", { list: [1, "two", { three: null }], s: "é" });
  let failed = null;
  try { await h.rpc("fail", {}); } catch (e) { failed = { heraldError: e instanceof HeraldError, code: e.code, temporary: e.temporary, message: e.message }; }
  let refused = null;
  try { await h.rpc("not.allowed"); } catch (e) { refused = e.code; }
  const bytes = await h.rpc("echo", new Uint8Array([0, 1, 254, 255]));
  const out = { user: h.user, transport: h.transport, format: h.format, who, echo, failed, refused, bytes: bytes instanceof Uint8Array ? Array.from(bytes).join(",") : String(bytes) };
  h.disconnect();
  return out;
})()`, tr, tf.format))
				if got["format"] != tf.format || got["bytes"] != "0,1,254,255" {
					t.Fatalf("%s/%s: format %v, binary echo %v", tr, tf.format, got["format"], got["bytes"])
				}
				who, _ := got["who"].(map[string]any)
				if got["user"] != "ann" || got["transport"] != tr || who["user"] != "ann" || who["transport"] != tr {
					t.Fatalf("%s: %v", tr, got)
				}
				if e := fmt.Sprint(got["echo"]); e != "map[list:[1 two map[three:<nil>]] s:é]" {
					t.Fatalf("%s: echo = %s", tr, e)
				}
				failed, _ := got["failed"].(map[string]any)
				if failed["heraldError"] != true || failed["code"] != float64(1001) || failed["temporary"] != true || failed["message"] != "it failed" {
					t.Fatalf("%s: rpc fail = %v", tr, got["failed"])
				}
				if got["refused"] != float64(104) {
					t.Fatalf("%s: a method not allowed: %v", tr, got["refused"])
				}
			}
			if req := s.Last("connect"); req == nil {
				t.Fatal("the backend saw no connect")
			}

			s.Logout("ann")
			eval[bool](t, ctx, `(async () => {
  const { Herald } = await import("/herald.js");
  const r = (window.r = { closes: [] });
  const h = new Herald("/ws", { minReconnectDelay: 50, maxReconnectDelay: 200 });
  h.on("disconnected", (c) => r.closes.push(c.code + " " + c.reason));
  h.connect();
  return true;
})()`)
			waitFor(t, ctx, "the refused connect", `window.r.closes.length > 0`)
			if got := eval[[]string](t, ctx, `window.r.closes`); len(got) != 1 || got[0] != "4001 log in first" {
				t.Fatalf("after logout: %v", got)
			}
		})
	}
}

// TestConsoleRPCAndSessionEnd: the console, opened by a user logged in to
// the application, is connected by its cookie and can call the backend
// (its rpc box shows the answer, and the backend's error with its code).
// When the backend ends the session at its expiry (refresh refused: 4002),
// herald.js reconnects without a token, and the connect hook's refusal
// (4001) stops it. (Before, herald.js never reconnected after 4002
// without getToken, so a cookie session could not be asked again.)
func TestConsoleRPCAndSessionEnd(t *testing.T) {
	s, d := startWithHooks(t, deploytest.Shape{})
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.LoginURL+"?user=cat")); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(d.BrowserURL()+"/")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the console connected as cat", `document.getElementById("whoami").textContent.startsWith("cat ·")`)
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#rpc summary")),
		chromedp.SendKeys(chromedp.ID("rpc-method"), "whoami"),
		chromedp.Click(chromedp.CSS("#rpc-form button")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the rpc answer", `document.getElementById("rpc-result").textContent === '{"user":"cat","transport":"websocket"}' &&
		document.getElementById("rpc-result").className === "result ok"`)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("rpc-method"), "fail"),
		chromedp.Click(chromedp.CSS("#rpc-form button")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the rpc error", `document.getElementById("rpc-result").textContent === "1001 (temporary): it failed"`)

	// The session ends at its expiry: reconnect, then the refusal stops it.
	s.SetExpiresIn(1)
	eval[bool](t, ctx, `(async () => {
  const { Herald } = await import("/herald.js");
  const r = (window.r = { states: [] });
  const h = new Herald("/ws", { minReconnectDelay: 50, maxReconnectDelay: 200 });
  h.on("state", (c) => r.states.push(c.state + (c.code ? " " + c.code : "")));
  h.connect();
  await h.ready();
  return true;
})()`)
	s.Logout("cat")
	waitFor(t, ctx, "the end of the session", `window.r.states.at(-1) === "disconnected 4001"`)
	states := eval[[]string](t, ctx, `window.r.states`)
	if want := "connecting 4002"; !slicesContains(states, want) {
		t.Fatalf("states %v: want %q (a reconnect after the backend ended the session)", states, want)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
