-- Write (or refresh) presence entries of one channel with an expiry taken
-- from Redis's clock, so that node clocks do not matter.
--
-- KEYS[1] presence hash {client id = "<expiry ms>:<ClientInfo protobuf>"}
-- ARGV[1] TTL, ms
-- ARGV[2], ARGV[3], ... pairs of client id and ClientInfo protobuf

local t = redis.call('time')
local ttl = tonumber(ARGV[1])
local expiry = string.format('%d:', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl)
for i = 2, #ARGV, 2 do
  redis.call('hset', KEYS[1], ARGV[i], expiry .. ARGV[i + 1])
end
redis.call('pexpire', KEYS[1], ttl)
return 1
