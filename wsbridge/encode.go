package wsbridge

import (
	"bytes"
	"encoding/base64"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// format is a connection's subprotocol.
type format uint8

const (
	formatJSON  format = iota // herald.json: protojson frames, separated by "\n" when packed
	formatProto               // herald.proto: binary protobuf frames, each preceded by its varint length
	numFormats
)

// Subprotocol names.
const (
	SubprotocolJSON  = "herald.json"
	SubprotocolProto = "herald.proto"
)

var (
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}
	jsonIn  = protojson.UnmarshalOptions{}
)

// decodeFrames splits one client message into frames and decodes them,
// calling fn with each frame or with the error of a frame that could not be
// decoded (the frame is then nil). fn returns false to stop. A JSON message
// holds frames separated by "\n" (blank lines are skipped); a protobuf
// message holds frames each preceded by its length as a varint. Frames must
// have a non-zero id and a body. decodeFrames never panics on any input.
func decodeFrames(f format, msg []byte, fn func(*heraldv1.ClientFrame, *requestError) bool) {
	if f == formatJSON {
		for len(msg) > 0 {
			line := msg
			if i := bytes.IndexByte(msg, '\n'); i >= 0 {
				line, msg = msg[:i], msg[i+1:]
			} else {
				msg = nil
			}
			line = payload.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			fr, err := decodeJSONFrame(line)
			if err != nil {
				if !fn(nil, reqErr(ErrBadFrame, "bad JSON frame: %s", err.Error())) {
					return
				}
				continue
			}
			if !fn(checkFrame(fr)) {
				return
			}
		}
		return
	}
	for len(msg) > 0 {
		n, l := protowire.ConsumeVarint(msg)
		if l < 0 || n > uint64(len(msg)-l) {
			fn(nil, reqErr(ErrBadFrame, "bad protobuf message: each frame must be preceded by its length as a varint"))
			return
		}
		body := msg[l : l+int(n)]
		msg = msg[l+int(n):]
		fr := &heraldv1.ClientFrame{}
		if err := proto.Unmarshal(body, fr); err != nil {
			if !fn(nil, reqErr(ErrBadFrame, "bad protobuf frame: %s", err.Error())) {
				return
			}
			continue
		}
		if !fn(checkFrame(fr)) {
			return
		}
	}
}

// decodeJSONFrame decodes one herald.json client frame. The `data` of a
// publish is taken out first as the exact text it has in the frame and set
// as the frame's `json`: protojson would decode it into a
// google.protobuf.Value, changing its numbers and key order. The text is
// checked when the frame is handled (session.publish), where a bad payload is
// error 110 like on every other publish path.
func decodeJSONFrame(line []byte) (*heraldv1.ClientFrame, error) {
	var fr *heraldv1.ClientFrame
	var err error
	if bytes.IndexByte(line, '\\') < 0 && !bytes.Contains(line, publishKey) {
		// No publish in it, not even with an escape in its key: nothing
		// to take out at "publish", and protojson refuses what Extract
		// would (a repeated key, bad syntax). Connect, subscribe and the
		// others skip taking the frame apart.
		fr = &heraldv1.ClientFrame{}
		if err = jsonIn.Unmarshal(line, fr); err != nil {
			return nil, err
		}
	} else {
		fr, err = decodeJSONFrameAt(line, "publish")
	}
	if err != nil {
		return nil, err
	}
	if _, isData := fr.GetRpc().GetPayload().(*heraldv1.RPCFrame_Data); isData {
		// An rpc frame's data is taken out the same way (a second pass,
		// for rpc frames only).
		return decodeJSONFrameAt(line, "rpc")
	}
	return fr, nil
}

// decodeJSONFrameAt decodes a frame taking kind.data out as its exact
// text (see decodeJSONFrame).
func decodeJSONFrameAt(line []byte, kind string) (*heraldv1.ClientFrame, error) {
	fr := &heraldv1.ClientFrame{}
	rest, data, err := payload.Extract(line, kind, "data")
	if err != nil {
		// Not one JSON object, or a repeated key: protojson's words for
		// the first, when it has some.
		if perr := jsonIn.Unmarshal(line, fr); perr != nil {
			return nil, perr
		}
		return nil, err
	}
	if err := jsonIn.Unmarshal(rest, fr); err != nil {
		return nil, err
	}
	if data == nil {
		return fr, nil
	}
	if text, err := payload.Compact(data); err == nil {
		data = text
	}
	if kind == "rpc" {
		rf := fr.GetRpc()
		if rf == nil || rf.Payload != nil {
			return nil, errors.New("rpc: set one payload: data (JSON), json (JSON text) or binary")
		}
		rf.Payload = &heraldv1.RPCFrame_Json{Json: string(data)}
		return fr, nil
	}
	pf := fr.GetPublish()
	if pf == nil || pf.Payload != nil {
		return nil, errors.New("publish: set one payload: data (JSON), json (JSON text) or binary")
	}
	pf.Payload = &heraldv1.PublishFrame_Json{Json: string(data)}
	return fr, nil
}

var publishKey = []byte("publish")

func checkFrame(fr *heraldv1.ClientFrame) (*heraldv1.ClientFrame, *requestError) {
	if fr.Body == nil {
		return fr, reqErr(ErrBadFrame, "unknown or empty frame: set exactly one of connect, refresh, subscribe, unsubscribe, publish, history, presence, presence_stats, ping, rpc")
	}
	if fr.Id == 0 {
		return fr, reqErr(ErrBadFrame, "id is required (a non-zero number echoed in the reply)")
	}
	return fr, nil
}

// encodeFrame encodes a server frame for f. Protobuf frames carry their
// varint length prefix, so the writer only concatenates them. JSON frames
// are protobuf JSON, except that publications (a `pub` push, a `history`
// reply) have their JSON payloads spliced in exactly as `data`
// (payload.AppendMessage).
func encodeFrame(f format, fr *heraldv1.ServerFrame) []byte {
	if f == formatJSON {
		if rpc, ok := fr.Body.(*heraldv1.ServerFrame_Rpc); ok {
			if p, ok := rpc.Rpc.GetPayload().(*heraldv1.RPCResultFrame_Json); ok {
				return appendRPCReply(nil, fr.Id, p.Json)
			}
		}
		b, err := payload.AppendMessage(nil, fr)
		if err != nil {
			b, _ = jsonOut.Marshal(errorFrame(fr.Id, reqErr(ErrInternal, "internal error")))
		}
		return b
	}
	size := proto.Size(fr)
	b := make([]byte, 0, size+protowire.SizeVarint(uint64(size)))
	b = protowire.AppendVarint(b, uint64(size))
	b, _ = proto.MarshalOptions{}.MarshalAppend(b, fr)
	return b
}

// appendRPCReply writes a JSON rpc reply with the backend's exact JSON
// text (valid and compact: the hooks client checked it) as `data`.
func appendRPCReply(b []byte, id uint32, text string) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, uint64(id), 10)
	b = append(b, `,"rpc":{"data":`...)
	b = append(b, text...)
	return append(b, "}}"...)
}

func errorFrame(id uint32, e *requestError) *heraldv1.ServerFrame {
	return &heraldv1.ServerFrame{Id: id, Body: &heraldv1.ServerFrame_Error{Error: &heraldv1.ErrorFrame{
		Code: uint32(e.code), Message: e.msg, Temporary: e.temporary(),
	}}}
}

// encodedPub is a publication encoded once for each subprotocol that a
// channel's subscribers use. The bytes are shared by every subscriber and
// never modified.
type encodedPub struct {
	pub   *heraldv1.Publication
	log   *slog.Logger // for the first invalid payload; may be nil
	json  []byte
	proto []byte
	safe  *heraldv1.Publication // pub as it may be written (see lossless); nil until checked
}

// bytes returns the publication's frame for f, encoding it on first use.
func (e *encodedPub) bytes(f format) []byte {
	if f == formatJSON {
		if e.json == nil {
			pub := e.lossless()
			b := make([]byte, 0, pubFrameSize(pub))
			b = append(b, `{"pub":`...)
			b = payload.AppendCheckedPublication(b, pub)
			e.json = append(b, '}')
		}
		return e.json
	}
	if e.proto == nil {
		e.proto = encodeFrame(formatProto, &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pub{Pub: e.lossless()}})
	}
	return e.proto
}

// lossless returns the publication as it may be written, checking its
// payload once for both subprotocols.
//
// A JSON payload that is not valid JSON in UTF-8 can only be data stored
// before the core checked payloads (in Redis, say). It must never reach a
// text frame, where invalid UTF-8 makes the browser drop the connection,
// and with it every frame packed in the same message, on every resume: it
// goes as `binary` instead, the same bytes, in both subprotocols.
func (e *encodedPub) lossless() *heraldv1.Publication {
	if e.safe == nil {
		var ok bool
		if e.safe, ok = payload.Lossless(e.pub); !ok {
			noteInvalidPayload(e.log, e.pub)
		}
	}
	return e.safe
}

// invalidLogged is set once the process logged an invalid payload: the
// metric counts every one, the log says it once.
var invalidLogged atomic.Bool

// noteInvalidPayload counts a publication whose JSON payload was delivered
// as binary because it is not valid JSON in UTF-8, and logs the first.
func noteInvalidPayload(log *slog.Logger, pub *heraldv1.Publication) {
	metricInvalidPayloads.Inc()
	if log != nil && invalidLogged.CompareAndSwap(false, true) {
		log.Warn("a publication's JSON payload is not valid JSON in UTF-8 (stored before payloads were checked?): delivered as binary so that no text frame breaks; herald_ws_invalid_payloads_total counts them, this is logged once",
			"channel", pub.Channel, "offset", pub.Offset, "epoch", pub.Epoch)
	}
}

// checkedPubs returns pubs with every invalid JSON payload turned into
// binary (payload.Lossless), counting them; pubs itself when none is.
func checkedPubs(log *slog.Logger, pubs []*heraldv1.Publication) []*heraldv1.Publication {
	out := pubs
	for i, p := range pubs {
		q, ok := payload.Lossless(p)
		if ok {
			continue
		}
		if &out[0] == &pubs[0] {
			out = append([]*heraldv1.Publication(nil), pubs...)
		}
		out[i] = q
		noteInvalidPayload(log, p)
	}
	return out
}

// pubFrameSize estimates the length of a publication's JSON frame, so that
// it is built in one allocation.
func pubFrameSize(pub *heraldv1.Publication) int {
	n := 112 + 2*(len(pub.Channel)+len(pub.Epoch))
	switch p := pub.Payload.(type) {
	case *heraldv1.Publication_RawJson:
		n += len(p.RawJson)
	case *heraldv1.Publication_Json:
		n += len(p.Json)
	case *heraldv1.Publication_Binary:
		n += base64.StdEncoding.EncodedLen(len(p.Binary))
	}
	for k, v := range pub.Tags {
		n += 6 + 2*(len(k)+len(v))
	}
	if pub.Publisher != nil {
		n += 128
	}
	return n
}
