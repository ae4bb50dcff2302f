package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/node"
)

// TestUnknownEngine: a configuration that names an engine node does not
// have fails at start, naming the engines there are.
func TestUnknownEngine(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Engine = "etcd"
	n, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err == nil {
		_ = n.Shutdown(context.Background())
		t.Fatal("a node started on engine etcd")
	}
	if !strings.Contains(err.Error(), `engine "etcd"`) || !strings.Contains(err.Error(), "memory, redis") {
		t.Fatalf("error %q does not name the engine and the choices", err)
	}
}

// TestNodeOnRedisCluster: a node given several Redis addresses runs on
// them as a Redis Cluster (Info says redis), publishes and delivers, and
// is ready; readiness follows the cluster.
func TestNodeOnRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, redistest.ClusterOptions{Replicas: -1})
	n := startNode(t, func(c *config.Config) {
		c.Engine = "redis"
		c.Redis.Addrs = rc.Addrs()[:2] // seeds; the client finds the rest
		c.Redis.Prefix = "node-cluster"
	})
	client := grpcClient(t, n)
	ctx := context.Background()
	info, err := client.Info(ctx, &heraldv1.InfoRequest{})
	if err != nil || info.Engine != "redis" {
		t.Fatalf("info %v %v", info, err)
	}
	stream, err := client.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: "chat:cluster"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Publish(ctx, &heraldv1.PublishRequest{Channel: "chat:cluster", Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(`{"n":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetPublication().GetOffset() != resp.Position.Offset {
		t.Fatalf("delivery %v %v, want offset %d", ev, err, resp.Position.Offset)
	}
	ready := func() int {
		code, _ := httpDo(t, "GET", "http://"+n.HTTPAddr.String()+"/readyz", "")
		return code
	}
	if code := ready(); code != 200 {
		t.Fatalf("readyz = %d", code)
	}
	rc.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for ready() != 503 {
		if time.Now().After(deadline) {
			t.Fatal("still ready with the whole cluster down")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
