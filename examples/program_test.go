package examples_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/internal/syncbuf"
)

// require skips the test for a missing tool, or fails it when
// HERALD_REQUIRE_POLYGLOT=1 (CI), so that CI never passes by skipping.
func require(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("HERALD_REQUIRE_POLYGLOT") == "1" {
		t.Fatalf("HERALD_REQUIRE_POLYGLOT=1 but "+format, args...)
	}
	t.Skipf(format+" (HERALD_REQUIRE_POLYGLOT=1 makes this a failure)", args...)
}

// nodeModules installs examples/node's locked dependencies with `npm ci`
// into the user's cache folder, once per package-lock.json, and returns
// the node_modules folder (for NODE_PATH). Older installs are removed, so
// the cache holds one install and npm's download cache.
func nodeModules(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			require(t, "%s is not on PATH (apt-get install nodejs npm)", tool)
		}
	}
	lock, err := os.ReadFile("node/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile("node/package.json")
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "herald", "examples-node")
	sum := sha256.Sum256(append(append([]byte{}, manifest...), lock...))
	dir := filepath.Join(base, hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil {
		return filepath.Join(dir, "node_modules")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(base, "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for name, b := range map[string][]byte{"package.json": manifest, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--cache", filepath.Join(base, "npm-cache"))
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		require(t, "npm ci for examples/node failed: %v\n%s", err, out)
	}
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if e.IsDir() && e.Name() != "npm-cache" && !strings.HasPrefix(e.Name(), "install-") {
			_ = os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "node_modules")
}

// python returns a python3 that can import grpc and google.protobuf:
// $HERALD_PYTHON, else Debian's /usr/bin/python3 (where python3-grpcio
// installs), else python3 on PATH (a pyenv or venv python3 does not see
// Debian's packages).
func python(t *testing.T) string {
	t.Helper()
	var tried []string
	for _, py := range []string{os.Getenv("HERALD_PYTHON"), "/usr/bin/python3", "python3"} {
		if py == "" {
			continue
		}
		tried = append(tried, py)
		if exec.Command(py, "-c", "import grpc, google.protobuf").Run() == nil {
			return py
		}
	}
	require(t, "no python3 with grpcio among %v (apt-get install python3-grpcio python3-protobuf)", tried)
	return ""
}

// program is an example running as a child process, read line by line.
type program struct {
	name   string
	cmd    *exec.Cmd
	lines  chan string
	stderr syncbuf.Buffer
	done   chan struct{}

	mu   sync.Mutex
	seen []string // what it printed so far, for failure messages
}

// start runs argv[0] with argv[1:] in dir with env added to the test's
// environment; the process is killed when the test ends.
func start(t *testing.T, dir string, env []string, argv ...string) *program {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	p := &program{name: strings.Join(argv, " "), cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	cmd.Stderr = &p.stderr
	// Through an io.Pipe, not StdoutPipe: Wait then waits until everything
	// the program wrote has been copied, so no last line is lost.
	out, w := io.Pipe()
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		_ = cmd.Wait()
		_ = w.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		go func() { // unblock the copy if nobody read the last lines
			for range p.lines {
			}
		}()
		<-p.done
	})
	return p
}

// noise are the lines a subscriber prints while it retries; how many
// depends on timing, so expect skips them.
var noise = regexp.MustCompile(`^stream ended \(`)

// expect returns the submatches of the program's next line that is not
// noise, failing the test unless it matches pattern within timeout.
func (p *program) expect(t *testing.T, pattern string) []string {
	t.Helper()
	re := regexp.MustCompile("^" + pattern + "$")
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.done
				t.Fatalf("%s exited (%v) before printing a line matching %q\n%s", p.name, p.cmd.ProcessState, pattern, p.output())
			}
			p.mu.Lock()
			p.seen = append(p.seen, line)
			p.mu.Unlock()
			if noise.MatchString(line) {
				continue
			}
			m := re.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s printed %q, want a line matching %q\n%s", p.name, line, pattern, p.output())
			}
			return m
		case <-deadline:
			t.Fatalf("%s printed no line matching %q in 30 s\n%s", p.name, pattern, p.output())
		}
	}
}

// wait waits for the program to exit and returns its exit code.
func (p *program) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s still running after 60 s\n%s", p.name, p.output())
	}
	return p.cmd.ProcessState.ExitCode()
}

// rest returns the lines not yet read (after the program exited).
func (p *program) rest() []string {
	var out []string
	for line := range p.lines {
		p.mu.Lock()
		p.seen = append(p.seen, line)
		p.mu.Unlock()
		out = append(out, line)
	}
	return out
}

func (p *program) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "stdout so far:\n  " + strings.Join(p.seen, "\n  ") + "\nstderr:\n  " + strings.ReplaceAll(p.stderr.String(), "\n", "\n  ")
}
