package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeBridge speaks just enough of herald.json: it answers connect and
// subscribe, then sends pubs packed several to a message (and a join push,
// which clients must skip), and closes client 1 as a slow consumer.
func fakeBridge(t *testing.T, pubs int) *httptest.Server {
	offsets := make([]int, pubs)
	for i := range offsets {
		offsets[i] = i + 1
	}
	return fakeBridgeOffsets(t, offsets)
}

// fakeBridgeOffsets is fakeBridge sending one publication per offset.
func fakeBridgeOffsets(t *testing.T, offsets []int) *httptest.Server {
	up := websocket.Upgrader{Subprotocols: []string{"herald.json"}}
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		me := n.Add(1)
		for range 2 {
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			var f struct {
				ID      uint32          `json:"id"`
				Connect json.RawMessage `json:"connect"`
			}
			_ = json.Unmarshal(msg, &f)
			body := "subscribe"
			if f.Connect != nil {
				body = "connect"
			}
			_ = c.WriteMessage(websocket.TextMessage, []byte(`{"id":`+strconv.Itoa(int(f.ID))+`,"`+body+`":{}}`))
		}
		if me == 2 {
			_ = c.WriteMessage(websocket.TextMessage, []byte(`{"disconnect":{"code":4004,"reason":"slow consumer"}}`))
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4004, "slow consumer"), time.Now().Add(time.Second))
			return
		}
		var b bytes.Buffer
		b.WriteString(`{"join":{"channel":"chat:bench"}}`)
		for i, off := range offsets {
			b.WriteString("\n")
			b.WriteString(`{"pub":{"channel":"chat:bench","offset":"` + strconv.Itoa(off) + `","epoch":"e","data":`)
			b.Write(appendPayload(nil, time.Now().UnixNano()-int64(i)*int64(time.Millisecond), 64))
			b.WriteString("}}")
		}
		_ = c.WriteMessage(websocket.TextMessage, b.Bytes())
		for { // until the bench closes
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestGroupAgainstFakeBridge(t *testing.T) {
	srv := fakeBridge(t, 5)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	g := newGroup(groupSpec{N: 3, WS: []string{url}, Channel: "chat:bench", Concurrency: 1, Timeout: 5 * time.Second, ReadBuf: 1024})
	ctx := context.Background()
	g.connect(ctx)
	if r := g.result(false); r.Connected != 3 || r.ConnectErrors != 0 || r.Connect.Count() != 3 {
		t.Fatalf("connect: %+v", r)
	}
	r := g.drain(ctx, []int64{5, 5, 5}, 5*time.Second)
	g.close()
	var res Result
	res.fillDeliveries([]int64{5, 5, 5}, r.Received)
	if res.Received != 10 || res.Loss != 5 || res.ClientsShort != 1 {
		t.Fatalf("received %v: loss %d short %d", r.Received, res.Loss, res.ClientsShort)
	}
	if r.CloseCodes[4004] != 1 || r.Presence != 2 || r.Latency.Count() != 10 {
		t.Fatalf("close codes %v, presence %d, latencies %d", r.CloseCodes, r.Presence, r.Latency.Count())
	}
	if r.Latency.Max() < int64(4*time.Millisecond) {
		t.Fatalf("latency max %v: the send times were not read", time.Duration(r.Latency.Max()))
	}
}

// TestGroupChecksOffsets: a client counts an offset it got just before
// again as a duplicate, a lower one as out of order, and the offsets it
// never got as skipped.
func TestGroupChecksOffsets(t *testing.T) {
	srv := fakeBridgeOffsets(t, []int{1, 2, 2, 3, 6, 5, 7})
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	g := newGroup(groupSpec{N: 1, WS: []string{url}, Channel: "chat:bench", Concurrency: 1, Timeout: 5 * time.Second, ReadBuf: 1024})
	ctx := context.Background()
	g.connect(ctx)
	r := g.drain(ctx, []int64{7}, 5*time.Second)
	g.close()
	if r.Received[0] != 7 || r.Duplicates != 1 || r.Reorders != 1 || r.Gaps != 2 {
		t.Fatalf("received %v, duplicates %d, reorders %d, gaps %d; want 7, 1, 1, 2", r.Received, r.Duplicates, r.Reorders, r.Gaps)
	}
}
