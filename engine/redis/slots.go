package redis

import (
	"strconv"
	"strings"
	"sync"
)

// Redis Cluster hashes a key to one of 16384 slots: CRC16 (XMODEM) of the
// key, or of its hash tag (the text between the first '{' and the next
// '}', when not empty), modulo 16384. The engine computes slots itself to
// group pub/sub subscriptions by slot (a SSUBSCRIBE names channels of one
// slot) and to choose hash tags for keys that are not a channel's.
const numSlots = 16384

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc16(s string) uint16 {
	var c uint16
	for i := 0; i < len(s); i++ {
		c = c<<8 ^ crcTable[byte(c>>8)^s[i]]
	}
	return c
}

// keySlot returns the slot of key, as Redis Cluster computes it.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key)) % numSlots
}

var (
	slotTagsOnce sync.Once
	slotTags     [numSlots]string
)

// slotTag returns a short hash tag whose slot is slot: the first of the
// base-36 numbers 0, 1, 2, … that hashes there. Every node computes the
// same table.
func slotTag(slot int) string {
	slotTagsOnce.Do(func() {
		left := numSlots
		for n := uint64(0); left > 0; n++ {
			s := strconv.FormatUint(n, 36)
			if k := int(crc16(s)) % numSlots; slotTags[k] == "" {
				slotTags[k] = s
				left--
			}
		}
	})
	return slotTags[slot]
}

// spreadTags returns n hash tags whose slots are spread evenly over the
// slot space: tag i hashes to the middle of the i-th of n equal ranges.
// Keys that every node uses (the registry, the control channels) are
// sharded over them, so that they land on every primary of a cluster
// whose primaries serve ranges of similar size, however many there are.
// (Tags such as "0", "1", … "15" would not: their CRC16s cluster in a
// few ranges, and several primaries would get none.)
func spreadTags(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = slotTag((2*i + 1) * numSlots / (2 * n))
	}
	return out
}
