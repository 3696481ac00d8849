-- Counts a team's stream slots in use: the leases not expired, on every instance.
-- KEYS: slots.
-- ARGV: none.
-- Returns the count.
return redis.call('ZCOUNT', KEYS[1], '(' .. int(now_us()), '+inf')
