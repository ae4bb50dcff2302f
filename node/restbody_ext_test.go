package node_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
)

// hugeBody is how much each request of TestHugeRESTBody offers to send.
const hugeBody = 200 << 20

// postHuge sends a POST whose body is hugeBody bytes of JSON, {"data":"aaa…
// (declared with Content-Length, or chunked), streamed from a bounded
// loop over one 64 KiB buffer, and returns the response's status line and
// body, and how many body bytes had been written when the response
// arrived.
func postHuge(t *testing.T, addr, path, key string, chunked bool) (status, body string, sent int64) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hdr := "POST " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\n"
	if key != "" {
		hdr += "Authorization: Bearer " + key + "\r\n"
	}
	if chunked {
		hdr += "Transfer-Encoding: chunked\r\n\r\n"
	} else {
		hdr += fmt.Sprintf("Content-Length: %d\r\n\r\n", hugeBody)
	}
	if _, err := nc.Write([]byte(hdr)); err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	// The body's writes are made up front: the loop allocates nothing, so
	// the heap's growth that heapPeak sees is the server's, not this
	// writer's garbage.
	chunk := []byte(strings.Repeat("a", 64<<10))
	frame := func() []byte {
		if chunked {
			return fmt.Appendf(nil, "%x\r\n%s\r\n", len(chunk), chunk)
		}
		return append([]byte(nil), chunk...)
	}
	copy(chunk, `{"data":"`) // a JSON string that never ends: a decoder reads all of it
	first := frame()
	copy(chunk, "aaaaaaaaa")
	rest := frame()
	go func() {
		for b := first; written.Load() < hugeBody; b = rest {
			if _, err := nc.Write(b); err != nil {
				return // the server answered and closed
			}
			written.Add(int64(len(chunk)))
		}
		if chunked {
			_, _ = nc.Write([]byte("0\r\n\r\n"))
		}
	}()
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("no response to a %d MB body: %v (written %d MB)", hugeBody>>20, err, written.Load()>>20)
	}
	sent = written.Load()
	b := make([]byte, 4096)
	k, _ := resp.Body.Read(b)
	return resp.Status, string(b[:k]), sent
}

// heapPeak runs f while sampling the heap, and returns how far the heap
// in use rose above what it was before f.
func heapPeak(f func()) uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	f()
	close(done)
	<-sampled
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

// TestHugeRESTBody: a 200 MB REST body is never read. Without a key the
// node answers 401 before reading the body; with one, 413 with a JSON
// error in the gateway's shape, whether the length is declared or the
// body is chunked. Each answer arrives long before the body could have
// been sent (under 32 MB written, socket buffers included), and the
// node's heap does not grow by more than a few MB. On main the body was
// read whole (19 MB to 870 MB RSS) and answered 429.
func TestHugeRESTBody(t *testing.T) {
	const key = "huge-key-0123456789"
	n := startNode(t, func(c *config.Config) { c.APIKeys = []config.APIKey{{Name: "k", Key: key}} })
	addr := n.HTTPAddr.String()
	for _, tc := range []struct {
		name, path, key string
		chunked         bool
		want            string
	}{
		{"no key", "/v1/channels/news/publish", "", false, "401"},
		{"no key, chunked", "/v1/channels/news/publish", "", true, "401"},
		{"wrong key", "/v1/broadcast", "wrong-key-0123456789", false, "401"},
		{"key", "/v1/channels/news/publish", key, false, "413"},
		{"key, chunked", "/v1/channels/news/publish", key, true, "413"},
		{"key, broadcast, chunked", "/v1/broadcast", key, true, "413"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var status, body string
			var sent int64
			grew := heapPeak(func() { status, body, sent = postHuge(t, addr, tc.path, tc.key, tc.chunked) })
			if !strings.HasPrefix(status, tc.want) || !strings.Contains(body, `"code":`) || !strings.Contains(body, `"message":`) {
				t.Fatalf("%s: %s %s, want %s with a JSON error", tc.name, status, body, tc.want)
			}
			if sent > 32<<20 {
				t.Errorf("answered after %d MB of the body were sent", sent>>20)
			}
			if grew > 8<<20 {
				t.Errorf("heap grew by %d MB", grew>>20)
			}
			t.Logf("%s: %s after %d KB sent; heap +%d KB", tc.name, status, sent>>10, grew>>10)
		})
	}
	// A body at the limit still goes through (as far as the core, which
	// refuses the oversized payload with its own 400).
	code, body := httpDo(t, "POST", "http://"+addr+"/v1/channels/news/publish", `{"data":"`+strings.Repeat("x", 300<<10)+`"}`, "Authorization", "Bearer "+key)
	if code != 400 || !strings.Contains(body, "payload") {
		t.Fatalf("a 300 KB body: %d %s, want the core's 400 about the payload", code, body)
	}
}

// TestSlowRESTBody: a REST publish, with a valid API key, whose body does
// not arrive within 10 s is answered 408 (DEADLINE_EXCEEDED in the
// gateway's error shape) and its connection closed; it used to hold the
// connection and its goroutine for as long as the client liked.
func TestSlowRESTBody(t *testing.T) {
	const key = "slow-body-key-0123456789"
	n := startNode(t, func(c *config.Config) { c.APIKeys = []config.APIKey{{Name: "be", Key: key}} })
	nc, err := net.Dial("tcp", n.HTTPAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "POST /v1/channels/chat:slow/publish HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\":", n.HTTPAddr, key)
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("no answer to a body that never came: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close || body.Code != 4 || !strings.Contains(body.Message, "did not arrive") {
		t.Fatalf("answer %d (close %v) %+v, want 408, closed, code 4", resp.StatusCode, resp.Close, body)
	}
}
