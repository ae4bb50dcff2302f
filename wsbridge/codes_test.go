package wsbridge

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestProtocolDocListsCodes checks that docs/protocol.md has a table row
// for every error code and close code, with its name.
func TestProtocolDocListsCodes(t *testing.T) {
	b, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, e := range errorCodes {
		if row := fmt.Sprintf("| %d | %s |", e.Code, e.Name); !strings.Contains(doc, row) {
			t.Errorf("docs/protocol.md has no row %q", row)
		}
	}
	for _, c := range closeCodes {
		if row := fmt.Sprintf("| %d | %s |", c.Code, c.Name); !strings.Contains(doc, row) {
			t.Errorf("docs/protocol.md has no row %q", row)
		}
	}
}
