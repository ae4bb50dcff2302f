package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-io/herald/internal/freeport"
	"github.com/redis/go-redis/v9"
)

// ClusterOptions shape a test cluster. The zero value is three primaries
// with one replica each and a node timeout of one second, so that a
// failover after a primary dies takes a few seconds, not the default 15.
type ClusterOptions struct {
	// Primaries is the number of primaries. Default 3.
	Primaries int
	// Replicas is the number of replicas per primary. Default 1; -1 for none.
	Replicas int
	// NodeTimeout is cluster-node-timeout. Default 1s.
	NodeTimeout time.Duration
}

// Cluster is a real Redis Cluster of redis-server processes on loopback,
// made with `redis-cli --cluster create`, stopped by t.Cleanup (or, for
// the shared one, by StopShared).
type Cluster struct {
	t     testing.TB // nil for the shared cluster
	dir   string
	opts  ClusterOptions
	Nodes []*ClusterNode
}

// ClusterNode is one redis-server of a Cluster.
type ClusterNode struct {
	c      *Cluster
	Addr   string // client address, 127.0.0.1:port
	bus    int    // cluster bus port
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartCluster starts a cluster and waits until every node reports
// cluster_state:ok and agrees on the slots. It skips the test when
// redis-server or redis-cli is missing (fails instead under
// HERALD_REQUIRE_REDIS=1).
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	needBinaries(t)
	c, err := startCluster(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// needBinaries skips t when redis-server or redis-cli is missing (fails
// instead under HERALD_REQUIRE_REDIS=1).
func needBinaries(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("HERALD_REQUIRE_REDIS") == "1" {
				t.Fatalf("%s is not on PATH and HERALD_REQUIRE_REDIS=1", bin)
			}
			t.Skipf("%s is not on PATH (apt-get install redis-server); set HERALD_REQUIRE_REDIS=1 to fail instead", bin)
		}
	}
}

// startCluster starts a cluster for t, or, with t nil, one that lives
// until Stop.
func startCluster(t testing.TB, opts ClusterOptions) (*Cluster, error) {
	if opts.Primaries <= 0 {
		opts.Primaries = 3
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	} else if opts.Replicas < 0 {
		opts.Replicas = 0
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = time.Second
	}
	c := &Cluster{t: t, opts: opts}
	if t != nil {
		c.dir = t.TempDir()
		t.Cleanup(c.Stop)
	} else {
		dir, err := os.MkdirTemp("", "herald-cluster-")
		if err != nil {
			return nil, err
		}
		c.dir = dir
	}
	n := opts.Primaries * (1 + opts.Replicas)
	for i := 0; i < n; i++ {
		node, err := c.startNode()
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, node)
	}
	args := []string{"--cluster", "create"}
	for _, node := range c.Nodes {
		args = append(args, node.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(opts.Replicas), "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	// A replica may join its primary's slot ranges in CLUSTER SLOTS only
	// after the map is already healthy: a test that kills a primary with
	// a replica right after the start found none (TestClusterFailover).
	if err := c.waitReplicas(opts.Replicas, 30*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// waitReplicas waits until every slot range of the cluster lists n
// replicas and each replica's link to its primary is up.
func (c *Cluster) waitReplicas(n int, timeout time.Duration) error {
	return poll(timeout, "redis cluster replicas not ready", func(ctx context.Context) (bool, string) {
		slots, err := c.Slots(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range slots {
			if len(s.Replicas) < n {
				return false, fmt.Sprintf("slots %d-%d of %s have %d replicas of %d", s.Start, s.End, s.Primary, len(s.Replicas), n)
			}
		}
		return c.healthy(ctx)
	})
}

// poll calls check every 50 ms until it reports done, or fails after
// timeout with what and check's last reason.
func poll(timeout time.Duration, what string, check func(context.Context) (bool, string)) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for {
		ok, why := check(ctx)
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s after %v: %s", what, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// SharedCluster returns the cluster that the tests of a package share
// (three primaries with a replica each), started at its first use. Tests
// keep apart by key prefix; a test that kills nodes or moves slots should
// start a cluster of its own. The package's TestMain must call StopShared
// after m.Run. Like StartCluster, it skips t when redis-server is missing.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	needBinaries(t)
	shared.once.Do(func() { shared.c, shared.err = startCluster(nil, ClusterOptions{}) })
	if shared.err != nil {
		t.Fatalf("shared cluster: %v", shared.err)
	}
	return shared.c
}

// StopShared stops the shared cluster, if it was started.
func StopShared() {
	if shared.c != nil {
		shared.c.Stop()
	}
}

// startNode starts one cluster-enabled redis-server on free ports,
// retrying when a port was taken meanwhile.
func (c *Cluster) startNode() (*ClusterNode, error) {
	var last error
	for attempt := 0; attempt < 4; attempt++ {
		port, err := freeport.Port(false)
		if err != nil {
			return nil, err
		}
		bus, err := freeport.Port(false)
		if err != nil {
			return nil, err
		}
		node := &ClusterNode{c: c, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), bus: bus}
		if last = node.start(); last == nil {
			return node, nil
		}
	}
	return nil, last
}

func (n *ClusterNode) dir() string {
	_, port, _ := net.SplitHostPort(n.Addr)
	return filepath.Join(n.c.dir, port)
}

// start runs the node's redis-server (again, after Kill: its nodes.conf
// keeps its identity, so it rejoins the cluster) and waits for PING.
func (n *ClusterNode) start() error {
	dir := n.dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(n.Addr)
	cmd := exec.Command("redis-server",
		"--port", port, "--bind", "127.0.0.1",
		"--cluster-enabled", "yes",
		"--cluster-port", strconv.Itoa(n.bus),
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--cluster-node-timeout", strconv.FormatInt(n.c.opts.NodeTimeout.Milliseconds(), 10),
		"--dir", dir,
		"--repl-diskless-sync-delay", "0",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	rc := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rc.Close()
	deadline := time.Now().Add(20 * time.Second)
	for rc.Ping(context.Background()).Err() != nil {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited at start (port taken?)", n.Addr)
		default:
		}
		if time.Now().After(deadline) {
			n.Kill()
			return fmt.Errorf("redis-server on %s did not answer PING within 20s", n.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Kill ends the node's process with SIGKILL (as a crash would) and waits
// for it to exit.
func (n *ClusterNode) Kill() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd = nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Process.Signal(syscall.SIGCONT) // a paused node dies too
		<-exited
	}
}

// Pause stops the node's process (SIGSTOP) until Resume: it reads
// nothing, so a primary's replication stream to it backs up (what does not
// fit its socket buffers stays on the primary), and it answers nobody.
func (n *ClusterNode) Pause() { n.signal(syscall.SIGSTOP) }

// Resume continues a paused node (SIGCONT).
func (n *ClusterNode) Resume() { n.signal(syscall.SIGCONT) }

func (n *ClusterNode) signal(sig os.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// Restart starts a killed node again; it rejoins the cluster (as a replica
// if its primary role was taken over meanwhile). Not for the shared
// cluster.
func (n *ClusterNode) Restart() {
	n.c.t.Helper()
	if err := n.start(); err != nil {
		n.c.t.Fatal(err)
	}
}

// Running reports whether the node's process is up.
func (n *ClusterNode) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Client returns a plain client of this one node, closed at t's cleanup.
func (n *ClusterNode) Client(t testing.TB) *redis.Client {
	rc := redis.NewClient(&redis.Options{Addr: n.Addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// Addrs returns every node's address (seeds for a cluster client).
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Stop kills every node (and removes the shared cluster's files).
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
	if c.t == nil && c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// Node returns the node with address addr, or nil.
func (c *Cluster) Node(addr string) *ClusterNode {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// SlotRange is a range of hash slots served by one primary.
type SlotRange struct {
	Start, End int
	Primary    string   // address
	Replicas   []string // addresses
}

// Slots returns the slot map as one running node sees it (CLUSTER SLOTS).
func (c *Cluster) Slots(ctx context.Context) ([]SlotRange, error) {
	var lastErr error
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
		slots, err := rc.ClusterSlots(ctx).Result()
		_ = rc.Close()
		if err != nil {
			lastErr = err
			continue
		}
		out := make([]SlotRange, 0, len(slots))
		for _, s := range slots {
			r := SlotRange{Start: int(s.Start), End: int(s.End)}
			for i, node := range s.Nodes {
				if i == 0 {
					r.Primary = node.Addr
				} else {
					r.Replicas = append(r.Replicas, node.Addr)
				}
			}
			out = append(out, r)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
		return out, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no node is running")
	}
	return nil, lastErr
}

// Primaries returns the addresses of the primaries that serve slots, in
// slot order.
func (c *Cluster) Primaries(ctx context.Context) ([]string, error) {
	slots, err := c.Slots(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range slots {
		if !seen[s.Primary] {
			seen[s.Primary] = true
			out = append(out, s.Primary)
		}
	}
	return out, nil
}

// SlotOwner returns the address of the primary serving slot.
func (c *Cluster) SlotOwner(ctx context.Context, slot int) (string, error) {
	slots, err := c.Slots(ctx)
	if err != nil {
		return "", err
	}
	for _, s := range slots {
		if s.Start <= slot && slot <= s.End {
			return s.Primary, nil
		}
	}
	return "", fmt.Errorf("slot %d is not served", slot)
}

// WaitHealthy waits until every running node reports cluster_state:ok,
// all 16384 slots are served, every running node sees the same primaries
// for them (the nodes agree after a failover), and every running replica
// has synced with its primary (a replica that never synced cannot take
// over when its primary dies).
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	return poll(timeout, "redis cluster not healthy", c.healthy)
}

func (c *Cluster) healthy(ctx context.Context) (bool, string) {
	var want string
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		info, err := rc.ClusterInfo(ctx).Result()
		if err != nil {
			_ = rc.Close()
			return false, fmt.Sprintf("%s: %v", n.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384") {
			_ = rc.Close()
			return false, fmt.Sprintf("%s: state not ok", n.Addr)
		}
		slots, err := rc.ClusterSlots(ctx).Result()
		if err != nil {
			_ = rc.Close()
			return false, fmt.Sprintf("%s: %v", n.Addr, err)
		}
		repl, err := rc.Info(ctx, "replication").Result()
		_ = rc.Close()
		if err != nil {
			return false, fmt.Sprintf("%s: %v", n.Addr, err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return false, fmt.Sprintf("%s: replica not synced", n.Addr)
		}
		sort.Slice(slots, func(i, j int) bool { return slots[i].Start < slots[j].Start })
		var b strings.Builder
		for _, s := range slots {
			fmt.Fprintf(&b, "%d-%d@%s;", s.Start, s.End, s.Nodes[0].Addr)
			if c.Node(s.Nodes[0].Addr) == nil || !c.Node(s.Nodes[0].Addr).Running() {
				return false, fmt.Sprintf("%s still lists dead %s as a primary", n.Addr, s.Nodes[0].Addr)
			}
		}
		if want == "" {
			want = b.String()
		} else if want != b.String() {
			return false, "nodes disagree on the slot map"
		}
	}
	if want == "" {
		return false, "no node is running"
	}
	return true, ""
}

// MoveSlots migrates n slots from the primary at from to the primary at to
// while the cluster serves (redis-cli --cluster reshard), then waits until
// the cluster is healthy again.
func (c *Cluster) MoveSlots(from, to string, n int) error {
	ids := map[string]string{}
	rc := redis.NewClient(&redis.Options{Addr: from, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	nodes, err := rc.ClusterNodes(context.Background()).Result()
	_ = rc.Close()
	if err != nil {
		return err
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		ids[addr] = f[0]
	}
	if ids[from] == "" || ids[to] == "" {
		return fmt.Errorf("unknown node %s or %s", from, to)
	}
	out, err := exec.Command("redis-cli", "--cluster", "reshard", from,
		"--cluster-from", ids[from], "--cluster-to", ids[to],
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes").CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
	return c.WaitHealthy(30 * time.Second)
}

// MoveSlot migrates one slot, with its keys, to the primary at to, the way
// redis-cli --cluster reshard does (IMPORTING, MIGRATING, MIGRATE of the
// keys a few at a time, SETSLOT NODE), while the cluster serves; then it
// waits until the cluster is healthy again. between runs after the slot is
// marked migrating and before its keys move (nil for nothing), so that a
// test can act in the middle of the migration.
func (c *Cluster) MoveSlot(slot int, to string, between func()) error {
	ctx := context.Background()
	from, err := c.SlotOwner(ctx, slot)
	if err != nil {
		return err
	}
	if from == to {
		return nil
	}
	client := func(addr string) *redis.Client {
		return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, MaxRetries: -1})
	}
	src, dst := client(from), client(to)
	defer src.Close()
	defer dst.Close()
	srcID, err := src.ClusterMyID(ctx).Result()
	if err != nil {
		return err
	}
	dstID, err := dst.ClusterMyID(ctx).Result()
	if err != nil {
		return err
	}
	if err := dst.Do(ctx, "cluster", "setslot", slot, "importing", srcID).Err(); err != nil {
		return fmt.Errorf("setslot importing: %w", err)
	}
	if err := src.Do(ctx, "cluster", "setslot", slot, "migrating", dstID).Err(); err != nil {
		return fmt.Errorf("setslot migrating: %w", err)
	}
	if between != nil {
		between()
	}
	host, port, _ := net.SplitHostPort(to)
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 10).Result()
		if err != nil {
			return fmt.Errorf("getkeysinslot: %w", err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"migrate", host, port, "", 0, 5000, "replace", "keys"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	// The destination first, then the source, then every other primary,
	// as redis-cli does.
	if err := dst.Do(ctx, "cluster", "setslot", slot, "node", dstID).Err(); err != nil {
		return fmt.Errorf("setslot node (destination): %w", err)
	}
	if err := src.Do(ctx, "cluster", "setslot", slot, "node", dstID).Err(); err != nil {
		return fmt.Errorf("setslot node (source): %w", err)
	}
	prims, _ := c.Primaries(ctx)
	for _, p := range prims {
		if p == from || p == to {
			continue
		}
		rc := client(p)
		_ = rc.Do(ctx, "cluster", "setslot", slot, "node", dstID).Err()
		_ = rc.Close()
	}
	return c.WaitHealthy(30 * time.Second)
}
