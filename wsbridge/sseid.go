package wsbridge

import (
	"hash/fnv"
	"net/url"
	"strconv"
	"strings"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// SSE event ids carry what a stream needs to resume: a browser's
// EventSource reconnects by itself and sends the last id it received as
// Last-Event-ID, so the id must hold the position of every channel the
// stream resumes, not only the channel of the event.
//
// The channels an id covers are those subscribed at connect: index 0 is
// the personal channel (user:<id>; absent for anonymous sessions), 1..n
// the `channel` parameters of the URL in their order (the browser
// reconnects with the same URL). Channels subscribed later by command are
// not covered: their client resubscribes them with `since` (herald.js
// does).
//
// Format, after a checksum of the user and the URL's channels (so that an
// id from another stream is ignored rather than misapplied):
//
//	<checksum, 8 hex digits>{,<index>:<offset>:<epoch>}
//
// e.g. `5c1f09aa,0:17:9f1c2a7b,1:3:77aa01cd`, with the epoch
// percent-encoded outside [A-Za-z0-9._~-]. An entry is present once its
// channel's position is known. Its size is bounded by the channels named
// at connect: 9 bytes, plus per channel with a position at most 3 + 1 + 20
// + 1 + 3×len(epoch) + 1 bytes (Herald's epochs are 8 hex digits: ~20-35
// bytes a channel, at most ~4.5 KB with max_channels 128). Every event
// that advances a covered channel carries the whole id.

// maxSSEID bounds a Last-Event-ID the bridge parses; a longer one is
// ignored (the stream starts without resuming).
const maxSSEID = 16 << 10

// sseIDs is one stream's resume state. resume fills it before the first
// frame is queued; afterwards only the transport's writer touches it.
type sseIDs struct {
	names  []string // index 0: the personal channel ("" if anonymous); then the URL's channels
	offs   []uint64
	epochs []string
	check  uint32
}

func newSSEIDs(channels []string) *sseIDs {
	names := append([]string{""}, channels...)
	return &sseIDs{names: names, offs: make([]uint64, len(names)), epochs: make([]string, len(names))}
}

// resume sets the stream's user and, from last (a Last-Event-ID, may be
// empty), the position of each channel to resume after: the personal
// channel's, and the URL's channels as initial subscriptions.
func (x *sseIDs) resume(user, last string) (personal *heraldv1.StreamPosition, subs []initialSub) {
	if user != "" {
		x.names[0] = personalChannel(user)
	}
	h := fnv.New32a()
	h.Write([]byte(user))
	for _, n := range x.names[1:] {
		h.Write([]byte{0})
		h.Write([]byte(n))
	}
	x.check = h.Sum32()
	pos := x.parse(last)
	if pos != nil && user != "" {
		personal = pos[0]
	}
	for i, n := range x.names[1:] {
		in := initialSub{channel: n}
		if pos != nil {
			in.since = pos[i+1]
		}
		subs = append(subs, in)
	}
	return personal, subs
}

// parse reads an id of this stream into positions by index (nil where it
// has none); it returns nil for an id of another stream or a malformed one,
// and records the positions it found as the stream's.
func (x *sseIDs) parse(id string) []*heraldv1.StreamPosition {
	if id == "" || len(id) > maxSSEID {
		return nil
	}
	parts := strings.Split(id, ",")
	if c, err := strconv.ParseUint(parts[0], 16, 32); err != nil || len(parts[0]) != 8 || uint32(c) != x.check {
		return nil
	}
	pos := make([]*heraldv1.StreamPosition, len(x.names))
	for _, p := range parts[1:] {
		idx, rest, ok1 := strings.Cut(p, ":")
		off, epoch, ok2 := strings.Cut(rest, ":")
		i, err1 := strconv.Atoi(idx)
		o, err2 := strconv.ParseUint(off, 10, 64)
		e, err3 := url.PathUnescape(epoch)
		if !ok1 || !ok2 || err1 != nil || err2 != nil || err3 != nil || i < 0 || i >= len(x.names) || e == "" || x.names[i] == "" {
			return nil
		}
		pos[i] = &heraldv1.StreamPosition{Offset: o, Epoch: e}
	}
	for i, p := range pos {
		if p != nil {
			x.offs[i], x.epochs[i] = p.Offset, p.Epoch
		}
	}
	return pos
}

// advance records that a frame brought channel p.Channel to p's position;
// it reports whether the channel is covered (the id changed).
func (x *sseIDs) advance(p *heraldv1.Publication) bool {
	if p.Epoch == "" {
		return false
	}
	for i, n := range x.names {
		if n == p.Channel && n != "" {
			x.offs[i], x.epochs[i] = p.Offset, p.Epoch
			return true
		}
	}
	return false
}

const hexLower = "0123456789abcdef"

// appendID appends the current id.
func (x *sseIDs) appendID(b []byte) []byte {
	for s := 28; s >= 0; s -= 4 {
		b = append(b, hexLower[x.check>>s&0xf])
	}
	for i, e := range x.epochs {
		if e == "" {
			continue
		}
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, ':')
		b = strconv.AppendUint(b, x.offs[i], 10)
		b = append(b, ':')
		for j := 0; j < len(e); j++ {
			c := e[j]
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-' {
				b = append(b, c)
				continue
			}
			b = append(b, '%', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&0xf])
		}
	}
	return b
}
