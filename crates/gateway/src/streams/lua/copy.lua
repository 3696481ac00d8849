-- The owner's write of one batch of a stream's events, atomic so that a Redis that lost the
-- stream (a restart, a FLUSHALL) between two batches is noticed before a later event lands in
-- an empty key (a reader from the start would find a gap).
-- KEYS: meta, events, remote readers.
-- ARGV: instance, team, usage flag ('1'/'0'), TTL ms, whether an earlier batch was taken
--   ('1'/'0'), then (entry ID, entry) pairs.
-- Returns -1 when the stream was lost (its metadata is written again, its events cleared: the
-- caller copies them again from the start), else whether readers elsewhere exist (0/1).
local lost = ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'team', ARGV[2], 'usage', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if lost then
  redis.call('DEL', KEYS[2])
  return -1
end
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[2], ARGV[i], 'e', ARGV[i + 1])
end
if #ARGV >= 6 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return redis.call('EXISTS', KEYS[3])
