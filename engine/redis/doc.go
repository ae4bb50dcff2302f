// Package redis is the Redis engine: channel state in Redis, so that any
// number of Herald nodes on one Redis, or on one Redis Cluster, form one
// service. Layout, for prefix P and channel C (the hash tag {C} puts all
// of a channel's keys, and its pub/sub channel, in one Cluster slot, so
// that every script touches one slot):
//
//	P:{C}:m        hash: e = epoch, o = last offset, c = when the epoch
//	               began (ms). Expires MetaTTL (at least the history TTL)
//	               after the last publish.
//	P:{C}:h        stream: the history, entry ID "<offset>-0", field d = the
//	               Publication (protobuf). MAXLEN = history size; the key
//	               expires history TTL after the last publish.
//	P:{C}:d:<key>  string "<offset> <epoch>": an idempotency key, for the
//	               dedupe window.
//	P:{C}:p        hash: client id -> "<expiry ms>:<ClientInfo protobuf>",
//	               presence; the key expires 2x PresenceTTL after the last write.
//	P:{C}:s        shard channel (SPUBLISH/SSUBSCRIBE): "p" + Publication,
//	               "j"/"l" + PresenceEvent (join/leave).
//
// and the keys of no one channel, which on a cluster are sharded so that
// no slot carries them all (tags from spreadTags hash to 16 slots spread
// evenly over the slot space; slotTag(s) hashes to slot s):
//
//	                one Redis       Redis Cluster
//	control         P:control       P:{T}:control, 16 of them: shard channels
//	                                of BridgeSessionResponse commands; every
//	                                node subscribes to all, a command goes
//	                                to the one of its user
//	registry        P:channels      P:{T}:channels, 16 of them: sorted sets,
//	                                channel -> expiry (unix ms), behind
//	                                Channels; a channel is in the one of its
//	                                hash (written apart from the scripts)
//	era             P:era           P:{slotTag(s)}:era, one per slot s: the
//	                                era of the empty epochs of the slot's
//	                                channels (engine.EmptyEpoch), random, no
//	                                expiry; set if missing at Start and when
//	                                a publish begins a channel's state, so
//	                                that it changes when its shard loses
//	                                its data
//
// Publish runs one Lua script (publish.lua) that dedupes, increments the
// offset, creates the epoch when the channel has none, appends to the
// stream and SPUBLISHes the publication with its offset and epoch, so every
// node sees one order. A channel whose meta key is gone (expired, FLUSHALL,
// a new Redis) gets a new random epoch on its next publish. Reads (history,
// presence, the registry) never write: a channel without state reads as
// offset 0 of its empty epoch. See publish.go for delivery guarantees and
// redis.wait_replicas, pubsub.go for fan-out and topology changes.
//
// Commands used: EVALSHA/EVAL with keys of one slot, SPUBLISH/SSUBSCRIBE/
// SUNSUBSCRIBE, XADD MAXLEN, XRANGE/XREVRANGE, ZADD GT, HSET/HDEL/HGETALL,
// SET PX/NX, PEXPIRE, WAIT; CLUSTER SLOTS (through go-redis) on a cluster.
// So Redis 7.0 or later (sharded pub/sub, ZADD GT); Valkey 7.2 and later
// keep these commands, but the tests run on Debian's redis-server 7.0.15
// only.
package redis
