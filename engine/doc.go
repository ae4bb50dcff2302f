// Package engine is the contract between Herald's core and the engines that
// hold channel state: offsets, history, idempotency keys and presence, and
// that carry publications, presence events and commands between the nodes
// that share them.
//
// The core (package service) consumes an Engine; an engine lives in a
// package of its own (engine/memory for one node, engine/redis for many
// nodes on one Redis or a Redis Cluster), imports only this package of the
// core's, and proves that it keeps the contract by passing the suite of
// package engine/enginetest. The node (package node) chooses the engine
// that the configuration names. A new engine is a new package, one line in
// node's table of engines, and a test that runs enginetest.Run.
package engine
