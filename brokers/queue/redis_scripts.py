"""The Lua scripts of the queue on Redis: every state change of a job is one script.

Key layout (``P`` = the key prefix, ``iii:queue:``; ``\\x1f`` separates the parts of a key):

  P seq                      counter: the order of jobs (a retry keeps its seq: ahead of newer jobs)
  P j:<id>                   hash, one job: ``rec`` (msgpack of the immutable fields: data,
                             function, namespace, trace context...), ``lane``, ``rk`` (its ready
                             key), ``grp`` (its FIFO group list, or ""), ``seq``, ``att``
                             (failed attempts), ``max``, ``bo`` (backoff ms), ``pat`` (retry
                             at, ms), ``fat``/``err`` (in the DLQ since / why), ``own`` (the
                             incarnation holding its lease)
  P r:<lane>\\x1f<ns>\\x1f<fn>   zset score seq: ready jobs of one lane for one function (the
                             "per-function lane": a host takes only from the keys of functions
                             it routes to locally)
  P ne                       set of the ready keys that are not empty
  P d                        zset score retry-at: jobs waiting for their retry (all lanes)
  P g:<lane>\\x1f<group>      list: a FIFO group in order; only its head is ever ready/leased
  P leased                   zset score lease deadline (ms)
  P own:<inc>                set: the jobs leased by one queue-process incarnation
  P hb:<inc>                 its heartbeat (SET PX): gone = dead, its leases are returned
  P incs                     hash incarnation -> host id;  P host:<host> -> its live incarnation
  P dlq:<lane>               zset score failed_at: the lane's DLQ
  P depth                    hash lane -> live jobs (ready + retrying + leased)
  P fns                      hash incarnation -> the functions it routes ("ns\\x1ffn" lines)
  P lanes                    hash subscriber lane -> its settings (msgpack; last subscriber wins)
  P tl:<topic>               hash lane -> trigger count: the fan-out of a durable topic
  P trig                     hash "<inc>\\x1f<trigger id>" -> "<topic>\\x1f<lane>"
  P topics                   set of topics that ever had a subscriber
  P n                        pub/sub channel: a ready key that became non-empty, or "L" (lanes changed)

Invariants: a live job is in exactly one of a ready zset, ``d`` or ``leased`` (a FIFO job that
is not its group's head is in none: it waits in its group list); a DLQ job only in its
``dlq`` zset; ``ne`` holds every non-empty ready key (it may briefly hold an empty one).
"""
from __future__ import annotations

# Shared helpers, prepended to every script that moves jobs.
_LIB = r"""
local P = ARGV[1]
local notified = {}
local function ready(id, rk, seq)
  redis.call('ZADD', rk, seq, id)
  if redis.call('ZCARD', rk) == 1 and not notified[rk] then
    notified[rk] = true
    redis.call('SADD', P..'ne', rk)
    redis.call('PUBLISH', P..'n', rk)
  else
    redis.call('SADD', P..'ne', rk)
  end
end
local function unlease(id, owner)
  redis.call('ZREM', P..'leased', id)
  if owner and owner ~= '' then redis.call('SREM', P..'own:'..owner, id) end
  redis.call('HDEL', P..'j:'..id, 'own')
end
-- the group's head left (acked, DLQ): the next job of the group becomes ready
local function pop_head(grp, id)
  if redis.call('LINDEX', grp, 0) == id then
    redis.call('LPOP', grp)
    local nxt = redis.call('LINDEX', grp, 0)
    if nxt then
      local f = redis.call('HMGET', P..'j:'..nxt, 'rk', 'seq', 'pat')
      if f[3] then redis.call('ZADD', P..'d', f[3], nxt) else ready(nxt, f[1], f[2]) end
    end
  else
    redis.call('LREM', grp, 1, id)
  end
end
-- a leased job goes back to ready without counting an attempt
local function release(id)
  local jk = P..'j:'..id
  local f = redis.call('HMGET', jk, 'own', 'rk', 'seq', 'fat')
  if not f[2] or f[4] then redis.call('ZREM', P..'leased', id) return 0 end
  unlease(id, f[1])
  ready(id, f[2], f[3])
  return 1
end
"""

# ARGV: P, then per job: id, lane, rk, grp, rec, max, bo
ENQUEUE = _LIB + r"""
for i = 2, #ARGV, 7 do
  local id, lane, rk, grp = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local seq = redis.call('INCR', P..'seq')
  redis.call('HSET', P..'j:'..id, 'rec', ARGV[i+4], 'lane', lane, 'rk', rk, 'grp', grp,
             'seq', seq, 'att', 0, 'max', ARGV[i+5], 'bo', ARGV[i+6])
  redis.call('HINCRBY', P..'depth', lane, 1)
  if grp ~= '' then
    if redis.call('RPUSH', grp, id) == 1 then ready(id, rk, seq) end
  else
    ready(id, rk, seq)
  end
end
return (#ARGV - 1) / 7
"""

# ARGV: P, owner, deadline, then rk, n pairs. Returns {id, rec, att, max, bo, seq} per job.
TAKE = _LIB + r"""
local own, dl = ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 2 do
  local rk = ARGV[i]
  local got = redis.call('ZPOPMIN', rk, tonumber(ARGV[i+1]))
  for k = 1, #got, 2 do
    local id = got[k]
    local jk = P..'j:'..id
    local f = redis.call('HMGET', jk, 'rec', 'att', 'max', 'bo', 'seq', 'fat')
    if f[1] and not f[6] then
      redis.call('HSET', jk, 'own', own)
      redis.call('ZADD', P..'leased', dl, id)
      redis.call('SADD', P..'own:'..own, id)
      out[#out+1] = {id, f[1], f[2], f[3], f[4], f[5]}
    end
  end
  if redis.call('ZCARD', rk) == 0 then redis.call('SREM', P..'ne', rk) end
end
return out
"""

# ARGV: P, owner, ids... Returns how many were acknowledged (stale outcomes are skipped).
ACK = _LIB + r"""
local own = ARGV[2]
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local jk = P..'j:'..id
  local f = redis.call('HMGET', jk, 'own', 'lane', 'grp', 'fat', 'rk')
  if f[2] and not f[4] and (f[1] == own or not f[1]) then
    unlease(id, f[1])
    redis.call('ZREM', f[5], id)
    redis.call('ZREM', P..'d', id)
    redis.call('DEL', jk)
    redis.call('HINCRBY', P..'depth', f[2], -1)
    if f[3] ~= '' then pop_head(f[3], id) end
    n = n + 1
  end
end
return n
"""

# ARGV: P, owner, now, then per outcome: id, error, max_attempts, backoff_ms.
# Returns {retry_at or 0 (DLQ) or -1 (stale), ...}.
NACK = _LIB + r"""
local own, now = ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 4 do
  local id, err, max, bo = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
  local jk = P..'j:'..id
  local f = redis.call('HMGET', jk, 'own', 'lane', 'grp', 'att', 'fat')
  if f[2] and not f[5] and f[1] == own then
    unlease(id, own)
    local att = tonumber(f[4]) + 1
    redis.call('HSET', jk, 'att', att, 'max', max, 'bo', bo, 'err', err)
    if att >= max then
      redis.call('HSET', jk, 'fat', now)
      redis.call('HDEL', jk, 'pat')
      redis.call('ZADD', P..'dlq:'..f[2], now, id)
      redis.call('HINCRBY', P..'depth', f[2], -1)
      if f[3] ~= '' then pop_head(f[3], id) end
      out[#out+1] = 0
    else
      local at = now + bo * math.pow(2, math.min(att - 1, 30))
      redis.call('HSET', jk, 'pat', at)
      redis.call('ZADD', P..'d', at, id)
      out[#out+1] = at
    end
  else
    out[#out+1] = -1
  end
end
return out
"""

# ARGV: P, owner, ids...: leases given back without an outcome (shutdown).
RELEASE = _LIB + r"""
local own = ARGV[2]
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', P..'j:'..id, 'own') == own then n = n + release(id) end
end
return n
"""

# ARGV: P, now. Due retries become ready (with their old seq: ahead of newer jobs).
# Returns the next retry time or -1.
PROMOTE = _LIB + r"""
local now = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', P..'d', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', P..'d', id)
  local jk = P..'j:'..id
  local f = redis.call('HMGET', jk, 'rk', 'seq', 'fat', 'own')
  if f[1] and not f[3] and not f[4] then
    redis.call('HDEL', jk, 'pat')
    ready(id, f[1], f[2])
  end
end
local nxt = redis.call('ZRANGE', P..'d', 0, 0, 'WITHSCORES')
if #due == 1000 then return now end
if nxt[2] then return tonumber(nxt[2]) end
return -1
"""

_DROP_INC = r"""
local function drop_inc(inc)
  local n = 0
  for _, id in ipairs(redis.call('SMEMBERS', P..'own:'..inc)) do n = n + release(id) end
  redis.call('DEL', P..'own:'..inc, P..'hb:'..inc)
  redis.call('HDEL', P..'incs', inc)
  redis.call('HDEL', P..'fns', inc)
  local lanes_changed = false
  local cursor = '0'
  repeat
    local r = redis.call('HSCAN', P..'trig', cursor, 'MATCH', inc..'\31*', 'COUNT', 500)
    cursor = r[1]
    for k = 1, #r[2], 2 do
      redis.call('HDEL', P..'trig', r[2][k])
      local sep = string.find(r[2][k+1], '\31', 1, true)
      local topic, lane = string.sub(r[2][k+1], 1, sep - 1), string.sub(r[2][k+1], sep + 1)
      if redis.call('HINCRBY', P..'tl:'..topic, lane, -1) <= 0 then redis.call('HDEL', P..'tl:'..topic, lane) end
      lanes_changed = true
    end
  until cursor == '0'
  if lanes_changed then redis.call('PUBLISH', P..'n', 'L') end
  return n
end
"""

# ARGV: P, host, inc, ttl_ms: a new queue process of ``host`` takes over; the leases of the
# host's previous incarnation (killed, or stopped) go back at once.
CLAIM = _LIB + _DROP_INC + r"""
local host, inc = ARGV[2], ARGV[3]
local old = redis.call('GET', P..'host:'..host)
local n = 0
if old and old ~= inc then n = drop_inc(old) end
redis.call('SET', P..'host:'..host, inc)
redis.call('HSET', P..'incs', inc, host)
redis.call('SET', P..'hb:'..inc, host, 'PX', ARGV[4])
return n
"""

# ARGV: P, inc: a queue process that stops gives its leases back and leaves.
RETIRE = _LIB + _DROP_INC + r"""
return drop_inc(ARGV[2])
"""

# ARGV: P, now: the reaper (any host). Dead incarnations' leases and expired leases return.
REAP = _LIB + _DROP_INC + r"""
local now = tonumber(ARGV[2])
local n = 0
for _, inc in ipairs(redis.call('HKEYS', P..'incs')) do
  if redis.call('EXISTS', P..'hb:'..inc) == 0 then
    local host = redis.call('HGET', P..'incs', inc)
    if redis.call('GET', P..'host:'..host) == inc then redis.call('DEL', P..'host:'..host) end
    n = n + drop_inc(inc)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P..'leased', '-inf', now, 'LIMIT', 0, 1000)) do
  n = n + release(id)
end
return n
"""

# ARGV: P, inc, host, ttl_ms, deadline, fns, ids...: the heartbeat of one incarnation; it
# extends the leases of the jobs it still has in flight (only those: a lease it forgot expires).
HEARTBEAT = r"""
local P, inc = ARGV[1], ARGV[2]
redis.call('SET', P..'hb:'..inc, ARGV[3], 'PX', ARGV[4])
redis.call('HSET', P..'incs', inc, ARGV[3])
redis.call('HSET', P..'fns', inc, ARGV[6])
local dl = ARGV[5]
for i = 7, #ARGV do
  redis.call('ZADD', P..'leased', 'XX', dl, ARGV[i])
end
return redis.call('GET', P..'host:'..ARGV[3]) == inc and 1 or 0
"""

# ARGV: P, lane, max, id or "": DLQ jobs back to ready with a fresh budget (oldest first).
REDRIVE = _LIB + r"""
local lane, max, only = ARGV[2], ARGV[3], ARGV[4]
local dk = P..'dlq:'..lane
local ids
if only ~= '' then
  if redis.call('ZSCORE', dk, only) then ids = {only} else ids = {} end
else
  ids = redis.call('ZRANGE', dk, 0, -1)
end
local jobs = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', P..'j:'..id, 'seq', 'rk', 'grp')
  redis.call('ZREM', dk, id)
  if f[1] then jobs[#jobs+1] = {tonumber(f[1]), id, f[2], f[3]} end
end
table.sort(jobs, function(a, b) return a[1] < b[1] end)
for _, j in ipairs(jobs) do
  local jk = P..'j:'..j[2]
  redis.call('HSET', jk, 'att', 0, 'max', max)
  redis.call('HDEL', jk, 'fat', 'err', 'pat', 'own')
  redis.call('HINCRBY', P..'depth', lane, 1)
  if j[4] ~= '' then
    if redis.call('RPUSH', j[4], j[2]) == 1 then ready(j[2], j[3], j[1]) end
  else
    ready(j[2], j[3], j[1])
  end
end
return #jobs
"""

# ARGV: P, lane, id
DISCARD = r"""
local P, lane, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('ZREM', P..'dlq:'..lane, id) == 1 then
  redis.call('DEL', P..'j:'..id)
  return 1
end
return 0
"""

# ARGV: P, inc, trigger id, topic, lane, settings
SUBSCRIBE = r"""
local P, key, topic, lane = ARGV[1], ARGV[2]..'\31'..ARGV[3], ARGV[4], ARGV[5]
local old = redis.call('HGET', P..'trig', key)
local val = topic..'\31'..lane
if old ~= val then
  if old then
    local sep = string.find(old, '\31', 1, true)
    local ot, ol = string.sub(old, 1, sep - 1), string.sub(old, sep + 1)
    if redis.call('HINCRBY', P..'tl:'..ot, ol, -1) <= 0 then redis.call('HDEL', P..'tl:'..ot, ol) end
  end
  redis.call('HSET', P..'trig', key, val)
  redis.call('HINCRBY', P..'tl:'..topic, lane, 1)
end
redis.call('HSET', P..'lanes', lane, ARGV[6])
redis.call('SADD', P..'topics', topic)
redis.call('PUBLISH', P..'n', 'L')
return 1
"""

# ARGV: P, inc, trigger id
UNSUBSCRIBE = r"""
local P, key = ARGV[1], ARGV[2]..'\31'..ARGV[3]
local old = redis.call('HGET', P..'trig', key)
if not old then return 0 end
redis.call('HDEL', P..'trig', key)
local sep = string.find(old, '\31', 1, true)
local ot, ol = string.sub(old, 1, sep - 1), string.sub(old, sep + 1)
if redis.call('HINCRBY', P..'tl:'..ot, ol, -1) <= 0 then redis.call('HDEL', P..'tl:'..ot, ol) end
redis.call('PUBLISH', P..'n', 'L')
return 1
"""

SCRIPTS = {name: text for name, text in globals().items()
           if name.isupper() and not name.startswith("_") and isinstance(text, str)}
