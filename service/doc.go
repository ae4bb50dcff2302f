// Package service is Herald's core: the gRPC server that implements
// herald.v1.HeraldService (publishing, subscriptions with recovery from
// history, presence, bridge sessions) and the hub that fans out what an
// engine delivers to this node's streams. The engines that hold channel
// state live in their own packages (engine/memory, engine/redis) behind
// the contract of package engine.
//
// The core knows nothing of WebSockets: the bridge (package wsbridge) is a
// client of the gRPC API like any backend.
//
// Lock order: hub shard → channel subscribers; an engine's locks are never
// held while taking a hub lock except through Handler callbacks, which take
// only hub locks (see hub.go).
package service
