package wsbridge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/tlstest"
)

// readWSTexts reads the server's unmasked WebSocket messages from r and
// hands each JSON frame in them (frames are joined by "\n") to fn, until
// fn returns false or r fails.
func readWSTexts(r io.Reader, fn func(frame []byte) bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var hdr [8]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return err
		}
		if hdr[1]&0x80 != 0 {
			return fmt.Errorf("a masked frame from the server")
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(br, hdr[:8]); err != nil {
				return err
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		payload = append(payload[:0], make([]byte, n)...)
		if _, err := io.ReadFull(br, payload); err != nil {
			return err
		}
		for _, fr := range bytes.Split(payload, []byte("\n")) {
			if !fn(fr) {
				return nil
			}
		}
	}
}

// readLines hands each line of r (an HTTP stream's NDJSON) to fn, until
// fn returns false or r fails.
func readLines(r io.Reader, fn func(frame []byte) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		if !fn(sc.Bytes()) {
			return nil
		}
	}
	if sc.Err() == nil {
		return io.EOF
	}
	return sc.Err()
}

// While the bridge is behind, a writer pool writes for the sessions on
// sockets of their own. Clients that stop reading (more of them than the
// pool has workers) fill their sockets: the workers writing for them must
// not wait, or every other session would stop too. Every client gets
// every frame, in order, the stalled ones once they read again.
func TestWriterPoolWhileBehindAStalledClientDelaysNobody(t *testing.T) {
	for _, kind := range []transportKind{transportWebSocket, transportHTTPStream} {
		t.Run(kind.String()+"/plain", func(t *testing.T) { testStalledClients(t, kind, false) })
		// Over TLS, through TLSListener as herald serve does.
		t.Run(kind.String()+"/tls", func(t *testing.T) { testStalledClients(t, kind, true) })
	}
}

func testStalledClients(t *testing.T, kind transportKind, useTLS bool) {
	cfg := config.Default()
	br := &Bridge{cfg: cfg.Bridge, log: slog.New(slog.DiscardHandler)}
	br.ctx, br.cancel = context.WithCancel(context.Background())
	defer br.cancel()
	br.behind.Store(true)

	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	ln := tcpLn
	var serverTLS, clientTLS *tls.Config
	if useTLS {
		files := tlstest.NewFiles(t)
		cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			t.Fatal(err)
		}
		serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		clientTLS = files.ClientTLS(t, false)
		ln = TLSListener(tcpLn, serverTLS)
	}
	const fast = 20
	stalled := poolWorkers() + 1
	type pair struct {
		client net.Conn
		s      *session
	}
	pairs := make([]pair, fast+stalled)
	for i := range pairs {
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if i < stalled { // first in the pool's list
			_ = cl.(*net.TCPConn).SetReadBuffer(4096)
			raw := nc
			if tc, ok := nc.(*tls.Conn); ok {
				raw = tc.NetConn()
			}
			_ = raw.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(4096)
		}
		if useTLS {
			tc := tls.Client(cl, clientTLS)
			errc := make(chan error, 1)
			go func() { errc <- tc.Handshake() }()
			ts := nc.(*tls.Conn)
			if err := ts.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			cl = tc
		}
		var s *session
		if kind == transportWebSocket {
			c := &wsConn{}
			s = c.start(br, nc, SubprotocolJSON, &credentials{})
		} else {
			c := &httpConn{}
			c.init(br, c, kind, formatJSON)
			c.hold(nc)
			s = newSession(br, &c.transport, &credentials{})
		}
		if !s.t.poolable {
			t.Fatalf("a %v (TLS %v) is not poolable", kind, useTLS)
		}
		pairs[i] = pair{cl, s}
	}

	// 120 frames of ~1 KB a session: several times what a stalled
	// client's socket holds (its buffers are made small: a few KB).
	const frames = 120
	pad := strings.Repeat("x", 1000)
	got := make([]chan error, len(pairs))
	read := func(i int) {
		got[i] = make(chan error, 1)
		go func() {
			next := 1
			read := readWSTexts
			if kind != transportWebSocket {
				read = readLines
			}
			err := read(pairs[i].client, func(fr []byte) bool {
				want := `{"n":` + strconv.Itoa(next) + `,"pad":"` + pad + `"}`
				if string(fr) != want {
					got[i] <- fmt.Errorf("client %d: frame %d is %.40q", i, next, fr)
					return false
				}
				next++
				if next > frames {
					got[i] <- nil
					return false
				}
				return true
			})
			if err != nil {
				got[i] <- fmt.Errorf("client %d after %d frames: %v", i, next-1, err)
			}
		}()
	}
	for i := stalled; i < len(pairs); i++ {
		read(i)
	}
	detaches0 := metricPoolDetaches.Load()
	for k := 1; k <= frames; k++ {
		fr := []byte(`{"n":` + strconv.Itoa(k) + `,"pad":"` + pad + `"}`)
		for _, p := range pairs {
			p.s.t.send(fr)
		}
	}
	wait := func(i int) {
		t.Helper()
		select {
		case err := <-got[i]:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("client %d: not every frame within 20 s (%d bytes still queued)", i, pairs[i].s.t.queued())
		}
	}
	for i := stalled; i < len(pairs); i++ {
		wait(i)
	}
	// The pool is idle: the stalled sessions' writes wait in writers of
	// their own, which the pool's workers became, at least one for each.
	deadline := time.Now().Add(10 * time.Second)
	for {
		br.wpool.mu.Lock()
		idle := br.wpool.workers == 0 && br.wpool.head == len(br.wpool.ready) && br.wpool.max > 0
		br.wpool.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pool's workers did not end")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := metricPoolDetaches.Load() - detaches0; d < int64(stalled) {
		t.Fatalf("%d detaches for %d stalled clients", d, stalled)
	}
	for i := 0; i < stalled; i++ {
		pairs[i].s.t.mu.Lock()
		writing := pairs[i].s.t.writing
		pairs[i].s.t.mu.Unlock()
		if !writing {
			t.Fatalf("stalled client %d: its session has no writer; its socket should be full", i)
		}
	}
	for i := 0; i < stalled; i++ {
		read(i)
	}
	for i := 0; i < stalled; i++ {
		wait(i)
	}
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Add(1)
		go func() { defer wg.Done(); p.s.t.kill() }()
	}
	wg.Wait()
	br.wg.Wait()
}
