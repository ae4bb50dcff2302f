package examples_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/client"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/proxytest"
	"github.com/herald-io/herald/internal/tlstest"
	"github.com/herald-io/herald/node"
)

// apiKey is the backend key of every node the examples talk to.
const apiKey = "examples-backend-key-0123456789"

// startHerald starts `herald serve` as deployed: API keys on, TLS on both
// listeners with the certificates in f, memory engine.
func startHerald(t *testing.T, f *tlstest.Files) *node.Node {
	t.Helper()
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.APIKeys = []config.APIKey{{Name: "examples", Key: apiKey}}
	cfg.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key}
	n, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(n) })
	return n
}

func stop(n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
}

// dial returns a Go client of n, to publish and read what the examples
// cannot see.
func dial(t *testing.T, n *node.Node, f *tlstest.Files) *client.Client {
	t.Helper()
	c, err := client.Dial(n.GRPCAddr.String(), client.WithAPIKey(apiKey), client.WithCAFile(f.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func publish(t *testing.T, c *client.Client, channel, json string) client.Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Publish(ctx, client.Message{Channel: channel, JSON: []byte(json)})
	if err != nil {
		t.Fatalf("publish %s to %s: %v", json, channel, err)
	}
	return ack
}

// lang is one way of running the examples: a language, its runtime and
// what differs in what its examples print.
type lang struct {
	name string
	dir  string // examples/<dir>
	cmd  func(script string, args ...string) []string
	env  []string // besides HERALD_*
	// num is how the examples print a uint64 offset n: a string in Node
	// (`longs: String`), an int in Python.
	num func(n string) string
	// emptyValue starts the line of publish's refused, kind-less Value.
	emptyValue string
}

func (l lang) start(t *testing.T, addr string, f *tlstest.Files, script string, args ...string) *program {
	t.Helper()
	return start(t, l.dir, l.heraldEnv(addr, f), l.cmd(script, args...)...)
}

// heraldEnv points the examples at addr by name, as a deployment does:
// localhost, which the test certificate names (over TLS to an IP address,
// grpc-js prints a DEP0123 warning).
func (l lang) heraldEnv(addr string, f *tlstest.Files) []string {
	addr = strings.Replace(addr, "127.0.0.1:", "localhost:", 1)
	return append([]string{"HERALD_ADDR=" + addr, "HERALD_API_KEY=" + apiKey, "HERALD_CA_FILE=" + f.CAFile}, l.env...)
}

// TestNode runs examples/node with @grpc/grpc-js and @grpc/proto-loader
// at the versions of its package-lock.json.
func TestNode(t *testing.T) {
	t.Parallel()
	modules := nodeModules(t)
	l := lang{
		name: "node", dir: "node",
		cmd: func(script string, args ...string) []string {
			return append([]string{"node", script + ".js"}, args...)
		},
		env:        []string{"NODE_PATH=" + modules},
		num:        func(n string) string { return `"` + n + `"` },
		emptyValue: "data with snake_case names: ",
	}
	f := tlstest.NewFiles(t)
	n := startHerald(t, f)
	t.Run("publish", func(t *testing.T) { testPublish(t, l, n, f) })
	t.Run("no-api-key", func(t *testing.T) { testNoAPIKey(t, l, n, f) })
	t.Run("publish_stream", func(t *testing.T) { testPublishStream(t, l, n, f) })
	t.Run("subscribe", func(t *testing.T) { testSubscribeResume(t, l, f) })
	t.Run("keepalive", func(t *testing.T) {
		testKeepalive(t, l, n, f, `RESOURCE_EXHAUSTED: Bandwidth exhausted or memory limit exceeded`, "rejected by server because of excess pings")
	})
}

// TestPython runs examples/python with grpcio, on stubs from each
// generator generate.sh knows: protoc with grpc_python_plugin, and
// grpc_tools.protoc.
func TestPython(t *testing.T) {
	t.Parallel()
	py := python(t)
	f := tlstest.NewFiles(t)
	n := startHerald(t, f)
	for _, gen := range []struct {
		name  string
		flags []string
		have  func() error
	}{
		{"protoc", nil, func() error {
			if _, err := exec.LookPath("protoc"); err != nil {
				return err
			}
			_, err := exec.LookPath("grpc_python_plugin")
			return err
		}},
		{"grpc_tools", []string{"--grpc-tools"}, func() error {
			return exec.Command(py, "-c", "import grpc_tools.protoc").Run()
		}},
	} {
		t.Run(gen.name, func(t *testing.T) {
			if err := gen.have(); err != nil {
				require(t, "no %s to generate Python stubs: %v (apt-get install protobuf-compiler-grpc python3-grpc-tools)", gen.name, err)
			}
			out := t.TempDir()
			cmd := exec.Command("sh", append(append([]string{"python/generate.sh"}, gen.flags...), out)...)
			cmd.Env = append(os.Environ(), "PYTHON="+py)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("generate.sh %v: %v\n%s", gen.flags, err, b)
			}
			for _, stub := range []string{"herald/v1/herald_pb2.py", "herald/v1/herald_pb2_grpc.py", "google/api/annotations_pb2.py", "google/api/http_pb2.py"} {
				if _, err := os.Stat(filepath.Join(out, stub)); err != nil {
					t.Fatalf("generate.sh made no %s: %v", stub, err)
				}
			}
			l := lang{
				name: "python-" + gen.name, dir: "python",
				cmd: func(script string, args ...string) []string {
					return append([]string{py, script + ".py"}, args...)
				},
				// Unbuffered, so that a subscriber's lines arrive as printed;
				// no __pycache__ left in the source folder.
				env:        []string{"PYTHONPATH=" + out, "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"},
				num:        func(n string) string { return n },
				emptyValue: "empty Value: ",
			}
			t.Run("publish", func(t *testing.T) { testPublish(t, l, n, f) })
			t.Run("no-api-key", func(t *testing.T) { testNoAPIKey(t, l, n, f) })
			t.Run("publish_stream", func(t *testing.T) { testPublishStream(t, l, n, f) })
			t.Run("subscribe", func(t *testing.T) { testSubscribeResume(t, l, f) })
			if gen.name == "protoc" {
				t.Run("keepalive", func(t *testing.T) {
					testKeepalive(t, l, n, f, `UNAVAILABLE: Socket closed`, `GOAWAY with error code ENHANCE_YOUR_CALM and debug data equal to "too_many_pings"`)
				})
			}
		})
	}
}

// testPublish runs publish: JSON published as text arrives exactly; a
// Value without a kind is refused; a Value built right is published,
// lossily. What the example reads back is checked against what a Go
// reader gets.
func testPublish(t *testing.T, l lang, n *node.Node, f *tlstest.Files) {
	ch := "publish-" + l.name
	p := l.start(t, n.GRPCAddr.String(), f, "publish", ch)
	epoch := p.expect(t, `json: offset `+regexp.QuoteMeta(l.num("1"))+` epoch (\S+)`)[1]
	p.expect(t, regexp.QuoteMeta(l.emptyValue)+`INVALID_ARGUMENT: data: the top-level Value has no kind set .*nothing was published.*`)
	p.expect(t, `data as a Value: offset `+regexp.QuoteMeta(l.num("2")))
	exact := `{"order":12345678901234567891,"total":10.0,"status":"paid"}`
	lossy := `{"order":42,"status":"paid","total":10}`
	p.expect(t, `history: 1 `+regexp.QuoteMeta(exact))
	p.expect(t, `history: 2 `+regexp.QuoteMeta(lossy))
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.output())
	}
	if rest := p.rest(); len(rest) > 0 {
		t.Fatalf("printed more than expected: %q", rest)
	}
	if s := p.stderr.String(); s != "" {
		t.Fatalf("wrote to stderr:\n%s", s)
	}

	// What every reader gets: the two publications, no third (the refused
	// Value stored nothing).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := dial(t, n, f).Service().History(ctx, &heraldv1.HistoryRequest{Channel: ch})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, pub := range h.GetPublications() {
		if pub.GetEpoch() != epoch {
			t.Fatalf("publication in epoch %s, the example printed %s", pub.GetEpoch(), epoch)
		}
		got = append(got, pub.GetJson())
	}
	if strings.Join(got, "\n") != exact+"\n"+lossy {
		t.Fatalf("history holds %q, want %q and %q", got, exact, lossy)
	}
}

// testNoAPIKey runs publish without HERALD_API_KEY: it is the key in the
// metadata that lets the examples in.
func testNoAPIKey(t *testing.T, l lang, n *node.Node, f *tlstest.Files) {
	env := append(l.heraldEnv(n.GRPCAddr.String(), f), "HERALD_API_KEY=")
	p := start(t, l.dir, env, l.cmd("publish", "no-key-"+l.name)...)
	if code := p.wait(t); code != 1 {
		t.Fatalf("exit code %d without an API key, want 1\n%s", code, p.output())
	}
	if s := p.stderr.String(); !strings.Contains(s, "publish failed: UNAUTHENTICATED missing API key") {
		t.Fatalf("stderr %q, want UNAUTHENTICATED", s)
	}
}

// testPublishStream runs publish_stream: one response per request, in
// order, the refused ones with their reason, and the stream carries on.
func testPublishStream(t *testing.T, l lang, n *node.Node, f *tlstest.Files) {
	ch := "stream-" + l.name
	p := l.start(t, n.GRPCAddr.String(), f, "publish_stream", ch)
	p.expect(t, `1 ok offset 1`)
	p.expect(t, `2 refused invalid_argument: channel "nowhere:1": unknown namespace "nowhere"`)
	p.expect(t, `3 refused invalid_argument: json: not valid JSON: .*`)
	p.expect(t, `4 ok offset 2`)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.output())
	}
	if rest := p.rest(); len(rest) > 0 {
		t.Fatalf("printed more than expected: %q", rest)
	}
	if s := p.stderr.String(); s != "" {
		t.Fatalf("wrote to stderr:\n%s", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := dial(t, n, f).Service().History(ctx, &heraldv1.HistoryRequest{Channel: ch})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetPublications()) != 2 || h.GetPublications()[1].GetJson() != `{"tick":4,"price":1.10}` {
		t.Fatalf("history %v, want ticks 1 and 4 exactly", h.GetPublications())
	}
}

// testSubscribeResume runs subscribe through a proxy and breaks its
// stream twice: a network drop, after which it resumes from its last
// position and gets exactly what it missed; and a node restart (a new
// epoch), after which it says the state must be reloaded and goes on live.
func testSubscribeResume(t *testing.T, l lang, f *tlstest.Files) {
	n1 := startHerald(t, f)
	proxy := proxytest.Start(t, n1.GRPCAddr.String())
	c1 := dial(t, n1, f)
	ch := "resume-" + l.name
	p := l.start(t, proxy.Addr, f, "subscribe", ch)
	// A channel nobody published to yet has an empty epoch; its first
	// publication starts the channel's real one, which the stream carries
	// on into.
	e0 := p.expect(t, `subscribed at 0@(\S+)`)[1]
	pub := func(c *client.Client, json string) client.Ack { return publish(t, c, ch, json) }
	line := func(offset, epoch, json string) string {
		return regexp.QuoteMeta(offset + "@" + epoch + " " + json)
	}

	e1 := pub(c1, `{"n":1,"id":12345678901234567891}`).Position.Epoch
	if e1 == e0 {
		t.Fatalf("the first publication kept the empty epoch %s", e0)
	}
	p.expect(t, line("1", e1, `{"n":1,"id":12345678901234567891}`))
	pub(c1, `{"n":2}`)
	p.expect(t, line("2", e1, `{"n":2}`))

	// A network drop: what the node sends meanwhile is lost on the way.
	proxy.Hold()
	pub(c1, `{"n":3}`)
	pub(c1, `{"n":4,"price":1.10}`)
	proxy.Cut()
	proxy.Release()
	p.expect(t, `subscribed at 4@`+e1+` recovered=(?i:true)`)
	p.expect(t, line("3", e1, `{"n":3}`))
	p.expect(t, line("4", e1, `{"n":4,"price":1.10}`))

	// The node restarts, its memory engine with a new epoch: the gap
	// cannot be filled, and the example says so.
	n2 := startHerald(t, f)
	proxy.SetTarget(n2.GRPCAddr.String())
	stop(n1)
	p.expect(t, regexp.QuoteMeta(`unrecovered: what came after 4@`+e1+` is lost; reload the state`))
	p.expect(t, `subscribed at 0@(\S+) recovered=(?i:false)`)
	c2 := dial(t, n2, f)
	e2 := pub(c2, `{"n":5}`).Position.Epoch
	if e2 == e1 {
		t.Fatalf("the restarted node kept epoch %s", e1)
	}
	p.expect(t, line("1", e2, `{"n":5}`))
	pub(c2, `{"n":6}`)
	p.expect(t, line("2", e2, `{"n":6}`)) // and nothing twice in between
	if s := p.stderr.String(); s != "" {
		t.Logf("stderr:\n%s", s)
	}
}

// testKeepalive runs keepalive on quiet subscriptions, side by side: with
// keepalive pings every second the node closes the connection (GOAWAY
// ENHANCE_YOUR_CALM too_many_pings) within seconds, and the library reports
// it as failure, logging logged; with the examples' own settings
// (connect.js, connect.py: 30 s) the stream outlives it.
func testKeepalive(t *testing.T, l lang, n *node.Node, f *tlstest.Files, failure, logged string) {
	bad := l.start(t, n.GRPCAddr.String(), f, "keepalive", "1000", "20", "keepalive-bad-"+l.name)
	good := l.start(t, n.GRPCAddr.String(), f, "keepalive", "default", "10", "keepalive-good-"+l.name)
	bad.expect(t, "subscribed")
	good.expect(t, "subscribed")
	bad.expect(t, `ended after \S+ s: `+regexp.QuoteMeta(failure))
	if code := bad.wait(t); code != 2 {
		t.Fatalf("exit code %d\n%s", code, bad.output())
	}
	if s := bad.stderr.String(); !strings.Contains(s, logged) {
		t.Fatalf("stderr does not say %q:\n%s", logged, s)
	}
	good.expect(t, regexp.QuoteMeta("ok: keepalive default, the stream lived 10 s"))
	if code := good.wait(t); code != 0 {
		t.Fatalf("exit code %d\n%s", code, good.output())
	}
}
