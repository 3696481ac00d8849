-- An admission, all or nothing: a stream slot (a lease), then the token reservation, then one
-- request; a refusal writes nothing.
-- KEYS: slots, tokens, requests.
-- ARGV: max streams (-1: none), lease member, lease µs, capacity (-1: none), window µs,
--   estimate, interval µs (-1: none), burst, state TTL ms.
-- Returns {outcome (0 admitted, 1 concurrency, 2 tokens, 3 requests), wait µs, tokens taken,
--   requests remaining, requests reset µs, tokens remaining, tokens reset µs}.
local now = now_us()
local max = tonumber(ARGV[1])
if max >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
  if redis.call('ZCARD', KEYS[1]) >= max then return {1, 0, 0, 0, 0, 0, 0} end
end
local cap, win, est = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local lvl, at, take, trem, treset = 0, 0, 0, 0, 0
if cap >= 0 then
  lvl, at = load_tokens(KEYS[2], cap, win, now)
  lvl, at = refill(cap, win, lvl, at, now)
  take = math.min(est, cap)
  if lvl + math.max(1e-6, cap * 1e-12) < take then
    return {2, time_for(cap, win, take - lvl), 0, 0, 0, 0, 0}
  end
  lvl = bounded(cap, lvl - take)
  trem, treset = token_status(cap, win, lvl, at, now)
end
local interval, burst = tonumber(ARGV[7]), tonumber(ARGV[8])
local tat, rrem, rreset = 0, 0, 0
if interval >= 0 then
  tat = math.max(load_tat(KEYS[3], interval, burst, now), now) + interval
  local over = tat - now - interval * burst
  if over > 0 then return {3, over, 0, 0, 0, 0, 0} end
  rrem, rreset = request_status(interval, burst, tat, now)
end
if max >= 0 then
  local lease = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], int(now + lease), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], int(2 * lease / 1000 + 1000))
end
if cap >= 0 then
  redis.call('HSET', KEYS[2], 'level', string.format('%.17g', lvl), 'at', int(at),
    'cap', int(cap), 'win', int(win))
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
if interval >= 0 then
  redis.call('HSET', KEYS[3], 'tat', int(tat), 'interval', int(interval), 'burst', int(burst))
  redis.call('PEXPIRE', KEYS[3], ARGV[9])
end
return {0, 0, take, rrem, rreset, trem, treset}
