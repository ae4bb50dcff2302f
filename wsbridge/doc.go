// Package wsbridge is Herald's WebSocket edge: it terminates browser
// WebSockets (gorilla/websocket), authenticates them with JWTs, enforces
// channel permissions per namespace and turns browser frames into calls on
// the core's gRPC API. It imports the generated client only, never the core,
// so `herald serve` (in-process connection) and `herald bridge --core ADDR`
// (remote core) run the same code.
//
// # Structure
//
//   - A [Bridge] holds, per channel, one upstream subscription however
//     many local connections watch the channel (hub.go), and fans out
//     locally. Every channel's subscription rides the bridge's one
//     SubscribeMany stream to the core, by id: no goroutine, HTTP/2
//     stream or core-side queue per channel. One goroutine receives on
//     the stream and delivers to the channels; when the stream breaks it
//     reopens it with backoff and resubscribes every channel from the
//     last offset delivered. Each publication is encoded once per
//     subprotocol and the same bytes are queued to every subscriber
//     (encode.go).
//   - Each connection (conn.go) has one reader goroutine, started after the
//     HTTP handler returns, and a writer goroutine that exists only while
//     the connection has output queued. The queue is bounded in frames and
//     bytes; over it the connection is closed as a slow consumer and no one
//     else waits. The writer packs everything queued into as few WebSocket
//     messages as it can, frames them itself in a pooled buffer and sends
//     them in one socket write (no allocation per delivery); a write that
//     does not end is cut by the heartbeat rather than by a deadline per
//     write. The reader waits in gorilla's NextReader with a stack small
//     enough for Go's 2 KB minimum and hands each message to a short-lived
//     goroutine, so that deep request handling (JWT, protojson) never grows
//     the stacks of idle connections.
//   - One BridgeSession stream (session.go) reports presence to the core and
//     receives Disconnect and Unsubscribe commands.
//
// # Lock order
//
// hub shard mu → upstream mu → channel mu → conn mu. registry shard mu →
// conn mu.
// conn.subMu is taken alone or before hub locks, never inside them.
// Nothing that holds conn.mu takes another lock.
package wsbridge
