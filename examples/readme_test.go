package examples_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/internal/tlstest"
)

// quoteMarker precedes a fenced block in a doc that quotes an example:
// `<!-- from examples/node/publish.js -->`.
var quoteMarker = regexp.MustCompile("(?m)^<!-- from (examples/\\S+) -->\n```[a-z]*\n((?s:.*?))\n```")

// TestREADMEQuotesExamples checks that every block of the README marked
// as quoted from an example is in that file as written: its parts between
// `…` lines appear in the file, in order. So the README's Node and Python
// code cannot drift from the code the tests run.
func TestREADMEQuotesExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	quoted := map[string]bool{}
	for _, m := range quoteMarker.FindAllStringSubmatch(string(readme), -1) {
		path, block := m[1], m[2]
		quoted[path] = true
		src, err := os.ReadFile(filepath.Join("..", path))
		if err != nil {
			t.Errorf("README quotes %s: %v", path, err)
			continue
		}
		rest := string(src)
		for i, part := range splitEllipsis(block) {
			at := strings.Index(rest, part)
			if at < 0 {
				t.Errorf("README quotes %s, but part %d is not in it (after the parts before):\n%s", path, i+1, part)
				break
			}
			rest = rest[at+len(part):]
		}
	}
	for _, path := range []string{
		"examples/node/connect.js", "examples/node/publish.js", "examples/node/publish_stream.js", "examples/node/subscribe.js",
		"examples/python/publish.py", "examples/python/publish_stream.py", "examples/python/subscribe.py",
		"examples/cookiesession/herald.yaml",
	} {
		if !quoted[path] {
			t.Errorf("README quotes nothing from %s", path)
		}
	}
}

// splitEllipsis cuts a quoted block at its `…` lines (alone, or after a
// comment mark), which stand for lines left out.
func splitEllipsis(block string) []string {
	var parts []string
	var cur []string
	for _, line := range strings.Split(block, "\n") {
		switch strings.TrimSpace(line) {
		case "…", "// …", "# …":
			parts = append(parts, strings.Join(cur, "\n"))
			cur = nil
		default:
			cur = append(cur, line)
		}
	}
	return append(parts, strings.Join(cur, "\n"))
}

// TestDocsQuoteServerMessages checks that the messages the README and
// docs/backends.md quote to tell one RESOURCE_EXHAUSTED from another are
// the ones the server sends.
func TestDocsQuoteServerMessages(t *testing.T) {
	sources := ""
	for _, f := range []string{"../service/hub.go", "../service/multiplex.go", "../service/auth.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sources += string(b)
	}
	for _, doc := range []string{"../README.md", "../docs/backends.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{
			"subscriber too slow: its queue of pending events is full",
			"over its publish rate",
		} {
			if !strings.Contains(string(b), msg) {
				t.Errorf("%s does not quote %q", doc, msg)
			}
			if !strings.Contains(sources, msg) {
				t.Errorf("the server no longer says %q, which %s quotes", msg, doc)
			}
		}
	}
}

// TestRESTRawJSON checks what docs/backends.md says of REST payloads, on a
// node with API keys and TLS: raw_json is base64 (JSON in it is a 400
// naming the bytes field), and data and json carry the JSON exactly.
func TestRESTRawJSON(t *testing.T) {
	f := tlstest.NewFiles(t)
	n := startHerald(t, f)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: f.ClientTLS(t, false)}}
	t.Cleanup(hc.CloseIdleConnections)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "https://"+n.HTTPAddr.String()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+apiKey)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const publish = "/v1/channels/rest-raw/publish"
	if code, body := do("POST", publish, `{"raw_json":{"id":1}}`); code != http.StatusBadRequest || !strings.Contains(body, "invalid value for bytes field rawJson") {
		t.Fatalf("raw_json as JSON: %d %s, want 400 naming the bytes field", code, body)
	}
	for _, body := range []string{`{"raw_json":"eyJpZCI6MX0="}`, `{"data":{"id":12345678901234567891}}`, `{"json":"{\"id\":1.0}"}`} {
		if code, resp := do("POST", publish, body); code != http.StatusOK {
			t.Fatalf("publish %s: %d %s", body, code, resp)
		}
	}
	_, hist := do("GET", "/v1/channels/rest-raw/history", "")
	for _, want := range []string{`"data":{"id":1}`, `"data":{"id":12345678901234567891}`, `"data":{"id":1.0}`} {
		if !strings.Contains(hist, want) {
			t.Fatalf("history %s lacks %s", hist, want)
		}
	}
}
