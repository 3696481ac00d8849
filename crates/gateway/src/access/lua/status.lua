-- Where a team's request and token limits stand; writes nothing.
-- KEYS: tokens, requests.
-- ARGV: capacity (-1: none), window µs, interval µs (-1: none), burst.
-- Returns {requests remaining, requests reset µs, tokens remaining, tokens reset µs}.
local now = now_us()
local r = {0, 0, 0, 0}
local cap, win = tonumber(ARGV[1]), tonumber(ARGV[2])
if cap >= 0 then
  local lvl, at = load_tokens(KEYS[1], cap, win, now)
  r[3], r[4] = token_status(cap, win, lvl, at, now)
end
local interval, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
if interval >= 0 then
  r[1], r[2] = request_status(interval, burst, load_tat(KEYS[2], interval, burst, now), now)
end
return r
