// Package freeport finds loopback ports for servers that tests start in
// other processes (herald serve, redis-server), which bind the port after
// the test chose it.
//
// A port from Listen("127.0.0.1:0") lies in the kernel's ephemeral range,
// the range every outgoing connection's local port comes from too: in the
// moment between choosing it and the server binding it, a client of
// another test running in parallel can take it ("address already in
// use"). Ports below the ephemeral range are never handed out that way,
// so Port chooses there, at random, among ports free when it looks.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// Gap is how far below the ephemeral range's start Port's ports stay, so
// that a port's companion at port+Gap (a Redis Cluster node's bus port)
// is below it too.
const Gap = 10000

// lowest is the lowest port Port hands out.
const lowest = 10000

// Port returns a loopback TCP port that is free now, below the ephemeral
// range by at least Gap; with withGap, port+Gap is free too. Where the
// ephemeral range starts too low for that, it falls back on a port the
// kernel chooses (and port+Gap is then not checked).
func Port(withGap bool) (int, error) {
	hi := ephemeralStart() - Gap
	for attempt := 0; hi > lowest && attempt < 200; attempt++ {
		p := lowest + rand.IntN(hi-lowest)
		if !free(p) || withGap && !free(p+Gap) {
			continue
		}
		return p, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr is Port as a "127.0.0.1:port" address.
func Addr() (string, error) {
	p, err := Port(false)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}

func free(p int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralStart is the first port of the kernel's ephemeral range
// (Linux; 32768, Linux's default, elsewhere or when unreadable).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo < 1024 {
		return 32768
	}
	return lo
}
