package web_test

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The npm package: web/ packed by npm, installed from its tarball with
// `ws` as the WebSocket implementation, and run by Node against a real
// node. Without node and npm the test skips, unless
// HERALD_REQUIRE_BROWSER=1 (CI), which makes that a failure.

// packageJSON is the part of web/package.json the test reads.
type packageJSON struct {
	Name            string            `json:"name"`
	Version         string            `json:"version"`
	Files           []string          `json:"files"`
	DevDependencies map[string]string `json:"devDependencies"`
	Dependencies    map[string]string `json:"dependencies"`
}

func readPackageJSON(t *testing.T) packageJSON {
	t.Helper()
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var p packageJSON
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	return p
}

// needNode returns the paths of node and npm, or skips (fails under
// HERALD_REQUIRE_BROWSER=1) when either is missing.
func needNode(t *testing.T) (nodeBin, npmBin string) {
	t.Helper()
	var missing []string
	for _, name := range []string{"node", "npm"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		if name == "node" {
			nodeBin = p
		} else {
			npmBin = p
		}
	}
	if len(missing) > 0 {
		if os.Getenv("HERALD_REQUIRE_BROWSER") == "1" {
			t.Fatalf("HERALD_REQUIRE_BROWSER=1 but %s missing (apt-get install nodejs npm)", strings.Join(missing, " and "))
		}
		t.Skipf("npm package test skipped: %s not found (apt-get install nodejs npm; HERALD_REQUIRE_BROWSER=1 makes this a failure)", strings.Join(missing, " and "))
	}
	return nodeBin, npmBin
}

// run runs a command in dir, bounded by ctx, and returns its stdout; a
// failure reports stderr.
func run(t *testing.T, ctx context.Context, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// tarballFiles lists the regular files of an npm tarball, without npm's
// "package/" prefix.
func tarballFiles(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			names = append(names, strings.TrimPrefix(h.Name, "package/"))
		}
	}
	slices.Sort(names)
	return names
}

// nodeClientScript connects with the installed package, as a Node program
// would, in the format named by its fourth argument, and reports each step
// on stdout as one JSON line. It waits for a line on stdin (the Go test's
// publication is out) before it publishes. First it checks that a refused
// handshake is retried, not fatal.
const nodeClientScript = `
import { Herald, HeraldError } from "@herald-io/client";
import WebSocket from "ws";
import { createInterface } from "node:readline";

const [url, token, channel, format] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const fail = (err) => { out({ step: "error", message: String(err?.stack ?? err) }); process.exit(1); };
setTimeout(() => fail("timed out"), 30000).unref();

// A refused handshake (here HTTP 404) is an "error" event of a ws socket,
// which ends the process when nobody listens to it; the client must
// retry instead, as it does in browsers.
const refused = new Herald(url.replace(/\/ws$/, "/no-such-endpoint"), { WebSocket, token, format, minReconnectDelay: 10, maxReconnectDelay: 20 });
let retries = 0;
await new Promise((resolve) => {
  refused.on("connecting", (c) => { if (c.delay !== undefined && ++retries === 2) resolve(); });
  refused.connect();
});
refused.disconnect();
out({ step: "refused handshake retried", retries });

const received = [];
let wake = null;
const h = new Herald(url, { WebSocket, token, format, timeout: 5000 });
h.on("error", (e) => out({ step: "client error", type: e.type, message: String(e.error) }));
const sub = h.subscribe(channel, {
  onPublication: (p) => {
    received.push({ offset: p.offset, data: p.data, binary: p.binary && [...p.binary], user: p.publisher?.user ?? "", time: p.timeUnixMs });
    wake?.();
  },
  onSubscribed: (c) => out({ step: "subscribed", offset: c.position.offset, recoverable: c.recoverable }),
  onError: (e) => fail(e),
});
h.connect();
await h.ready();
out({ step: "connected", user: h.user, format: h.format, heraldError: typeof HeraldError === "function" });

const until = async (cond) => { while (!cond()) await new Promise((r) => (wake = r)); };
const rl = createInterface({ input: process.stdin });
await rl[Symbol.asyncIterator]().next(); // the Go test has published over gRPC
rl.close();
await until(() => received.length >= 1);
const res = await sub.publish({ from: "node", n: 2 });
await sub.publish(new Uint8Array([0, 1, 254, 255]));
await until(() => received.length >= 3);
const page = await sub.history({ limit: 10 });
out({
  step: "done",
  published: res.offset,
  received,
  history: page.publications.map((p) => ({ offset: p.offset, data: p.data, binary: p.binary && [...p.binary] })),
  position: page.position.offset,
});
h.disconnect(); // and the process ends: the client holds no timer or socket after disconnect
`

// TestNPMPackage packs web/ with npm and checks the tarball holds exactly
// package.json, README.md and the files package.json lists (no tests, no
// Go files), that the client has no runtime dependencies, then installs
// the tarball with ws into an empty directory and runs a Node program that
// imports the package by its name and talks to a real node configured as
// in production (API keys, JWTs for clients): a refused handshake is
// retried (it used to end the process: ws's unhandled "error" event), then
// it connects with a token, subscribes, receives a publication made over
// gRPC, publishes, and reads history.
func TestNPMPackage(t *testing.T) {
	nodeBin, npmBin := needNode(t)
	pkg := readPackageJSON(t)
	if len(pkg.Dependencies) > 0 {
		t.Fatalf("package.json has runtime dependencies %v; the client must have none", pkg.Dependencies)
	}
	wsVersion := pkg.DevDependencies["ws"]
	if wsVersion == "" {
		t.Fatal("package.json: ws is not a devDependency")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	packDir := t.TempDir()
	src, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var packed []struct {
		Filename string `json:"filename"`
	}
	out := run(t, ctx, src, npmBin, "pack", "--json", "--ignore-scripts", "--pack-destination", packDir)
	if err := json.Unmarshal(out, &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json printed %s (%v)", out, err)
	}
	tarball := filepath.Join(packDir, packed[0].Filename)
	want := append([]string{"README.md", "package.json"}, pkg.Files...)
	slices.Sort(want)
	if got := tarballFiles(t, tarball); !slices.Equal(got, want) {
		t.Fatalf("%s holds %v, want exactly %v", packed[0].Filename, got, want)
	}

	// Install it as a user would, from the tarball, beside ws. npm's cache
	// keeps the second run off the network.
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "package.json"), []byte(`{"name":"herald-npm-test","private":true,"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, app, npmBin, "install", "--no-save", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts",
		"--loglevel=error", tarball, "ws@"+wsVersion)
	installed := filepath.Join(app, "node_modules", filepath.FromSlash(pkg.Name))
	for _, f := range want {
		if _, err := os.Stat(filepath.Join(installed, f)); err != nil {
			t.Fatalf("installed package: %v", err)
		}
	}
	script := filepath.Join(app, "client.mjs")
	if err := os.WriteFile(script, []byte(nodeClientScript), 0o644); err != nil {
		t.Fatal(err)
	}

	// The production shape: API keys on the core, JWTs for clients (see
	// startAdminDeployment).
	d := startAdminDeployment(t)
	for _, format := range formatNames {
		t.Run(format, func(t *testing.T) {
			runNodeClient(t, ctx, d, nodeBin, app, script, format)
		})
	}
}

// runNodeClient runs nodeClientScript in format against d and checks
// each step: a refused handshake retried, then a connection as the
// token's user, a gRPC publication received with its time, the client's
// own JSON and binary publications, and history.
func runNodeClient(t *testing.T, ctx context.Context, d *adminDeployment, nodeBin, app, script, format string) {
	channel := "chat:npm-" + format
	token := browserToken(t, "node-user")
	backend := d.backend

	cmd := exec.CommandContext(ctx, nodeBin, script, "ws"+strings.TrimPrefix(d.base, "http")+"/ws", token, channel, format)
	cmd.Dir = app
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	type received struct {
		Offset uint64         `json:"offset"`
		Data   map[string]any `json:"data"`
		Binary []int          `json:"binary"`
		User   string         `json:"user"`
		Time   int64          `json:"time"`
	}
	type step struct {
		Step      string     `json:"step"`
		Message   string     `json:"message"`
		User      string     `json:"user"`
		Format    string     `json:"format"`
		Offset    uint64     `json:"offset"`
		Published uint64     `json:"published"`
		Received  []received `json:"received"`
		History   []received `json:"history"`
		Position  uint64     `json:"position"`
	}
	// nodeStderr is what node wrote on stderr, once it has exited (Wait
	// has copied all of it): for failure messages.
	nodeStderr := func() string {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return stderr.String()
	}
	lines := bufio.NewScanner(stdout)
	seen := map[string]step{}
	next := func(want string) step {
		t.Helper()
		if s, ok := seen[want]; ok {
			return s
		}
		for lines.Scan() {
			var s step
			if err := json.Unmarshal(lines.Bytes(), &s); err != nil {
				t.Fatalf("node printed %q: %v", lines.Text(), err)
			}
			t.Logf("node: %s", lines.Text())
			if s.Step == "error" {
				t.Fatalf("node client failed: %s\nstderr:\n%s", s.Message, nodeStderr())
			}
			seen[s.Step] = s
			if s.Step == want {
				return s
			}
		}
		t.Fatalf("node exited before %q: %v\nstderr:\n%s", want, lines.Err(), nodeStderr())
		return step{}
	}

	next("refused handshake retried")
	next("subscribed")
	if c := next("connected"); c.User != "node-user" || c.Format != format {
		t.Fatalf("connected as %q in %q, want node-user (the token's sub) in %s", c.User, c.Format, format)
	}
	before := time.Now().UnixMilli()
	first := publish(t, backend, channel, map[string]any{"from": "grpc", "n": 1})
	after := time.Now().UnixMilli()
	if _, err := io.WriteString(stdin, "published\n"); err != nil {
		t.Fatal(err)
	}
	_ = stdin.Close()
	done := next("done")
	for lines.Scan() {
		t.Logf("node, after done: %s", lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v\nstderr:\n%s", err, stderr.String())
	}

	if done.Published != first+1 {
		t.Fatalf("Node's publish at offset %d, want %d (after the gRPC one at %d)", done.Published, first+1, first)
	}
	if len(done.Received) != 3 {
		t.Fatalf("Node received %+v, want the gRPC publication then its own two", done.Received)
	}
	if r := done.Received[0]; r.Offset != first || r.Data["from"] != "grpc" || r.Data["n"] != float64(1) || r.User != "" || r.Time < before || r.Time > after {
		t.Fatalf("first publication received: %+v, want offset %d from grpc at a time in [%d, %d]", r, first, before, after)
	}
	if r := done.Received[1]; r.Offset != first+1 || r.Data["from"] != "node" || r.User != "node-user" {
		t.Fatalf("second publication received: %+v, want Node's own at %d with publisher node-user", r, first+1)
	}
	if r := done.Received[2]; r.Offset != first+2 || !slices.Equal(r.Binary, []int{0, 1, 254, 255}) || r.Data != nil {
		t.Fatalf("third publication received: %+v, want Node's bytes at %d", r, first+2)
	}
	if len(done.History) != 3 || done.History[0].Data["from"] != "grpc" || done.History[1].Data["from"] != "node" ||
		!slices.Equal(done.History[2].Binary, []int{0, 1, 254, 255}) || done.Position != first+2 {
		t.Fatalf("history %+v at position %d, want the three publications up to %d", done.History, done.Position, first+2)
	}
}
