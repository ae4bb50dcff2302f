// Package service is Herald's core: channels with per-channel offsets,
// history and recovery, idempotent publishing, presence, the engines that
// hold that state (in memory, or in Redis for several nodes), and the gRPC
// server that implements herald.v1.HeraldService on top of them.
//
// The core knows nothing of WebSockets: the bridge (package wsbridge) is a
// client of the gRPC API like any backend.
//
// Lock order: hub shard → channel subscribers; memory engine channel state
// locks are never held while taking a hub lock except through Handler
// callbacks, which take only hub locks (see hub.go).
package service
