package readmetest

import (
	"slices"
	"strings"
	"testing"
)

func records(t *testing.T, text string) []record {
	t.Helper()
	recs, rest, err := parseRecords(text+"\n\n", isSSE(text))
	if err != nil || strings.TrimSpace(rest) != "" {
		t.Fatalf("%q: %v (left %q)", text, err, rest)
	}
	return recs
}

// TestMatch: what the comparison of a README block with printed output
// lets through, and what it does not.
func TestMatch(t *testing.T) {
	doc := `{"position":{"offset":"1","epoch":"d3280800"}}
{"publication":{"channel":"news","epoch":"d3280800","data":{"id":12345678901234567891,"text":"hi"},"time_unix_ms":"1"}}`
	for _, tc := range []struct {
		name, got string
		ok        bool
	}{
		{"same but for the epoch, the clock and the spacing", `{"position":{"offset":"1", "epoch":"0a0b0c0d"}}
{
  "publication": {"channel":"news","epoch":"0a0b0c0d","data":{"id":12345678901234567891,"text":"hi"},"time_unix_ms":"99"}
}`, true},
		{"a renamed key", `{"position":{"offset":"1","epoch":"0a0b0c0d"}}
{"publication":{"channel":"news","epoch":"0a0b0c0d","data":{"id":12345678901234567891,"text":"hi"},"timeUnixMs":"1"}}`, false},
		{"one epoch in the README, two printed", `{"position":{"offset":"1","epoch":"0a0b0c0d"}}
{"publication":{"channel":"news","epoch":"ffffffff","data":{"id":12345678901234567891,"text":"hi"},"time_unix_ms":"1"}}`, false},
		{"an empty epoch for one with state", `{"position":{"offset":"1","epoch":"0a0b0c0d.2dadb4"}}
{"publication":{"channel":"news","epoch":"0a0b0c0d.2dadb4","data":{"id":12345678901234567891,"text":"hi"},"time_unix_ms":"1"}}`, false},
		{"keys reordered in the payload", `{"position":{"offset":"1","epoch":"0a0b0c0d"}}
{"publication":{"channel":"news","epoch":"0a0b0c0d","data":{"text":"hi","id":12345678901234567891},"time_unix_ms":"1"}}`, false},
		{"a number rounded", `{"position":{"offset":"1","epoch":"0a0b0c0d"}}
{"publication":{"channel":"news","epoch":"0a0b0c0d","data":{"id":12345678901234567000,"text":"hi"},"time_unix_ms":"1"}}`, false},
		{"another offset", `{"position":{"offset":"2","epoch":"0a0b0c0d"}}
{"publication":{"channel":"news","epoch":"0a0b0c0d","data":{"id":12345678901234567891,"text":"hi"},"time_unix_ms":"1"}}`, false},
		{"a field more", `{"position":{"offset":"1","epoch":"0a0b0c0d"},"duplicate":true}
{"publication":{"channel":"news","epoch":"0a0b0c0d","data":{"id":12345678901234567891,"text":"hi"},"time_unix_ms":"1"}}`, false},
		{"a record more", `{"position":{"offset":"1","epoch":"0a0b0c0d"}}
{"publication":{"channel":"news","epoch":"0a0b0c0d","data":{"id":12345678901234567891,"text":"hi"},"time_unix_ms":"1"}}
{}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBindings()
			err := matchAll(records(t, doc), records(t, tc.got), b)
			if (err == nil) != tc.ok {
				t.Fatalf("match: %v, want ok=%v", err, tc.ok)
			}
			if err == nil && b.rewrite("--since 1@d3280800") != "--since 1@0a0b0c0d" {
				t.Errorf("bound README epoch not rewritten: %q", b.rewrite("--since 1@d3280800"))
			}
			if err != nil && len(b.fwd) != 0 {
				t.Errorf("a failed match bound %v", b.fwd)
			}
		})
	}
}

// TestMatchStream: a stream's first block shows how it begins; later
// blocks continue after it and may leave records out.
func TestMatchStream(t *testing.T) {
	got := records(t, `data: {"connect":{"client":"c1"}}

id: 1:0
data: {"subscribed":{"channel":"a"}}

data: {"join":{"channel":"a","client":{"client":"c1"}}}

data: {"pub":{"channel":"a","offset":"1"}}

data: {"pub":{"channel":"a","offset":"2"}}
`)
	b := newBindings()
	if _, err := matchIn(records(t, `id: x
data: {"subscribed":{"channel":"a"}}`), got, 0, true, b); err == nil {
		t.Error("a first block that leaves out the stream's first event matched")
	}
	end, err := matchIn(records(t, `data: {"connect":{"client":"README"}}

id: x
data: {"subscribed":{"channel":"a"}}`), got, 0, true, b)
	if err != nil || end != 2 {
		t.Fatalf("first block: end %d, %v", end, err)
	}
	if _, err := matchIn(records(t, `data: {"pub":{"channel":"a","offset":"2"}}`), got, end, false, b); err != nil {
		t.Errorf("a later block leaving records out: %v", err)
	}
	if _, err := matchIn(records(t, `data: {"join":{"channel":"a","client":{"client":"OTHER"}}}`), got, end, false, b); err == nil {
		t.Error("a second README client id for the same printed one matched")
	}
	if _, err := matchIn(records(t, `data: {"subscribed":{"channel":"a"}}`), got, end, false, b); err == nil {
		t.Error("a later block matched a record before the end of the previous one")
	}
}

// TestParseMarkers: an output block names the last command before it
// that contains each name.
func TestParseMarkers(t *testing.T) {
	d := parse("## S\n\n```sh\necho one\necho two \\\n  and more\n# a comment\nfor i in 1 2; do\n  echo $i\ndone\necho 'a\nb'\n```\n\n```sh\necho one\n```\n\n<!-- output of: echo one | two -->\n```json\n1\n```\n\n```json\n2\n```\n")
	var texts []string
	for _, c := range d.commands {
		texts = append(texts, c.text)
	}
	if want := []string{"echo one", "echo two \\\n  and more", "for i in 1 2; do\n  echo $i\ndone", "echo 'a\nb'", "echo one"}; !slices.Equal(texts, want) {
		t.Fatalf("commands %q, want %q", texts, want)
	}
	cmds, unknown := d.commandsOf(d.outputs[0])
	if len(unknown) != 0 || len(cmds) != 2 || cmds[0].index != 4 || cmds[1].index != 1 {
		t.Errorf("marker names %+v, unknown %q", cmds, unknown)
	}
	if len(d.unmarked) != 1 || d.unmarked[0].text != "2" {
		t.Errorf("unmarked: %+v", d.unmarked)
	}
}
