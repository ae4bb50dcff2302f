package channelname

import (
	"fmt"
	"strings"
)

// Grant patterns name the channels that a token's `channels` claim lets a
// browser subscribe to. A pattern is a sequence of segments separated by
// ':', like channel names, and matches segment by segment:
//
//   - a literal segment matches exactly that segment ("chat:lobby");
//   - "*" matches exactly one whole segment, whatever it is
//     ("chat:*" matches chat:lobby, not chat:lobby:x nor chatter);
//   - "**", only as the last segment, matches one or more segments
//     ("chat:**" matches chat:lobby and chat:lobby:x; "**" matches every
//     channel, other users' personal channels included).
//
// No wildcard matches part of a segment: "user:1*" or "chat:lob?y" are not
// valid patterns (ValidateGrant says why), so that a grant for user 1 can
// never match user 10, and no '*' crosses the namespace separator.

// ValidateGrant checks a grant pattern's syntax; the error says what is
// wrong, for the developer minting the token.
func ValidateGrant(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("channel pattern is empty")
	}
	if len(pattern) > MaxLen {
		return fmt.Errorf("channel pattern is %d bytes long; the limit is %d", len(pattern), MaxLen)
	}
	segs := strings.Split(pattern, ":")
	for i, seg := range segs {
		switch {
		case seg == "":
			return fmt.Errorf("channel pattern %q has an empty segment", truncate(pattern, 64))
		case seg == "*":
		case seg == "**":
			if i != len(segs)-1 {
				return fmt.Errorf("channel pattern %q: \"**\" may only be the last segment", truncate(pattern, 64))
			}
		default:
			for j := 0; j < len(seg); j++ {
				if seg[j] == '*' || seg[j] == '?' {
					return fmt.Errorf("channel pattern %q: a wildcard must be a whole segment (\"*\" for one segment, a final \"**\" for the rest), not part of one", truncate(pattern, 64))
				}
				if !allowed(seg[j]) {
					return fmt.Errorf("channel pattern %q has a forbidden character %q", truncate(pattern, 64), seg[j])
				}
			}
		}
	}
	return nil
}

// Grant reports whether the grant pattern matches the channel name. An
// invalid pattern matches nothing.
func Grant(pattern, name string) bool {
	if ValidateGrant(pattern) != nil {
		return false
	}
	for {
		pseg, prest, pmore := strings.Cut(pattern, ":")
		if pseg == "**" {
			return name != ""
		}
		nseg, nrest, nmore := strings.Cut(name, ":")
		if nseg == "" || (pseg != "*" && pseg != nseg) {
			return false
		}
		if !pmore || !nmore {
			return pmore == nmore
		}
		pattern, name = prest, nrest
	}
}
