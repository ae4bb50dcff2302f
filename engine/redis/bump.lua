-- Begin a new epoch for a channel whose log lost publications that nodes
-- delivered (see check.lua), so that no position taken from them resumes
-- as if nothing happened: readers learn recovered=false. What history is
-- left belongs to the old epoch and goes with it.
--
-- KEYS[1] meta hash, KEYS[2] history stream
-- ARGV[1] the epoch found to have lost publications, ARGV[2] the new epoch
-- Returns 1 if the epoch changed, 0 if it had changed already.

if redis.call('hget', KEYS[1], 'e') ~= ARGV[1] then
  return 0
end
local t = redis.call('time')
redis.call('del', KEYS[2])
redis.call('hset', KEYS[1], 'e', ARGV[2], 'o', 0, 'c', string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
return 1
