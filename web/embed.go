package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"
)

//go:embed index.html console.js console.css herald.js herald.d.ts
var files embed.FS

// FS holds the browser files: index.html, console.js and console.css (the
// console), herald.js and herald.d.ts (the client library).
var FS fs.FS = files

// contentTypes are set explicitly rather than taken from the system's MIME
// table, which differs between machines.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "application/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".ts":   "text/plain; charset=utf-8", // herald.d.ts: readable in a browser tab
}

type asset struct {
	body  []byte
	ctype string
	etag  string
}

// Handler returns an http.Handler serving the browser files: "/" is the
// console (index.html), "/herald.js" the client library, "/herald.d.ts"
// its types; any other path is 404. Responses carry "Cache-Control:
// no-cache" with an ETag, so a browser revalidates every time (cheaply, with
// 304) and never runs a stale client against a newer server. Only GET and
// HEAD are served. herald.js and herald.d.ts are public code that pages
// on other hosts import (a module import is a CORS request): they carry
// "Access-Control-Allow-Origin: *". The handler is safe for concurrent use.
func Handler() http.Handler {
	assets := map[string]asset{}
	entries, _ := fs.ReadDir(files, ".")
	for _, e := range entries {
		b, err := fs.ReadFile(files, e.Name())
		if err != nil {
			panic(err) // embedded files are always readable
		}
		sum := sha256.Sum256(b)
		assets["/"+e.Name()] = asset{
			body:  b,
			ctype: contentTypes[path.Ext(e.Name())],
			etag:  `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
	}
	assets["/"] = assets["/index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.URL.Path]
		if !ok || a.ctype == "" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		switch r.URL.Path {
		case "/", "/index.html":
			// The console loads only its own files and talks to bridges over
			// WebSocket (any host: the URL field may name another bridge).
			h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
			h.Set("Referrer-Policy", "no-referrer")
		case "/herald.js":
			// Lets Deno and similar runtimes importing the client by URL
			// find its types.
			h.Set("X-TypeScript-Types", "/herald.d.ts")
			h.Set("Access-Control-Allow-Origin", "*")
		case "/herald.d.ts":
			h.Set("Access-Control-Allow-Origin", "*")
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}
