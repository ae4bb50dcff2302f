package readmetest

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
)

// A doc is README.md cut into what the test runs and checks, in document
// order.
type doc struct {
	commands []*command
	outputs  []*output
	// goTests are the inline `go test …` spans of the prose.
	goTests []span
	// unmarked are fenced blocks that look like output (no info string,
	// or json) but carry no output marker.
	unmarked []span
}

// A command is one command of a ```sh block: a line, with the lines its
// trailing backslashes continue, as written (comment lines and blank
// lines are not commands).
type command struct {
	text     string
	line     int
	section  string   // the ## heading it is under
	headings []string // every heading it is under, outermost first
	index    int      // position among all commands
}

// An output is a fenced block that the README shows as the output of
// commands before it, marked by `<!-- output of: S1 | S2 -->` on the line
// before its fence: each Si names the last command before the block (in
// the same section) whose text contains it, and the block shows the
// output of those commands, one after the other. A ```text block shows
// text, compared as written (an error message a command prints, with
// 2>&1); any other block shows JSON values or SSE events.
type output struct {
	names   []string
	text    bool // a ```text block
	body    string
	line    int
	section string
	// after is the number of commands before the block.
	after int
}

type span struct {
	text    string
	line    int
	section string
}

var (
	headingRe = regexp.MustCompile(`^(#{1,6}) +(.*?) *$`)
	markerRe  = regexp.MustCompile(`^<!-- output of: (.*) -->$`)
	inlineRe  = regexp.MustCompile("`([^`]+)`")
)

// parse reads a README.
func parse(text string) *doc {
	d := &doc{}
	lines := strings.Split(text, "\n")
	var headings []string
	section := ""
	var marker []string
	markerLine := -1
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := headingRe.FindStringSubmatch(line); m != nil {
			level := len(m[1])
			for len(headings) >= level {
				headings = headings[:len(headings)-1]
			}
			for len(headings) < level-1 {
				headings = append(headings, "")
			}
			headings = append(headings, m[2])
			if level <= 2 {
				section = m[2]
			}
			continue
		}
		if m := markerRe.FindStringSubmatch(line); m != nil {
			marker = nil
			for _, n := range strings.Split(m[1], " | ") {
				marker = append(marker, strings.TrimSpace(n))
			}
			markerLine = i
			continue
		}
		if strings.HasPrefix(line, "```") {
			info := strings.TrimSpace(strings.TrimPrefix(line, "```"))
			start := i + 1
			j := start
			for j < len(lines) && !strings.HasPrefix(lines[j], "```") {
				j++
			}
			body := lines[start:min(j, len(lines))]
			marked := markerLine == i-1
			switch {
			case info == "sh":
				d.addCommands(body, start+1, section, headings)
			case marked:
				d.outputs = append(d.outputs, &output{
					names: marker, text: info == "text", body: strings.Join(body, "\n"), line: i + 1,
					section: section, after: len(d.commands),
				})
			case info == "" || info == "json":
				d.unmarked = append(d.unmarked, span{text: strings.Join(body, "\n"), line: i + 1, section: section})
			}
			marker, markerLine = nil, -1
			i = j
			continue
		}
		for _, m := range inlineRe.FindAllStringSubmatch(line, -1) {
			if strings.HasPrefix(m[1], "go test ") {
				d.goTests = append(d.goTests, span{text: m[1], line: i + 1, section: section})
			}
		}
	}
	return d
}

func (d *doc) addCommands(body []string, firstLine int, section string, headings []string) {
	for k := 0; k < len(body); k++ {
		line := body[k]
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		start := k
		// A command goes on over lines ending in a backslash, and until
		// bash can parse it (a loop, a quoted string over lines).
		for k+1 < len(body) && (strings.HasSuffix(body[k], `\`) || incomplete(strings.Join(body[start:k+1], "\n"))) {
			k++
		}
		d.commands = append(d.commands, &command{
			text:     strings.Join(body[start:k+1], "\n"),
			line:     firstLine + start,
			section:  section,
			headings: append([]string(nil), headings...),
			index:    len(d.commands),
		})
	}
}

// incomplete tells whether bash finds script cut short.
func incomplete(script string) bool {
	out, err := exec.Command("bash", "-n", "-c", script).CombinedOutput()
	return err != nil && (bytes.Contains(out, []byte("unexpected end of file")) || bytes.Contains(out, []byte("unexpected EOF")))
}

// commandsOf returns the commands an output block names, or the names
// that name none.
func (d *doc) commandsOf(o *output) (cmds []*command, unknown []string) {
	for _, n := range o.names {
		var found *command
		for _, c := range d.commands[:o.after] {
			if c.section == o.section && strings.Contains(c.text, n) {
				found = c
			}
		}
		if found == nil {
			unknown = append(unknown, n)
			continue
		}
		cmds = append(cmds, found)
	}
	return cmds, unknown
}
