// Package wsbridge is Herald's edge: it serves browsers over WebSocket,
// SSE (EventSource) and HTTP streaming, authenticates them, enforces
// channel permissions per namespace and turns their frames into calls on
// the core's gRPC API. It imports the generated client only, never the
// core, so `herald serve` (in-process connection) and `herald bridge
// --core ADDR` (remote core) run the same code.
//
// # Structure
//
// A browser's protocol session is apart from the transport its frames
// travel on:
//
//   - session.go, request.go: the protocol session (session): identity,
//     subscriptions, the dispatch of client frames from any transport,
//     limits, token expiry and refresh, the personal channel. It queues
//     encoded frames to its transport and asks it to close with a code;
//     it never sees a socket.
//   - authenticator.go: who a client is, behind the authenticator
//     interface, from what it presented (token, transport, allowlisted
//     headers and cookies, address); jwtAuth (jwt.go) is one, hookAuth
//     (hook.go, the application's connect hook, beside JWTs) another.
//   - hook.go: the application's backend decides, through the hooks
//     client (package hooks): connect, refresh (at expiry and by frame),
//     subscribe in namespaces with subscribe_hook, publish in namespaces
//     with publish_hook, and `rpc` frames. No answer is error 203/204 or
//     close 4010, at once.
//   - transport.go: the transport every session has: one bounded
//     outbound queue of shared, encoded frames (limits in frames and bytes,
//     slow consumers closed with 4004, a writer goroutine that exists only
//     while something is queued, pooled buffers, no allocation per
//     delivery), and a wire that writes its batches and cuts its
//     connection. Three wires: websocket.go (RFC 6455 framing, both ways:
//     wsframe.go reads client frames, gorilla only answers the handshake),
//     sse.go (EventSource events whose ids resume every channel, sseid.go)
//     and httpstream.go (NDJSON or length-prefixed protobuf), the last two
//     on httpconn.go's hijacked HTTP response.
//   - command.go: the /command endpoint through which clients of the
//     unidirectional transports send their frames, forwarded through the
//     core to the bridge holding the session when a load balancer sends
//     it elsewhere.
//   - hub.go, channel.go: per channel, one upstream subscription however
//     many local sessions watch it; the channel fans each publication out,
//     encoded once per subprotocol (encode.go), to its subscribers'
//     transports, and makes new subscriptions live from now or resumed
//     from a position (channel.subscribe, channel.resume) in one place.
//   - upstream.go: the bridge's one SubscribeMany stream to the core,
//     carrying every channel's subscription by id: no goroutine, HTTP/2
//     stream or core-side queue per channel. When it breaks it is reopened
//     with backoff and every channel resumes from its last position. On
//     `herald serve`'s in-process link the core's sender hands each
//     message to the bridge directly (inproc.Receive) instead of through
//     a receiving goroutine.
//   - control.go: the BridgeSession control stream to the core: presence
//     reports, the core's Disconnect and Unsubscribe commands, forwarded
//     session commands.
//   - registry.go (sessions by id and user, heartbeat), limits.go
//     (admission and publish rates), drain.go, codes.go (error and close
//     codes), permission.go, metrics.go.
//
// # Lock order
//
// hubShard.mu → upstream.mu → channel.mu → transport.mu.
// sessionShard.mu → transport.mu.
// session.subMu is taken alone or before hub locks and transport.mu, never
// inside them. control.mu, commandShard.mu and commandQueue.mu are taken
// alone. Nothing that holds transport.mu takes another lock.
package wsbridge
