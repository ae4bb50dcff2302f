package node_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestRESTHistoryOffsetRange is issue 9, item 8 over REST: a history since
// an offset of 2^63 or more answered 500 (a panic in the memory engine);
// it is a 400 naming the field, and the largest valid offset is a 200.
func TestRESTHistoryOffsetRange(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.HTTPAddr.String() + "/v1/channels/news/"
	if code, body := httpDo(t, "POST", base+"publish", `{"data":{"n":1}}`); code != http.StatusOK {
		t.Fatalf("publish: %d %s", code, body)
	}
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"since.offset=9223372036854775808", http.StatusBadRequest},
		{"since.offset=18446744073709551615&reverse=true", http.StatusBadRequest},
		{"since.offset=9223372036854775807", http.StatusOK},
		{"since.offset=9223372036854775807&reverse=true", http.StatusOK},
	} {
		code, body := httpDo(t, "GET", base+"history?"+tc.query, "")
		if code != tc.want || code == http.StatusBadRequest && !strings.Contains(body, "since.offset") {
			t.Errorf("history?%s: %d %s, want %d", tc.query, code, body, tc.want)
		}
	}
}
