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
//   - floor: the floor (floor.go), a minimal reference broadcaster, in the
//     foreground.
//
// fanout and channels publish with -publisher stream (one PublishStream,
// batched), unary (one gRPC Publish per publication, -concurrency
// workers) or rest (one POST /v1/channels/{channel}/publish per
// publication), which is what most backends do.
//
// Each run prints a human summary and one line `RESULT {json}`. Every
// client checks its channel's offsets: a repeated, backwards or skipped
// offset fails the run, as a loss does.
//
// # The floor, and comparisons
//
// A figure alone says little on a shared 2-core machine; a ratio to what
// the same workload costs with nothing but the work, measured in the same
// minutes, says more. -floor measures the floor as well: a broadcaster
// built into the bench (gorilla/websocket, no authentication, no history,
// Herald's publication frame), started fresh in its own process for each
// run. -serve CONFIG has the bench start a fresh `herald serve` for each
// run too (-serve-bin for other binaries: a before/after pair), and
// -runs K repeats the whole set in rounds, interleaved (floor, herald,
// floor, herald…, each publisher in turn) so that the machine's drift
// hits every server alike. The COMPARE line gives every run's figures
// (server CPU per delivery from /proc/PID/stat of the server, latency
// to receipt from when the publication was due on the publisher's
// schedule (-latency-from schedule, the default: a server that makes its
// publishers fall behind shows the wait; -latency-from send counts from
// the request instead), deliveries/s, losses, the load average at its
// start) and, round by round, each server's ratios to the floor's and
// REST's to unary gRPC's. Counting from the schedule, each payload also
// carries its send time, so every run reports the latency from the send
// as well ("p99 send"): the difference between the two p99s is what the
// publisher's backlog added, so a tail from a publisher that fell behind
// (its acks slowed, or the bench itself short of CPU) is told apart from
// a tail in delivery. -tls measures the shape a deployment runs:
// every client and publisher speaks TLS to Herald (tls.go). -pprof-dir saves the server's CPU and
// allocation profiles of each run (a profiled run's CPU includes the
// profiler's).
//
// A run shows only what happens within its -dur. The bridge pings every
// connection once per ping_interval (25 s by default), so a 10-second
// run that starts right after the server does sees no heartbeat, or
// some; -dur 60s includes two of every connection's. Session 25 found a
// stall that only longer runs showed (BENCHMARKS.md).
//
// # Cost of the bench itself
//
// The bench shares the machine with the server, so its read path is lean:
// one goroutine per connection, messages read into pooled buffers, the send
// time found by a byte search for `"t":` and parsed by hand, latencies
// recorded into sharded fixed-size log-linear histograms (histogram.go)
// without allocation. encoding/json is used only for the rare frames that
// are not publications. In the measured window of fanout and channels the
// bench's own garbage collector is off (gc.go): its collections took CPU
// from the server in bursts, which let the server coalesce more than real
// clients let it.
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
