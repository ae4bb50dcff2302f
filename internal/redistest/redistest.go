// Package redistest runs real redis-server processes for tests: on a free
// loopback port, without persistence, stopped by t.Cleanup. Tests never
// use an imitation of Redis.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process started for a test.
type Server struct {
	t      testing.TB
	Addr   string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// Start starts redis-server, or skips the test when it is not installed
// (fails instead when HERALD_REQUIRE_REDIS=1, as scripts/test sets).
func Start(t testing.TB) *Server {
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
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		_ = lis.Close()
		r := &Server{t: t, Addr: addr}
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
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
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
