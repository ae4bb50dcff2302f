package payload

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// FromValue converts a google.protobuf.Value to compact JSON text, once, on
// publish. What a Value cannot hold is already gone: its numbers are
// doubles (written as the shortest text that reads back as the same
// double, as JavaScript does) and a Struct has no key order, so keys are
// sorted.
//
// A Value with no kind set, at any depth, is an error, not null: it is what
// protobuf libraries that do not know the Value's JSON mapping send for
// `data: {text: "x"}` (Node's protobufjs with its camelCase struct.proto,
// Python's `Value()`), and publishing it as null would lose the
// publisher's payload behind a success. So is a number that is NaN or
// infinite, which JSON cannot write. The error says where, and how to send
// JSON text instead.
func FromValue(v *structpb.Value) ([]byte, error) {
	b, err := appendValue(nil, v)
	if err != nil {
		var ve *valueError
		if errors.As(err, &ve) {
			return nil, ve.withHelp()
		}
		return nil, err
	}
	return b, nil
}

// valueError is a Value that cannot be converted, and where it is, from
// the innermost step outwards.
type valueError struct {
	msg  string
	path []string
}

func (e *valueError) Error() string { return e.msg }

// where is the path of the failing Value from the top: `.items[2].name`,
// or "" at the top.
func (e *valueError) where() string {
	var sb strings.Builder
	for _, p := range slices.Backward(e.path) {
		sb.WriteString(p)
	}
	return sb.String()
}

func (e *valueError) withHelp() error {
	at := "the top-level Value"
	if w := e.where(); w != "" {
		at = "the Value at " + w
	}
	return fmt.Errorf("%s %s; nothing was published. "+
		"A protobuf library that does not know google.protobuf.Value's JSON mapping sends empty Values "+
		"(with protobufjs, set the camelCase fields, such as structValue and stringValue; Value.fromObject of plain JSON is empty too): "+
		"to send JSON exactly from any language, put its text in the `json` field, or POST it as `data` to the REST gateway",
		at, e.msg)
}

func (e *valueError) in(step string) *valueError {
	e.path = append(e.path, step)
	return e
}

func appendValue(b []byte, v *structpb.Value) ([]byte, error) {
	if v == nil {
		return b, &valueError{msg: "is missing (a null entry)"}
	}
	switch k := v.Kind.(type) {
	case *structpb.Value_NullValue:
		return append(b, "null"...), nil
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(b, k.BoolValue), nil
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return b, &valueError{msg: fmt.Sprintf("is the number %v, which JSON cannot write", f)}
		}
		return appendNumber(b, f), nil
	case *structpb.Value_StringValue:
		if !utf8.ValidString(k.StringValue) {
			return b, &valueError{msg: "is a string that is not valid UTF-8"}
		}
		return AppendString(b, k.StringValue), nil
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		keys := make([]string, 0, len(fields))
		for key := range fields {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, key := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			if !utf8.ValidString(key) {
				return b, &valueError{msg: "has a key that is not valid UTF-8"}
			}
			b = AppendString(b, key)
			b = append(b, ':')
			var err error
			if b, err = appendValue(b, fields[key]); err != nil {
				return b, inStep(err, "."+pathKey(key))
			}
		}
		return append(b, '}'), nil
	case *structpb.Value_ListValue:
		b = append(b, '[')
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, e); err != nil {
				return b, inStep(err, "["+strconv.Itoa(i)+"]")
			}
		}
		return append(b, ']'), nil
	default:
		return b, &valueError{msg: "has no kind set (none of null_value, number_value, string_value, bool_value, struct_value, list_value)"}
	}
}

func inStep(err error, step string) error {
	var ve *valueError
	if errors.As(err, &ve) {
		return ve.in(step)
	}
	return err
}

// pathKey writes a Struct key for an error path: bare when it is a plain
// name, quoted otherwise.
func pathKey(key string) string {
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return strconv.Quote(key)
		}
	}
	if key == "" {
		return `""`
	}
	return key
}

// appendNumber writes a finite double as JavaScript's Number.prototype.
// toString does (and encoding/json): the shortest digits that read back as
// the same double, in plain notation from 1e-6 up to 1e21, with an
// exponent outside that range.
func appendNumber(b []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// strconv writes 1e-07; JavaScript writes 1e-7.
		n := len(b)
		if n-start >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
