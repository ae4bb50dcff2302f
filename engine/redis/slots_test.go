package redis

import "testing"

// The slot function agrees with Redis: values from CLUSTER KEYSLOT of
// Redis 7.0 and the XMODEM check value.
func TestKeySlot(t *testing.T) {
	if c := crc16("123456789"); c != 0x31c3 {
		t.Fatalf("crc16 check value %#x, want 0x31c3", c)
	}
	for key, want := range map[string]int{
		"a": 15495, "b": 3300, "b1": 2874, "ff": 11756,
		"{b}x": 3300, "x{b}": 3300, "{}b": keySlot("{}b"), "{b": keySlot("{b"),
		"herald:{chat:1}:m": keySlot("chat:1"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	// An empty tag hashes the whole key.
	if keySlot("{}b") != int(crc16("{}b"))%numSlots {
		t.Error("empty hash tag not ignored")
	}
}

func TestSlotTags(t *testing.T) {
	for _, s := range []int{0, 1, 5460, 5461, 10922, 16383} {
		if got := keySlot("p:{" + slotTag(s) + "}:era"); got != s {
			t.Errorf("slotTag(%d) = %q hashes to %d", s, slotTag(s), got)
		}
	}
	tags := spreadTags(16)
	for i, tag := range tags {
		lo, hi := i*numSlots/16, (i+1)*numSlots/16
		if s := keySlot(tag); s < lo || s >= hi {
			t.Errorf("spread tag %d (%q) in slot %d, outside [%d, %d)", i, tag, s, lo, hi)
		}
	}
}
