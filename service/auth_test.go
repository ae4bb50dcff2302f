package service

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"google.golang.org/grpc/peer"
)

// The per-address bound of keyless calls counts an IPv4 address, and an
// IPv6 client by its /64 (a host holds a whole /64, so counting single
// addresses would let one client take every place).
func TestClientAddr(t *testing.T) {
	for _, c := range []struct{ from, want string }{
		{"127.0.0.7", "127.0.0.7"},
		{"::ffff:10.1.2.3", "10.1.2.3"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{"2001:db8:1:2::1", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
		{"::1", "::"},
	} {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(c.from), Port: 5000}})
		if got := clientAddr(ctx); got != netip.MustParseAddr(c.want) {
			t.Errorf("%s: %v, want %s", c.from, got, c.want)
		}
	}
	if got := clientAddr(context.Background()); got.IsValid() {
		t.Errorf("no peer: %v, want the zero Addr", got)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.UnixAddr{Name: "/tmp/s", Net: "unix"}})
	if got := clientAddr(ctx); got.IsValid() {
		t.Errorf("a unix socket: %v, want the zero Addr", got)
	}
}
