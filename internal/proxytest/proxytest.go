// Package proxytest runs a TCP proxy on loopback for tests of what clients
// do when their connection breaks: it can cut every connection it carries,
// hold back what the server sends (so that a call reaches the server and
// its answer is lost), and send new connections to another server.
package proxytest

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from Addr to a target address.
type Proxy struct {
	// Addr is where clients connect.
	Addr string

	lis net.Listener
	wg  sync.WaitGroup

	// gate is held (read) by a forward from its look at release to the end
	// of its write, and taken by Hold: once Hold returns, nothing more
	// reaches a client until Release.
	gate sync.RWMutex

	mu      sync.Mutex
	target  string
	conns   map[*pair]struct{}
	holding bool
	release chan struct{} // closed when holding ends
	closed  bool
	accepts int
}

type pair struct{ client, server net.Conn }

// Start starts a proxy to target on a free loopback port; it is closed by
// t.Cleanup.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: lis.Addr().String(), lis: lis, target: target, conns: map[*pair]struct{}{}, release: make(chan struct{})}
	close(p.release)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// SetTarget sends new connections to addr; open ones stay where they are.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// Hold stops forwarding what servers send to clients (what clients send
// still goes through) until Release. Bytes already read from a server are
// delivered after Release unless Cut drops them first.
func (p *Proxy) Hold() {
	p.gate.Lock()
	defer p.gate.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.holding {
		p.holding = true
		p.release = make(chan struct{})
	}
}

// Release resumes forwarding after Hold.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holding {
		p.holding = false
		close(p.release)
	}
}

// Cut closes every open connection, both sides, dropping what is held.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[*pair]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		_ = c.client.Close()
		_ = c.server.Close()
	}
}

// Accepted returns how many client connections the proxy has accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepts
}

// Close stops the proxy and cuts its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if already {
		return
	}
	_ = p.lis.Close()
	p.Release()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.accepts++
		p.mu.Unlock()
		s, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pr := &pair{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			return
		}
		p.conns[pr] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { // client → server
			defer p.wg.Done()
			_, _ = io.Copy(s, c)
			p.drop(pr)
		}()
		go func() { // server → client, through the hold gate
			defer p.wg.Done()
			p.forward(c, s)
			p.drop(pr)
		}()
	}
}

func (p *Proxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.pass(dst, buf[:n]) {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

// pass writes b to dst once the proxy is not holding, and reports whether
// the write succeeded (Cut closes dst, so a held write fails after it).
// The look at the hold and the write are one step under gate, so that
// after Hold returns no write is under way.
func (p *Proxy) pass(dst net.Conn, b []byte) bool {
	for {
		p.gate.RLock()
		p.mu.Lock()
		release := p.release
		p.mu.Unlock()
		select {
		case <-release:
			_, err := dst.Write(b)
			p.gate.RUnlock()
			return err == nil
		default:
			p.gate.RUnlock()
			<-release // then look again: another Hold may have come
		}
	}
}

func (p *Proxy) drop(pr *pair) {
	_ = pr.client.Close()
	_ = pr.server.Close()
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}
