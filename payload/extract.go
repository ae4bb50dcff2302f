package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Extract takes one member out of a JSON object without decoding it: it
// returns obj without the member named by path (a key, or keys of nested
// objects: "publish", "data") and the member's value as the exact text it
// had in obj (nil when there is no such member). Where a step of path is
// not an object, that member stays as it is.
//
// It is how a JSON payload keeps its numbers and key order when it arrives
// inside a JSON document that protojson then decodes (a REST body's
// `data`, a browser frame's `publish.data`): protojson would take it
// through a google.protobuf.Value.
//
// obj must be one JSON object. A key repeated in an object on path is an
// error (which of the two values would be meant?), as is any syntax error.
// The value is not checked for UTF-8 (see Check); the rest of the object
// keeps its members' text as it was, in order.
func Extract(obj []byte, path ...string) (rest, value []byte, err error) {
	if len(path) == 0 {
		return nil, nil, errors.New("payload.Extract: empty path")
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, syntaxErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("not a JSON object")
	}
	rest = make([]byte, 0, len(obj))
	rest = append(rest, '{')
	seen := make(map[string]struct{}, 8)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, syntaxErr(err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, errors.New("not a JSON object")
		}
		if _, dup := seen[key]; dup {
			return nil, nil, fmt.Errorf("key %q is repeated", key)
		}
		seen[key] = struct{}{}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, syntaxErr(err)
		}
		if key == path[0] {
			if len(path) == 1 {
				value = raw
				continue
			}
			if isObject(raw) {
				sub, v, err := Extract(raw, path[1:]...)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %w", key, err)
				}
				raw, value = sub, v
			}
		}
		if len(rest) > 1 {
			rest = append(rest, ',')
		}
		rest = AppendString(rest, key)
		rest = append(rest, ':')
		rest = append(rest, raw...)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, syntaxErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("unexpected data after the JSON object")
	}
	return append(rest, '}'), value, nil
}

func isObject(raw []byte) bool {
	raw = bytes.TrimLeft(raw, space)
	return len(raw) > 0 && raw[0] == '{'
}

func syntaxErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("unexpected end of JSON input")
	}
	return err
}
