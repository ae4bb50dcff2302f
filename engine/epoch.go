package engine

import (
	"crypto/rand"
	"encoding/hex"
	"math"
	"strconv"
)

// MaxOffset is the largest offset a channel can have: the Redis engine
// counts offsets with Redis's signed 64-bit integers, and every engine
// follows it so that all accept the same positions.
const MaxOffset = math.MaxInt64

// MaxEpochLen bounds the epoch of a position a client sends. Epochs that
// engines make are at most 32 bytes.
const MaxEpochLen = 64

// NewEpoch returns a random epoch for a channel whose state begins: 8 hex
// digits.
func NewEpoch() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// EmptyEpoch is the epoch reported for a channel without state (never
// published, or forgotten). It is made of the engine's era (random per
// memory engine process; kept in Redis for the Redis engine, so that it is
// the same on every node and changes when Redis loses its data) and the
// number of the period of the clock it falls in, so it is stable for a
// while, the same on every node, and needs no write:
//
//   - A position read from a channel without state, resumed later, is
//     honoured (recovered) only while the channel is still without state
//     and the period has not changed, or when the channel's state was
//     created in the same period (the engine remembers that period).
//     Engines make period no longer than the shortest time in which a
//     channel's state can be created and forgotten again, so a position
//     that saw a channel empty can never skip a whole life of that
//     channel's state unnoticed.
//   - The '.' keeps it apart from the epochs of channels with state,
//     which are hex only.
func EmptyEpoch(era string, period int64) string {
	return era + "." + strconv.FormatInt(period, 16)
}
