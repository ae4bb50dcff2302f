-- Publish one publication of a channel, atomically: dedupe, offset, epoch,
-- history, cross-node notification. Every key shares the channel's slot.
--
-- KEYS[1] meta hash {e = epoch, o = last offset, c = when the epoch began}
-- KEYS[2] history stream (entry ID "<offset>-0", field d = publication)
-- KEYS[3] idempotency key (used when ARGV[6] ~= '0')
-- KEYS[4] the era of the slot's empty epochs (see engine.EmptyEpoch)
-- ARGV[1] publication, protobuf, without offset and epoch
-- ARGV[2] history size (0: keep none)
-- ARGV[3] history TTL, ms (0: none)
-- ARGV[4] meta TTL, ms (>= history TTL)
-- ARGV[5] epoch to use if the channel has none (random, chosen by the caller)
-- ARGV[6] dedupe window, ms ('0': no idempotency key)
-- ARGV[7] pub/sub channel
-- ARGV[8] era to set if the slot has none (random)
-- ARGV[9] '1': a duplicate writes too (see below)
-- Returns {offset, epoch, duplicate (0 or 1), created (1 when this publish
-- began the channel's state)}.

local meta, hist, dkey, era = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

if ARGV[6] ~= '0' then
  local d = redis.call('get', dkey)
  if d then
    if ARGV[9] == '1' then
      -- The caller WAITs for replicas after this script: rewriting the
      -- key's expiry puts a write of this connection after the original
      -- publication in the replication stream, so that WAIT confirms the
      -- original too.
      redis.call('pexpire', dkey, math.max(redis.call('pttl', dkey), 1))
    end
    local sp = string.find(d, ' ', 1, true)
    return {tonumber(string.sub(d, 1, sp - 1)), string.sub(d, sp + 1), 1, 0}
  end
end

local epoch = redis.call('hget', meta, 'e')
local created = 0
if not epoch then
  -- The channel has no state (never published, expired, flushed, a new
  -- Redis): a new epoch, and no history left over from an older one. c
  -- records when (ms, Redis clock), for the empty epoch a position read
  -- just before may carry (see history.lua). The slot gets an era if it
  -- lost it, so that empty epochs read from now on can resume.
  epoch = ARGV[5]
  created = 1
  local t = redis.call('time')
  redis.call('del', hist)
  redis.call('hset', meta, 'e', epoch, 'c', string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
  redis.call('set', era, ARGV[8], 'NX')
end
local offset = redis.call('hincrby', meta, 'o', 1)
redis.call('pexpire', meta, ARGV[4])

-- Append offset (field 2, varint) and epoch (field 3, bytes) to the
-- protobuf: a later field wins, so the result decodes as the full
-- publication.
local function varint(n)
  local t = {}
  while n >= 128 do
    t[#t + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  t[#t + 1] = string.char(n)
  return table.concat(t)
end
local data = ARGV[1] .. '\16' .. varint(offset) .. '\26' .. varint(#epoch) .. epoch

local size = tonumber(ARGV[2])
if size > 0 then
  redis.call('xadd', hist, 'MAXLEN', size, string.format('%d-0', offset), 'd', data)
  if ARGV[3] ~= '0' then
    redis.call('pexpire', hist, ARGV[3])
  end
else
  redis.call('del', hist)
end

if ARGV[6] ~= '0' then
  redis.call('set', dkey, string.format('%d ', offset) .. epoch, 'PX', ARGV[6])
end

redis.call('spublish', ARGV[7], 'p' .. data)
return {offset, epoch, 0, created}
