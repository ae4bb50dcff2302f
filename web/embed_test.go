package web_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herald-io/herald/web"
)

func TestHandler(t *testing.T) {
	h := web.Handler()
	for _, tt := range []struct {
		path, ctype, contains string
		status                int
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/console.js">`, 200},
		{"/index.html", "text/html; charset=utf-8", "<title>Herald console</title>", 200},
		{"/herald.js", "application/javascript; charset=utf-8", "export class Herald", 200},
		{"/herald.d.ts", "text/plain; charset=utf-8", "export declare class Herald", 200},
		{"/console.js", "application/javascript; charset=utf-8", `from "/herald.js"`, 200},
		{"/console.css", "text/css; charset=utf-8", ":root", 200},
		{"/nope.js", "", "", 404},
		{"/embed.go", "", "", 404},
		{"/web/herald.js", "", "", 404},
	} {
		t.Run(tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			res := rec.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			if tt.status != 200 {
				return
			}
			if got := res.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}

			// Revalidation with the ETag is a cheap 304.
			req := httptest.NewRequest("GET", tt.path, nil)
			req.Header.Set("If-None-Match", res.Header.Get("ETag"))
			rec = httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotModified {
				t.Errorf("revalidation: status %d, want 304", rec.Code)
			}
		})
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", rec.Code)
	}
}

func TestFS(t *testing.T) {
	for _, name := range []string{"index.html", "console.js", "console.css", "herald.js", "herald.d.ts"} {
		if _, err := fs.Stat(web.FS, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
