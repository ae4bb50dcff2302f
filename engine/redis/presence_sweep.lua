-- Remove a channel's expired presence entries (left by a node that died or
-- was cut off from Redis) and publish a leave event for each. The script
-- runs atomically: of all the nodes sweeping the channel, and of a node
-- removing its own entry (HDEL), exactly one removes an entry, and only it
-- publishes that entry's leave.
--
-- KEYS[1] presence hash {client id = "<expiry ms>:<ClientInfo protobuf>"}
-- ARGV[1] pub/sub channel of the channel's events
-- ARGV[2] the channel's name
-- Returns how many entries were removed.

local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local channel = ARGV[2]

local function varint(n)
  local s = {}
  while n >= 128 do
    s[#s + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  s[#s + 1] = string.char(n)
  return table.concat(s)
end
local head = '\10' .. varint(#channel) .. channel .. '\18'

local all = redis.call('hgetall', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sep = string.find(v, ':', 1, true)
  if not sep or tonumber(string.sub(v, 1, sep - 1)) <= now then
    redis.call('hdel', KEYS[1], all[i])
    n = n + 1
    if sep then
      local info = string.sub(v, sep + 1)
      redis.call('spublish', ARGV[1], 'l' .. head .. varint(#info) .. info)
    end
  end
end
return n
