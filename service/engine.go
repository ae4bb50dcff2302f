package service

import "github.com/herald-io/herald/engine"

// The core runs on the engine contract of package engine. These aliases
// name its parts in the core's own terms, so that the hub and the server
// read as they did when the engines lived here; they are the same types
// (an engine.Engine is a service.Engine).
type (
	Engine         = engine.Engine
	Handler        = engine.Handler
	PublishOptions = engine.PublishOptions
	PublishResult  = engine.PublishResult
	HistoryQuery   = engine.HistoryQuery
	HistoryResult  = engine.HistoryResult
	ChannelState   = engine.ChannelState
	ChannelsQuery  = engine.ChannelsQuery
)

// Errors of the engine contract that the core maps to gRPC codes.
var (
	ErrEpochMismatch = engine.ErrEpochMismatch
	ErrUnavailable   = engine.ErrUnavailable
)

// Bounds of the positions clients send (validate.go).
const (
	maxOffset   = engine.MaxOffset
	maxEpochLen = engine.MaxEpochLen
)
