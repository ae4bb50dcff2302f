package wsbridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"unicode/utf8"
)

// clientFrame encodes a masked client frame.
func clientFrame(b0 byte, payload []byte, mask [4]byte) []byte {
	out := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = binary.BigEndian.AppendUint64(append(out, 0x80|127), uint64(n))
	}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i&3])
	}
	return out
}

// readAll runs a wsReader over stream as the bridge's read loop does.
func readAll(stream []byte, max int) (msgs [][]byte, ops []byte, err error) {
	br := bytes.NewReader(stream)
	r := wsReader{r: br, max: max}
	for {
		var b2 [2]byte
		if _, err = io.ReadFull(br, b2[:]); err != nil {
			return msgs, ops, err
		}
		op, p, err := r.frame(b2[0], b2[1])
		if err != nil {
			return msgs, ops, err
		}
		if op != 0 {
			ops = append(ops, op)
			msgs = append(msgs, append([]byte(nil), p...))
		}
	}
}

func TestWSReader(t *testing.T) {
	m := [4]byte{1, 2, 3, 4}
	var stream []byte
	stream = append(stream, clientFrame(0x81, []byte(`{"id":1}`), m)...)
	stream = append(stream, clientFrame(0x01, []byte(`{"id"`), m)...) // text, not final
	stream = append(stream, clientFrame(0x89, []byte("p"), m)...)     // ping between fragments
	stream = append(stream, clientFrame(0x80, []byte(`:2}`), m)...)   // final continuation
	stream = append(stream, clientFrame(0x82, bytes.Repeat([]byte{7}, 300), m)...)
	stream = append(stream, clientFrame(0x88, []byte{0x03, 0xe8, 'o', 'k'}, m)...)
	msgs, ops, err := readAll(stream, 1024)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err %v", err)
	}
	want := []string{`{"id":1}`, "p", `{"id":2}`, string(bytes.Repeat([]byte{7}, 300)), "\x03\xe8ok"}
	if len(msgs) != len(want) || string(ops) != string([]byte{opText, opPing, opText, opBinary, opClose}) {
		t.Fatalf("ops %v msgs %q", ops, msgs)
	}
	for i := range want {
		if string(msgs[i]) != want[i] {
			t.Fatalf("message %d: %q, want %q", i, msgs[i], want[i])
		}
	}
	for _, tc := range []struct {
		name   string
		stream []byte
		code   CloseCode
	}{
		{"unmasked", []byte{0x81, 0x01, 'x'}, CloseProtocolError},
		{"reserved bits", clientFrame(0xc1, []byte("x"), m), CloseProtocolError},
		{"unknown opcode", clientFrame(0x83, []byte("x"), m), CloseProtocolError},
		{"fragmented ping", clientFrame(0x09, nil, m), CloseProtocolError},
		{"long ping", clientFrame(0x89, make([]byte, 126), m), CloseProtocolError},
		{"lone continuation", clientFrame(0x80, []byte("x"), m), CloseProtocolError},
		{"message in a message", append(clientFrame(0x01, []byte("a"), m), clientFrame(0x81, []byte("b"), m)...), CloseProtocolError},
		{"too big", clientFrame(0x81, make([]byte, 2000), m), CloseMessageTooBig},
		{"too big in fragments", append(clientFrame(0x01, make([]byte, 600), m), clientFrame(0x80, make([]byte, 600), m)...), CloseMessageTooBig},
		{"non-minimal length", []byte{0x81, 0x80 | 126, 0, 5, 0, 0, 0, 0, 'a', 'b', 'c', 'd', 'e'}, CloseProtocolError},
		{"bad close code", clientFrame(0x88, []byte{0x03, 0xed}, m), CloseProtocolError},
		{"one-byte close", clientFrame(0x88, []byte{0x03}, m), CloseProtocolError},
		{"close reason not UTF-8", clientFrame(0x88, []byte{0x03, 0xe8, 0xff}, m), CloseInvalidPayload},
	} {
		_, _, err := readAll(tc.stream, 1024)
		var we *wsError
		if !errors.As(err, &we) || we.code != tc.code {
			t.Errorf("%s: err %v, want close %d", tc.name, err, tc.code)
		}
	}
}

// FuzzWSReader feeds arbitrary client byte streams to the frame reader:
// it never panics, never returns a message over its limit, and returns
// close frames only with a valid payload.
func FuzzWSReader(f *testing.F) {
	m := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f.Add(clientFrame(0x81, []byte(`{"id":1,"connect":{"token":""}}`), m))
	f.Add(append(clientFrame(0x01, []byte(`{"id"`), m), clientFrame(0x80, []byte(`:1}`), m)...))
	f.Add(clientFrame(0x82, []byte{2, 8, 1}, m))
	f.Add(clientFrame(0x89, nil, m))
	f.Add(clientFrame(0x88, []byte{0x03, 0xe8}, m))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		msgs, ops, _ := readAll(stream, 512)
		for i, p := range msgs {
			if len(p) > 512 {
				t.Fatalf("message of %d bytes over the 512 limit", len(p))
			}
			if ops[i] == opClose && len(p) > 2 && !utf8.Valid(p[2:]) {
				t.Fatalf("close frame with a reason that is not UTF-8")
			}
		}
	})
}
