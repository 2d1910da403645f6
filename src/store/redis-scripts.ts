/**
 * The Lua scripts of the Redis store (redis-store.ts). Each runs atomically
 * on the server; ARGV[1] is always the key prefix. Key layout (P = prefix):
 *
 *   P dev            hash  device id -> device JSON
 *   P psk / P cert   hash  PSK / certificate identity -> device id
 *   P msg            hash  message id -> message JSON (payload base64)
 *   P exp            zset  message id, score expiresAt (for prune)
 *   P q:<device>     hash  message id -> "order:seq:tombstone" (the device's queue)
 *   P qdevs          set   devices with a non-empty queue
 *   P ref            hash  message id -> number of deliveries referencing it
 *   P ctr            hash  device -> "lastSeq:ackedSeq"
 *   P sub:<device>   set   topics the device subscribed to
 *   P subdevs        set   devices with subscriptions
 *   P r              zset  "id:receiptJSON", score id (receiptsAfter)
 *   P rm:<message>   zset  receipt ids of one message, score id (receiptsForMessage)
 *   P rat            zset  receipt ids, score `at` (prune)
 *   P rseq           string last receipt id given (INCRBY: never reused)
 *   P set            hash  settings
 *   P instances      string number of stores ever opened (names the fence and the instance)
 *   P fence:<n>      string commits applied by store instance n (the prefix rule)
 *   P fres:<n>       list  first receipt id (0: none) of instance n's last applied commits, the
 *                    last one last, trimmed to those whose answer may not have reached it yet
 *                    (after a lost connection they settle the commits the fence says applied)
 *   P holds          hash  device -> "instance:epoch" (the node holding its session; cluster-types.ts)
 *   P epochs         hash  device -> last epoch given (HINCRBY: increases with every claim)
 *   P alive:<n>      string "1" with a PX expiry, refreshed by instance n while it runs
 *   P ev             channel events for every node: "c" (a commit's subscription changes and last
 *                    receipt id), "g" (registry change)
 *   P ev:<n>         channel events for instance n only: "q" (queued for devices it holds), "t" (taken)
 *
 * Events are JSON arrays whose first element is the sending instance:
 *   [from, "c", lastReceiptId or 0]  or  [from, "c", lastReceiptId or 0, [device, topic, 1|0, ...]]
 *   [from, "g", device]   [from, "q", [device, ...]]   [from, "t", device, epoch of the lost hold]
 */

/**
 * commit: ARGV = P, instance, expected fence, results to keep, nFence, (device, epoch)*,
 *   nMsg, (id, json, expiresAt)*, nDlv, (device, messageId, value)*, nRm, (device, messageId)*,
 *   nCtr, (device, value)*, nSub, (device, topic)*, nUnsub, (device, topic)*, nRcpt, (messageId, at, json)*
 * Returns {0, firstReceiptId} | {1, duplicate id} | {2, device, ghost message id} | {3, fence found}.
 * Validation comes before any write, so a refused batch changes nothing; a
 * script whose fence does not match (an earlier commit of this store failed
 * or was lost) refuses itself. An applied commit appends its first receipt
 * id to `P fres:<instance>` and trims that list to the last "results to keep"
 * entries (the commits the store had not had an answer for when it sent this
 * one, this one included).
 *
 * Holds (cluster-types.ts): a device of the fence list whose hold is not
 * (instance, epoch) is "stale": its counters, its deliveries with a seq or a
 * tombstone and its removals are skipped, and its seq-0 deliveries only insert
 * (never replace what the holder wrote); the rest of the batch is applied.
 * New seq-0 deliveries of a device held by another instance are told to that
 * instance ("q", one PUBLISH per holder); the batch's subscription changes and
 * last receipt id to every node ("c", one PUBLISH).
 */
export const COMMIT_SCRIPT = `#!lua
local P, me = ARGV[1], ARGV[2]
local fk = P .. 'fence:' .. me
local cur = redis.call('GET', fk) or '0'
if cur ~= ARGV[3] then return {3, cur} end
local hk = P .. 'holds'
local mk = P .. 'msg'
local i = 5
local nf = tonumber(ARGV[i]); i = i + 1
local stale = {}
for j = 0, nf - 1 do
  local dev = ARGV[i + 2 * j]
  if redis.call('HGET', hk, dev) ~= me .. ':' .. ARGV[i + 2 * j + 1] then stale[dev] = true end
end
i = i + 2 * nf
local function holderOnly(v)
  local s, t = string.match(v, '^%d+:(%d+):(%d)$')
  return s ~= '0' or t ~= '0'
end
local nm = tonumber(ARGV[i]); i = i + 1
local mi = i
local fresh = {}
for j = 0, nm - 1 do
  local id = ARGV[mi + 3 * j]
  if fresh[id] or redis.call('HEXISTS', mk, id) == 1 then return {1, id} end
  fresh[id] = true
end
i = mi + 3 * nm
local nd = tonumber(ARGV[i]); i = i + 1
local di = i
for j = 0, nd - 1 do
  local b = di + 3 * j
  local mid = ARGV[b + 1]
  if not (stale[ARGV[b]] and holderOnly(ARGV[b + 2])) and not fresh[mid] and redis.call('HEXISTS', mk, mid) == 0 then
    return {2, ARGV[b], mid}
  end
end
i = di + 3 * nd
redis.call('INCR', fk)
for j = 0, nm - 1 do
  local b = mi + 3 * j
  redis.call('HSET', mk, ARGV[b], ARGV[b + 1])
  redis.call('ZADD', P .. 'exp', ARGV[b + 2], ARGV[b])
end
local seen, holders, told = {}, {}, {}
local function queued(dev)
  if seen[dev] then return end
  seen[dev] = true
  local h = redis.call('HGET', hk, dev)
  if not h then return end
  local who = string.match(h, '^(.*):%d+$')
  if who == me then return end
  if not told[who] then told[who] = {}; holders[#holders + 1] = who end
  local t = told[who]
  t[#t + 1] = dev
end
for j = 0, nd - 1 do
  local b = di + 3 * j
  local dev, mid, v = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local q = P .. 'q:' .. dev
  local only = holderOnly(v)
  local added = 0
  if not stale[dev] then
    added = redis.call('HSET', q, mid, v)
  elseif not only then
    added = redis.call('HSETNX', q, mid, v)
  end
  if added == 1 then
    redis.call('HINCRBY', P .. 'ref', mid, 1)
    redis.call('SADD', P .. 'qdevs', dev)
  end
  if not only and (added == 1 or not stale[dev]) then queued(dev) end
end
local n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  local dev, mid = ARGV[i + 2 * j], ARGV[i + 2 * j + 1]
  local q = P .. 'q:' .. dev
  if not stale[dev] and redis.call('HDEL', q, mid) == 1 then
    if redis.call('HINCRBY', P .. 'ref', mid, -1) <= 0 then redis.call('HDEL', P .. 'ref', mid) end
    if redis.call('HLEN', q) == 0 then redis.call('SREM', P .. 'qdevs', dev) end
  end
end
i = i + 2 * n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  if not stale[ARGV[i + 2 * j]] then redis.call('HSET', P .. 'ctr', ARGV[i + 2 * j], ARGV[i + 2 * j + 1]) end
end
i = i + 2 * n
local subs = {}
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  local dev, topic = ARGV[i + 2 * j], ARGV[i + 2 * j + 1]
  redis.call('SADD', P .. 'sub:' .. dev, topic)
  redis.call('SADD', P .. 'subdevs', dev)
  subs[#subs + 1] = dev; subs[#subs + 1] = topic; subs[#subs + 1] = 1
end
i = i + 2 * n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  local dev, topic = ARGV[i + 2 * j], ARGV[i + 2 * j + 1]
  local s = P .. 'sub:' .. dev
  redis.call('SREM', s, topic)
  if redis.call('SCARD', s) == 0 then redis.call('SREM', P .. 'subdevs', dev) end
  subs[#subs + 1] = dev; subs[#subs + 1] = topic; subs[#subs + 1] = 0
end
i = i + 2 * n
n = tonumber(ARGV[i]); i = i + 1
local first, last = 0, 0
if n > 0 then
  last = redis.call('INCRBY', P .. 'rseq', n)
  first = last - n + 1
  for j = 0, n - 1 do
    local b = i + 3 * j
    local id = string.format('%d', first + j)
    redis.call('ZADD', P .. 'r', id, id .. ':' .. ARGV[b + 2])
    redis.call('ZADD', P .. 'rm:' .. ARGV[b], id, id)
    redis.call('ZADD', P .. 'rat', ARGV[b + 1], id)
  end
end
local rk = P .. 'fres:' .. me
redis.call('RPUSH', rk, first)
redis.call('LTRIM', rk, -tonumber(ARGV[4]), -1)
for _, who in ipairs(holders) do
  redis.call('PUBLISH', P .. 'ev:' .. who, cjson.encode({me, 'q', told[who]}))
end
if #subs > 0 then
  redis.call('PUBLISH', P .. 'ev', cjson.encode({me, 'c', last, subs}))
elseif n > 0 then
  redis.call('PUBLISH', P .. 'ev', cjson.encode({me, 'c', last}))
end
return {0, first}
`;

/**
 * putDevice: ARGV = P, id, json, psk identity or "", cert identity or "", instance.
 * Returns {0} | {1, "psk"|"cert", owner}; tells every node ("g").
 */
export const PUT_DEVICE_SCRIPT = `#!lua
local P, id, json, psk, cert = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if psk ~= '' then
  local o = redis.call('HGET', P .. 'psk', psk)
  if o and o ~= id then return {1, 'psk', o} end
end
if cert ~= '' then
  local o = redis.call('HGET', P .. 'cert', cert)
  if o and o ~= id then return {1, 'cert', o} end
end
local old = redis.call('HGET', P .. 'dev', id)
if old then
  local d = cjson.decode(old)
  if type(d.psk) == 'table' then redis.call('HDEL', P .. 'psk', d.psk.identity) end
  if type(d.certIdentity) == 'string' then redis.call('HDEL', P .. 'cert', d.certIdentity) end
end
redis.call('HSET', P .. 'dev', id, json)
if psk ~= '' then redis.call('HSET', P .. 'psk', psk, id) end
if cert ~= '' then redis.call('HSET', P .. 'cert', cert, id) end
redis.call('PUBLISH', P .. 'ev', cjson.encode({ARGV[6], 'g', id}))
return {0}
`;

/** findDevice: ARGV = P, index ("psk" or "cert"), identity. Returns the device JSON or nil. */
export const FIND_DEVICE_SCRIPT = `#!lua flags=no-writes
local id = redis.call('HGET', ARGV[1] .. ARGV[2], ARGV[3])
if not id then return false end
return redis.call('HGET', ARGV[1] .. 'dev', id)
`;

/**
 * deleteDevice: ARGV = P, id, instance. Removes the device, its queue (the seqs its
 * deliveries were given stay taken in its counters) and its subscriptions;
 * tells every node ("g"). Returns 1 when the device existed.
 */
export const DELETE_DEVICE_SCRIPT = `#!lua
local P, id = ARGV[1], ARGV[2]
local old = redis.call('HGET', P .. 'dev', id)
if old then
  local d = cjson.decode(old)
  if type(d.psk) == 'table' then redis.call('HDEL', P .. 'psk', d.psk.identity) end
  if type(d.certIdentity) == 'string' then redis.call('HDEL', P .. 'cert', d.certIdentity) end
  redis.call('HDEL', P .. 'dev', id)
end
local q = P .. 'q:' .. id
local rows = redis.call('HGETALL', q)
local taken = 0
for k = 1, #rows, 2 do
  local seq = tonumber(string.match(rows[k + 1], '^%d+:(%d+):'))
  if seq > taken then taken = seq end
  if redis.call('HINCRBY', P .. 'ref', rows[k], -1) <= 0 then redis.call('HDEL', P .. 'ref', rows[k]) end
end
redis.call('DEL', q)
redis.call('SREM', P .. 'qdevs', id)
local c = redis.call('HGET', P .. 'ctr', id)
local last, acked = 0, '0'
if c then
  local l, a = string.match(c, '^(%d+):(%d+)$')
  last, acked = tonumber(l), a
end
if taken > last then redis.call('HSET', P .. 'ctr', id, string.format('%d', taken) .. ':' .. acked) end
redis.call('DEL', P .. 'sub:' .. id)
redis.call('SREM', P .. 'subdevs', id)
redis.call('PUBLISH', P .. 'ev', cjson.encode({ARGV[3], 'g', id}))
if old then return 1 end
return 0
`;

/** Lua: `subs`, every self-made subscription as {device, topics}* (prefix in `P`). */
const READ_SUBSCRIPTIONS = `local subs = {}
for _, dev in ipairs(redis.call('SMEMBERS', P .. 'subdevs')) do
  subs[#subs + 1] = {dev, redis.call('SMEMBERS', P .. 'sub:' .. dev)}
end`;

/** Lua: readQueue(P, device) answers a device's queue (flat hash) and the JSON of each queued message (same order). */
const READ_QUEUE = `local function readQueue(P, dev)
  local q = redis.call('HGETALL', P .. 'q:' .. dev)
  local msgs = {}
  for k = 1, #q, 2 do msgs[#msgs + 1] = redis.call('HGET', P .. 'msg', q[k]) or '' end
  return q, msgs
end`;

/**
 * loadDeliveryState: ARGV = P. Returns {counters (flat hash), queues ({device, flat hash}*),
 * referenced message ids, their JSON (same order), subscriptions ({device, topics}*)}.
 */
export const LOAD_STATE_SCRIPT = `#!lua flags=no-writes
local P = ARGV[1]
local queues = {}
for _, dev in ipairs(redis.call('SMEMBERS', P .. 'qdevs')) do
  queues[#queues + 1] = {dev, redis.call('HGETALL', P .. 'q:' .. dev)}
end
local ids = redis.call('HKEYS', P .. 'ref')
local msgs = {}
for k, id in ipairs(ids) do msgs[k] = redis.call('HGET', P .. 'msg', id) or '' end
${READ_SUBSCRIPTIONS}
return {redis.call('HGETALL', P .. 'ctr'), queues, ids, msgs, subs}
`;

/** existingMessageIds: ARGV = P, ids... Returns 1/0 per id. */
export const EXISTING_SCRIPT = `#!lua flags=no-writes
local out = {}
for k = 2, #ARGV do out[k - 1] = redis.call('HEXISTS', ARGV[1] .. 'msg', ARGV[k]) end
return out
`;

/**
 * prune: ARGV = P, before. Deletes unreferenced messages with expiresAt < before
 * and receipts with at < before. Returns the number of messages deleted.
 */
export const PRUNE_SCRIPT = `#!lua
local P, before = ARGV[1], ARGV[2]
local deleted = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', '(' .. before)) do
  if redis.call('HEXISTS', P .. 'ref', id) == 0 then
    redis.call('HDEL', P .. 'msg', id)
    redis.call('ZREM', P .. 'exp', id)
    deleted = deleted + 1
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'rat', '-inf', '(' .. before)) do
  local member = redis.call('ZRANGE', P .. 'r', id, id, 'BYSCORE')[1]
  if member then
    local body = string.sub(member, string.find(member, ':', 1, true) + 1)
    redis.call('ZREM', P .. 'rm:' .. cjson.decode(body)[1], id)
    redis.call('ZREM', P .. 'r', member)
  end
  redis.call('ZREM', P .. 'rat', id)
end
return deleted
`;

/** receiptsForMessage: ARGV = P, message id. Returns the "id:json" members, by id. */
export const MESSAGE_RECEIPTS_SCRIPT = `#!lua flags=no-writes
local out = {}
for _, id in ipairs(redis.call('ZRANGE', ARGV[1] .. 'rm:' .. ARGV[2], 0, -1)) do
  local member = redis.call('ZRANGE', ARGV[1] .. 'r', id, id, 'BYSCORE')[1]
  if member then out[#out + 1] = member end
end
return out
`;

/**
 * claimDevice: ARGV = P, instance, device. Gives the device the next epoch and
 * this instance's hold; tells the previous holder when another instance ("t").
 * Returns {epoch, previous instance or "", counters value or "", queue (flat hash),
 * JSON of each queued message (same order as the queue's ids)}.
 */
export const CLAIM_SCRIPT = `#!lua
${READ_QUEUE}
local P, me, dev = ARGV[1], ARGV[2], ARGV[3]
local hk = P .. 'holds'
local prev = redis.call('HGET', hk, dev)
local e = redis.call('HINCRBY', P .. 'epochs', dev, 1)
redis.call('HSET', hk, dev, me .. ':' .. string.format('%d', e))
local previous = ''
if prev then
  local who, pe = string.match(prev, '^(.*):(%d+)$')
  previous = who
  if who ~= me then redis.call('PUBLISH', P .. 'ev:' .. who, cjson.encode({me, 't', dev, tonumber(pe)})) end
end
local q, msgs = readQueue(P, dev)
return {e, previous, redis.call('HGET', P .. 'ctr', dev) or '', q, msgs}
`;

/** releaseDevice: ARGV = P, instance, device, epoch. Deletes the hold if it is still (instance, epoch). Returns 1 when it did. */
export const RELEASE_SCRIPT = `#!lua
local hk = ARGV[1] .. 'holds'
if redis.call('HGET', hk, ARGV[3]) ~= ARGV[2] .. ':' .. ARGV[4] then return 0 end
redis.call('HDEL', hk, ARGV[3])
return 1
`;

/** readQueue: ARGV = P, device. Returns {queue (flat hash), JSON of each queued message}. */
export const READ_QUEUE_SCRIPT = `#!lua flags=no-writes
${READ_QUEUE}
local P = ARGV[1]
return {readQueue(P, ARGV[2])}
`;

/** holders: ARGV = P, devices... Returns per device the holding instance, "" when none or not alive. */
export const HOLDERS_SCRIPT = `#!lua flags=no-writes
local P = ARGV[1]
local alive, out = {}, {}
for k = 2, #ARGV do
  local h = redis.call('HGET', P .. 'holds', ARGV[k])
  local who = ''
  if h then
    who = string.match(h, '^(.*):%d+$')
    if alive[who] == nil then alive[who] = redis.call('EXISTS', P .. 'alive:' .. who) == 1 end
    if not alive[who] then who = '' end
  end
  out[k - 1] = who
end
return out
`;

/** queueDepths: ARGV = P, devices... Returns the number of stored deliveries per device. */
export const QUEUE_DEPTHS_SCRIPT = `#!lua flags=no-writes
local out = {}
for k = 2, #ARGV do out[k - 1] = redis.call('HLEN', ARGV[1] .. 'q:' .. ARGV[k]) end
return out
`;

/** loadSubscriptions: ARGV = P. Returns {device, topics}*. */
export const SUBSCRIPTIONS_SCRIPT = `#!lua flags=no-writes
local P = ARGV[1]
${READ_SUBSCRIPTIONS}
return subs
`;
