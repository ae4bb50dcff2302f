package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/freeport"
	"github.com/herald-io/herald/internal/syncbuf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// Tests on a real herald process: the binary is built once per test run.

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func heraldBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the herald binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "herald-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "herald")
		// -buildvcs=auto: stamp the revision as a user's build from a
		// checkout would (GOFLAGS may say otherwise on a CI machine).
		out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// freePort returns a loopback address on a free port below the ephemeral
// range (see freeport), for a server started in another process.
func freePort(t *testing.T) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// proc is a running `herald serve`.
type proc struct {
	cmd        *exec.Cmd
	grpc, http string
	log        *syncbuf.Buffer
	done       chan error
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	bin := heraldBinary(t)
	var p *proc
	for attempt := 0; attempt < 3; attempt++ { // a free port may be taken meanwhile
		p = &proc{grpc: freePort(t), http: freePort(t), log: &syncbuf.Buffer{}, done: make(chan error, 1)}
		p.cmd = exec.Command(bin, append([]string{"serve", "--grpc-addr", p.grpc, "--http-addr", p.http}, args...)...)
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.done <- p.cmd.Wait() }()
		if p.waitReady(10 * time.Second) {
			t.Cleanup(func() {
				_ = p.cmd.Process.Kill()
				<-p.done
				if t.Failed() {
					t.Logf("herald log:\n%s", p.log.String())
				}
			})
			return p
		}
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	t.Fatalf("herald did not become ready:\n%s", p.log.String())
	return nil
}

func (p *proc) waitReady(d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.done:
			p.done <- errors.New("exited")
			return false
		default:
		}
		resp, err := http.Get("http://" + p.http + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
	}
	return false
}

// wsClient is a browser stand-in subscribed to one channel; it records
// every publication offset and the disconnect frame.
type wsClient struct {
	ws         *websocket.Conn
	mu         sync.Mutex
	offsets    []uint64
	disconnect *heraldv1.DisconnectFrame
	closeErr   error
	done       chan struct{}
}

func subscribeWS(t *testing.T, p *proc, channel string) *wsClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.http+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{ws: ws, done: make(chan struct{})}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"`+channel+`"}}`)); err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	go func() {
		defer close(c.done)
		once := sync.Once{}
		for {
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, msg, err := ws.ReadMessage()
			if err != nil {
				c.mu.Lock()
				c.closeErr = err
				c.mu.Unlock()
				return
			}
			for _, line := range bytes.Split(msg, []byte("\n")) {
				fr := &heraldv1.ServerFrame{}
				if protojson.Unmarshal(line, fr) != nil {
					continue
				}
				c.mu.Lock()
				switch {
				case fr.GetSubscribe() != nil:
					once.Do(func() { close(subscribed) })
				case fr.GetPub() != nil:
					c.offsets = append(c.offsets, fr.GetPub().Offset)
				case fr.GetDisconnect() != nil:
					c.disconnect = fr.GetDisconnect()
				}
				c.mu.Unlock()
			}
		}
	}()
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("no subscribe reply")
	}
	return c
}

func (c *wsClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.offsets)
}

// publisher runs one PublishStream, publishing as fast as acks allow
// (at most 64 unacknowledged), until the stream fails.
type publisher struct {
	mu   sync.Mutex
	acks []uint64
	err  error
	done chan struct{}
}

func startPublisher(t *testing.T, p *proc, channel string) *publisher {
	t.Helper()
	cc, err := grpc.NewClient(p.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	stream, err := heraldv1.NewHeraldServiceClient(cc).PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pb := &publisher{done: make(chan struct{})}
	window := make(chan struct{}, 64)
	go func() {
		for seq := uint64(1); ; seq++ {
			window <- struct{}{}
			err := stream.Send(&heraldv1.PublishStreamRequest{Sequence: seq, Publish: &heraldv1.PublishRequest{
				Channel: channel, Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewNumberValue(float64(seq))}}})
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer close(pb.done)
		for {
			r, err := stream.Recv()
			if err != nil {
				pb.mu.Lock()
				pb.err = err
				pb.mu.Unlock()
				return
			}
			<-window
			if ok := r.GetOk(); ok != nil {
				pb.mu.Lock()
				pb.acks = append(pb.acks, ok.Position.Offset)
				pb.mu.Unlock()
			}
		}
	}()
	return pb
}

func (pb *publisher) acked() []uint64 {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return append([]uint64(nil), pb.acks...)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// checkReceived asserts that c received a gap-free, duplicate-free run of
// offsets that includes every acknowledged one.
func checkReceived(t *testing.T, name string, c *wsClient, acks []uint64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	got := map[uint64]bool{}
	for i, o := range c.offsets {
		if i > 0 && o != c.offsets[i-1]+1 {
			t.Fatalf("%s: offset %d after %d (gap or duplicate)", name, o, c.offsets[i-1])
		}
		got[o] = true
	}
	for _, a := range acks {
		if !got[a] {
			t.Fatalf("%s: acknowledged offset %d was not delivered (received %d..%d)", name, a, c.offsets[0], c.offsets[len(c.offsets)-1])
		}
	}
}

// TestDrainOnSIGTERM: SIGTERM during a publish stream with browsers
// subscribed. Every publication acknowledged to the backend reaches every
// browser, the browsers get `disconnect` 4006 with reconnect and a
// reconnect delay, the stream ends with an error after its last ack, and
// the process exits 0 within shutdown_timeout.
func TestDrainOnSIGTERM(t *testing.T) {
	const timeout = 5 * time.Second
	p := startProc(t, "--shutdown-timeout", timeout.String())
	var clients []*wsClient
	for i := 0; i < 4; i++ {
		clients = append(clients, subscribeWS(t, p, "chat:drain"))
	}
	pb := startPublisher(t, p, "chat:drain")
	waitUntil(t, "500 acks", func() bool { return len(pb.acked()) >= 500 })
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.log.String())
		}
	case <-time.After(timeout + 2*time.Second):
		t.Fatalf("still running %v after SIGTERM", time.Since(start))
	}
	elapsed := time.Since(start)
	<-pb.done
	acks := pb.acked()
	if pb.err == nil {
		t.Fatal("publish stream did not fail")
	}
	for i, c := range clients {
		<-c.done
		checkReceived(t, fmt.Sprintf("client %d", i), c, acks)
		d := c.disconnect
		if d == nil || d.Code != 4006 || !d.Reconnect || d.ReconnectDelayMs == 0 {
			t.Fatalf("client %d: disconnect frame %v, want 4006 with reconnect and a delay", i, d)
		}
		var ce *websocket.CloseError
		if !errors.As(c.closeErr, &ce) || ce.Code != 4006 {
			t.Fatalf("client %d: close %v, want 4006", i, c.closeErr)
		}
	}
	t.Logf("exit 0 in %v; %d acks, all delivered to %d browsers; stream ended with %v", elapsed, len(acks), len(clients), pb.err)
}

// TestKillDuringPublishStream: kill -9 of a node while a backend streams
// publications. With the memory engine history dies with the process, so
// what can be asserted is: the stream's client sees an error at once, the
// browser sees the connection drop, and what the browser got is gap-free,
// duplicate-free and includes every publication acknowledged before a
// point where both sides were seen in step.
func TestKillDuringPublishStream(t *testing.T) {
	p := startProc(t)
	c := subscribeWS(t, p, "chat:kill")
	pb := startPublisher(t, p, "chat:kill")
	waitUntil(t, "300 acks", func() bool { return len(pb.acked()) >= 300 })
	synced := pb.acked()
	waitUntil(t, "the browser in step", func() bool { return c.count() >= len(synced) })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pb.done:
	case <-time.After(5 * time.Second):
		t.Fatal("publish stream did not fail within 5s of kill -9")
	}
	<-c.done
	if pb.err == nil {
		t.Fatal("publish stream ended without an error")
	}
	var ce *websocket.CloseError
	if errors.As(c.closeErr, &ce) && ce.Code != websocket.CloseAbnormalClosure {
		t.Fatalf("browser: %v, want an abnormal closure", c.closeErr)
	}
	checkReceived(t, "browser", c, synced)
	t.Logf("killed after %d acks (%d in step); browser received %d; stream: %v", len(pb.acked()), len(synced), c.count(), pb.err)
}
