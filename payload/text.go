package payload

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Check reports whether text is one JSON value in UTF-8. json.Valid alone
// is not enough: it accepts strings that are not UTF-8, which a WebSocket
// text frame cannot carry and protobuf string fields refuse. The error is
// written for the client that sent text.
func Check(text []byte) error {
	if valid(text) {
		return nil
	}
	// Say what is wrong; only this error path pays for it.
	if !utf8.Valid(text) {
		return fmt.Errorf("not valid UTF-8 (first bad byte at offset %d): JSON text must be UTF-8; send other bytes as binary", invalidUTF8At(text))
	}
	var se *json.SyntaxError
	// Unmarshal checks the whole text before it decodes anything, and
	// says where it is wrong.
	if err := json.Unmarshal(text, new(json.RawMessage)); errors.As(err, &se) {
		// Offset counts the bytes read, the bad one included.
		return fmt.Errorf("not valid JSON: %v (at offset %d)", se, max(se.Offset-1, 0))
	}
	return errors.New("not valid JSON")
}

// invalidUTF8At returns the offset of the first byte of text that is not
// part of a valid UTF-8 sequence.
func invalidUTF8At(text []byte) int {
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRune(text[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(text)
}

// Compact checks text (see Check) and returns it without insignificant
// whitespace: numbers, strings and the order of keys stay as they are.
// Compact text has no newline, so it can sit in a "\n"-separated frame.
// When there is nothing to remove, the result is text itself.
func Compact(text []byte) ([]byte, error) {
	if err := Check(text); err != nil {
		return nil, err
	}
	if firstSpace(text) < 0 {
		return text, nil
	}
	return AppendCompact(make([]byte, 0, len(text)), text), nil
}

// AppendCompact appends valid JSON text (see Check) to dst without its
// insignificant whitespace. On text that is not valid JSON the result is
// unspecified.
func AppendCompact(dst, text []byte) []byte {
	for {
		i := firstSpace(text)
		if i < 0 {
			return append(dst, text...)
		}
		// Whitespace that matters is only inside strings, so after
		// whitespace outside one the scan starts afresh.
		dst = append(dst, text[:i]...)
		text = text[i+1:]
	}
}

// firstSpace returns the offset of the first insignificant whitespace in
// valid JSON text, or -1.
func firstSpace(text []byte) int {
	for i := 0; i < len(text); i++ {
		switch text[i] {
		case ' ', '\t', '\n', '\r':
			return i
		case '"': // skip the string: whitespace in it is its own
			for i++; i < len(text) && text[i] != '"'; i++ {
				if text[i] == '\\' {
					i++
				}
			}
		}
	}
	return -1
}

// space is JSON's insignificant whitespace (RFC 8259, section 2), all of
// it: bytes.TrimSpace trims more (form feed, vertical tab, U+0085, U+00A0),
// which would make text that is not JSON look like it.
const space = " \t\r\n"

// TrimSpace returns text without JSON whitespace at either end (a loop:
// half the time of bytes.Trim with a cutset, on every REST publish).
func TrimSpace(text []byte) []byte {
	i, j := 0, len(text)
	for i < j && isSpace(text[i]) {
		i++
	}
	for j > i && isSpace(text[j-1]) {
		j--
	}
	return text[i:j]
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
