-- Begin a new epoch for a channel whose log lost publications that nodes
-- delivered (see check.lua), so that no position taken from them resumes
-- as if nothing happened: readers holding a position of the old epoch
-- learn recovered=false. The publications that are left stay, relabelled
-- with the new epoch (a later protobuf field wins, as in publish.lua), so
-- that what was acknowledged and replicated is still in history; offsets
-- go on from the last one left.
--
-- KEYS[1] meta hash, KEYS[2] history stream
-- ARGV[1] the epoch found to have lost publications, ARGV[2] the new epoch
-- Returns 1 if the epoch changed, 0 if it had changed already.

if redis.call('hget', KEYS[1], 'e') ~= ARGV[1] then
  return 0
end
local function varint(n)
  local t = {}
  while n >= 128 do
    t[#t + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  t[#t + 1] = string.char(n)
  return table.concat(t)
end
local label = '\26' .. varint(#ARGV[2]) .. ARGV[2]
local ttl = redis.call('pttl', KEYS[2])
local entries = redis.call('xrange', KEYS[2], '-', '+')
redis.call('del', KEYS[2])
for i = 1, #entries do
  redis.call('xadd', KEYS[2], entries[i][1], 'd', entries[i][2][2] .. label)
end
if ttl > 0 then
  redis.call('pexpire', KEYS[2], ttl)
end
redis.call('hset', KEYS[1], 'e', ARGV[2])
return 1
