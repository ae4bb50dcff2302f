package payload_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
)

// BenchmarkAppendPublication measures writing one publication's JSON frame
// body, its JSON payload checked (UTF-8, JSON) and spliced in: what the
// bridge does once per publication per subprotocol, not per subscriber.
// "check" is the cost of payload.Check alone on the same text, "stdlib"
// that of utf8.Valid and json.Valid, which it replaces.
func BenchmarkAppendPublication(b *testing.B) {
	for _, size := range []int{56, 1024, 16384} {
		// Half a string, half small objects: both paths of a scanner.
		obj := `{"id":12345,"name":"abc","ok":true}`
		n := size / 2 / (len(obj) + 1)
		text := []byte(`{"text":"` + strings.Repeat("x", size/2) + `","items":[` + strings.Repeat(obj+",", n) + `1]}`)
		pub := &heraldv1.Publication{Channel: "chat:bench", Offset: 42, Epoch: "e", TimeUnixMs: 1796154827765, Payload: &heraldv1.Publication_RawJson{RawJson: text}}
		buf := make([]byte, 0, 2*size+256)
		b.Run(fmt.Sprintf("write/%dB", len(text)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				buf, _ = payload.AppendPublication(buf[:0], pub)
			}
		})
		b.Run(fmt.Sprintf("check/%dB", len(text)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				if payload.Check(text) != nil {
					b.Fatal("invalid")
				}
			}
		})
		b.Run(fmt.Sprintf("stdlib/%dB", len(text)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				if !utf8.Valid(text) || !json.Valid(text) {
					b.Fatal("invalid")
				}
			}
		})
	}
}
