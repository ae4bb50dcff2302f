// Package bench is `herald bench`: a load generator that drives a running
// Herald over loopback as real clients do (WebSocket browsers speaking
// herald.json, backends publishing over gRPC) and reports what the server
// delivered, how fast, and at what cost.
//
// # Modes
//
//   - idle: N subscribed connections; connect time and server memory per
//     connection (RSS from /proc, Go heap and stacks from /metrics).
//   - fanout: N subscribers of one channel and a gRPC publisher at a fixed
//     rate; deliveries/s, loss, disconnects, latency, publisher lag, CPU.
//   - channels: N users, each on its personal channel user:bench-<i>,
//     publications spread round-robin; the same report.
//   - publish: gRPC publish throughput and ack latency, unary and
//     PublishStream, to one channel or (-spread N) round-robin to N, which
//     spreads a Redis Cluster's load over its shards.
//
// Each run prints a human summary and one line `RESULT {json}`.
//
// # Cost of the bench itself
//
// The bench shares the machine with the server, so its read path is lean:
// one goroutine per connection, messages read into pooled buffers, the send
// time found by a byte search for `"t":` and parsed by hand, latencies
// recorded into sharded fixed-size log-linear histograms (histogram.go)
// without allocation. encoding/json is used only for the rare frames that
// are not publications.
//
// # Several processes
//
// Each process may hold at most its open-files limit of sockets. With
// -procs K the parent re-executes itself K times (hidden flag -child); each
// child holds N/K connections from its own range of 127.0.0.x source
// addresses and speaks a line-oriented JSON protocol with the parent on
// stdin/stdout (child.go). The parent publishes, and merges the children's
// histograms bucket by bucket.
package bench
