package payload

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"unicode/utf8"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// protoJSON is how everything but publications is written: protobuf JSON
// with proto field names, as the browser frames and the REST gateway use.
var protoJSON = protojson.MarshalOptions{UseProtoNames: true}

// AppendPublication appends pub as protobuf JSON (proto field names, as
// protojson writes it) except for its payload: a JSON payload, whichever
// field carries it (`json`, `raw_json` or `data`), is written as `"data":`
// followed by its exact text, without newlines. protojson would write
// `json` as a string, `raw_json` as base64, and `data` through a Value; the
// result decodes with protojson into the same Publication with the payload
// as `data`.
//
// A `json` or `raw_json` payload that is not valid JSON in UTF-8 (data
// stored before Herald checked payloads) is never written as JSON, which
// would break the text around it: it is written as `binary`, its bytes
// base64-encoded, and ok is false (see Lossless).
func AppendPublication(b []byte, pub *heraldv1.Publication) (out []byte, ok bool) {
	pub, ok = Lossless(pub)
	return AppendCheckedPublication(b, pub), ok
}

// AppendCheckedPublication is AppendPublication for a publication whose
// JSON payload is known to be valid (one that Lossless returned): it does
// not check the payload again, so that a caller that needs the check for
// other encodings too (the bridge's protobuf frames) pays for it once.
// Given a payload that is not valid, its output is not valid JSON.
func AppendCheckedPublication(b []byte, pub *heraldv1.Publication) []byte {
	b = append(b, `{"channel":`...)
	b = AppendString(b, pub.Channel)
	if pub.Offset != 0 {
		b = append(b, `,"offset":"`...)
		b = strconv.AppendUint(b, pub.Offset, 10)
		b = append(b, '"')
	}
	if pub.Epoch != "" {
		b = append(b, `,"epoch":`...)
		b = AppendString(b, pub.Epoch)
	}
	switch p := pub.Payload.(type) {
	case *heraldv1.Publication_Json:
		b = appendText(b, []byte(p.Json))
	case *heraldv1.Publication_RawJson:
		b = appendText(b, p.RawJson)
	case *heraldv1.Publication_Data:
		b = append(b, `,"data":`...)
		var err error
		if b, err = appendValue(b, p.Data); err != nil {
			b = append(b, "null"...) // not reachable: the core makes Values from valid JSON
		}
	case *heraldv1.Publication_Binary:
		b = appendBinary(b, p.Binary)
	}
	if len(pub.Tags) > 0 {
		b = append(b, `,"tags":{`...)
		first := true
		for k, v := range pub.Tags {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = AppendString(b, k)
			b = append(b, ':')
			b = AppendString(b, v)
		}
		b = append(b, '}')
	}
	if pub.Publisher != nil {
		if v, err := protoJSON.Marshal(pub.Publisher); err == nil {
			b = append(b, `,"publisher":`...)
			b = append(b, v...)
		}
	}
	if pub.TimeUnixMs != 0 {
		b = append(b, `,"time_unix_ms":"`...)
		b = strconv.AppendInt(b, pub.TimeUnixMs, 10)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendText appends valid JSON text as `data`. Text stored by Herald is
// compact already; older data may hold newlines, which would split a
// "\n"-separated frame (and are always insignificant whitespace in valid
// JSON): only then is it compacted.
func appendText(b, text []byte) []byte {
	b = append(b, `,"data":`...)
	if bytes.IndexByte(text, '\n') < 0 && bytes.IndexByte(text, '\r') < 0 {
		return append(b, text...)
	}
	return AppendCompact(b, text)
}

func appendBinary(b, data []byte) []byte {
	b = append(b, `,"binary":"`...)
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, '"')
}

// Lossless returns pub unchanged when its payload is binary or valid JSON
// text, and otherwise (a `json` or `raw_json` payload that is not valid JSON
// in UTF-8, stored before Herald checked payloads) a copy that carries the
// same bytes as `binary`, so that no reader takes them for JSON; ok is then
// false. It is what AppendPublication does, for readers of protobuf.
func Lossless(pub *heraldv1.Publication) (out *heraldv1.Publication, ok bool) {
	var text []byte
	switch p := pub.Payload.(type) {
	case *heraldv1.Publication_RawJson:
		text = p.RawJson
	case *heraldv1.Publication_Json:
		text = []byte(p.Json)
	default:
		return pub, true
	}
	if Check(text) == nil {
		return pub, true
	}
	cp := proto.CloneOf(pub)
	cp.Payload = &heraldv1.Publication_Binary{Binary: text}
	return cp, false
}

// AppendMessage appends m as protobuf JSON with proto field names, writing
// every publication in it with AppendPublication: a Publication, a
// SubscribeResponse, a HistoryResponse, and a ServerFrame carrying a
// publication or a history page. Other messages are written by protojson.
func AppendMessage(b []byte, m proto.Message) ([]byte, error) {
	switch m := m.(type) {
	case *heraldv1.Publication:
		b, _ = AppendPublication(b, m)
		return b, nil
	case *heraldv1.SubscribeResponse:
		if pub := m.GetPublication(); pub != nil {
			b = append(b, `{"publication":`...)
			b, _ = AppendPublication(b, pub)
			return append(b, '}'), nil
		}
	case *heraldv1.HistoryResponse:
		return appendHistory(b, m)
	case *heraldv1.ServerFrame:
		var pub *heraldv1.Publication
		var hist *heraldv1.HistoryResponse
		switch body := m.Body.(type) {
		case *heraldv1.ServerFrame_Pub:
			pub = body.Pub
		case *heraldv1.ServerFrame_History:
			hist = body.History
		}
		if pub == nil && hist == nil {
			break
		}
		b = append(b, '{')
		if m.Id != 0 {
			b = append(b, `"id":`...)
			b = strconv.AppendUint(b, uint64(m.Id), 10)
			b = append(b, ',')
		}
		var err error
		if pub != nil {
			b = append(b, `"pub":`...)
			b, _ = AppendPublication(b, pub)
		} else {
			b = append(b, `"history":`...)
			if b, err = appendHistory(b, hist); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	}
	return protoJSON.MarshalAppend(b, m)
}

func appendHistory(b []byte, h *heraldv1.HistoryResponse) ([]byte, error) {
	b = append(b, '{')
	sep := false
	if len(h.Publications) > 0 {
		b = append(b, `"publications":[`...)
		for i, pub := range h.Publications {
			if i > 0 {
				b = append(b, ',')
			}
			b, _ = AppendPublication(b, pub)
		}
		b = append(b, ']')
		sep = true
	}
	if h.Position != nil {
		if sep {
			b = append(b, ',')
		}
		b = append(b, `"position":`...)
		var err error
		if b, err = protoJSON.MarshalAppend(b, h.Position); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Bytes that are not valid UTF-8
// become U+FFFD, so the result is always valid; U+2028 and U+2029 are
// escaped, so that it can also be embedded in JavaScript source.
func AppendString(b []byte, s string) []byte {
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
