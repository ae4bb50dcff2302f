package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/internal/deploytest"
	"github.com/herald-io/herald/internal/redistest"
)

// presenceOf lists the clients of a channel's presence over REST.
func presenceOf(t *testing.T, p *proc, channel string) []string {
	t.Helper()
	resp, err := http.Get("http://" + p.http + "/v1/channels/" + channel + "/presence")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Clients []struct {
			Client string `json:"client"`
		} `json:"clients"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil {
		return nil
	}
	var out []string
	for _, c := range r.Clients {
		out = append(out, c.Client)
	}
	slices.Sort(out)
	return out
}

// presenceTrio starts three herald processes on one real Redis with the
// given presence TTL ("" default), a browser stand-in on each watching
// chat:lobby's presence as the console does (a snapshot at every
// (re)subscription, then join and leave events), and waits until every
// list holds the three clients.
func presenceTrio(t *testing.T, ttl string) (r *redistest.Server, procs []*proc, watchers []*deploytest.Watcher, all []string, converged func(what string, want []string, ws []*deploytest.Watcher, bound time.Duration)) {
	t.Helper()
	r = redistest.Start(t)
	args := []string{"--engine", "redis", "--redis-addrs", r.Addr, "--redis-prefix", fmt.Sprintf("presence%d", time.Now().UnixNano())}
	if ttl != "" {
		args = append(args, "--redis-presence-ttl", ttl)
	}
	procs = []*proc{startProc(t, args...), startProc(t, args...), startProc(t, args...)}
	for _, p := range procs {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.http+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Close() })
		w := deploytest.WatchPresence(t, ws, "", "chat:lobby")
		watchers = append(watchers, w)
		all = append(all, w.Client())
	}
	slices.Sort(all)
	converged = func(what string, want []string, ws []*deploytest.Watcher, bound time.Duration) {
		t.Helper()
		start := time.Now()
		// Poll well past the bound, so that a slow machine reports how
		// late convergence came rather than failing at the bound.
		for deadline := start.Add(bound + 10*time.Second); ; time.Sleep(20 * time.Millisecond) {
			ok := slices.Equal(presenceOf(t, procs[0], "chat:lobby"), want)
			for _, w := range ws {
				ok = ok && slices.Equal(w.Members(), want)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				var lists []string
				for _, w := range ws {
					lists = append(lists, fmt.Sprint(w.Members()))
				}
				t.Fatalf("%s: presence %v, watchers %v, want %v everywhere", what, presenceOf(t, procs[0], "chat:lobby"), lists, want)
			}
		}
		took := time.Since(start)
		t.Logf("%s: converged in %v (bound %v)", what, took.Round(time.Millisecond), bound)
		if took > bound {
			t.Errorf("%s: took %v, beyond the bound of %v", what, took, bound)
		}
	}
	converged("start", all, watchers, 2*time.Second)
	return r, procs, watchers, all, converged
}

// TestPresenceConvergesAfterRedisRestart: redis-server is restarted
// without persistence, so every presence entry is lost, with the default
// presence timing (30 s TTL, a refresh every 10 s). On main the nodes
// restored their entries at their next refresh, silently, and the
// console's list stayed "Online (0)" while Presence listed everyone; now
// each node re-creates its entries, each with a join, as soon as its Redis
// connection is back, and every watcher's list and Presence hold the three
// clients again within 2 s, long before any refresh.
func TestPresenceConvergesAfterRedisRestart(t *testing.T) {
	r, _, watchers, all, converged := presenceTrio(t, "")
	r.Stop()
	time.Sleep(500 * time.Millisecond) // the nodes notice
	r.Start()
	converged("after the Redis restart", all, watchers, 2*time.Second)
}

// TestPresenceConvergesAfterNodeDeath: one of three nodes (presence_ttl
// 3s, a refresh every second) is killed with SIGKILL. On main its client
// stayed in the other consoles' lists forever (expired entries were
// dropped by reads, without a leave); now a live node's sweep removes the
// entry once it expires and sends one leave, which each remaining watcher
// gets exactly once, within presence_ttl + one refresh (1.5 s of slack),
// and Presence agrees.
func TestPresenceConvergesAfterNodeDeath(t *testing.T) {
	_, procs, watchers, all, converged := presenceTrio(t, "3s")
	dead := watchers[2].Client()
	if err := procs[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	alive := slices.DeleteFunc(slices.Clone(all), func(c string) bool { return c == dead })
	converged("after a node's death", alive, watchers[:2], 3*time.Second+time.Second+1500*time.Millisecond)
	time.Sleep(2 * time.Second) // two more sweeps
	for i, w := range watchers[:2] {
		if n := w.Leaves(dead); n != 1 {
			t.Errorf("watcher %d got %d leave events for the dead node's client, want exactly 1", i, n)
		}
	}
}
