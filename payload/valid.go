package payload

import "unicode/utf8"

// maxDepth is the deepest nesting of arrays and objects accepted, as
// encoding/json accepts it.
const maxDepth = 10000

// valid reports whether text is one JSON value (RFC 8259) whose strings are
// valid UTF-8: exactly utf8.Valid(text) && json.Valid(text), nesting limit
// included (FuzzCheck compares them), in one pass and several times faster
// than json.Valid, whose scanner calls a function per byte. The bridge runs
// it on every publication it forwards, so its speed matters.
func valid(b []byte) bool {
	var stackArr [64]byte
	stack := stackArr[:0] // '{' or '[' of each open container
	i := skipSpace(b, 0)
value:
	if i >= len(b) {
		return false
	}
	switch c := b[i]; {
	case c == '{' || c == '[':
		if len(stack) >= maxDepth {
			return false
		}
		i = skipSpace(b, i+1)
		if c == '{' {
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			stack = append(stack, '{')
			var ok bool
			if i, ok = key(b, i); !ok {
				return false
			}
			goto value
		}
		if i < len(b) && b[i] == ']' {
			i++
			break
		}
		stack = append(stack, '[')
		goto value
	case c == '"':
		var ok bool
		if i, ok = str(b, i); !ok {
			return false
		}
	case c == '-' || c >= '0' && c <= '9':
		var ok bool
		if i, ok = number(b, i); !ok {
			return false
		}
	case c == 't':
		if !lit(b, i, "true") {
			return false
		}
		i += 4
	case c == 'f':
		if !lit(b, i, "false") {
			return false
		}
		i += 5
	case c == 'n':
		if !lit(b, i, "null") {
			return false
		}
		i += 4
	default:
		return false
	}
	// After a value: a comma, the end of its container, or the end.
	for {
		i = skipSpace(b, i)
		if len(stack) == 0 {
			return i == len(b)
		}
		if i >= len(b) {
			return false
		}
		top := stack[len(stack)-1]
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
			if top == '{' {
				var ok bool
				if i, ok = key(b, i); !ok {
					return false
				}
			}
			goto value
		case '}', ']':
			if b[i] != top+2 { // '{'+2 == '}', '['+2 == ']'
				return false
			}
			stack = stack[:len(stack)-1]
			i++
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// key scans an object key and its colon at b[i:], returning where its
// value may start.
func key(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := str(b, i)
	if !ok {
		return i, false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipSpace(b, i+1), true
}

// plain marks the bytes that stand for themselves inside a string: ASCII
// from 0x20, except '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str scans the string starting at b[i] == '"' and returns the offset
// after it.
func str(b []byte, i int) (int, bool) {
	i++
	for {
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		case c < 0x20:
			return i, false
		default: // not ASCII: one valid UTF-8 sequence
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return i, false
			}
			i += n
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// number scans a number at b[i:]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func number(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func lit(b []byte, i int, word string) bool {
	return len(b)-i >= len(word) && string(b[i:i+len(word)]) == word
}
