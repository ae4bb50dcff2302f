package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// server is a process the bench started for one run: the floor, or a
// fresh `herald serve`. The bench ends it (by its PID) when the run is
// over.
type server struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser // the floor's: closing it ends the floor
	done  chan struct{}  // closed once the process has exited
	ep    endpoint
}

// endpoint is where a run finds its server.
type endpoint struct {
	ws        []string
	grpcAddr  string
	httpAddrs []string // /metrics
	restAddr  string
	pids      []int
	pprofAddr string
	tls       bool // the server speaks TLS (o.tlsBase verifies it)
}

// apply points o at e.
func (e endpoint) apply(o *options) {
	o.ws, o.grpcAddr, o.httpAddrs, o.restAddr, o.pids = e.ws, e.grpcAddr, e.httpAddrs, e.restAddr, e.pids
	o.pprofAddr = e.pprofAddr
	o.tlsCfg = nil
	if e.tls {
		o.tlsCfg = o.tlsBase
	}
}

func selfExe() string {
	exe, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return exe
}

func (s *server) wait() {
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
}

// startFloor starts the floor in a process of its own on loopback ports.
func startFloor(ctx context.Context) (*server, error) {
	cmd := exec.Command(selfExe(), "bench", "floor", "-http", "127.0.0.1:0", "-grpc", "127.0.0.1:0", "-exit-on-eof")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the floor: %w", err)
	}
	s := &server{name: "floor", cmd: cmd, stdin: in}
	s.wait()
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(out)
		line, _ := br.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, br)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	var a floorAddrs
	if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "FLOOR "); !ok || json.Unmarshal([]byte(rest), &a) != nil {
		s.stop()
		return nil, fmt.Errorf("the floor did not start (it said %q)", line)
	}
	s.ep = endpoint{ws: []string{"ws://" + a.HTTP + "/ws"}, grpcAddr: a.GRPC, httpAddrs: []string{a.HTTP}, restAddr: a.HTTP, pids: []int{cmd.Process.Pid}, pprofAddr: a.HTTP}
	return s, nil
}

// freeAddrs returns n loopback addresses with ports that were free a
// moment ago.
func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// startHerald starts `bin serve --config o.serveConfig` on loopback ports
// and waits until it is ready.
func startHerald(ctx context.Context, o *options, name, bin string) (*server, error) {
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--config", o.serveConfig, "--grpc-addr", addrs[0], "--http-addr", addrs[1], "--drain-delay", "0s"}
	if o.jwtSecret != "" {
		args = append(args, "--jwt-secret", o.jwtSecret)
	}
	if o.apiKey != "" {
		args = append(args, "--api-keys", "bench="+o.apiKey)
	}
	if o.tlsCert != "" {
		args = append(args, "--tls-cert-file", o.tlsCert, "--tls-key-file", o.tlsKey)
	}
	pprofAddr := ""
	if o.pprofDir != "" {
		pprofAddr = addrs[2]
		args = append(args, "--pprof-addr", pprofAddr)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s := &server{name: name, cmd: cmd}
	s.wait()
	ws, tc := "ws://", (*tls.Config)(nil)
	if o.tlsCert != "" {
		ws, tc = "wss://", o.tlsBase
	}
	hc, scheme := httpFor(tc)
	s.ep = endpoint{ws: []string{ws + addrs[1] + "/ws"}, grpcAddr: addrs[0], httpAddrs: []string{addrs[1]}, restAddr: addrs[1], pids: []int{cmd.Process.Pid}, pprofAddr: pprofAddr, tls: tc != nil}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+addrs[1]+"/readyz", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s serve exited before it was ready", bin)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New(bin + " serve was not ready within 30s")
		}
	}
}

// stop ends the process: the floor by closing its stdin, Herald by
// SIGTERM (a graceful drain); after 20 s it is killed.
func (s *server) stop() {
	if s.stdin != nil {
		_ = s.stdin.Close()
	} else {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
