-- Check, after a channel's pub/sub delivery moved or reconnected, that the
-- last publication this node delivered is still in the channel's log. A
-- failover to a replica that had not received it yet (asynchronous
-- replication), or a restart that lost the end of the AOF, takes it away,
-- and later publications would then reuse its offset in the same epoch.
-- It writes nothing.
--
-- KEYS[1] meta hash, KEYS[2] history stream
-- ARGV[1] the epoch of the last publication delivered, ARGV[2] its offset
-- Returns {epoch ('' without state), last offset, the history entry at
-- ARGV[2] (false if not retained)}.

local m = redis.call('hmget', KEYS[1], 'e', 'o')
if not m[1] or m[1] ~= ARGV[1] then
  return {m[1] or '', tonumber(m[2] or '0'), false}
end
local e = redis.call('xrange', KEYS[2], ARGV[2] .. '-0', ARGV[2] .. '-0')
local d = false
if #e > 0 then
  d = e[1][2][2]
end
return {m[1], tonumber(m[2] or '0'), d}
