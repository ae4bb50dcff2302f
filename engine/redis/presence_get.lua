-- List a channel's live presence entries. Expired ones (left by nodes that
-- died) are skipped, not deleted: the sweep (redis_presence_sweep.lua)
-- deletes them and publishes their leave events, and a read that deleted
-- one would swallow its leave.
--
-- KEYS[1] presence hash
-- Returns the ClientInfo protobufs of live entries.

local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('hgetall', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sep = string.find(v, ':', 1, true)
  if sep and tonumber(string.sub(v, 1, sep - 1)) > now then
    out[#out + 1] = string.sub(v, sep + 1)
  end
end
return out
