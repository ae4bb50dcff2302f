package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
)

// The fast path of the client read loop: a message is split on "\n" into
// frames; a frame that starts with pubPrefix (the bridge writes publication
// pushes that way) is a publication, and the time its latency counts from
// is the integer after the first `"t":` (and its send time, where the
// payload carries one, right after it, `,"s":`). Channel, offset and epoch
// come before the payload and can never contain `"t":` (channel names have
// no quotes; offset and epoch are values, not keys), so the first match is
// the payload's.
var (
	pubPrefix   = []byte(`{"pub":`)
	joinPrefix  = []byte(`{"join":`)
	leavePrefix = []byte(`{"leave":`)
	tKey        = []byte(`"t":`)
	sKey        = []byte(`,"s":`)
	offsetKey   = []byte(`"offset":"`)
)

// isPresenceEvent reports whether frame is a join or leave push, which the
// read loop counts without decoding: in a namespace with join_leave on,
// connecting N subscribers pushes O(N²) of them.
func isPresenceEvent(frame []byte) bool {
	return bytes.HasPrefix(frame, joinPrefix) || bytes.HasPrefix(frame, leavePrefix)
}

// cutFrame returns msg's first frame and the rest after the "\n".
func cutFrame(msg []byte) (frame, rest []byte) {
	if i := bytes.IndexByte(msg, '\n'); i >= 0 {
		return msg[:i], msg[i+1:]
	}
	return msg, nil
}

// parseT returns the non-negative integer that follows the first `"t":` in
// frame, without allocating. ok is false when there is none or it overflows
// int64.
func parseT(frame []byte) (t int64, ok bool) {
	t, _, ok = parseStamps(frame)
	return t, ok
}

// parseStamps is parseT that also returns the send time that follows the
// "t" in a payload of appendStamped (0 where there is none).
func parseStamps(frame []byte) (t, sent int64, ok bool) {
	i := bytes.Index(frame, tKey)
	if i < 0 {
		return 0, 0, false
	}
	t, i, ok = parseDigits(frame, i+len(tKey))
	if !ok {
		return 0, 0, false
	}
	if bytes.HasPrefix(frame[i:], sKey) {
		if s, _, ok := parseDigits(frame, i+len(sKey)); ok {
			sent = s
		}
	}
	return t, sent, true
}

// parseDigits reads the non-negative integer at frame[i:], after any
// spaces, and returns it and the index after it.
func parseDigits(frame []byte, i int) (v int64, end int, ok bool) {
	for i < len(frame) && frame[i] == ' ' {
		i++
	}
	start := i
	for ; i < len(frame); i++ {
		c := frame[i]
		if c < '0' || c > '9' {
			break
		}
		d := int64(c - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, i, false
		}
		v = v*10 + d
	}
	return v, i, i > start
}

// parseOffset returns the offset of a publication frame: the digits of the
// first `"offset":"` (protobuf JSON writes a uint64 as a string), which
// comes after the channel name (no quotes in it) and before the payload.
// ok is false when there is none (offset 0 is not written) or it
// overflows.
func parseOffset(frame []byte) (off uint64, ok bool) {
	i := bytes.Index(frame, offsetKey)
	if i < 0 {
		return 0, false
	}
	i += len(offsetKey)
	start := i
	for ; i < len(frame); i++ {
		c := frame[i]
		if c < '0' || c > '9' {
			break
		}
		d := uint64(c - '0')
		if off > (math.MaxUint64-d)/10 {
			return 0, false
		}
		off = off*10 + d
	}
	if i == start || i == len(frame) || frame[i] != '"' {
		return 0, false
	}
	return off, true
}

// appendPayload appends the bench's JSON payload, {"t":<unix ns>,"p":"xxx"},
// padded with x to size bytes where size allows.
func appendPayload(b []byte, t int64, size int) []byte { return appendStamped(b, t, 0, size) }

// appendStamped is appendPayload with the send time as well,
// {"t":<due>,"s":<sent>,"p":"xxx"}, when sent is not 0: latency is then
// counted both from the schedule and from the send.
func appendStamped(b []byte, t, sent int64, size int) []byte {
	start := len(b)
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, t, 10)
	if sent != 0 {
		b = append(b, sKey...)
		b = strconv.AppendInt(b, sent, 10)
	}
	const tail = `,"p":""}`
	pad := size - (len(b) - start) - len(tail)
	if pad < 0 {
		return append(b, '}')
	}
	b = append(b, `,"p":"`...)
	for range pad {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// serverFrame is the part of a ServerFrame that the slow path reads: replies
// to connect and subscribe, and the pushes that tell a client it lost
// something.
type serverFrame struct {
	ID    uint32 `json:"id"`
	Error *struct {
		Code    uint32 `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Connect    json.RawMessage `json:"connect"`
	Subscribe  json.RawMessage `json:"subscribe"`
	Subscribed *struct {
		Channel string `json:"channel"`
	} `json:"subscribed"`
	Unsubscribed *struct {
		Channel string `json:"channel"`
		Reason  string `json:"reason"`
	} `json:"unsubscribed"`
	Disconnect *struct {
		Code   uint32 `json:"code"`
		Reason string `json:"reason"`
	} `json:"disconnect"`
	Pub json.RawMessage `json:"pub"`
}
