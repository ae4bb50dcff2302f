package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/herald-io/herald/client"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/freeport"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/node"
)

// startNode starts a core on a free loopback port (or on addr, to restart
// one in the place of another), shut down by t.Cleanup.
func startNode(t *testing.T, edit func(*config.Config)) *node.Node {
	t.Helper()
	cfg := config.Default()
	// Tests stop a node and start another at its gRPC address, which the
	// client keeps dialling meanwhile: from the ephemeral range, a dial's
	// own local port could take it (or connect to itself) in between.
	grpcAddr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	cfg.GRPCAddr, cfg.HTTPAddr = grpcAddr, "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(n) })
	return n
}

func stopNode(n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
}

// onRedis configures a node for the Redis engine of r, under prefix.
func onRedis(r *redistest.Server, prefix string) func(*config.Config) {
	return func(c *config.Config) {
		c.Engine = "redis"
		c.Redis.Addrs = []string{r.Addr}
		c.Redis.Prefix = prefix
	}
}

// at binds a node's gRPC listener to addr.
func at(addr string, edit func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		if edit != nil {
			edit(c)
		}
		c.GRPCAddr = addr
	}
}

func dial(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitFor polls cond until it holds, failing the test after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// history reads a channel's whole history.
func history(t *testing.T, c *client.Client, channel string) []*heraldv1.Publication {
	t.Helper()
	var out []*heraldv1.Publication
	req := &heraldv1.HistoryRequest{Channel: channel, Limit: 1000}
	for {
		resp, err := c.Service().History(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.Publications...)
		if len(resp.Publications) < 1000 {
			return out
		}
		last := resp.Publications[len(resp.Publications)-1]
		req.Since = &heraldv1.StreamPosition{Offset: last.Offset, Epoch: last.Epoch}
	}
}

func jsonN(n int) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, n)) }

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
