-- Read a channel's position and a page of its history. A channel without
-- state gets an epoch here, as on its first publish, so that positions read
-- before and after that publish belong to one epoch.
--
-- KEYS[1] meta hash, KEYS[2] history stream
-- ARGV[1] epoch to use if the channel has none
-- ARGV[2] meta TTL, ms
-- ARGV[3] since offset ('' for none)
-- ARGV[4] since epoch ('' matches any)
-- ARGV[5] limit
-- ARGV[6] '1' for newest first
-- Returns {offset, epoch, oldest, mismatch (0 or 1), {publication...}}.

local meta, hist = KEYS[1], KEYS[2]
local epoch = redis.call('hget', meta, 'e')
local offset = 0
if not epoch then
  epoch = ARGV[1]
  redis.call('del', hist)
  redis.call('hset', meta, 'e', epoch, 'o', 0)
  redis.call('pexpire', meta, ARGV[2])
else
  offset = tonumber(redis.call('hget', meta, 'o') or '0')
end

local oldest = 0
local first = redis.call('xrange', hist, '-', '+', 'COUNT', 1)
if #first > 0 then
  oldest = tonumber(string.match(first[1][1], '^(%d+)'))
end

if ARGV[4] ~= '' and ARGV[4] ~= epoch then
  return {offset, epoch, oldest, 1, {}}
end
local limit = tonumber(ARGV[5])
local out = {}
if limit <= 0 or oldest == 0 then
  return {offset, epoch, oldest, 0, out}
end

local since = ARGV[3]
local entries
if ARGV[6] ~= '1' then
  local start = '-'
  if since ~= '' then
    if tonumber(since) >= offset then
      return {offset, epoch, oldest, 0, out}
    end
    start = '(' .. since .. '-0'
  end
  entries = redis.call('xrange', hist, start, '+', 'COUNT', limit)
else
  local stop = '+'
  if since ~= '' and tonumber(since) <= offset then
    if tonumber(since) <= 1 then
      return {offset, epoch, oldest, 0, out}
    end
    stop = '(' .. since .. '-0'
  end
  entries = redis.call('xrevrange', hist, stop, '-', 'COUNT', limit)
end
for i = 1, #entries do
  out[i] = entries[i][2][2]
end
return {offset, epoch, oldest, 0, out}
