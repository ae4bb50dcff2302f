package wsbridge

import (
	"encoding/binary"
	"io"
	"unicode/utf8"
)

// wsReader reads a client's WebSocket frames (RFC 6455 section 5) from r:
// masked, no extensions, fragmented messages reassembled, control frames
// (which may come between fragments) returned as they arrive. It checks
// everything the RFC requires of a client's frames and refuses the rest
// with a *wsError naming the close code. Its caller reads each frame's
// first two bytes itself (so that an idle connection waits there with a
// shallow stack) and passes them to frame.
type wsReader struct {
	r     io.Reader
	max   int      // the largest message accepted (max_frame)
	msg   []byte   // the fragmented message being assembled; nil between messages
	ext   [12]byte // extended length and mask of the frame being read
	msgOp byte     // its opcode (text or binary)
	frag  bool     // a fragmented message is in progress
}

// wsError is a client frame the bridge refuses, with the close code.
type wsError struct {
	code   CloseCode
	reason string
}

func (e *wsError) Error() string { return e.reason }

func protocolError(reason string) *wsError { return &wsError{CloseProtocolError, reason} }

// frame reads the rest of the frame whose first two bytes are b0 and b1.
// It returns a complete data message (opText or opBinary, its payload), a
// control frame (opPing, opPong or opClose, its payload; a close frame's
// code and reason are checked), or op 0 after a fragment that does not
// complete its message. The payloads of data messages are the caller's;
// control payloads are valid until the next call.
func (r *wsReader) frame(b0, b1 byte) (op byte, payload []byte, err error) {
	fin, op := b0&0x80 != 0, b0&0x0f
	if b0&0x70 != 0 {
		return 0, nil, protocolError("reserved bits set: no extension was negotiated")
	}
	if b1&0x80 == 0 {
		return 0, nil, protocolError("client frames must be masked")
	}
	n := uint64(b1 & 0x7f)
	ext := r.ext[:4]
	switch n {
	case 126:
		ext = r.ext[:6]
	case 127:
		ext = r.ext[:12]
	}
	if _, err := io.ReadFull(r.r, ext); err != nil {
		return 0, nil, err
	}
	switch n {
	case 126:
		n = uint64(binary.BigEndian.Uint16(ext))
		if n < 126 {
			return 0, nil, protocolError("frame length not in its shortest form")
		}
	case 127:
		n = binary.BigEndian.Uint64(ext)
		if n>>63 != 0 || n <= 0xffff {
			return 0, nil, protocolError("bad 64-bit frame length")
		}
	}
	mask := ext[len(ext)-4:]

	switch op {
	case opPing, opPong, opClose:
		if !fin || n > 125 {
			return 0, nil, protocolError("control frames must be final and at most 125 bytes")
		}
		buf := make([]byte, n) // browsers' pongs to the bridge's pings are empty: no allocation
		if err := r.read(buf, mask); err != nil {
			return 0, nil, err
		}
		if op == opClose {
			if err := checkClosePayload(buf); err != nil {
				return 0, nil, err
			}
		}
		return op, buf, nil
	case opText, opBinary:
		if r.frag {
			return 0, nil, protocolError("a new message began before the fragmented one ended")
		}
		if n > uint64(r.max) {
			return 0, nil, &wsError{CloseMessageTooBig, "message larger than max_frame"}
		}
		buf := make([]byte, n)
		if err := r.read(buf, mask); err != nil {
			return 0, nil, err
		}
		if fin {
			return op, buf, nil
		}
		r.frag, r.msg, r.msgOp = true, buf, op
		return 0, nil, nil
	case 0: // continuation
		if !r.frag {
			return 0, nil, protocolError("a continuation frame without a message to continue")
		}
		if uint64(len(r.msg))+n > uint64(r.max) {
			return 0, nil, &wsError{CloseMessageTooBig, "message larger than max_frame"}
		}
		start := len(r.msg)
		r.msg = append(r.msg, make([]byte, n)...)
		if err := r.read(r.msg[start:], mask); err != nil {
			return 0, nil, err
		}
		if !fin {
			return 0, nil, nil
		}
		msg, op := r.msg, r.msgOp
		r.frag, r.msg, r.msgOp = false, nil, 0
		return op, msg, nil
	}
	return 0, nil, protocolError("unknown opcode")
}

// read reads a payload into p and unmasks it.
func (r *wsReader) read(p []byte, mask []byte) error {
	if _, err := io.ReadFull(r.r, p); err != nil {
		return err
	}
	for i := range p {
		p[i] ^= mask[i&3]
	}
	return nil
}

// checkClosePayload checks a close frame's payload: empty, or a code a
// peer may send followed by a UTF-8 reason.
func checkClosePayload(p []byte) error {
	switch {
	case len(p) == 0:
		return nil
	case len(p) == 1:
		return protocolError("a close frame's payload is a 2-byte code and a reason")
	}
	code := binary.BigEndian.Uint16(p)
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
	default:
		return protocolError("a close code a peer may not send")
	}
	if !utf8.Valid(p[2:]) {
		return &wsError{CloseInvalidPayload, "close reason is not valid UTF-8"}
	}
	return nil
}

// closeCodeOf returns the code of a checked close payload (1005, no
// status, for an empty one).
func closeCodeOf(p []byte) CloseCode {
	if len(p) < 2 {
		return 1005
	}
	return CloseCode(binary.BigEndian.Uint16(p))
}
