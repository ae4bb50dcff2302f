package service

import (
	"fmt"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// Range checks of the numbers (and the sizes of the strings beside them)
// that clients send, beyond channel names and payloads: every value that
// reaches an engine is one that no engine mishandles. A value outside
// these ranges is refused with INVALID_ARGUMENT naming the field; a value
// within them that a channel does not have (an offset beyond its top)
// is not an error: History answers an empty page, Subscribe recovered=false.

// checkPosition validates a position a client sends as field.
func checkPosition(field string, p *heraldv1.StreamPosition) error {
	switch {
	case p == nil:
		return nil
	case p.Offset > maxOffset:
		return fmt.Errorf("%s.offset %d is beyond the largest offset a channel can have (%d)", field, p.Offset, uint64(maxOffset))
	case len(p.Epoch) > maxEpochLen:
		return fmt.Errorf("%s.epoch is %d bytes; epochs are at most %d", field, len(p.Epoch), maxEpochLen)
	}
	return nil
}

// checkFormat validates a payload format a client asks for.
func checkFormat(f heraldv1.PayloadFormat) error {
	if _, ok := heraldv1.PayloadFormat_name[int32(f)]; !ok {
		return fmt.Errorf("payload_format %d is not one of %v", int32(f), heraldv1.PayloadFormat_value)
	}
	return nil
}

// checkSubscribe validates the numbers of a subscribe.
func checkSubscribe(req *heraldv1.SubscribeRequest) error {
	if err := checkPosition("since", req.Since); err != nil {
		return err
	}
	return checkFormat(req.PayloadFormat)
}
