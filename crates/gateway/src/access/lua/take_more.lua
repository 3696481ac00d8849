-- Takes up to `wanted` more tokens for a running stream, never below zero
-- (`access::rate::TokenBucket::take_up_to`).
-- KEYS: tokens.
-- ARGV: capacity, window µs, wanted, state TTL ms.
-- Returns the tokens granted (0 when the budget is empty).
local now = now_us()
local cap, win, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lvl, at = load_tokens(KEYS[1], cap, win, now)
lvl, at = refill(cap, win, lvl, at, now)
local held = math.floor(lvl + math.max(1e-6, cap * 1e-12))
local granted = 0
if held > 0 then granted = math.min(want, held) end
lvl = bounded(cap, lvl - granted)
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', lvl), 'at', int(at),
  'cap', int(cap), 'win', int(win))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return granted
