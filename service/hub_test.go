package service

import (
	"strings"
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestEventSizeCountsPayload checks that every kind of payload counts
// against a queue's byte bound with its size (the oneof members without
// a case of their own through reflection).
func TestEventSizeCountsPayload(t *testing.T) {
	const n = 60_000
	text := strings.Repeat("x", n)
	for name, p := range map[string]*heraldv1.Publication{
		"binary":   {Payload: &heraldv1.Publication_Binary{Binary: []byte(text)}},
		"raw_json": {Payload: &heraldv1.Publication_RawJson{RawJson: []byte(text)}},
		"data":     {Payload: &heraldv1.Publication_Data{Data: structpb.NewStringValue(text)}},
	} {
		if got := eventSize(event{pub: p}); got < n || got > n+256 {
			t.Errorf("%s: eventSize = %d, want %d plus a little", name, got, n)
		}
	}
	tagged := &heraldv1.Publication{Tags: map[string]string{"k": text}, Publisher: &heraldv1.ClientInfo{User: text}}
	if got := eventSize(event{pub: tagged}); got < 2*n {
		t.Errorf("tags and publisher: eventSize = %d, want at least %d", got, 2*n)
	}
	if got := eventSize(event{presence: &heraldv1.PresenceEvent{Client: &heraldv1.ClientInfo{User: text}}}); got < n {
		t.Errorf("presence: eventSize = %d, want at least %d", got, n)
	}
}
