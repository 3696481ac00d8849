-- Renews this instance's leases of a team. A member that is missing (Redis restarted or was
-- flushed since it was taken) is added again: its stream still runs, and without its lease the
-- team could open `max_concurrent_streams` more.
-- KEYS: slots.
-- ARGV: lease µs, then the members to renew.
-- Returns the members added again, so that the caller can remove one whose stream ended
-- meanwhile.
local lease = tonumber(ARGV[1])
local exp = int(now_us() + lease)
local restored = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], exp, ARGV[i]) == 1 then
    restored[#restored + 1] = ARGV[i]
  end
end
redis.call('PEXPIRE', KEYS[1], int(2 * lease / 1000 + 1000))
return restored
