-- Settles a reservation: gives back `reserved` and takes `used`, against the budget as it is
-- stored (a reload may have changed the quota since the reservation).
-- KEYS: tokens.
-- ARGV: reserved, used.
-- Returns 1, or 0 when no budget is kept for the team (nothing to settle).
local s = redis.call('HMGET', KEYS[1], 'level', 'at', 'cap', 'win')
if not s[1] then return 0 end
local cap, win = tonumber(s[3]), tonumber(s[4])
local lvl, at = refill(cap, win, tonumber(s[1]), tonumber(s[2]), now_us())
lvl = bounded(cap, lvl + (tonumber(ARGV[1]) - tonumber(ARGV[2])))
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', lvl), 'at', int(at))
redis.call('PEXPIRE', KEYS[1], int(2 * win / 1000 + 1000))
return 1
