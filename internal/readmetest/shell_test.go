package readmetest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-io/herald/internal/syncbuf"
)

// prelude is sourced by every shell that runs README commands: curl
// fails (exit 22, with the body) on an HTTP error status, which it
// otherwise prints as if it were the answer, and keeps its progress meter
// to itself.
const prelude = `curl() { command curl --fail-with-body --silent --show-error "$@"; }
`

// A shell is one bash process that runs a section's commands one after
// the other, so that they share variables, functions and background jobs
// as in a terminal. It runs in its own process group, which stop ends
// (with every background job of the section).
type shell struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncbuf.Buffer
	mark   string
}

func startShell(t *testing.T, dir string, env []string) *shell {
	t.Helper()
	var m [8]byte
	_, _ = rand.Read(m[:])
	sh := &shell{lines: make(chan string, 1024), stderr: &syncbuf.Buffer{}, mark: "__readmetest_" + hex.EncodeToString(m[:])}
	sh.cmd = exec.Command("bash", "--noprofile", "--norc")
	sh.cmd.Dir = dir
	sh.cmd.Env = env
	sh.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sh.cmd.Stderr = sh.stderr
	sh.cmd.WaitDelay = 2 * time.Second // a daemon that left the group keeps stderr open
	var err error
	if sh.stdin, err = sh.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := sh.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				sh.lines <- line
			}
			if err != nil {
				close(sh.lines)
				return
			}
		}
	}()
	if _, err := io.WriteString(sh.stdin, prelude); err != nil {
		t.Fatal(err)
	}
	return sh
}

// run runs one command (its stdin is /dev/null, so that it cannot eat
// the commands after it) and returns its stdout and exit status.
func (sh *shell) run(text string, timeout time.Duration) (out string, rc int, err error) {
	script := fmt.Sprintf("{\n%s\n} </dev/null\nprintf '\\n%s %%d\\n' $?\n", text, sh.mark)
	if _, err := io.WriteString(sh.stdin, script); err != nil {
		return "", -1, err
	}
	var b strings.Builder
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-sh.lines:
			if !ok {
				return b.String(), -1, fmt.Errorf("the shell ended")
			}
			if rest, found := strings.CutPrefix(line, sh.mark+" "); found {
				fmt.Sscan(rest, &rc)
				// The newline printed before the mark.
				return strings.TrimSuffix(b.String(), "\n"), rc, nil
			}
			b.WriteString(line)
		case <-deadline:
			return b.String(), -1, fmt.Errorf("still running after %v", timeout)
		}
	}
}

// stop ends the shell's process group: the shell and whatever it left
// running in the background.
func (sh *shell) stop() {
	sh.stdin.Close()
	killGroup(sh.cmd)
}

// killGroup ends the process group that c leads (c was started with
// Setpgid), and waits for c.
func killGroup(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// A stream is a command that prints until stopped (a subscriber), run
// in the background by a bash of its own, in its own process group.
type stream struct {
	c      *command
	text   string // as run
	cmd    *exec.Cmd
	stdout *syncbuf.Buffer
	stderr *syncbuf.Buffer
	mu     sync.Mutex
	exited bool
	err    error
	done   chan struct{}
	// checked counts the records that output blocks have shown.
	checked int
}

func startStream(c *command, text, dir string, env []string) (*stream, error) {
	s := &stream{c: c, text: text, stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command("bash", "--noprofile", "--norc", "-c", prelude+text)
	s.cmd.Dir = dir
	s.cmd.Env = env
	s.cmd.Stdout = s.stdout
	s.cmd.Stderr = s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.WaitDelay = 2 * time.Second
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		err := s.cmd.Wait()
		s.mu.Lock()
		s.exited, s.err = true, err
		s.mu.Unlock()
		close(s.done)
	}()
	return s, nil
}

func (s *stream) status() (exited bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exited, s.err
}

func (s *stream) stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}
