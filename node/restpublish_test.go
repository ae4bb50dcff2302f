package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
)

// restPair is a node whose REST publishes can be sent through the
// shortcut or through the gateway alone.
type restPair struct {
	n   *Node
	hc  *http.Client
	mu  sync.Mutex // one request at a time: the shortcut is switched per request
	seq int
}

func startRESTPair(t testing.TB) *restPair {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.APIKeys = []config.APIKey{
		{Name: "admin", Key: "admin-key-0123456789"},
		{Name: "chat", Key: "chat-key-0123456789", Scopes: []string{"publish:chat"}},
	}
	n, err := Start(context.Background(), cfg, Serve, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return &restPair{n: n, hc: &http.Client{Timeout: 10 * time.Second}}
}

// restAnswer is what a client sees of an answer.
type restAnswer struct {
	status  int
	headers map[string]string
	body    string
	history string // after a 200: the channel's history, as GET answers it
}

var restHeaders = []string{"Content-Type", "Www-Authenticate", "Transfer-Encoding", "Trailer", "Allow", "Connection"}

// send sends one publish, through the shortcut or not. {id} in the path
// and body becomes a token of this request, so that the two ways never
// touch the same channel or idempotency key; it is put back as {id} in
// the answer.
func (p *restPair) send(t testing.TB, direct bool, path, body string, header http.Header) (restAnswer, bool) {
	p.mu.Lock()
	p.seq++
	id := fmt.Sprintf("r%dx", p.seq)
	p.mu.Unlock()
	return p.sendAs(t, id, direct, path, body, header)
}

// sendAs is send with the token given.
func (p *restPair) sendAs(t testing.TB, id string, direct bool, path, body string, header http.Header) (restAnswer, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	req, err := http.NewRequest(http.MethodPost, "http://"+p.n.HTTPAddr.String()+strings.ReplaceAll(path, "{id}", id), strings.NewReader(strings.ReplaceAll(body, "{id}", id)))
	if err != nil {
		return restAnswer{}, false
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	p.n.rest.direct.Store(direct)
	resp, err := p.hc.Do(req)
	p.n.rest.direct.Store(true)
	if err != nil {
		t.Fatalf("%s %q: %v", path, body, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	a := restAnswer{status: resp.StatusCode, headers: map[string]string{}, body: normalizeREST(strings.ReplaceAll(string(b), id, "{id}"))}
	for _, h := range restHeaders {
		if v := resp.Header.Values(h); len(v) > 0 {
			a.headers[h] = strings.Join(v, "; ")
		}
	}
	for h, v := range resp.Header {
		if strings.HasPrefix(h, "Grpc-") {
			a.headers[h] = strings.Join(v, "; ")
		}
	}
	if a.status == http.StatusOK {
		a.history = p.history(t, strings.ReplaceAll(path, "{id}", id), id, header)
	}
	return a, true
}

// history is what GET .../history answers for the channel a publish went
// to: the publications as stored, payloads included.
func (p *restPair) history(t testing.TB, path, id string, header http.Header) string {
	u := "http://" + p.n.HTTPAddr.String() + strings.Replace(path, "/publish", "/history", 1)
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", restAuth[0].Get("Authorization"))
	resp, err := p.hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return fmt.Sprintf("%d %s", resp.StatusCode, normalizeREST(strings.ReplaceAll(string(b), id, "{id}")))
}

var (
	epochField = regexp.MustCompile(`"epoch":\s*"[^"]*"`)
	timeField  = regexp.MustCompile(`"(time_unix_ms)":\s*"[^"]*"`)
)

// normalizeREST makes two answers comparable: epochs differ between
// channels; protojson may put a space after a colon or a comma.
func normalizeREST(body string) string {
	body = epochField.ReplaceAllString(body, `"epoch":"E"`)
	body = timeField.ReplaceAllString(body, `"$1":"T"`)
	var b bytes.Buffer
	if json.Compact(&b, []byte(body)) == nil {
		return b.String()
	}
	return body
}

// compare sends the request both ways and fails if the answers differ.
// It returns the shortcut's answer.
func (p *restPair) compare(t testing.TB, path, body string, header http.Header) restAnswer {
	t.Helper()
	got, ok := p.send(t, true, path, body, header)
	if !ok {
		return got
	}
	want, _ := p.send(t, false, path, body, header)
	if got.status != want.status || got.body != want.body || got.history != want.history || fmt.Sprint(got.headers) != fmt.Sprint(want.headers) {
		t.Fatalf("POST %s %q %v:\nshortcut %d %v %s %s\ngateway  %d %v %s %s", path, body, header, got.status, got.headers, got.body, got.history, want.status, want.headers, want.body, want.history)
	}
	return got
}

// compareRepeated sends the same request n times each way, each way with
// a token of its own (one channel and one idempotency key per way), and
// fails if the answers differ.
func (p *restPair) compareRepeated(t testing.TB, n int, path, body string, header http.Header) []restAnswer {
	t.Helper()
	p.mu.Lock()
	p.seq++
	id := fmt.Sprintf("r%dx", p.seq)
	p.mu.Unlock()
	var got []restAnswer
	for i := 0; i < n; i++ {
		a, _ := p.sendAs(t, "s"+id, true, path, body, header)
		b, _ := p.sendAs(t, "g"+id, false, path, body, header)
		if a.status != b.status || a.body != b.body || a.history != b.history || fmt.Sprint(a.headers) != fmt.Sprint(b.headers) {
			t.Fatalf("POST %s %q #%d:\nshortcut %d %v %s\ngateway  %d %v %s", path, body, i, a.status, a.headers, a.body, b.status, b.headers, b.body)
		}
		got = append(got, a)
	}
	return got
}

var (
	restPaths = []string{
		"/v1/channels/chat:{id}/publish",
		"/v1/channels/user:{id}/publish",
		"/v1/channels/{id}/publish",
		"/v1/channels/nosuchns:{id}/publish",
		"/v1/channels/chat:a b{id}/publish",
		"/v1/channels/chat:é{id}/publish",
		"/v1/channels/chat:{id}" + strings.Repeat("x", 300) + "/publish",
		"/v1/channels/chat:{id}%2Fx/publish",
		"/v1/channels/chat:{id}/publish/",
		"/v1/channels//publish",
		"/v1/channels/chat:{id}/publish?x=1",
	}
	restBodies = []string{
		`{"data":{"a":1,"b":[1.50,"x"]}}`,
		` { "data" : 12345678901234567890 } `,
		`{"data":1,"data":2}`,
		`{}`,
		``,
		`{"json":"{\"a\":1}"}`,
		`{"raw_json":"eyJhIjoxfQ=="}`,
		`{"binary":"AAE="}`,
		`{"data":{"a":1},"json":"1"}`,
		`{"data":{"a":1},"idempotency_key":"k{id}"}`,
		`{"data":{"a":1},"tags":{"k":"v"}}`,
		`{"data":{"a":1},"publisher":{"user":"u"}}`,
		`{"data":{"a":1},"unknown":1}`,
		`{"data":{"a":1e400}}`,
		`{"data":"\ud800"}`,
		`[1]`,
		`{"data":`,
		`{"channel":"chat:other","data":1}`,
	}
	restAuth = []http.Header{
		{"Authorization": {"Bearer admin-key-0123456789"}, "Content-Type": {"application/json"}},
		{"Authorization": {"Bearer chat-key-0123456789"}, "Content-Type": {"application/json"}},
		{"Authorization": {"Bearer admin-key-0123456789"}, "Content-Type": {"application/json"}, "Te": {"trailers"}},
		{"Authorization": {"Bearer admin-key-0123456789", "Bearer chat-key-0123456789"}, "Content-Type": {"application/json"}},
		{"Authorization": {"Bearer nope"}, "Content-Type": {"application/json"}},
		{"Content-Type": {"application/json"}},
		{"Authorization": {"Bearer admin-key-0123456789"}, "Content-Type": {"application/json"}, "Grpc-Timeout": {"1S"}},
		{"Authorization": {"Bearer admin-key-0123456789"}, "Content-Type": {"application/json; charset=utf-8"}, "Accept": {"text/plain"}},
	}
)

// TestRESTPublishAsTheGateway: the REST publish shortcut answers every
// request as the gateway's own handler does: status, headers, body
// (channel names, offsets and idempotency keys told apart, epochs left
// out), with API keys, scopes and bad input.
func TestRESTPublishAsTheGateway(t *testing.T) {
	p := startRESTPair(t)
	for _, path := range restPaths {
		for _, body := range restBodies {
			p.compare(t, path, body, restAuth[0])
		}
	}
	for _, h := range restAuth {
		for _, body := range restBodies[:3] {
			p.compare(t, restPaths[0], body, h)
			p.compare(t, restPaths[1], body, h)
		}
	}
	// The front door (httpguard.go) stands before both: the same
	// refusals, with the statuses it gives.
	admin := restAuth[0]
	with := func(h http.Header, k, v string) http.Header {
		h = h.Clone()
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	huge := `{"data":"` + strings.Repeat("x", int(restBodyLimit(config.Default().Limits.MaxPayload))) + `"}`
	big := `{"data":"` + strings.Repeat("x", config.Default().Limits.MaxPayload) + `"}`
	for _, c := range []struct {
		body   string
		header http.Header
		status int
	}{
		{`{"data":1}`, with(admin, "Content-Type", ""), http.StatusUnsupportedMediaType},
		{`{"data":1}`, with(admin, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType},
		{`{"data":1}`, with(admin, "Origin", "http://elsewhere.test"), http.StatusForbidden},
		{`{"data":1}`, with(admin, "Sec-Fetch-Site", "cross-site"), http.StatusForbidden},
		{huge, with(admin, "Authorization", "Bearer nope"), http.StatusUnauthorized},
		{huge, with(admin, "Authorization", ""), http.StatusUnauthorized},
		{huge, admin, http.StatusRequestEntityTooLarge},
		{big, admin, http.StatusBadRequest}, // over max_payload: the core's refusal
		{`{"data":1}`, restAuth[1], http.StatusOK},
	} {
		if got := p.compare(t, restPaths[0], c.body, c.header); got.status != c.status {
			t.Errorf("%.40q %v: status %d, want %d (%s)", c.body, c.header, got.status, c.status, got.body)
		}
	}
	if got := p.compare(t, restPaths[1], `{"data":1}`, restAuth[1]); got.status != http.StatusForbidden {
		t.Errorf("a key scoped to chat publishes to user: %d %s", got.status, got.body)
	}
	// An idempotency key answers its first publish again, on both ways;
	// a payload goes through as published.
	as := p.compareRepeated(t, 3, restPaths[0], `{"data":{"b":1.50,"a":[1e2,"\u00e9"]},"idempotency_key":"k"}`, admin)
	if as[0].status != http.StatusOK || !strings.Contains(as[1].body, `"duplicate":true`) || as[2].body != as[1].body || as[2].history != as[0].history {
		t.Errorf("idempotent publishes answered %v", as)
	}
	if as := p.compareRepeated(t, 2, restPaths[0], `{"data":1}`, admin); as[0].body == as[1].body {
		t.Errorf("two publishes without a key answered alike: %v", as)
	}
	if want := `"data":{"b":1.50,"a":[1e2,"\u00e9"]}`; !strings.Contains(as[0].history, want) {
		t.Errorf("history %s, want the payload as published (%s)", as[0].history, want)
	}
	if _, ok := publishChannel(mustRequest(t, restPaths[0])); !ok {
		t.Fatal("the shortcut does not take a plain publish")
	}
}

func mustRequest(t testing.TB, path string) *http.Request {
	r, err := http.NewRequest(http.MethodPost, "http://x"+strings.ReplaceAll(path, "{id}", "1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func FuzzRESTPublishAsTheGateway(f *testing.F) {
	for i, path := range restPaths {
		ch := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/channels/"), "/publish")
		f.Add(strings.Replace(ch, "{id}", "", 1), []byte(restBodies[i%len(restBodies)]), uint8(i))
	}
	for i, body := range restBodies {
		f.Add("chat:", []byte(body), uint8(i))
	}
	p := startRESTPair(f)
	f.Fuzz(func(t *testing.T, channel string, body []byte, auth uint8) {
		if strings.ContainsAny(channel, "?#") {
			return
		}
		// {id}: each way publishes to a channel of its own.
		p.compare(t, "/v1/channels/"+channel+"{id}/publish", string(body), restAuth[int(auth)%len(restAuth)])
	})
}
