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
 *   P instances      string number of stores ever opened (names the fence)
 *   P fence:<n>      string commits applied by store instance n (the prefix rule)
 */

/**
 * commit: ARGV = P, instance, expected fence,
 *   nMsg, (id, json, expiresAt)*, nDlv, (device, messageId, value)*, nRm, (device, messageId)*,
 *   nCtr, (device, value)*, nSub, (device, topic)*, nUnsub, (device, topic)*, nRcpt, (messageId, at, json)*
 * Returns {0, firstReceiptId} | {1, duplicate id} | {2, device, ghost message id} | {3, fence found}.
 * Validation comes before any write, so a refused batch changes nothing; a
 * script whose fence does not match (an earlier commit of this store failed
 * or was lost) refuses itself.
 */
export const COMMIT_SCRIPT = `#!lua
local P = ARGV[1]
local fk = P .. 'fence:' .. ARGV[2]
local cur = redis.call('GET', fk) or '0'
if cur ~= ARGV[3] then return {3, cur} end
local mk = P .. 'msg'
local i = 4
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
  local mid = ARGV[di + 3 * j + 1]
  if not fresh[mid] and redis.call('HEXISTS', mk, mid) == 0 then return {2, ARGV[di + 3 * j], mid} end
end
i = di + 3 * nd
redis.call('INCR', fk)
for j = 0, nm - 1 do
  local b = mi + 3 * j
  redis.call('HSET', mk, ARGV[b], ARGV[b + 1])
  redis.call('ZADD', P .. 'exp', ARGV[b + 2], ARGV[b])
end
for j = 0, nd - 1 do
  local b = di + 3 * j
  if redis.call('HSET', P .. 'q:' .. ARGV[b], ARGV[b + 1], ARGV[b + 2]) == 1 then
    redis.call('HINCRBY', P .. 'ref', ARGV[b + 1], 1)
  end
  redis.call('SADD', P .. 'qdevs', ARGV[b])
end
local n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  local dev, mid = ARGV[i + 2 * j], ARGV[i + 2 * j + 1]
  local q = P .. 'q:' .. dev
  if redis.call('HDEL', q, mid) == 1 then
    if redis.call('HINCRBY', P .. 'ref', mid, -1) <= 0 then redis.call('HDEL', P .. 'ref', mid) end
    if redis.call('HLEN', q) == 0 then redis.call('SREM', P .. 'qdevs', dev) end
  end
end
i = i + 2 * n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do redis.call('HSET', P .. 'ctr', ARGV[i + 2 * j], ARGV[i + 2 * j + 1]) end
i = i + 2 * n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  redis.call('SADD', P .. 'sub:' .. ARGV[i + 2 * j], ARGV[i + 2 * j + 1])
  redis.call('SADD', P .. 'subdevs', ARGV[i + 2 * j])
end
i = i + 2 * n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  local s = P .. 'sub:' .. ARGV[i + 2 * j]
  redis.call('SREM', s, ARGV[i + 2 * j + 1])
  if redis.call('SCARD', s) == 0 then redis.call('SREM', P .. 'subdevs', ARGV[i + 2 * j]) end
end
i = i + 2 * n
n = tonumber(ARGV[i]); i = i + 1
if n == 0 then return {0, 0} end
local first = redis.call('INCRBY', P .. 'rseq', n) - n + 1
for j = 0, n - 1 do
  local b = i + 3 * j
  local id = string.format('%d', first + j)
  redis.call('ZADD', P .. 'r', id, id .. ':' .. ARGV[b + 2])
  redis.call('ZADD', P .. 'rm:' .. ARGV[b], id, id)
  redis.call('ZADD', P .. 'rat', ARGV[b + 1], id)
end
return {0, first}
`;

/** putDevice: ARGV = P, id, json, psk identity or "", cert identity or "". Returns {0} | {1, "psk"|"cert", owner}. */
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
return {0}
`;

/** findDevice: ARGV = P, index ("psk" or "cert"), identity. Returns the device JSON or nil. */
export const FIND_DEVICE_SCRIPT = `#!lua flags=no-writes
local id = redis.call('HGET', ARGV[1] .. ARGV[2], ARGV[3])
if not id then return false end
return redis.call('HGET', ARGV[1] .. 'dev', id)
`;

/**
 * deleteDevice: ARGV = P, id. Removes the device, its queue (the seqs its
 * deliveries were given stay taken in its counters) and its subscriptions.
 * Returns 1 when the device existed.
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
if old then return 1 end
return 0
`;

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
local subs = {}
for _, dev in ipairs(redis.call('SMEMBERS', P .. 'subdevs')) do
  subs[#subs + 1] = {dev, redis.call('SMEMBERS', P .. 'sub:' .. dev)}
end
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
