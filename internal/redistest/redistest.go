// Package redistest runs real redis-server processes for tests: on a free
// loopback port, without persistence, stopped by t.Cleanup. Tests never
// use an imitation of Redis.
package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/internal/freeport"
	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process started for a test.
type Server struct {
	t      testing.TB
	Addr   string
	opts   Options
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// Options shape a Server. The zero value is a plain redis-server.
type Options struct {
	// Args are more redis-server arguments (e.g. "--user", "…").
	Args []string
	// TLS serves TLS only, on Addr, with this certificate and key (and
	// CAFile to verify client certificates, if any are sent); Probe is
	// the client side that Start's readiness PING uses.
	TLS *TLS
}

// TLS is the TLS of a Server.
type TLS struct {
	CertFile, KeyFile, CAFile string
	Probe                     *tls.Config
}

// Start starts redis-server, or skips the test when it is not installed
// (fails instead when HERALD_REQUIRE_REDIS=1, as scripts/test sets).
func Start(t testing.TB) *Server { t.Helper(); return StartWith(t, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("HERALD_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis-server is not on PATH and HERALD_REQUIRE_REDIS=1")
		}
		t.Skip("redis-server is not on PATH (apt-get install redis-server); set HERALD_REQUIRE_REDIS=1 to fail instead")
	}
	// The port is free when chosen but may be taken before redis-server
	// binds it (other tests run in parallel): then try another.
	for attempt := 0; ; attempt++ {
		addr, err := freeport.Addr()
		if err != nil {
			t.Fatal(err)
		}
		r := &Server{t: t, Addr: addr, opts: opts}
		if err := r.start(); err != nil {
			if attempt < 3 {
				continue
			}
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
		return r
	}
}

// Start starts the server again on its address (after Stop) and waits
// until it answers PING.
func (r *Server) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *Server) start() error {
	_, port, _ := net.SplitHostPort(r.Addr)
	args := []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"}
	probe := &redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond}
	if tc := r.opts.TLS; tc != nil {
		args = append(args, "--port", "0", "--tls-port", port, "--tls-cert-file", tc.CertFile, "--tls-key-file", tc.KeyFile,
			"--tls-auth-clients", "optional")
		if tc.CAFile != "" {
			args = append(args, "--tls-ca-cert-file", tc.CAFile)
		}
		probe.TLSConfig = tc.Probe
	}
	args = append(args, r.opts.Args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
	c := redis.NewClient(probe)
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for err := c.Ping(context.Background()).Err(); err != nil && !redis.HasErrorPrefix(err, "NOAUTH"); err = c.Ping(context.Background()).Err() {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited at start (port taken?)", r.Addr)
		default:
		}
		if time.Now().After(deadline) {
			r.Stop()
			return fmt.Errorf("redis-server on %s did not answer PING within 20s", r.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Stop kills the server and waits for it to exit.
func (r *Server) Stop() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-exited
	}
}
