package node

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestTakesAgreesWithAllow: takes and allow, which match segments without
// splitting the path, say what splitting it says (the oracle below), for
// every route of the REST API with its parameters filled, with a segment
// more or less, and with odd slashes; and takes allocates nothing for a
// request it takes.
func TestTakesAgreesWithAllow(t *testing.T) {
	var paths []string
	for _, r := range restRoutes {
		p := strings.Join(r.segments, "/")
		for _, s := range r.segments {
			if strings.HasPrefix(s, "{") {
				p = strings.Replace(p, s, "chat:x", 1)
			}
		}
		paths = append(paths, "/"+p, "/"+p+"/", "/"+p+"/extra", "/"+p[:strings.LastIndex(p, "/")+1], "//"+p, "/"+strings.Replace(p, "/", "//", 1))
	}
	paths = append(paths, "", "/", "/v1", "/v1/", "/nope/x")
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}
	takenOne := false
	for _, p := range paths {
		want := splitAllow(p)
		if got := restRoutes.allow(p); !slices.Equal(got, want) {
			t.Fatalf("allow(%q) = %v, want %v", p, got, want)
		}
		for _, m := range methods {
			allow, known, ok := restRoutes.takes(p, m)
			wantOK := slices.Contains(want, m) || m == http.MethodHead && slices.Contains(want, http.MethodGet)
			if known != (len(want) > 0) || ok != wantOK {
				t.Fatalf("takes(%q, %s) = known %v ok %v, allow says %v", p, m, known, ok, want)
			}
			if !ok && known && !slices.Equal(allow, want) {
				t.Fatalf("takes(%q, %s) allows %v, want %v", p, m, allow, want)
			}
			takenOne = takenOne || ok
		}
	}
	if !takenOne {
		t.Fatal("no request was taken: the paths above are wrong")
	}
	if n := testing.AllocsPerRun(100, func() { restRoutes.takes("/v1/channels/chat:x/publish", http.MethodPost) }); n != 0 {
		t.Fatalf("takes allocates %v times for a publish", n)
	}
}

// splitAllow is the route list the plain way: split path into segments
// and compare each with the template's.
func splitAllow(path string) []string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	var out []string
	for _, r := range restRoutes {
		if len(r.segments) != len(segs) {
			continue
		}
		match := true
		for i, s := range r.segments {
			match = match && (strings.HasPrefix(s, "{") || s == segs[i])
		}
		if match {
			out = append(out, r.methods...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
