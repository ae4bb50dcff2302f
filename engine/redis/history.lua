-- Read a channel's position and a page of its history. It writes nothing:
-- a channel without state (no meta hash) answers with epoch '', and the
-- caller reports its empty epoch, made of the slot's era (see
-- engine.EmptyEpoch).
--
-- KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] the slot's era
-- ARGV[1] since offset ('' for none)
-- ARGV[2] since epoch ('' matches any)
-- ARGV[3] limit
-- ARGV[4] '1' for newest first
-- Returns {offset, epoch, oldest, match, {publication...}, created, era}
-- (era false when the slot has none), where
-- created is when the state began (ms, Redis clock; 0 if unknown) and match
-- is 0 when since belongs to the epoch (or is not given), 1 when it does
-- not, and 2 when since is offset 0 of another epoch: the caller then
-- compares that epoch with the empty epoch of the period the state was
-- created in (the page is read from the oldest publication).

local meta, hist = KEYS[1], KEYS[2]
local era = redis.call('get', KEYS[3])
local m = redis.call('hmget', meta, 'e', 'o', 'c')
local epoch = m[1]
if not epoch then
  return {0, '', 0, 0, {}, 0, era}
end
local offset = tonumber(m[2] or '0')
local created = tonumber(m[3] or '0')

local oldest = 0
local first = redis.call('xrange', hist, '-', '+', 'COUNT', 1)
if #first > 0 then
  oldest = tonumber(string.match(first[1][1], '^(%d+)'))
end

local match = 0
if ARGV[2] ~= '' and ARGV[2] ~= epoch then
  if ARGV[1] ~= '0' or created == 0 then
    return {offset, epoch, oldest, 1, {}, created, era}
  end
  match = 2
end
local limit = tonumber(ARGV[3])
local out = {}
if limit <= 0 or oldest == 0 then
  return {offset, epoch, oldest, match, out, created, era}
end

-- since is compared as a number before it is used as a stream ID, so any
-- offset (up to 2^64-1) is safe.
local since = ARGV[1]
local entries
if ARGV[4] ~= '1' then
  local start = '-'
  if since ~= '' then
    if tonumber(since) >= offset then
      return {offset, epoch, oldest, match, out, created, era}
    end
    start = '(' .. since .. '-0'
  end
  entries = redis.call('xrange', hist, start, '+', 'COUNT', limit)
else
  local stop = '+'
  if since ~= '' and tonumber(since) <= offset then
    if tonumber(since) <= 1 then
      return {offset, epoch, oldest, match, out, created, era}
    end
    stop = '(' .. since .. '-0'
  end
  entries = redis.call('xrevrange', hist, stop, '-', 'COUNT', limit)
end
for i = 1, #entries do
  out[i] = entries[i][2][2]
end
return {offset, epoch, oldest, match, out, created, era}
