package readmetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A value is a JSON value that keeps its object keys in order and its
// numbers as written.
type value struct {
	kind byte // 'o' object, 'a' array, 's' string, 'n' number, 'b' bool, 'z' null
	keys []string
	vals []value
	text string // a string's value, a number's or bool's text
}

func (v value) String() string {
	var b strings.Builder
	v.write(&b)
	return b.String()
}

func (v value) write(b *strings.Builder) {
	switch v.kind {
	case 'o':
		b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(k)
			b.Write(kb)
			b.WriteByte(':')
			v.vals[i].write(b)
		}
		b.WriteByte('}')
	case 'a':
		b.WriteByte('[')
		for i, e := range v.vals {
			if i > 0 {
				b.WriteByte(',')
			}
			e.write(b)
		}
		b.WriteByte(']')
	case 's':
		sb, _ := json.Marshal(v.text)
		b.Write(sb)
	default:
		b.WriteString(v.text)
	}
}

func decodeValue(dec *json.Decoder) (value, error) {
	tok, err := dec.Token()
	if err != nil {
		return value{}, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := value{kind: 'o'}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return value{}, err
				}
				e, err := decodeValue(dec)
				if err != nil {
					return value{}, err
				}
				v.keys = append(v.keys, kt.(string))
				v.vals = append(v.vals, e)
			}
			_, err := dec.Token()
			return v, err
		case '[':
			v := value{kind: 'a'}
			for dec.More() {
				e, err := decodeValue(dec)
				if err != nil {
					return value{}, err
				}
				v.vals = append(v.vals, e)
			}
			_, err := dec.Token()
			return v, err
		}
		return value{}, fmt.Errorf("unexpected %v", t)
	case string:
		return value{kind: 's', text: t}, nil
	case json.Number:
		return value{kind: 'n', text: t.String()}, nil
	case bool:
		return value{kind: 'b', text: fmt.Sprint(t)}, nil
	case nil:
		return value{kind: 'z', text: "null"}, nil
	}
	return value{}, fmt.Errorf("unexpected token %v", tok)
}

// A record is one unit of output: a JSON value, or an SSE event (its
// fields in order, a data field's value decoded).
type record struct {
	fields []string // SSE only
	vals   []value  // SSE: one per field (an id as a string)
	json   *value
}

func (r record) String() string {
	if r.json != nil {
		return r.json.String()
	}
	var parts []string
	for i, f := range r.fields {
		parts = append(parts, f+": "+r.vals[i].String())
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// isSSE tells whether a documented block is an SSE stream.
func isSSE(body string) bool {
	for _, line := range strings.Split(body, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		return strings.HasPrefix(line, "data: ") || strings.HasPrefix(line, "id: ") || strings.HasPrefix(line, "event: ")
	}
	return false
}

// parseRecords cuts text into records: a sequence of JSON values, or with
// sse, of events. What follows the last complete record (a stream cut
// short) is returned as rest.
func parseRecords(text string, sse bool) (recs []record, rest string, err error) {
	if sse {
		events := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n")
		for i, ev := range events {
			if strings.TrimSpace(ev) == "" {
				continue
			}
			if i == len(events)-1 && !strings.HasSuffix(text, "\n\n") {
				return recs, ev, nil // not yet ended by a blank line
			}
			var r record
			for _, line := range strings.Split(strings.Trim(ev, "\n"), "\n") {
				if strings.HasPrefix(line, ":") {
					continue // an SSE comment
				}
				f, v, ok := strings.Cut(line, ": ")
				if !ok {
					return recs, ev, fmt.Errorf("SSE line %q is not FIELD: VALUE", line)
				}
				r.fields = append(r.fields, f)
				if f == "data" {
					dec := json.NewDecoder(strings.NewReader(v))
					dec.UseNumber()
					dv, err := decodeValue(dec)
					if err != nil {
						return recs, ev, fmt.Errorf("SSE data %q: %v", v, err)
					}
					r.vals = append(r.vals, dv)
				} else {
					r.vals = append(r.vals, value{kind: 's', text: v})
				}
			}
			recs = append(recs, r)
		}
		return recs, "", nil
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	for {
		off := dec.InputOffset()
		v, err := decodeValue(dec)
		if errors.Is(err, io.EOF) {
			return recs, "", nil
		}
		if err != nil {
			rest := text[off:]
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return recs, rest, nil // cut short: more may come
			}
			return recs, rest, err
		}
		recs = append(recs, record{json: &v})
	}
}

// How a documented value is compared with the printed one, by its key:
// exactly, unless the key is listed here.
var (
	// Values that differ from run to run but stand for one thing: the
	// README's value is bound to the first printed value it matches, and
	// must stand for that value (and no other README value for it)
	// everywhere after, in outputs and in later commands, which get the
	// printed value in its place.
	boundKeys = map[string]bool{"epoch": true, "client": true, "session_token": true}
	// Values that are anything of the same JSON type.
	anyKeys = map[string]bool{
		"time_unix_ms": true, "timeUnixMs": true, // the clock
		"version":        true, // the build's: "devel" from a work tree
		"id@sse":         true, // an SSE event id: its stream position
		"uptime_seconds": true, "node": true,
	}
)

// bindings maps the README's values of bound keys to the printed ones.
type bindings struct {
	fwd, rev map[string]string
}

func newBindings() *bindings {
	return &bindings{fwd: map[string]string{}, rev: map[string]string{}}
}

func (b *bindings) clone() *bindings {
	c := newBindings()
	for k, v := range b.fwd {
		c.fwd[k] = v
	}
	for k, v := range b.rev {
		c.rev[k] = v
	}
	return c
}

func (b *bindings) bind(doc, got string) error {
	if prev, ok := b.fwd[doc]; ok && prev != got {
		return fmt.Errorf("%q stood for %q before, now %q", doc, prev, got)
	}
	if prev, ok := b.rev[got]; ok && prev != doc {
		return fmt.Errorf("%q is written %q elsewhere, here %q", got, prev, doc)
	}
	b.fwd[doc], b.rev[got] = got, doc
	return nil
}

// rewrite replaces in s every README value bound so far with its printed
// value, longest first (a session token begins with its client id).
func (b *bindings) rewrite(s string) string {
	var pairs []string
	keys := make([]string, 0, len(b.fwd))
	for k := range b.fwd {
		keys = append(keys, k)
	}
	// Longest first: strings.NewReplacer tries patterns in argument order
	// at each position.
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if len(keys[j]) > len(keys[i]) {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	for _, k := range keys {
		pairs = append(pairs, k, b.fwd[k])
	}
	if len(pairs) == 0 {
		return s
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// matchValue compares a documented value with a printed one: same kind,
// the same keys in the same order, the same array lengths, and equal
// scalars but for the keys above.
func matchValue(doc, got value, key, path string, b *bindings) error {
	if doc.kind != got.kind {
		return fmt.Errorf("%s: README has %s, printed %s", path, doc, got)
	}
	switch doc.kind {
	case 'o':
		if strings.Join(doc.keys, ",") != strings.Join(got.keys, ",") {
			return fmt.Errorf("%s: README has keys %q, printed %q", path, doc.keys, got.keys)
		}
		for i, k := range doc.keys {
			if err := matchValue(doc.vals[i], got.vals[i], k, path+"."+k, b); err != nil {
				return err
			}
		}
		return nil
	case 'a':
		if len(doc.vals) != len(got.vals) {
			return fmt.Errorf("%s: README has %d elements, printed %d", path, len(doc.vals), len(got.vals))
		}
		for i := range doc.vals {
			if err := matchValue(doc.vals[i], got.vals[i], key, fmt.Sprintf("%s[%d]", path, i), b); err != nil {
				return err
			}
		}
		return nil
	}
	switch {
	case anyKeys[key]:
		return nil
	case boundKeys[key] && doc.kind == 's':
		// An empty epoch (era.period) changes with the clock's period:
		// only its form is checked.
		if key == "epoch" && strings.Contains(doc.text, ".") {
			if !strings.Contains(got.text, ".") {
				return fmt.Errorf("%s: README shows an empty epoch (%s), printed %s", path, doc, got)
			}
			return nil
		}
		if key == "epoch" && strings.Contains(got.text, ".") {
			return fmt.Errorf("%s: README shows an epoch with state (%s), printed an empty one %s", path, doc, got)
		}
		if err := b.bind(doc.text, got.text); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		return nil
	case doc.text != got.text:
		return fmt.Errorf("%s: README has %s, printed %s", path, doc, got)
	}
	return nil
}

func matchRecord(doc, got record, b *bindings) error {
	if doc.json != nil || got.json != nil {
		if doc.json == nil || got.json == nil {
			return errors.New("JSON against an SSE event")
		}
		return matchValue(*doc.json, *got.json, "", "$", b)
	}
	if strings.Join(doc.fields, ",") != strings.Join(got.fields, ",") {
		return fmt.Errorf("README's event has fields %q, printed %q", doc.fields, got.fields)
	}
	for i, f := range doc.fields {
		if err := matchValue(doc.vals[i], got.vals[i], f+"@sse", f, b); err != nil {
			return err
		}
	}
	return nil
}

// matchAll compares documented records with printed ones: the same
// number, pairwise. The bindings are changed only when all match.
func matchAll(doc, got []record, b *bindings) error {
	if len(doc) != len(got) {
		return fmt.Errorf("README shows %d records, printed %d", len(doc), len(got))
	}
	trial := b.clone()
	for i := range doc {
		if err := matchRecord(doc[i], got[i], trial); err != nil {
			return fmt.Errorf("record %d: %v", i+1, err)
		}
	}
	*b = *trial
	return nil
}

// matchIn compares documented records with what a stream printed so far,
// from record from on: each documented record must match a printed one,
// in order (a stream's sample may leave records out), and with anchored
// the first must be the printed record from itself (the sample shows how
// the stream begins). It returns the index after the last record matched.
// The bindings are changed only when all match.
func matchIn(doc, got []record, from int, anchored bool, b *bindings) (int, error) {
	trial := b.clone()
	j := from
	for i, d := range doc {
		var first error
		found := false
		for ; j < len(got); j++ {
			try := trial.clone()
			err := matchRecord(d, got[j], try)
			if err == nil {
				trial = try
				found = true
				j++
				break
			}
			if first == nil {
				first = err
			}
			if i == 0 && anchored {
				j = len(got)
			}
		}
		if !found {
			switch {
			case first == nil:
				return 0, fmt.Errorf("record %d (%s): nothing printed for it (yet)", i+1, d)
			case i == 0 && anchored:
				return 0, fmt.Errorf("record 1 (%s) is not how the stream begins: %v", d, first)
			}
			return 0, fmt.Errorf("record %d (%s) matches nothing printed after the records before it; against the first candidate: %v", i+1, d, first)
		}
	}
	*b = *trial
	return j, nil
}

// compact is for messages: text with its runs of blank space shortened.
func compact(s string) string {
	return string(bytes.Join(bytes.Fields([]byte(s)), []byte(" ")))
}
