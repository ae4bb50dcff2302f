package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/node"
)

// The README's walkthrough, as tests: this backend and a Herald node
// configured with herald.yaml (the file the README runs), on loopback
// ports chosen by the system.

type stack struct {
	app, herald string // http://host:port
	node        *node.Node
}

// start runs the backend and a node with herald.yaml, its hooks over
// gRPC, or over HTTP (httpForm).
func start(t *testing.T, httpForm bool) *stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type bound struct {
		grpc, http string
		app        *app
	}
	addrs := make(chan bound, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", key: "walkthrough-key"},
			slog.New(slog.DiscardHandler), func(g, h string, a *app) { addrs <- bound{g, h, a} })
	}()
	var b bound
	select {
	case b = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	a := [2]string{b.grpc, b.http}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("backend: %v", err)
		}
	})
	cfg := config.Default()
	if err := cfg.LoadFile("herald.yaml"); err != nil {
		t.Fatal(err)
	}
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Hooks.APIKey = "walkthrough-key"
	if httpForm {
		cfg.Hooks.GRPCAddr, cfg.Hooks.HTTPURL = "", "http://"+a[1]+"/hooks"
	} else {
		cfg.Hooks.GRPCAddr = a[0]
	}
	cfg.Bridge.AllowedOrigins = append(cfg.Bridge.AllowedOrigins, "http://"+a[1])
	n, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(sctx)
	})
	s := &stack{app: "http://" + a[1], herald: "http://" + n.HTTPAddr.String(), node: n}
	b.app.setHerald(s.herald) // where the page loads herald.js from
	return s
}

// login logs user in with an HTTP client that keeps cookies, as a browser
// (or `curl -c jar`) does.
func login(t *testing.T, s *stack, user string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar} // no timeout: it reads event streams
	res, err := c.PostForm(s.app+"/login", url.Values{"user": {user}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("login: %s", res.Status)
	}
	return c
}

// stream reads an SSE stream's data lines.
type stream struct {
	ev   chan string
	seen []string // read and not yet taken
}

func events(t *testing.T, body io.Reader) *stream {
	s := &stream{ev: make(chan string, 64)}
	go func() {
		defer close(s.ev)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				// protojson spaces its output at random: compact it.
				var b bytes.Buffer
				if json.Compact(&b, []byte(d)) == nil {
					d = b.String()
				}
				s.ev <- d
			}
		}
	}()
	return s
}

// next takes the first event containing want, in any order with the
// others (a publication may overtake its publish's reply).
func next(t *testing.T, s *stream, want string) string {
	t.Helper()
	take := func() (string, bool) {
		for i, e := range s.seen {
			if strings.Contains(e, want) {
				s.seen = append(s.seen[:i], s.seen[i+1:]...)
				return e, true
			}
		}
		return "", false
	}
	deadline := time.After(10 * time.Second)
	for {
		if e, ok := take(); ok {
			return e
		}
		select {
		case e, ok := <-s.ev:
			if !ok {
				t.Fatalf("the stream ended before %q; unread: %q", want, s.seen)
			}
			s.seen = append(s.seen, e)
		case <-deadline:
			t.Fatalf("no event with %q; unread: %q", want, s.seen)
		}
	}
}

// TestWalkthrough follows the README's curl steps in both forms of the
// hooks: log in (a cookie), open /sse with the cookie and no token
// (connected as the user, room:lobby subscribed by the backend), publish
// (stamped by the backend), call profile.get, be refused room:staff and
// a malformed message, with the backend's codes; without the cookie, 4001.
func TestWalkthrough(t *testing.T) {
	for _, form := range []string{"grpc", "http"} {
		t.Run(form, func(t *testing.T) {
			s := start(t, form == "http")
			c := login(t, s, "ann")
			res, err := c.Get(s.herald + "/sse")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { res.Body.Close() })
			ev := events(t, res.Body)
			var connected struct {
				Connect struct {
					User         string `json:"user"`
					SessionToken string `json:"session_token"`
				} `json:"connect"`
			}
			if err := json.Unmarshal([]byte(next(t, ev, `"connect"`)), &connected); err != nil || connected.Connect.User != "ann" {
				t.Fatalf("connect event: %+v %v", connected, err)
			}
			next(t, ev, `"subscribed":{"channel":"room:lobby"`)
			command := func(body string) {
				t.Helper()
				req, _ := http.NewRequest("POST", s.herald+"/command", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+connected.Connect.SessionToken)
				req.Header.Set("Content-Type", "application/json")
				r, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != 202 {
					t.Fatalf("command: %s", r.Status)
				}
			}
			command(`{"id":2,"publish":{"channel":"room:lobby","data":{"text":"  hello from curl  "}}}`)
			next(t, ev, `{"id":2,"publish":{"position":{"offset":"1"`)
			if pub := next(t, ev, `"pub"`); !strings.Contains(pub, `"from":"ann","text":"hello from curl"`) {
				t.Fatalf("publication: %s", pub)
			}
			command(`{"id":3,"rpc":{"method":"profile.get"}}` + "\n" +
				`{"id":4,"subscribe":{"channel":"room:staff"}}` + "\n" +
				`{"id":5,"publish":{"channel":"room:lobby","data":{"txt":"oops"}}}`)
			if r := next(t, ev, `"id":3`); !strings.Contains(r, `"transport":"sse","user":"ann"`) {
				t.Fatalf("profile.get: %s", r)
			}
			if r := next(t, ev, `"id":4`); r != `{"id":4,"error":{"code":1403,"message":"this room is for staff"}}` {
				t.Fatalf("room:staff: %s", r)
			}
			if r := next(t, ev, `"id":5`); !strings.Contains(r, `"error":{"code":110`) {
				t.Fatalf("malformed message: %s", r)
			}

			// A WebSocket with the cookie, as the page opens: the same user.
			ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(s.herald, "http")+"/ws", http.Header{
				"Cookie": {cookieOf(t, c, s.app)}, "Origin": {s.app},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`))
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, msg, err := ws.ReadMessage()
			var reply struct {
				Connect struct{ User string } `json:"connect"`
			}
			if err != nil || json.Unmarshal(bytes.SplitN(msg, []byte("\n"), 2)[0], &reply) != nil || reply.Connect.User != "ann" {
				t.Fatalf("WebSocket connect: %s %v", msg, err)
			}

			// No cookie: refused.
			res2, err := http.Get(s.herald + "/sse")
			if err != nil {
				t.Fatal(err)
			}
			defer res2.Body.Close()
			if d := next(t, events(t, res2.Body), `"disconnect"`); !strings.Contains(d, `"code":4001,"reason":"log in first"`) {
				t.Fatalf("without the cookie: %s", d)
			}
		})
	}
}

func cookieOf(t *testing.T, c *http.Client, base string) string {
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "session" {
			return "session=" + ck.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// TestPageInBrowser: the example's page in headless Chromium: log in,
// connected (its profile from rpc), a message sent comes back stamped by
// the backend, an empty one is refused with the backend's code.
func TestPageInBrowser(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("HERALD_REQUIRE_BROWSER") == "1" {
			t.Fatalf("HERALD_REQUIRE_BROWSER=1 but Chromium is missing: %v", err)
		}
		t.Skip("no Chromium (HERALD_REQUIRE_BROWSER=1 makes this a failure)")
	}
	s := start(t, false)
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
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.UserDataDir(profile))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bctx, 45*time.Second)
	defer cancel()
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(s.app+"/"),
		chromedp.SendKeys(chromedp.CSS(`input[name=user]`), "ann"),
		chromedp.Submit(chromedp.CSS(`input[name=user]`)),
		chromedp.WaitVisible(chromedp.ID("state")), // the page after the login's redirect
	); err != nil {
		t.Fatal(err)
	}
	poll("connected", `document.getElementById("state")?.textContent.startsWith("connected as ann, signed in ")`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("text"), "hi from chromium"), chromedp.Click(chromedp.CSS("#say button"))); err != nil {
		t.Fatal(err)
	}
	poll("the stamped message", `[...document.querySelectorAll("#log li")].some((li) => li.textContent === "ann: hi from chromium")`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("text"), " "), chromedp.Click(chromedp.CSS("#say button"))); err != nil {
		t.Fatal(err)
	}
	poll("the refusal", `[...document.querySelectorAll("#log li")].some((li) => li.textContent.startsWith("refused: 110 "))`)
}
