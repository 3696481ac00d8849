-- Helpers every limit script starts with (concatenated in front of it by `redis_store.rs`): the
-- Redis server's clock in microseconds, and `access::rate` (GCRA and the token bucket) in Lua,
-- line for line. No KEYS or ARGV of its own; returns nothing.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function int(x) return string.format('%.0f', x) end
local function bounded(cap, x)
  if x ~= x then return 0 end
  if x < -cap then return -cap end
  if x > cap then return cap end
  return x
end
local function refill(cap, win, lvl, at, now)
  local dt = now - at
  if dt < 0 then dt = 0 end
  if at < now then at = now end
  return bounded(cap, lvl + dt * cap / win), at
end
local function time_for(cap, win, tokens)
  local t = math.ceil(tokens * win / cap)
  if t ~= t or t <= 0 then return 0 end
  return t
end
local function load_tokens(key, cap, win, now)
  local s = redis.call('HMGET', key, 'level', 'at', 'cap', 'win')
  if not s[1] then return cap, now end
  local lvl, at, ocap, owin = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
  if ocap ~= cap or owin ~= win then
    lvl, at = refill(ocap, owin, lvl, at, now)
    lvl = bounded(cap, cap - (ocap - lvl))
  end
  return lvl, at
end
local function token_status(cap, win, lvl, at, now)
  lvl = refill(cap, win, lvl, at, now)
  return math.floor(math.max(lvl, 0)), time_for(cap, win, cap - lvl)
end
local function load_tat(key, interval, burst, now)
  local s = redis.call('HMGET', key, 'tat', 'interval', 'burst')
  if not s[1] then return 0 end
  local tat, oi, ob = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
  if oi ~= interval or ob ~= burst then
    local used = math.min(math.max(tat - now, 0), oi * ob)
    tat = now + math.min(math.floor(used * interval / math.max(oi, 1)), interval * burst)
  end
  return tat
end
local function request_status(interval, burst, tat, now)
  local span = interval * burst
  local used = math.min(math.max(tat - now, 0), span)
  return math.min(math.floor((span - used) / interval), burst), used
end
