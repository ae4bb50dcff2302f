-- Remove up to 1000 expired channels from a registry key and from its
-- index of names (same slot: they share a hash tag).
--
-- KEYS[1] registry: sorted set, score = when the entry expires (unix ms)
-- KEYS[2] its names: sorted set, score 0, for reading names in order
-- ARGV[1] now (unix ms): entries that expired before it go
-- Returns how many were removed (1000: call again).

local gone = redis.call('zrangebyscore', KEYS[1], '-inf', '(' .. ARGV[1], 'limit', 0, 1000)
if #gone > 0 then
  redis.call('zrem', KEYS[1], unpack(gone))
  redis.call('zrem', KEYS[2], unpack(gone))
end
return #gone
