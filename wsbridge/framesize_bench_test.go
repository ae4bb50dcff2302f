package wsbridge

import (
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// BenchmarkPublicationFrameSize encodes typical `pub` pushes as the
// bridge writes them in each subprotocol (encodedPub.bytes) and reports
// the frame's size in B/frame, beside the time to encode it once (a
// publication is encoded once per subprotocol per bridge, whatever the
// number of subscribers):
//
//	go test -run '^$' -bench BenchmarkPublicationFrameSize -benchmem ./wsbridge/
//
// The publications: a chat message from a browser (publisher with the
// token's info, tags none), the same from a backend (no publisher), and a
// 1 KiB binary payload (base64 in herald.json, raw in herald.proto).
func BenchmarkPublicationFrameSize(b *testing.B) {
	info, err := structpb.NewValue(map[string]any{"name": "Ann"})
	if err != nil {
		b.Fatal(err)
	}
	base := func() *heraldv1.Publication {
		return &heraldv1.Publication{Channel: "chat:lobby", Offset: 1234, Epoch: "9f1c2a7b", TimeUnixMs: 1764633600123}
	}
	chat := []byte(`{"user":"ann","text":"hello, everyone: the build is green again"}`)
	fromBrowser := base()
	fromBrowser.Payload = &heraldv1.Publication_RawJson{RawJson: chat}
	fromBrowser.Publisher = &heraldv1.ClientInfo{Client: "2f9c6a1e04b7d3a8", User: "42", Info: info}
	fromBackend := base()
	fromBackend.Payload = &heraldv1.Publication_RawJson{RawJson: chat}
	binary := base()
	binary.Payload = &heraldv1.Publication_Binary{Binary: make([]byte, 1024)}
	for _, c := range []struct {
		name string
		pub  *heraldv1.Publication
	}{{"chat from a browser", fromBrowser}, {"chat from a backend", fromBackend}, {"binary 1KiB", binary}} {
		for _, f := range []struct {
			name string
			f    format
		}{{"json", formatJSON}, {"proto", formatProto}} {
			b.Run(c.name+"/"+f.name, func(b *testing.B) {
				var n int
				for b.Loop() {
					n = len((&encodedPub{pub: c.pub}).bytes(f.f))
				}
				b.ReportMetric(float64(n), "B/frame")
			})
		}
	}
}
