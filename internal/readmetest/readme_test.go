package readmetest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-io/herald/internal/freeport"
	"github.com/herald-io/herald/internal/syncbuf"
)

// TestREADME runs the commands of README.md as a reader would, in order,
// and compares what they print with the output blocks the README shows
// after them (see output in parse_test.go for how a block names its
// commands, and matchValue in shape_test.go for the comparison: the same
// JSON keys in the same order, equal values but for clocks, versions and
// the epochs, client ids and session tokens a node makes up, which must
// stand for one printed value each).
//
// Every command of a ```sh block runs, unless its section or the command
// itself is listed below with the reason; a listed entry that names
// nothing fails the test, and so does a command that fails (curl on an
// HTTP error status too), an output block without a marker in a section
// that runs, and an inline `go test` naming a test or package that does
// not exist.
//
// Each ## section runs in one bash (so its commands share variables and
// background jobs), in a directory of its own, with these changes to what
// is written, which the log shows command by command:
//
//   - The README's addresses (localhost, 127.0.0.1 or 0.0.0.0 with a port
//     74xx or 84xx) get free ports instead, one per port the README
//     names, per section; HERALD_ADDR is set to the address port 7400
//     became, which the CLI's default 127.0.0.1:7400 stands for. The tour
//     runs against the test's node: the herald binary, built once with
//     go build, running `serve` with the default configuration on its two
//     free loopback ports.
//   - The README's Redis ports (63xx and 64xx, in addresses, after --port
//     or -p, in file names) get free ports too, each with its cluster bus
//     port (the port + 10000) free, and /tmp/ becomes a directory of the
//     section's own. A section in redisSections is skipped without
//     redis-server and redis-cli (fails under HERALD_REQUIRE_REDIS=1);
//     at its end, and when it fails, the redis-servers it daemonized are
//     stopped (stopDaemons), and their logs shown if it failed.
//   - `go run` and `go build` run in the repository (go -C), and build's
//     -o names a file in the section's directory.
//   - A README value bound to a printed one (an epoch, a session token)
//     is replaced by it in every later command (`--since 1@d3280800`).
//
// A command that prints until stopped (a subscriber: curl -N, a Subscribe
// call, herald subscribe) runs in the background until the end of its
// section; the test waits for its first output (a subscriber: for its
// subscribed event) before it goes on, and
// for the records an output block shows: the first block of a stream
// shows how it begins, later ones continue after what it showed, and a
// block may leave records out; a subscriber sent to the background (&)
// runs so too. Any other command ending in & runs in the section's shell,
// and the test waits until the addresses it names accept connections.
func TestREADME(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	d := parse(string(text))
	checkLists(t, d)
	checkGoTests(t, repo, d)
	if t.Failed() {
		return
	}

	for _, c := range d.commands {
		if why, skip := skipped(c); skip {
			t.Logf("README.md:%d: not run: %s\n  because: %s", c.line, c.text, why)
		}
	}

	r := &runner{t: t, repo: repo, doc: d, bind: newBindings()}
	r.tools()
	var sections []string
	for _, c := range d.commands {
		if !slices.Contains(sections, c.section) {
			sections = append(sections, c.section)
		}
	}
	for _, s := range sections {
		if !r.runs(s) {
			continue
		}
		t.Run(s, func(t *testing.T) { r.section(t, s) })
	}
}

// A skip is a section, or a command, that the test does not run, and why.
type skip struct{ name, why string }

// skipSections are ## or ### headings whose commands are not run. A
// section that brings its own test of its commands goes here, naming it.
var skipSections = []skip{
	{"From Node", "go test ./examples/ runs these (npm ci, node publish.js …) against a node with API keys and TLS; TestREADMEQuotesExamples checks the quoted code"},
	{"From Python", "go test ./examples/ runs these (generate.sh, python3 publish.py …); TestREADMEQuotesExamples checks the quoted code"},
	{"Split deployment: bridges apart from the core", "names certificate files (core.crt, ca.pem) and hosts (core-host, bridge-host) that the README does not make; internal/deploytest runs the split shape with TLS, API keys and JWTs"},
	{"Hooks: your backend decides", "go test ./examples/cookiesession/ runs this walkthrough's steps in Go (login cookie, /sse without a token, the /command POST, its replies) over gRPC and over HTTP, and the page in Chromium; the commands as written are not run (fixed ports 7600 and 8080 in examples/cookiesession/herald.yaml)"},
	{"Benchmarks", "load runs of 10 s and more, with bench.yaml from BENCHMARKS.md, which records their commands and results"},
}

// skipCommands are commands, as written, that are not run.
var skipCommands = []skip{
	{"go run ./cmd/herald serve", "the node: the test runs the same program, built with go build, for the tour"},
	{"scripts/test", "the whole test suite, which runs this test"},
}

// nodeSections run against the test's node.
var nodeSections = []string{"A five-minute tour"}

// redisSections start redis-server processes of their own (and redis-cli
// --cluster create): without redis-server and redis-cli on PATH they are
// skipped, or fail under HERALD_REQUIRE_REDIS=1 (scripts/test sets it).
var redisSections = []string{"Deployment: several nodes on one Redis"}

func skipped(c *command) (string, bool) {
	for _, s := range skipSections {
		if slices.Contains(c.headings, s.name) {
			return "section " + s.name + ": " + s.why, true
		}
	}
	for _, s := range skipCommands {
		if c.text == s.name {
			return s.why, true
		}
	}
	return "", false
}

// checkLists fails on entries of the lists above that name nothing.
func checkLists(t *testing.T, d *doc) {
	for _, s := range skipSections {
		if !slices.ContainsFunc(d.commands, func(c *command) bool { return slices.Contains(c.headings, s.name) }) {
			t.Errorf("skipSections: no command under a heading %q", s.name)
		}
	}
	for _, s := range skipCommands {
		if !slices.ContainsFunc(d.commands, func(c *command) bool { return c.text == s.name }) {
			t.Errorf("skipCommands: README has no command %q", s.name)
		}
	}
	for _, s := range nodeSections {
		if !slices.ContainsFunc(d.commands, func(c *command) bool { return c.section == s }) {
			t.Errorf("nodeSections: no command in a section %q", s)
		}
	}
	for _, s := range redisSections {
		if !slices.ContainsFunc(d.commands, func(c *command) bool { return c.section == s && strings.Contains(c.text, "redis-server") }) {
			t.Errorf("redisSections: no redis-server command in a section %q", s)
		}
	}
}

// checkGoTests checks the inline `go test` commands of the prose, which
// run for minutes or rewrite files: their packages exist, and so do the
// tests and fuzz targets they name.
func checkGoTests(t *testing.T, repo string, d *doc) {
	for _, g := range d.goTests {
		args := strings.Fields(strings.NewReplacer("'", "", `"`, "").Replace(g.text))
		var names, pkgs []string
		for i, a := range args {
			switch {
			case (a == "-run" || a == "-fuzz") && i+1 < len(args):
				n := strings.Trim(args[i+1], "^$")
				if n != "" && n != "XXX" && !strings.ContainsAny(n, `|.*+?()[]\`) {
					names = append(names, n)
				}
			case strings.HasPrefix(a, "./"):
				pkgs = append(pkgs, a)
			}
		}
		for _, p := range pkgs {
			if fi, err := os.Stat(filepath.Join(repo, p)); err != nil || !fi.IsDir() {
				t.Errorf("README.md:%d: `%s`: no package %s", g.line, g.text, p)
			}
		}
		for _, n := range names {
			found := false
			for _, p := range pkgs {
				files, _ := filepath.Glob(filepath.Join(repo, p, "*_test.go"))
				for _, f := range files {
					b, _ := os.ReadFile(f)
					if regexp.MustCompile(`(?m)^func ` + n + `\(`).Match(b) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("README.md:%d: `%s`: no func %s in the _test.go files of %s", g.line, g.text, n, strings.Join(pkgs, " "))
			}
		}
	}
}

type runner struct {
	t       *testing.T
	repo    string
	doc     *doc
	bind    *bindings
	bin     string // the herald binary
	toolDir string // grpcurl
	node    map[string]string
}

// runs tells whether a section has commands that run; those sections may
// not show output without saying whose.
func (r *runner) runs(section string) bool {
	for _, c := range r.doc.commands {
		if _, skip := skipped(c); c.section == section && !skip {
			return true
		}
	}
	return false
}

// tools builds herald and installs grpcurl (the version the README
// names) into the test's directory; both come from the build cache and
// the module cache (or the Go module proxy) after the first time.
func (r *runner) tools() {
	t := r.t
	dir := t.TempDir()
	r.bin = filepath.Join(dir, "herald")
	build := exec.Command("go", "build", "-o", r.bin, "./cmd/herald")
	build.Dir = r.repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r.toolDir = filepath.Join(dir, "bin")
	install := exec.Command("go", "install", "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4")
	install.Dir = dir
	install.Env = append(os.Environ(), "GOBIN="+r.toolDir, "GOFLAGS=")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install grpcurl: %v\n%s", err, out)
	}
}

// freePort returns a free port below the ephemeral range (see freeport).
func freePort(t *testing.T) string {
	p, err := freeport.Port(false)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(p)
}

// startNode runs `herald serve` with the default configuration on two
// free loopback ports until the end of the test, and returns them as the
// README's 7400 and 7401.
func (r *runner) startNode(t *testing.T) map[string]string {
	ports := map[string]string{"7400": freePort(t), "7401": freePort(t)}
	serve := exec.Command(r.bin, "serve")
	serve.Env = append(cleanEnv(),
		"HERALD_GRPC_ADDR=127.0.0.1:"+ports["7400"], "HERALD_HTTP_ADDR=127.0.0.1:"+ports["7401"])
	logs := &syncbuf.Buffer{}
	serve.Stdout, serve.Stderr = logs, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = serve.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = serve.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("node's log:\n%s", logs)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := http.Get("http://127.0.0.1:" + ports["7401"] + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return ports
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready after a minute: %v\n%s", err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanEnv is the test's environment without HERALD_* variables, which
// would configure the node and the CLI.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

var (
	addrRe = regexp.MustCompile(`\b(localhost|127\.0\.0\.1|0\.0\.0\.0):(7[45]\d\d|84\d\d)\b`)
	// anyAddrRe: addresses after the rewrite.
	anyAddrRe = regexp.MustCompile(`\b(localhost|127\.0\.0\.1|0\.0\.0\.0):(\d+)\b`)
	// redisPortRe: the Redis ports the README uses (63xx, 64xx), which
	// appear in addresses, after --port and -p, and in file names.
	redisPortRe = regexp.MustCompile(`\b6[34]\d\d\b`)
	// tmpRe: a path under /tmp, which becomes one under the section's
	// directory, so that runs never share files.
	tmpRe        = regexp.MustCompile(`(^|[\s'"=(:])/tmp/`)
	backgroundRe = regexp.MustCompile(`(^|[^&])&[ \t]*(#[^\n]*)?$`)
	goRunRe      = regexp.MustCompile(`\bgo run \./`)
	goBuild      = regexp.MustCompile(`\bgo build -o (\S+) `)
	// streamRe: commands that print until stopped.
	streamRe = regexp.MustCompile(`\bcurl -N\b|HeraldService/Subscribe\b|\bherald subscribe\b`)
	// subscribes: streams that print a subscribed event first.
	subscribes = regexp.MustCompile(`(?i)subscribe|[?&]channel=`)
)

// rewrite makes a README command runnable here (see TestREADME); tmp
// is the directory that stands for /tmp.
func (r *runner) rewrite(t *testing.T, text string, ports map[string]string, tmp string) string {
	text = addrRe.ReplaceAllStringFunc(text, func(a string) string {
		m := addrRe.FindStringSubmatch(a)
		return m[1] + ":" + assignPort(t, ports, m[2], false)
	})
	text = redisPortRe.ReplaceAllStringFunc(text, func(p string) string {
		return assignPort(t, ports, p, true)
	})
	if tmp != "" {
		text = tmpRe.ReplaceAllString(text, "${1}"+tmp+"/")
	}
	text = goRunRe.ReplaceAllLiteralString(text, `go -C "$READMETEST_REPO" run ./`)
	text = goBuild.ReplaceAllStringFunc(text, func(s string) string {
		return `go -C "$READMETEST_REPO" build -o "$PWD/` + goBuild.FindStringSubmatch(s)[1] + `" `
	})
	return r.bind.rewrite(text)
}

// assignPort returns the free port that stands for the README's port p in
// a section, choosing one the first time. A Redis port comes with its
// cluster bus port, p+10000, free too (redis-server binds both with
// --cluster-enabled yes); no port of a section is another's bus port.
func assignPort(t *testing.T, ports map[string]string, p string, redis bool) string {
	if q, ok := ports[p]; ok {
		return q
	}
	taken := map[int]bool{}
	for _, q := range ports {
		var n int
		fmt.Sscan(q, &n)
		taken[n], taken[n+freeport.Gap] = true, true
	}
	for range 1000 {
		n, err := freeport.Port(redis)
		if err != nil {
			t.Fatal(err)
		}
		if taken[n] || taken[n+freeport.Gap] {
			continue
		}
		ports[p] = fmt.Sprint(n)
		return ports[p]
	}
	t.Fatalf("no free port for the README's %s", p)
	return ""
}

// background tells whether a command ends in & (before a comment): it
// runs in the background of the section's shell.
func background(text string) bool { return backgroundRe.MatchString(text) }

// section runs the commands of one section and checks its output blocks.
func (r *runner) section(t *testing.T, name string) {
	ports := map[string]string{}
	if slices.Contains(nodeSections, name) {
		ports = r.startNode(t)
	}
	if slices.Contains(redisSections, name) {
		for _, bin := range []string{"redis-server", "redis-cli"} {
			if _, err := exec.LookPath(bin); err != nil {
				if os.Getenv("HERALD_REQUIRE_REDIS") == "1" {
					t.Fatalf("%s is not on PATH and HERALD_REQUIRE_REDIS=1", bin)
				}
				t.Skipf("%s is not on PATH (apt-get install redis-server redis-tools); set HERALD_REQUIRE_REDIS=1 to fail instead", bin)
			}
		}
	}
	r.rewrite(t, "localhost:7400", ports, "") // HERALD_ADDR's port, in every section
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp") // the section's /tmp
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	// After the shell and its background jobs (the deferred stops below),
	// and before the directory goes: the daemons it started.
	t.Cleanup(func() {
		stopDaemons(t, dir)
		if t.Failed() {
			logTails(t, tmp)
		}
	})
	env := append(cleanEnv(),
		"PATH="+r.toolDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HERALD_ADDR=127.0.0.1:"+ports["7400"],
		"READMETEST_REPO="+r.repo,
	)
	sh := startShell(t, dir, env)
	defer func() {
		sh.stop()
		if t.Failed() {
			t.Logf("the section's stderr:\n%s", sh.stderr)
		}
	}()
	streams := map[*command]*stream{}
	defer func() {
		for _, s := range streams {
			if exited, err := s.status(); exited {
				t.Errorf("README.md:%d: %s\nended by itself (%v); stderr:\n%s", s.c.line, s.text, err, s.stderr)
			}
			s.stop()
		}
	}()
	printed := map[*command]string{}

	// The section's commands and output blocks, in document order.
	type step struct {
		line int
		c    *command
		o    *output
	}
	var steps []step
	for _, c := range r.doc.commands {
		if c.section == name {
			steps = append(steps, step{line: c.line, c: c})
		}
	}
	for _, o := range r.doc.outputs {
		if o.section == name {
			steps = append(steps, step{line: o.line, o: o})
		}
	}
	for _, u := range r.doc.unmarked {
		if u.section == name {
			t.Errorf("README.md:%d: a block that looks like output (``` or ```json) without an <!-- output of: … --> marker:\n%s", u.line, u.text)
		}
	}
	slices.SortFunc(steps, func(a, b step) int { return a.line - b.line })

	for _, st := range steps {
		if c := st.c; c != nil {
			if why, skip := skipped(c); skip {
				t.Logf("README.md:%d: skipped: %s (%s)", c.line, c.text, why)
				continue
			}
			text := r.rewrite(t, c.text, ports, tmp)
			t.Logf("README.md:%d: %s", c.line, text)
			// A subscriber sent to the background (`herald subscribe … &`,
			// a tail that prints into the terminal) runs as a stream too,
			// so that what it prints is its own.
			if streamRe.MatchString(c.text) {
				text = backgroundRe.ReplaceAllString(text, "$1")
				s, err := startStream(c, text, dir, env)
				if err != nil {
					t.Fatal(err)
				}
				streams[c] = s
				// A subscriber is ready when it says it is subscribed
				// (SSE's first event is connect, before the subscribe of
				// its query is done): what is published after is its.
				ready := func(out string) bool { return out != "" }
				if subscribes.MatchString(c.text) {
					ready = func(out string) bool { return strings.Contains(out, `"subscribed"`) }
				}
				waitFor(t, 2*time.Minute, func() (bool, error) {
					if ready(s.stdout.String()) {
						return true, nil
					}
					if exited, err := s.status(); exited {
						return false, fmt.Errorf("README.md:%d: %s\nended (%v) before it was ready; stdout:\n%s\nstderr:\n%s", c.line, text, err, s.stdout, s.stderr)
					}
					return false, nil
				}, "the first output of "+text)
				continue
			}
			out, rc, err := sh.run(text, 3*time.Minute)
			if err != nil || rc != 0 {
				t.Fatalf("README.md:%d: %s\nexit status %d (%v); stdout:\n%s\nstderr:\n%s", c.line, text, rc, err, out, sh.stderr)
			}
			printed[c] = out
			if background(c.text) {
				pidText, _, err := sh.run("echo $!", time.Minute)
				var pid int
				if _, serr := fmt.Sscan(pidText, &pid); err != nil || serr != nil {
					t.Fatalf("the pid of %s: %q, %v", text, pidText, err)
				}
				for _, m := range anyAddrRe.FindAllStringSubmatch(text, -1) {
					addr := "127.0.0.1:" + m[2]
					waitFor(t, time.Minute, func() (bool, error) {
						conn, err := net.DialTimeout("tcp", addr, time.Second)
						if err == nil {
							conn.Close()
							return true, nil
						}
						if syscall.Kill(pid, 0) != nil {
							return false, fmt.Errorf("README.md:%d: %s\nended before %s accepted connections; stderr:\n%s", c.line, text, addr, sh.stderr)
						}
						return false, nil
					}, addr+" accepting connections, after "+text)
				}
			}
			continue
		}
		r.check(t, st.o, printed, streams)
	}
}

// check compares an output block with what its commands printed.
func (r *runner) check(t *testing.T, o *output, printed map[*command]string, streams map[*command]*stream) {
	cmds, unknown := r.doc.commandsOf(o)
	if len(unknown) > 0 {
		t.Errorf("README.md:%d: the output marker names %q, but no command before it in %q contains that", o.line, unknown, o.section)
		return
	}
	if o.text {
		r.checkText(t, o, cmds, printed)
		return
	}
	sse := isSSE(o.body)
	want, rest, err := parseRecords(o.body+"\n\n", sse) // the block is complete
	if err != nil || strings.TrimSpace(rest) != "" || len(want) == 0 {
		t.Errorf("README.md:%d: the output block does not parse (%v; left: %q)", o.line, err, rest)
		return
	}
	var s *stream
	for _, c := range cmds {
		if why, skip := skipped(c); skip {
			t.Errorf("README.md:%d: the output of a command that is not run (%s): %s", o.line, why, c.text)
			return
		}
		if streams[c] != nil {
			s = streams[c]
		}
	}
	if s != nil {
		if len(cmds) > 1 {
			t.Errorf("README.md:%d: an output block shows one stream alone", o.line)
			return
		}
		var last error
		ok := poll(30*time.Second, func() bool {
			got, _, err := parseRecords(s.stdout.String(), sse)
			if err != nil {
				last = err
				return false
			}
			end, err := matchIn(want, got, s.checked, s.checked == 0, r.bind)
			if err == nil {
				s.checked = end
			}
			last = err
			return last == nil
		})
		if ok {
			t.Logf("README.md:%d: shown as printed by %s", o.line, s.text)
		} else {
			t.Errorf("README.md:%d: %s\nprinted what the README does not show: %v\nREADME:\n%s\nprinted:\n%s\nstderr:\n%s", o.line, s.text, last, o.body, s.stdout, s.stderr)
		}
		return
	}
	var all []string
	for _, c := range cmds {
		all = append(all, printed[c])
	}
	out := strings.Join(all, "\n")
	got, rest, err := parseRecords(out, sse)
	if err == nil && strings.TrimSpace(rest) != "" {
		err = fmt.Errorf("not JSON: %q", compact(rest))
	}
	if err == nil {
		err = matchAll(want, got, r.bind)
	}
	var names []string
	for _, c := range cmds {
		names = append(names, c.text)
	}
	if err == nil {
		t.Logf("README.md:%d: shown as printed by %s", o.line, strings.Join(names, "; "))
	} else {
		t.Errorf("README.md:%d: the output of\n  %s\nis not what the README shows: %v\nREADME:\n%s\nprinted:\n%s", o.line, strings.Join(names, "\n  "), err, o.body, out)
	}
}

// checkText compares a ```text block with what its commands printed, as
// written but for blank space at the ends of lines and of the whole.
func (r *runner) checkText(t *testing.T, o *output, cmds []*command, printed map[*command]string) {
	var all, names []string
	for _, c := range cmds {
		if why, skip := skipped(c); skip {
			t.Errorf("README.md:%d: the output of a command that is not run (%s): %s", o.line, why, c.text)
			return
		}
		if streamRe.MatchString(c.text) {
			t.Errorf("README.md:%d: a text block shows a stream: %s", o.line, c.text)
			return
		}
		all = append(all, printed[c])
		names = append(names, c.text)
	}
	norm := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " \t\r")
		}
		return strings.Join(lines, "\n")
	}
	if got := norm(strings.Join(all, "\n")); got == norm(o.body) {
		t.Logf("README.md:%d: shown as printed by %s", o.line, strings.Join(names, "; "))
	} else {
		t.Errorf("README.md:%d: the output of\n  %s\nis not what the README shows\nREADME:\n%s\nprinted:\n%s", o.line, strings.Join(names, "\n  "), o.body, got)
	}
}

func poll(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, timeout time.Duration, f func() (bool, error), what string) {
	t.Helper()
	var err error
	if !poll(timeout, func() bool {
		var ok bool
		ok, err = f()
		return ok || err != nil
	}) {
		t.Fatalf("waited %v for %s", timeout, what)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// stopDaemons ends the redis-servers a section started, which
// --daemonize yes took out of its shell's process group: each process
// named redis-server whose working directory is under dir (a daemon
// started there, or with --dir there), found by the pid files under dir
// and by a look through /proc; another process never matches. It sends
// SIGTERM, then SIGKILL to those still running 10 s later, and waits
// until they are gone.
func stopDaemons(t *testing.T, dir string) {
	pids := map[int]bool{}
	_ = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(path, ".pid") {
			b, _ := os.ReadFile(path)
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				pids[pid] = true
			}
		}
		return nil
	})
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscan(filepath.Base(p), &pid); err == nil {
			pids[pid] = true
		}
	}
	ours := func(pid int) bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "redis-server" {
			return false
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		return err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+string(filepath.Separator)))
	}
	var running []int
	for pid := range pids {
		if ours(pid) {
			running = append(running, pid)
		}
	}
	slices.Sort(running)
	for _, pid := range running {
		t.Logf("stopping redis-server %d (started by the section)", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	gone := func() bool {
		for _, pid := range running {
			if syscall.Kill(pid, 0) == nil && ours(pid) {
				return false
			}
		}
		return true
	}
	if !poll(10*time.Second, gone) {
		for _, pid := range running {
			if ours(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if !poll(10*time.Second, gone) {
			t.Errorf("redis-servers %v still running after SIGKILL", running)
		}
	}
}

// logTails logs the end of each .log file under dir (the daemons' logs).
func logTails(t *testing.T, dir string) {
	_ = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(path, ".log") {
			b, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			t.Logf("the end of %s:\n%s", path, strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
		return nil
	})
}
