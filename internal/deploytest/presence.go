package deploytest

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// Watcher is a browser stand-in that keeps a channel's member list the
// way the console does (web/console.js): from a presence snapshot, taken
// on every (re)subscription, and the join and leave events after it;
// events that arrive while a snapshot is being fetched are applied on top
// of it. It also counts every join and leave event per client.
type Watcher struct {
	ws      *websocket.Conn
	channel string

	mu       sync.Mutex
	client   string
	members  map[string]bool
	fetching uint32 // id of the presence request in flight; 0: none
	buffered []event
	joins    map[string]int
	leaves   map[string]int
	snaps    int
	err      error
	nextID   uint32
	done     chan struct{}
}

type event struct {
	client string
	join   bool
}

// WatchPresence connects ws (with token; "" anonymous), subscribes to
// channel and keeps its member list until the connection ends.
func WatchPresence(t testing.TB, ws *websocket.Conn, token, channel string) *Watcher {
	t.Helper()
	w := &Watcher{ws: ws, channel: channel, members: map[string]bool{}, joins: map[string]int{}, leaves: map[string]int{}, nextID: 10, done: make(chan struct{})}
	first := fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`+"\n"+`{"id":2,"subscribe":{"channel":%q}}`, token, channel)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(first)); err != nil {
		t.Fatal(err)
	}
	go w.read()
	for end := time.Now().Add(10 * time.Second); w.Client() == "" || w.Snapshots() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) || w.Err() != nil {
			t.Fatalf("watcher of %s: not subscribed (%v)", channel, w.Err())
		}
	}
	return w
}

func (w *Watcher) read() {
	defer close(w.done)
	for {
		_, msg, err := w.ws.ReadMessage()
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		for _, line := range bytes.Split(msg, []byte("\n")) {
			fr := &heraldv1.ServerFrame{}
			if len(line) == 0 || protojson.Unmarshal(line, fr) != nil {
				continue
			}
			w.handle(fr)
		}
	}
}

func (w *Watcher) handle(fr *heraldv1.ServerFrame) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case fr.GetConnect() != nil:
		w.client = fr.GetConnect().Client
	case fr.GetSubscribe() != nil, fr.GetSubscribed().GetChannel() == w.channel:
		// Subscribed, or subscribed again by the bridge after a loss of
		// continuity: the list is fetched afresh.
		w.nextID++
		w.fetching = w.nextID
		w.buffered = nil
		_ = w.ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"id":%d,"presence":{"channel":%q}}`, w.fetching, w.channel)))
	case fr.GetPresence() != nil && fr.Id == w.fetching:
		clear(w.members)
		for _, c := range fr.GetPresence().Clients {
			w.members[c.Client] = true
		}
		for _, ev := range w.buffered {
			w.apply(ev)
		}
		w.fetching, w.buffered = 0, nil
		w.snaps++
	case fr.GetJoin() != nil:
		w.event(event{fr.GetJoin().GetClient().GetClient(), true})
	case fr.GetLeave() != nil:
		w.event(event{fr.GetLeave().GetClient().GetClient(), false})
	}
}

// event counts ev and applies it, or keeps it for after the snapshot in
// flight. w.mu must be held.
func (w *Watcher) event(ev event) {
	if ev.join {
		w.joins[ev.client]++
	} else {
		w.leaves[ev.client]++
	}
	if w.fetching != 0 {
		w.buffered = append(w.buffered, ev)
		return
	}
	w.apply(ev)
}

func (w *Watcher) apply(ev event) {
	if ev.join {
		w.members[ev.client] = true
	} else {
		delete(w.members, ev.client)
	}
}

// Client is the watcher's own client id.
func (w *Watcher) Client() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.client
}

// Members returns the member list, sorted.
func (w *Watcher) Members() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for c := range w.members {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// Leaves and Joins count the events received for client.
func (w *Watcher) Leaves(client string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leaves[client]
}

func (w *Watcher) Joins(client string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.joins[client]
}

// Snapshots counts the presence snapshots taken.
func (w *Watcher) Snapshots() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snaps
}

// Err is why the connection ended (nil while open).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
