package bench

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
)

// The floor is what a workload costs on this machine with nothing but the
// work itself: a minimal broadcaster with no authentication, no history,
// no limits beyond a bounded queue per connection, and no protocol beyond
// answering connect and subscribe and pushing publications. It speaks
// enough of Herald's surface for the bench to drive it exactly as it
// drives Herald:
//
//   - /ws: gorilla/websocket, subprotocol herald.json. {"id":N,"connect":…}
//     is answered; a token's subject (read, never verified) subscribes the
//     connection to its personal channel user:<sub>, announced with a
//     `subscribed` push; {"id":N,"subscribe":{"channel":C}} is answered.
//   - gRPC Publish and PublishStream of herald.v1.HeraldService, and REST
//     POST /v1/channels/{channel}/publish with {"data": …}.
//   - /metrics (the Go runtime's figures, for memory per connection) and
//     /debug/pprof/.
//
// A publication gets the channel's next offset and is encoded once into
// Herald's publication frame ({"pub":{"channel","offset","epoch","data",
// "time_unix_ms"}}); the same bytes are queued to every subscriber. Each
// connection's writer exists only while it has something to send and
// writes everything queued as one text message (frames separated by "\n",
// as Herald packs them), with gorilla's WriteMessage and a pooled write
// buffer, so that under load frames coalesce.
type floorServer struct {
	up    websocket.Upgrader
	epoch string
	conns atomic.Int64

	mu    sync.RWMutex
	chans map[string]*floorChan
}

type floorChan struct {
	name   []byte // quoted
	mu     sync.Mutex
	offset uint64
	subs   []*floorConn
}

type floorConn struct {
	ws *websocket.Conn

	mu      sync.Mutex
	queue   [][]byte
	spare   [][]byte
	writing bool
	closed  bool
}

// floorQueue bounds the frames queued to one connection; beyond it the
// connection is closed (a slow consumer).
const floorQueue = 4096

var floorWritePool sync.Pool

func newFloor() *floorServer {
	f := &floorServer{chans: make(map[string]*floorChan), epoch: "floor-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	f.up = websocket.Upgrader{
		ReadBufferSize:  256,
		WriteBufferSize: 16 << 10,
		WriteBufferPool: &floorWritePool,
		Subprotocols:    []string{"herald.json"},
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	return f
}

func (f *floorServer) channel(name string) *floorChan {
	f.mu.RLock()
	ch := f.chans[name]
	f.mu.RUnlock()
	if ch != nil {
		return ch
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch = f.chans[name]; ch == nil {
		q, _ := json.Marshal(name)
		ch = &floorChan{name: q}
		f.chans[name] = ch
	}
	return ch
}

// publish queues data (JSON text, taken as it is) to the channel's
// subscribers and returns its offset.
func (f *floorServer) publish(channel string, data []byte) uint64 {
	ch := f.channel(channel)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.offset++
	fr := make([]byte, 0, 96+len(ch.name)+len(f.epoch)+len(data))
	fr = append(fr, `{"pub":{"channel":`...)
	fr = append(fr, ch.name...)
	fr = append(fr, `,"offset":"`...)
	fr = strconv.AppendUint(fr, ch.offset, 10)
	fr = append(fr, `","epoch":"`...)
	fr = append(fr, f.epoch...)
	fr = append(fr, `","data":`...)
	fr = append(fr, data...)
	fr = append(fr, `,"time_unix_ms":"`...)
	fr = strconv.AppendInt(fr, time.Now().UnixMilli(), 10)
	fr = append(fr, `"}}`...)
	for _, c := range ch.subs {
		c.enqueue(fr)
	}
	return ch.offset
}

func (f *floorServer) subscribe(channel string, c *floorConn) {
	ch := f.channel(channel)
	ch.mu.Lock()
	ch.subs = append(ch.subs, c)
	ch.mu.Unlock()
}

func (f *floorServer) unsubscribe(channel string, c *floorConn) {
	ch := f.channel(channel)
	ch.mu.Lock()
	for i, s := range ch.subs {
		if s == c {
			ch.subs[i] = ch.subs[len(ch.subs)-1]
			ch.subs[len(ch.subs)-1] = nil
			ch.subs = ch.subs[:len(ch.subs)-1]
			break
		}
	}
	ch.mu.Unlock()
}

func (c *floorConn) enqueue(fr []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= floorQueue {
		c.closed = true
		c.mu.Unlock()
		_ = c.ws.Close()
		return
	}
	c.queue = append(c.queue, fr)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// writeLoop writes what is queued, everything queued at once as one
// message, until the queue is empty.
func (c *floorConn) writeLoop() {
	var msg []byte
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closed {
			c.writing = false
			c.mu.Unlock()
			return
		}
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		msg = msg[:0]
		for i, fr := range batch {
			if i > 0 {
				msg = append(msg, '\n')
			}
			msg = append(msg, fr...)
		}
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
		c.mu.Unlock()
		if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			c.mu.Lock()
			c.closed, c.writing = true, false
			c.mu.Unlock()
			_ = c.ws.Close()
			return
		}
		if cap(msg) > 64<<10 {
			msg = nil
		}
	}
}

// serveWS upgrades and reads the connection's frames until it ends.
func (f *floorServer) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := f.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &floorConn{ws: ws}
	f.conns.Add(1)
	go f.readLoop(c)
}

func (f *floorServer) readLoop(c *floorConn) {
	var subs []string
	defer func() {
		for _, ch := range subs {
			f.unsubscribe(ch, c)
		}
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		_ = c.ws.Close()
		f.conns.Add(-1)
	}()
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(msg), "\n") {
			var fr struct {
				ID      uint32 `json:"id"`
				Connect *struct {
					Token string `json:"token"`
				} `json:"connect"`
				Subscribe *struct {
					Channel string `json:"channel"`
				} `json:"subscribe"`
			}
			if json.Unmarshal([]byte(line), &fr) != nil {
				continue
			}
			id := strconv.FormatUint(uint64(fr.ID), 10)
			switch {
			case fr.Connect != nil:
				c.enqueue([]byte(`{"id":` + id + `,"connect":{"client":"floor"}}`))
				if sub := tokenSubject(fr.Connect.Token); sub != "" {
					ch := "user:" + sub
					f.subscribe(ch, c)
					subs = append(subs, ch)
					q, _ := json.Marshal(ch)
					c.enqueue([]byte(`{"subscribed":{"channel":` + string(q) + `}}`))
				}
			case fr.Subscribe != nil:
				f.subscribe(fr.Subscribe.Channel, c)
				subs = append(subs, fr.Subscribe.Channel)
				q, _ := json.Marshal(fr.Subscribe.Channel)
				c.enqueue([]byte(`{"id":` + id + `,"subscribe":{"channel":` + string(q) + `}}`))
			}
		}
	}
}

// tokenSubject returns the sub claim of a JWT without verifying it.
func tokenSubject(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(b, &c)
	return c.Sub
}

// servePublish is REST POST /v1/channels/{channel}/publish.
func (f *floorServer) servePublish(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Data json.RawMessage `json:"data"`
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(b, &body) != nil || len(body.Data) == 0 {
		http.Error(w, `{"code":3,"message":"want {\"data\": …}"}`, http.StatusBadRequest)
		return
	}
	off := f.publish(r.PathValue("channel"), body.Data)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"position":{"offset":"` + strconv.FormatUint(off, 10) + `","epoch":"` + f.epoch + `"}}`))
}

// floorGRPC is the floor's Publish and PublishStream.
type floorGRPC struct {
	heraldv1.UnimplementedHeraldServiceServer
	f *floorServer
}

func floorPayload(req *heraldv1.PublishRequest) []byte {
	switch p := req.GetPayload().(type) {
	case *heraldv1.PublishRequest_RawJson:
		return p.RawJson
	case *heraldv1.PublishRequest_Json:
		return []byte(p.Json)
	}
	return []byte("null")
}

func (g *floorGRPC) Publish(_ context.Context, req *heraldv1.PublishRequest) (*heraldv1.PublishResponse, error) {
	off := g.f.publish(req.Channel, floorPayload(req))
	return &heraldv1.PublishResponse{Position: &heraldv1.StreamPosition{Offset: off, Epoch: g.f.epoch}}, nil
}

func (g *floorGRPC) PublishStream(stream grpc.BidiStreamingServer[heraldv1.PublishStreamRequest, heraldv1.PublishStreamResponse]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		off := g.f.publish(req.GetPublish().GetChannel(), floorPayload(req.GetPublish()))
		if err := stream.Send(&heraldv1.PublishStreamResponse{Sequence: req.Sequence, Result: &heraldv1.PublishStreamResponse_Ok{
			Ok: &heraldv1.PublishResponse{Position: &heraldv1.StreamPosition{Offset: off, Epoch: g.f.epoch}},
		}}); err != nil {
			return err
		}
	}
}

// floorAddrs is the line a floor process prints once it listens.
type floorAddrs struct {
	HTTP string `json:"http"`
	GRPC string `json:"grpc"`
	PID  int    `json:"pid"`
}

// runFloor is `herald bench floor`: it serves until ctx ends or, with
// -exit-on-eof, until its stdin closes (the bench that started it is done).
func runFloor(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("herald bench floor", flag.ContinueOnError)
	httpAddr := fs.String("http", "127.0.0.1:7701", "HTTP address: /ws, REST publish, /metrics, /debug/pprof/")
	grpcAddr := fs.String("grpc", "127.0.0.1:7700", "gRPC address: Publish, PublishStream")
	eof := fs.Bool("exit-on-eof", false, "exit when stdin closes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		hl.Close()
		return err
	}
	f := newFloor()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", f.serveWS)
	mux.HandleFunc("POST /v1/channels/{channel}/publish", f.servePublish)
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Herald's gRPC server keeps workers for its calls (service.NewGRPCServer):
	// so does the floor, or it would pay a goroutine and its stack's growth
	// per Publish that Herald does not.
	gs := grpc.NewServer(grpc.NumStreamWorkers(uint32(max(16, 4*runtime.GOMAXPROCS(0)))))
	heraldv1.RegisterHeraldServiceServer(gs, &floorGRPC{f: f})
	go func() { _ = hs.Serve(hl) }()
	go func() { _ = gs.Serve(gl) }()
	b, _ := json.Marshal(floorAddrs{HTTP: hl.Addr().String(), GRPC: gl.Addr().String(), PID: os.Getpid()})
	fmt.Fprintf(stdout, "FLOOR %s\n", b)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *eof {
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			cancel()
		}()
	}
	<-ctx.Done()
	gs.Stop()
	return hs.Close()
}
