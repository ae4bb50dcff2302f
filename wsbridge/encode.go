package wsbridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// format is a connection's subprotocol.
type format uint8

const (
	formatJSON  format = iota // herald.json: protojson frames, separated by "\n" when packed
	formatProto               // herald.proto: binary protobuf frames, each preceded by its varint length
	numFormats
)

// Subprotocol names.
const (
	SubprotocolJSON  = "herald.json"
	SubprotocolProto = "herald.proto"
)

var (
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}
	jsonIn  = protojson.UnmarshalOptions{}
)

// decodeFrames splits one client message into frames and decodes them,
// calling fn with each frame or with the error of a frame that could not be
// decoded (the frame is then nil). fn returns false to stop. A JSON message
// holds frames separated by "\n" (blank lines are skipped); a protobuf
// message holds frames each preceded by its length as a varint. Frames must
// have a non-zero id and a body. decodeFrames never panics on any input.
func decodeFrames(f format, msg []byte, fn func(*heraldv1.ClientFrame, *requestError) bool) {
	if f == formatJSON {
		for len(msg) > 0 {
			line := msg
			if i := bytes.IndexByte(msg, '\n'); i >= 0 {
				line, msg = msg[:i], msg[i+1:]
			} else {
				msg = nil
			}
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			fr := &heraldv1.ClientFrame{}
			if err := jsonIn.Unmarshal(line, fr); err != nil {
				if !fn(nil, reqErr(ErrBadFrame, "bad JSON frame: %s", err.Error())) {
					return
				}
				continue
			}
			if !fn(checkFrame(fr)) {
				return
			}
		}
		return
	}
	for len(msg) > 0 {
		n, l := protowire.ConsumeVarint(msg)
		if l < 0 || n > uint64(len(msg)-l) {
			fn(nil, reqErr(ErrBadFrame, "bad protobuf message: each frame must be preceded by its length as a varint"))
			return
		}
		body := msg[l : l+int(n)]
		msg = msg[l+int(n):]
		fr := &heraldv1.ClientFrame{}
		if err := proto.Unmarshal(body, fr); err != nil {
			if !fn(nil, reqErr(ErrBadFrame, "bad protobuf frame: %s", err.Error())) {
				return
			}
			continue
		}
		if !fn(checkFrame(fr)) {
			return
		}
	}
}

func checkFrame(fr *heraldv1.ClientFrame) (*heraldv1.ClientFrame, *requestError) {
	if fr.Body == nil {
		return fr, reqErr(ErrBadFrame, "unknown or empty frame: set exactly one of connect, refresh, subscribe, unsubscribe, publish, history, presence, presence_stats, ping")
	}
	if fr.Id == 0 {
		return fr, reqErr(ErrBadFrame, "id is required (a non-zero number echoed in the reply)")
	}
	return fr, nil
}

// encodeFrame encodes a server frame for f. Protobuf frames carry their
// varint length prefix, so the writer only concatenates them.
func encodeFrame(f format, fr *heraldv1.ServerFrame) []byte {
	if f == formatJSON {
		b, err := jsonOut.Marshal(fr)
		if err != nil {
			b, _ = jsonOut.Marshal(errorFrame(fr.Id, reqErr(ErrInternal, "internal error")))
		}
		return b
	}
	size := proto.Size(fr)
	b := make([]byte, 0, size+protowire.SizeVarint(uint64(size)))
	b = protowire.AppendVarint(b, uint64(size))
	b, _ = proto.MarshalOptions{}.MarshalAppend(b, fr)
	return b
}

func errorFrame(id uint32, e *requestError) *heraldv1.ServerFrame {
	return &heraldv1.ServerFrame{Id: id, Body: &heraldv1.ServerFrame_Error{Error: &heraldv1.ErrorFrame{
		Code: uint32(e.code), Message: e.msg, Temporary: e.code.temporary(),
	}}}
}

// encodedPub is a publication encoded once for each subprotocol that a
// channel's subscribers use. The bytes are shared by every subscriber and
// never modified.
type encodedPub struct {
	pub   *heraldv1.Publication
	json  []byte
	proto []byte
}

func (e *encodedPub) bytes(f format) []byte {
	if f == formatJSON {
		if e.json == nil {
			e.json = appendPubJSON(nil, e.pub)
		}
		return e.json
	}
	if e.proto == nil {
		e.proto = encodeFrame(formatProto, &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pub{Pub: e.pub}})
	}
	return e.proto
}

// appendPubJSON appends the JSON frame of a publication push, built by hand
// so that a raw JSON payload is copied once as JSON (protojson would write
// raw_json as base64). It decodes with protojson into the same ServerFrame
// as protojson's own encoding of the frame with the payload as `data`.
func appendPubJSON(b []byte, pub *heraldv1.Publication) []byte {
	b = append(b, `{"pub":{"channel":`...)
	b = appendJSONString(b, pub.Channel)
	if pub.Offset != 0 {
		b = append(b, `,"offset":"`...)
		b = strconv.AppendUint(b, pub.Offset, 10)
		b = append(b, '"')
	}
	if pub.Epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, pub.Epoch)
	}
	switch p := pub.Payload.(type) {
	case *heraldv1.Publication_RawJson:
		b = append(b, `,"data":`...)
		if bytes.IndexByte(p.RawJson, '\n') >= 0 || bytes.IndexByte(p.RawJson, '\r') >= 0 {
			// Frames are separated by "\n": compact multi-line JSON.
			var buf bytes.Buffer
			if json.Compact(&buf, p.RawJson) == nil {
				b = append(b, buf.Bytes()...)
			} else {
				b = append(b, "null"...)
			}
		} else {
			b = append(b, p.RawJson...)
		}
	case *heraldv1.Publication_Binary:
		b = append(b, `,"binary":"`...)
		b = base64.StdEncoding.AppendEncode(b, p.Binary)
		b = append(b, '"')
	case *heraldv1.Publication_Data:
		if v, err := jsonOut.Marshal(p.Data); err == nil {
			b = append(b, `,"data":`...)
			b = append(b, v...)
		}
	}
	if len(pub.Tags) > 0 {
		b = append(b, `,"tags":{`...)
		first := true
		for k, v := range pub.Tags {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, v)
		}
		b = append(b, '}')
	}
	if pub.Publisher != nil {
		if v, err := jsonOut.Marshal(pub.Publisher); err == nil {
			b = append(b, `,"publisher":`...)
			b = append(b, v...)
		}
	}
	if pub.TimeUnixMs != 0 {
		b = append(b, `,"time_unix_ms":"`...)
		b = strconv.AppendInt(b, pub.TimeUnixMs, 10)
		b = append(b, '"')
	}
	return append(b, "}}"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
