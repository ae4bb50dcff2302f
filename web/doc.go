// Package web is Herald's browser side, embedded in the binary: the client
// library herald.js (modern JavaScript with JSDoc types, its declarations in
// the hand-written herald.d.ts, no dependencies and no build step; also
// the npm package @herald-io/client, described by package.json) and the
// console page served at "/", which doubles as the chat demo and has an
// admin mode for operators.
//
// [Handler] serves them; node.Start mounts it at "/" in serve and bridge
// modes, beside the bridge's "/ws".
//
// The browser tests (browser_test.go) drive the client and the page in a
// real headless Chromium through chromedp, against real nodes.
package web
