-- Write (or refresh) presence entries of one channel with an expiry taken
-- from Redis's clock, so that node clocks do not matter. An entry that did
-- not exist (a new one, or one Redis lost: a restart, a flush, an expiry
-- while its node was cut off) gets a join event, published here so that
-- it goes out exactly when the entry appears, once.
--
-- KEYS[1] presence hash {client id = "<expiry ms>:<ClientInfo protobuf>"}
-- ARGV[1] TTL, ms
-- ARGV[2] pub/sub channel of the channel's events ('': no join events)
-- ARGV[3] the channel's name
-- ARGV[4], ARGV[5], ... pairs of client id and ClientInfo protobuf
-- Returns the ids of the entries created.

local t = redis.call('time')
local ttl = tonumber(ARGV[1])
local expiry = string.format('%d:', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl)
local events, channel = ARGV[2], ARGV[3]

local function varint(n)
  local s = {}
  while n >= 128 do
    s[#s + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  s[#s + 1] = string.char(n)
  return table.concat(s)
end
-- PresenceEvent{channel = 1, client = 2}, after the kind byte.
local head = '\10' .. varint(#channel) .. channel .. '\18'

local created = {}
for i = 4, #ARGV, 2 do
  if redis.call('hset', KEYS[1], ARGV[i], expiry .. ARGV[i + 1]) == 1 then
    created[#created + 1] = ARGV[i]
    if events ~= '' then
      redis.call('spublish', events, 'j' .. head .. varint(#ARGV[i + 1]) .. ARGV[i + 1])
    end
  end
end
-- The hash outlives its entries, so that the sweep of a live node sees an
-- entry expire (and sends its leave) even when no node refreshes the
-- channel any more.
redis.call('pexpire', KEYS[1], 2 * ttl)
return created
