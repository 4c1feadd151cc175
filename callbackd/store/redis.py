"""The production IStore: Redis through txredisapi (callbackd.store.client).

Key schema (every key starts with ``cb:``; usernames cannot contain ``:``, so the
keys of different accounts never collide)::

    cb:accounts                       SET     every username
    cb:acct:{user}                    HASH    Account fields (records.account_to_fields)
    cb:acct:{user}:secrets            HASH    password, pin: bcrypt hashes ("" = none)
    cb:acct:{user}:balance            STRING  balance, integer minor units
    cb:acct:{user}:applied:{key}      STRING  a credit/debit key already applied (30 days TTL)
    cb:acct:{user}:cids               HASH    E.164 number -> added_at
    cb:acct:{user}:cids:verified      SET     the verified numbers
    cb:cid:{number}                   STRING  the username owning a number
    cb:jid:{bare_jid}                 STRING  the username a chat address is linked to
    cb:acct:{user}:phonebook          HASH    index -> PhonebookEntry JSON
    cb:acct:{user}:phonebook:names    HASH    index -> name (to replace an entry by name)
    cb:voucher:{code}                 HASH    Voucher fields (used_by "" while unused)
    cb:batch:{batch}                  SET     the batch's voucher codes
    cb:cdr:{cdr_id}                   STRING  CDR JSON, written once (SET NX)
    cb:cdrs                           ZSET    cdr_id scored by ended_at, every account
    cb:acct:{user}:cdrs               ZSET    cdr_id scored by ended_at, one account
    cb:session:{session_id}           STRING  JSON of a session in flight
    cb:sessions                       SET     the ids of sessions in flight
    cb:provider:{name}:attempts       ZSET    "{seq:020}|{json}" scored by the attempt's time
    cb:provider:{name}:seq            STRING  counter making attempt members unique
    cb:apikey:{sha256}                STRING  "{user} {key_id}" of an API key (hash of the secret)
    cb:acct:{user}:apikeys            HASH    key_id -> {"label", "created_at", "hash"} JSON
    cb:acct:{user}:idem:{sha256}      STRING  an Idempotency-Key's {"fingerprint", "response"}
                                              JSON (TTL; the key itself hashed)
    cb:acct:{user}:webhook            HASH    url, secret
    cb:hook:due / cb:hook:dead        ZSET / LIST  the webhook queue, as the SMS queue's
    cb:hook:msg:{id}, cb:hook:sent:{id}  HASH, STRING  a delivery; a delivered id (TTL)
    cb:sms:in:seen:{dedupe key}       STRING  an inbound SMS was recorded (TTL: the dedupe window)
    cb:sms:in:data                    HASH    dedupe key -> JSON of an inbound SMS not yet handled
    cb:sms:in:pending                 ZSET    those dedupe keys scored by the time recorded
    cb:cidcode:{number}               HASH    a caller ID's verification code: username, hash,
                                              until, left (TTL: the code's life)
    cb:hits:{key}                     STRING  a rate/lockout counter (TTL: its window)
    cb:web:{sha256(token)}            STRING  JSON of a portal login (username, role), expiring
    cb:pinindex                       HASH    hashing.pin_index(pepper, PIN) -> username (the
                                              IVR's unknown callers); the account's entry is
                                              also its secrets' pin_index field

Everything that must be all-or-nothing or checked-then-written is one Lua script
(EVALSHA, falling back to EVAL after NOSCRIPT, e.g. when Redis restarted):
account creation, credit, debit, voucher redemption, CDR append, caller ID and
phonebook changes. Redis runs a script without interleaving any other command,
so a concurrent debit or redemption can never see a half-applied one.

Connections: one connection, through txredisapi (:mod:`callbackd.store.client`:
hiredis parses the replies), which reconnects by itself with exponential back-off
capped at ``max_reconnect_delay``, sends AUTH and SELECT and loads every script
(SCRIPT LOAD) before the connection counts as up. Every command has ``timeout``:
one reply timer per connection aborts a silent connection, and a command issued
while no connection is up errbacks :class:`StoreUnavailable` at once instead of
queueing. Everything runs on the injected endpoint and clock (the few places where
txredisapi reaches for the global reactor are listed in :mod:`callbackd.store.client`).
``endpoint`` may be a :class:`~callbackd.store.client.Sentinels`: the connections then
follow the primary the sentinels name, across failovers.

Replicated writes: with ``wait_replicas`` n > 0, a charge, a CDR, a session's end and
a voucher redemption are acknowledged only once ``WAIT n`` says n replicas have them
(else StoreUnavailable; see :meth:`RedisStore._eval_replicated` and
docs/operations.rst).

Ordering: each store method issues its first command synchronously when called
(a coroutine method runs up to its first ``await`` at once), and every command
goes down the one connection in the order issued, so Redis executes the store
calls' commands in the order the calls were made. The scripts being loaded on
connect, EVALSHA meets NOSCRIPT only after a SCRIPT FLUSH; then the EVAL that
follows runs after whatever was issued in between.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from callbackd.config import Config, Secret
from callbackd.core.model import (
    CDR,
    Account,
    ApiKey,
    CallerID,
    OutboundSms,
    PhonebookEntry,
    Voucher,
    Webhook,
    WebhookDelivery,
)
from callbackd.store import records
from callbackd.store.client import (
    CommandEncodeError,
    Commands,
    Feed,
    RedisConnectionError,
    RedisError,
    Sentinels,
)
from callbackd.store.embedded import socket_path
from callbackd.store.hashing import BcryptHasher, PasswordHasher, load_pin_pepper, pin_index
from callbackd.store.interface import (
    INVITE_ORIGIN,
    SMS_CODE_ATTEMPTS,
    SMS_LEASE,
    SMS_SENT_TTL,
    WEBHOOK_LEASE,
    WEBHOOK_SENT_TTL,
    AccountExists,
    InsufficientFunds,
    InvalidArgument,
    IStore,
    NoSuchAccount,
    NoSuchVoucher,
    StoreError,
    StoreUnavailable,
    VoucherUsed,
)

__all__ = ["RedisStore", "StoreService", "connect_store", "make_store", "store_endpoint"]

log = Logger(namespace="callbackd.store.redis")

#: where every account change is PUBLISHed (see RedisStore.watch)
CHANGES_CHANNEL = "cb:changes"
#: the set of every linked bare JID (the chat service greets them when it connects)
_LINKED_JIDS = "cb:jids"

_UNAVAILABLE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "NOAUTH", "TRYAGAIN", "READONLY")
_MGET_CHUNK = 500


class _Script:
    """A Lua script and its SHA1, for EVALSHA; every one is loaded on each new connection."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        _SCRIPTS.append(self)


_SCRIPTS: list[_Script] = []


_CREATE_ACCOUNT = _Script("""
-- KEYS: accounts, account, secrets, balance; ARGV: username, password, pin, field, value...
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('HSET', KEYS[3], 'password', ARGV[2], 'pin', ARGV[3])
redis.call('SET', KEYS[4], 0)
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PUBLISH', 'cb:changes', ARGV[1] .. ' ')
return 1
""")

_HSET_IF_ACCOUNT = _Script("""
-- KEYS: account, target hash; ARGV: field, value...
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV))
redis.call('PUBLISH', 'cb:changes', string.sub(KEYS[1], 9) .. ' ')
return 1
""")

_CREDIT = _Script("""
-- KEYS: account, balance, applied; ARGV: amount, ttl
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {3, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local balance = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], 'credit:' .. ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', 'cb:changes', string.sub(KEYS[1], 9) .. ' ')
return {1, balance}
""")

_DEBIT = _Script("""
-- KEYS: account, balance, applied; ARGV: amount, ttl, force (1/0)
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local balance = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('EXISTS', KEYS[3]) == 1 then return {3, balance} end
local limit = tonumber(redis.call('HGET', KEYS[1], 'credit_limit') or '0')
if ARGV[3] ~= '1' and balance - tonumber(ARGV[1]) < -limit then return {2, balance} end
balance = redis.call('DECRBY', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], 'debit:' .. ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', 'cb:changes', string.sub(KEYS[1], 9) .. ' ')
return {1, balance}
""")

_ADD_CALLER_ID = _Script("""
-- KEYS: account, cids, verified, owner; ARGV: username, number, verified (1/0), now
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local owner = redis.call('GET', KEYS[4])
if owner and owner ~= ARGV[1] then return {2} end
redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[4])
if ARGV[3] == '1' then redis.call('SADD', KEYS[3], ARGV[2]) end
redis.call('SET', KEYS[4], ARGV[1])
return {1, redis.call('HGET', KEYS[2], ARGV[2]), redis.call('SISMEMBER', KEYS[3], ARGV[2])}
""")

_VERIFY_CALLER_ID = _Script("""
-- KEYS: account, cids, verified; ARGV: number
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 2 end
redis.call('SADD', KEYS[3], ARGV[1])
return 1
""")

_LINK_JID = _Script("""
-- KEYS: account, jid, the set of linked JIDs; ARGV: username, bare JID. Both accounts
-- the JID moves between are told, with the origin LINK_ORIGIN.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local was = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('PUBLISH', 'cb:changes', ARGV[1] .. ' store:link')
if was and was ~= ARGV[1] then redis.call('PUBLISH', 'cb:changes', was .. ' store:link') end
return 1
""")

_UNLINK_JID = _Script("""
-- KEYS: jid, the set of linked JIDs; ARGV: bare JID. The account it was linked to is told.
local was = redis.call('GET', KEYS[1])
if not was then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'cb:changes', was .. ' store:link')
return 1
""")

_REMOVE_CALLER_ID = _Script("""
-- KEYS: account, cids, verified, owner; ARGV: username, number
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HDEL', KEYS[2], ARGV[2]) == 1 then
  redis.call('SREM', KEYS[3], ARGV[2])
  if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
end
return 1
""")

_SET_PHONEBOOK_ENTRY = _Script("""
-- KEYS: account, book, names; ARGV: index, name, json
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local names = redis.call('HGETALL', KEYS[3])
for i = 1, #names, 2 do
  if names[i + 1] == ARGV[2] and names[i] ~= ARGV[1] then
    redis.call('HDEL', KEYS[2], names[i])
    redis.call('HDEL', KEYS[3], names[i])
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
""")

_DELETE_PHONEBOOK_ENTRY = _Script("""
-- KEYS: account, book, names; ARGV: index
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
""")

_CREATE_VOUCHER = _Script("""
-- KEYS: voucher, batch; ARGV: code, field, value...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
""")

_REDEEM_VOUCHER = _Script("""
-- KEYS: account, balance, voucher; ARGV: username, now
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {2, 0} end
local used_by = redis.call('HGET', KEYS[3], 'used_by')
if used_by and used_by ~= '' then return {3, 0} end
redis.call('HSET', KEYS[3], 'used_by', ARGV[1], 'used_at', ARGV[2])
local value = redis.call('HGET', KEYS[3], 'value')
redis.call('INCRBY', KEYS[2], value)
redis.call('PUBLISH', 'cb:changes', ARGV[1] .. ' ')
return {1, tonumber(value)}
""")

_APPEND_CDR = _Script("""
-- KEYS: cdr, all, account's; ARGV: json, ended_at, cdr_id, username
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('PUBLISH', 'cb:changes', ARGV[4] .. ' ')
return 1
""")

_CHARGE = _Script("""
-- KEYS: cdr, all, account's CDRs, account, balance; ARGV: json, ended_at, cdr_id, cost,
-- username, origin. The CDR and its debit, once per CDR id, whatever the balance.
if redis.call('EXISTS', KEYS[4]) == 0 then return {0, 0} end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return {3, tonumber(redis.call('GET', KEYS[5]) or '0')}
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
local balance = redis.call('DECRBY', KEYS[5], ARGV[4])
redis.call('PUBLISH', 'cb:changes', ARGV[5] .. ' ' .. ARGV[6])
return {1, balance}
""")

_END_SESSION = _Script("""
-- KEYS: cdr, all, account's CDRs, session, sessions;
-- ARGV: json, ended_at, cdr_id, session id, username, origin
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[5], ARGV[4])
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
  redis.call('PUBLISH', 'cb:changes', ARGV[5] .. ' ' .. ARGV[6])
end
return 1
""")

_SAVE_SESSION = _Script("""
-- KEYS: session, sessions; ARGV: json, id
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
""")

_DELETE_SESSION = _Script("""
-- KEYS: session, sessions; ARGV: id
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
""")

_RECORD_ATTEMPT = _Script("""
-- KEYS: attempts, seq; ARGV: at, cutoff, json, ttl
local n = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[1], string.format('%020d', n) .. '|' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
""")

#: the outbound SMS queue: ids scored by not_before; each message a hash cb:sms:msg:ID
_SMS_DUE = "cb:sms:due"
#: the dead-lettered SMS ids, oldest first (their hashes stay)
_SMS_DEAD = "cb:sms:dead"
_SMS_MSG = "cb:sms:msg:"
#: a portal login, by the SHA-256 of its token
_WEB = "cb:web:"

_ENQUEUE_SMS = _Script("""
-- KEYS: msg, sent marker, due; ARGV: id, to, text, gateway, not_before, created_at
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'to', ARGV[2], 'text', ARGV[3],
  'gateway', ARGV[4], 'attempts', 0, 'not_before', ARGV[5], 'created_at', ARGV[6],
  'last_error', '')
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
""")

_CLAIM_SMS = _Script("""
-- KEYS: due; ARGV: now, limit, lease end, message key prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  redis.call('HSET', key, 'not_before', ARGV[3])
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
""")

_SMS_SENT = _Script("""
-- KEYS: msg, sent marker, due; ARGV: id, ttl
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SET', KEYS[2], 1, 'EX', ARGV[2])
return 1
""")

_SMS_RETRY = _Script("""
-- KEYS: msg, due; ARGV: id, not_before, attempts, last_error
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'not_before', ARGV[2], 'attempts', ARGV[3], 'last_error', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
""")

_SMS_FAILED = _Script("""
-- KEYS: msg, due, dead; ARGV: id, error
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'last_error', ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[1])
return 1
""")

# -- the REST API: keys, idempotency keys, webhooks (the webhook queue reuses the SMS
# queue's claim, sent, retry and failed scripts on its own keys)
_HOOK_DUE = "cb:hook:due"
_HOOK_DEAD = "cb:hook:dead"
_HOOK_MSG = "cb:hook:msg:"

_CREATE_API_KEY = _Script("""
-- KEYS: accounts, by hash, account's keys; ARGV: username, key_id, hash, record JSON
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return 1
""")

_REVOKE_API_KEY = _Script("""
-- KEYS: account's keys; ARGV: key_id, by-hash key prefix
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then
  return 0
end
redis.call('DEL', ARGV[2] .. cjson.decode(record)['hash'])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
""")

_CLAIM_IDEMPOTENCY_KEY = _Script("""
-- KEYS: the key's record; ARGV: fresh record JSON, ttl (ms)
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
""")

_SET_WEBHOOK = _Script("""
-- KEYS: accounts, webhook; ARGV: username, url, fresh secret
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('HSET', KEYS[2], 'url', ARGV[2])
redis.call('HSETNX', KEYS[2], 'secret', ARGV[3])
return redis.call('HGET', KEYS[2], 'secret')
""")

_ENQUEUE_WEBHOOK = _Script("""
-- KEYS: delivery, sent marker, due; ARGV: id, username, body, not_before, created_at
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'username', ARGV[2], 'body', ARGV[3],
  'attempts', 0, 'not_before', ARGV[4], 'created_at', ARGV[5], 'last_error', '')
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
""")


# -- SMS front: inbound messages, caller-ID codes, counters ------------------------------
#: dedupe keys seen (STRING with a TTL), pending inbound records (HASH key -> JSON) and
#: their order (ZSET key scored by the time recorded)
_SMS_IN_SEEN = "cb:sms:in:seen:"
_SMS_IN_DATA = "cb:sms:in:data"
_SMS_IN_PENDING = "cb:sms:in:pending"
#: a caller ID's live verification code: HASH username, hash, until, left (with a TTL)
_CID_CODE = "cb:cidcode:"
#: a counter's hits in its window (STRING with the window's TTL)
_HITS = "cb:hits:"

_RECORD_INBOUND = _Script("""
-- KEYS: the seen markers..., data, pending; ARGV: ttl ms, key, JSON, recorded at
for i = 1, #KEYS - 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('HSET', KEYS[#KEYS - 1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[#KEYS], ARGV[4], ARGV[2])
return 1
""")

_CONFIRM_CID_CODE = _Script("""
-- KEYS: code; ARGV: the candidate's hash, now, number. The account's keys are named
-- here, as the username is known only once the code is read.
local f = redis.call('HMGET', KEYS[1], 'username', 'hash', 'until', 'left')
if not f[1] then return false end
if tonumber(f[3]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return false
end
if f[2] ~= ARGV[1] then
  if tonumber(f[4]) <= 1 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HINCRBY', KEYS[1], 'left', -1)
  end
  return false
end
redis.call('DEL', KEYS[1])
if redis.call('GET', 'cb:cid:' .. ARGV[3]) ~= f[1] then return false end
redis.call('SADD', 'cb:acct:' .. f[1] .. ':cids:verified', ARGV[3])
return f[1]
""")

_VERIFIED_OWNER = _Script("""
-- KEYS: the number's owner; ARGV: number. The owner's verified set is named here, as
-- the username is known only once the owner is read.
local owner = redis.call('GET', KEYS[1])
if not owner then return false end
if redis.call('SISMEMBER', 'cb:acct:' .. owner .. ':cids:verified', ARGV[1]) == 0 then
  return false
end
return owner
""")

_COUNT_HIT = _Script("""
-- KEYS: counter; ARGV: period ms
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
""")


def _translate(failure: Failure) -> Failure:
    """A failed command as the store's errors (StoreUnavailable, StoreError)."""
    e = failure.value
    if isinstance(e, RedisConnectionError | defer.TimeoutError | defer.CancelledError):
        raise StoreUnavailable(f"redis unavailable: {e or type(e).__name__}")
    if isinstance(e, RedisError):
        text = str(e)
        if text.startswith(_UNAVAILABLE_REPLIES):
            raise StoreUnavailable(f"redis unavailable: {text}")
        raise StoreError(f"redis error: {text.removeprefix('ERR ')}")
    return failure


# -- IVR PIN lockout (phone callback) ----------------------------------------------------
_PIN_FAILED = _Script("""
-- KEYS: the account's and the caller ID's PIN failure hashes (count, first, until);
-- ARGV: now, attempts, period. Each counts in a window of period seconds from its first
-- failure; the attempts-th locks until now + period. Returns the lockout's end or 0.
local now, attempts, period = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local result = 0
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('HGET', key, 'count') or '0')
  local first = tonumber(redis.call('HGET', key, 'first') or '0')
  local locked = tonumber(redis.call('HGET', key, 'until') or '0')
  if count == 0 or now - first > period then count, first = 0, now end
  count = count + 1
  if count >= attempts then count, locked = 0, now + period end
  redis.call('HSET', key, 'count', count, 'first', tostring(first), 'until', tostring(locked))
  redis.call('EXPIRE', key, math.ceil(period) * 2 + 60)
  if locked > now and locked > result then result = locked end
end
return tostring(result)
""")


_INDEX_PIN = _Script("""
-- KEYS: the PIN index, the account's secrets; ARGV: the entry, username, only if free
-- ("1": leave a taken entry alone and answer 1). Makes the entry the account's (its old
-- one gone); 0 when another account has it.
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and owner ~= ARGV[2] then
  if ARGV[3] == '1' then return 1 end
  return 0
end
local old = redis.call('HGET', KEYS[2], 'pin_index')
if old and old ~= ARGV[1] and redis.call('HGET', KEYS[1], old) == ARGV[2] then
  redis.call('HDEL', KEYS[1], old)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'pin_index', ARGV[1])
return 1
""")
_PIN_INDEX = "cb:pinindex"


def _pin_keys(username: str, number: str) -> list[str]:
    if not username:  # an unknown caller's: the caller ID's counter alone
        return [f"cb:pinfail:{number}"]
    records.check_username(username)
    return [_acct(username, "pinfail"), f"cb:pinfail:{number}"]


def _acct(username: str, *parts: str) -> str:
    return ":".join(("cb:acct", username, *parts))


def _score(value: float) -> str:
    return repr(float(value))


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds (at least 1)."""
    return max(1, int(seconds * 1000))
    """Seconds as the whole milliseconds of PX and PEXPIRE (at least 1)."""
    return max(1, round(seconds * 1000))


def _cdr_parts(cdr: CDR) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV every CDR-appending script starts with (the CDR checked).

    KEYS: the CDR, the index of all CDRs, the account's index; ARGV: its JSON, its
    end time (the indexes' score), its id.
    """
    records.check_cdr(cdr)
    keys = [f"cb:cdr:{cdr.cdr_id}", "cb:cdrs", _acct(cdr.username, "cdrs")]
    return keys, [records.cdr_to_json(cdr), _score(cdr.ended_at), cdr.cdr_id]


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2]))


@implementer(IStore)
class RedisStore:
    """IStore on Redis. Constructing it does no I/O; :meth:`start` or :meth:`connect` does.

    ``endpoint`` reaches the server (TCP or unix socket; ``address`` names it in
    messages), ``password`` is sent with AUTH and never logged, ``timeout`` bounds
    every command, ``clock`` stamps created/used times.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint | Sentinels,
        *,
        clock: IReactorTime,
        password_hasher: PasswordHasher,
        address: str = "redis",
        db: int = 0,
        password: Secret | None = None,
        timeout: float = 5.0,
        provider_window: float = 3600.0,
        max_reconnect_delay: float = 5.0,
        pin_pepper: bytes | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        self.endpoint = endpoint
        #: the PIN index's key (callbackd.store.hashing.pin_index): the daemon's comes
        #: from the configuration; a random one indexes only this store object's PINs
        self.pin_pepper = pin_pepper or secrets.token_bytes(32)
        self.address = address
        self.clock = clock
        self.hasher = password_hasher
        self.timeout = timeout
        self.provider_window = provider_window
        self._db = db
        self._password = password
        self._max_reconnect_delay = max_reconnect_delay
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._client: Commands | None = None
        self._waiting: list[defer.Deferred[RedisStore]] = []
        self._watchers: list[tuple[Callable[[str, str], None], Callable[[bool], None]]] = []
        self._feed: Feed | None = None
        self._last_error = ""

    # -- connection ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether the connection to Redis is up (and ready: scripts loaded)."""
        return self._client is not None and self._client.connection is not None

    def start(self) -> None:
        """Start connecting (and reconnecting); returns at once."""
        if self._client is not None:
            return
        password = self._password.reveal() if self._password else None
        self._client = Commands(
            self.endpoint,
            self.clock,
            password=password or None,
            db=self._db,
            timeout=self.timeout,
            scripts=[script.source for script in _SCRIPTS],
            initial_delay=0.5,
            max_reconnect_delay=self._max_reconnect_delay,
            on_ready=self._connection_ready,
            on_lost=self._connection_gone,
            on_error=self._connection_failed,
        )
        self._client.start()

    def connect(self, timeout: float | None = None) -> defer.Deferred[RedisStore]:
        """Start connecting; fire with self once a connection is up, or StoreUnavailable."""
        self.start()
        if self.connected:
            return defer.succeed(self)
        d: defer.Deferred[RedisStore] = defer.Deferred(self._forget_waiter)
        self._waiting.append(d)
        limit = self.timeout if timeout is None else timeout

        def timed_out(failure: Failure) -> Failure:
            failure.trap(defer.TimeoutError, defer.CancelledError)
            why = f": {self._last_error}" if self._last_error else ""
            raise StoreUnavailable(
                f"redis unavailable: cannot connect to {self.address} in {limit:g}s{why}"
            )

        d.addTimeout(limit, self.clock)
        d.addErrback(timed_out)
        return d

    def _forget_waiter(self, d: defer.Deferred[RedisStore]) -> None:
        if d in self._waiting:
            self._waiting.remove(d)

    def disconnect(self) -> defer.Deferred[None]:
        """Stop reconnecting and close the connection (and the change feed's)."""
        self._watchers.clear()
        feed_stopped = self._stop_feed()
        client, self._client = self._client, None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(StoreUnavailable("redis unavailable: store disconnected"))
        steps = [feed_stopped] if client is None else [feed_stopped, client.stop()]
        if isinstance(self.endpoint, Sentinels):
            steps.append(self.endpoint.disconnect())
        return defer.gatherResults(steps).addCallback(lambda _: None)

    def _connection_ready(self) -> None:
        log.info("redis connected to {address}", address=self.address)
        self._last_error = ""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self)

    def _connection_gone(self, why: str) -> None:
        self._last_error = why
        if self._client is not None:
            log.warn("redis connection to {address} lost: {why}", address=self.address, why=why)

    def _connection_failed(self, why: str) -> None:
        # log each new reason once, not every retry of an outage
        if why != self._last_error:
            log.error("redis: {address}: {why}", address=self.address, why=why)
        self._last_error = why

    def _call(self, *args: Any) -> defer.Deferred[Any]:
        """Run one Redis command on the connection; its reply times out after ``timeout``.

        The command is written before this returns, so commands run in call order.
        """
        client = self._client
        conn = client.connection if client is not None else None
        if conn is None:
            why = f" ({self._last_error})" if self._last_error else ""
            return defer.fail(
                StoreUnavailable(f"redis unavailable: not connected to {self.address}{why}")
            )
        try:
            d = conn.execute_command(*args)
        except CommandEncodeError as e:
            return defer.fail(InvalidArgument(str(e)))
        except RedisConnectionError as e:  # lost in this very reactor turn
            return defer.fail(StoreUnavailable(f"redis unavailable: {e}"))
        return d.addErrback(_translate)

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._call("EVALSHA", script.sha, len(keys), *keys, *args)
        except StoreError as e:
            if "NOSCRIPT" not in str(e):
                raise
        return await self._call("EVAL", script.source, len(keys), *keys, *args)

    async def _eval_replicated(
        self, script: _Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """:meth:`_eval` of a money write, acknowledged once ``wait_replicas`` replicas have it.

        ``WAIT`` follows the script on the same connection, so it covers it (and every
        write before it). Fewer replicas in ``wait_timeout``: StoreUnavailable, the write
        being on the primary but perhaps not on the replica a failover would promote; the
        scripts are idempotent (CDR id, voucher code), so a retry never applies it twice.
        """
        reply = await self._eval(script, keys, args)
        if self.wait_replicas:
            wanted, limit = self.wait_replicas, self.wait_timeout
            got = await self._call("WAIT", wanted, _ms(limit))
            if got < wanted:
                raise StoreUnavailable(
                    f"redis unavailable: the write reached {got} of {wanted} replica(s) "
                    f"in {limit:g}s (not acknowledged: a failover could lose it)"
                )
        return reply

    def ping(self) -> defer.Deferred[bool]:
        """Fire with True when Redis answers PING; StoreUnavailable otherwise."""
        return self._call("PING").addCallback(lambda reply: reply == "PONG")

    # -- accounts ----------------------------------------------------------------
    def create_account(
        self, account: Account, password: str, pin: str | None = None
    ) -> defer.Deferred[Account]:
        """Create the account all-or-nothing; AccountExists if the username is taken."""
        return defer.ensureDeferred(self._create_account(account, password, pin))

    async def _create_account(self, account: Account, password: str, pin: str | None) -> Account:
        records.check_new_account(account, password, pin)
        user = account.username
        if await self._call("EXISTS", _acct(user)):
            raise AccountExists(f"account {user!r} exists")
        if pin is not None:
            await self._pin_free(user, pin)
        password_hash = await self.hasher.hash(password)
        pin_hash = await self.hasher.hash(pin) if pin is not None else ""
        if not account.created_at:
            account = dataclasses.replace(account, created_at=self.clock.seconds())
        fields = [x for pair in records.account_to_fields(account).items() for x in pair]
        created = await self._eval(
            _CREATE_ACCOUNT,
            ["cb:accounts", _acct(user), _acct(user, "secrets"), _acct(user, "balance")],
            [user, password_hash, pin_hash, *fields],
        )
        if not created:
            raise AccountExists(f"account {user!r} exists")
        if pin is not None:
            await self._index_pin(user, pin)
        return account

    def get_account(self, username: str) -> defer.Deferred[Account | None]:
        """Fire with the Account, or None."""
        return defer.ensureDeferred(self._get_account(username))

    async def _get_account(self, username: str) -> Account | None:
        records.check_username(username)
        flat = await self._call("HGETALL", _acct(username))
        return records.account_from_fields(_pairs(flat)) if flat else None

    async def _existing(self, username: str) -> Account:
        account = await self._get_account(username)
        if account is None:
            raise NoSuchAccount(f"no account {username!r}")
        return account

    def update_account(self, username: str, **fields: Any) -> defer.Deferred[Account]:
        """Change Account fields; fire with the new Account."""
        return defer.ensureDeferred(self._update_account(username, fields))

    async def _update_account(self, username: str, fields: dict[str, Any]) -> Account:
        new = records.updated_account(await self._existing(username), fields)
        encoded = records.account_to_fields(new)
        changed = [x for name in fields for x in (name, encoded[name])]
        if changed and not await self._eval(
            _HSET_IF_ACCOUNT, [_acct(username), _acct(username)], changed
        ):
            raise NoSuchAccount(f"no account {username!r}")
        return await self._existing(username)

    def list_accounts(self) -> defer.Deferred[list[str]]:
        """Fire with every username, sorted."""
        return self._call("SMEMBERS", "cb:accounts").addCallback(sorted)

    def set_password(self, username: str, password: str) -> defer.Deferred[None]:
        """Replace the password hash."""
        return defer.ensureDeferred(self._set_secret(username, "password", password))

    def set_pin(self, username: str, pin: str) -> defer.Deferred[None]:
        """Replace the PIN hash; InvalidArgument when another account has the PIN."""
        return defer.ensureDeferred(self._set_pin(username, pin))

    async def _set_pin(self, username: str, pin: str) -> None:
        records.check_pin(pin)
        records.check_username(username)
        await self._pin_free(username, pin)
        await self._set_secret(username, "pin", pin)
        await self._index_pin(username, pin)

    async def _set_secret(self, username: str, which: str, secret: str) -> None:
        (records.check_password if which == "password" else records.check_pin)(secret)
        records.check_username(username)
        if not await self._call("EXISTS", _acct(username)):
            raise NoSuchAccount(f"no account {username!r}")
        hashed = await self.hasher.hash(secret)
        keys = [_acct(username), _acct(username, "secrets")]
        if not await self._eval(_HSET_IF_ACCOUNT, keys, [which, hashed]):
            raise NoSuchAccount(f"no account {username!r}")

    def check_password(self, username: str, password: str) -> defer.Deferred[bool]:
        """Fire with whether the password is right (False for no account)."""
        return defer.ensureDeferred(self._check_secret(username, "password", password))

    def check_pin(self, username: str, pin: str) -> defer.Deferred[bool]:
        """Fire with whether the PIN is right (False for no account or no PIN)."""
        return defer.ensureDeferred(self._check_secret(username, "pin", pin))

    async def _check_secret(self, username: str, which: str, secret: str) -> bool:
        records.check_username(username)
        if not isinstance(secret, str):
            raise InvalidArgument(f"{which} must be a string")
        hashed = await self._call("HGET", _acct(username, "secrets"), which)
        right = bool(await self.hasher.check(secret, hashed or None))
        if right and which == "pin":
            await self._index_pin(username, secret, unless_taken=True)  # set before the index
        return right

    # -- money ---------------------------------------------------------------------
    def get_balance(self, username: str) -> defer.Deferred[int]:
        """Fire with the balance in minor units; NoSuchAccount."""
        return defer.ensureDeferred(self._get_balance(username))

    async def _get_balance(self, username: str) -> int:
        records.check_username(username)
        balance = await self._call("GET", _acct(username, "balance"))
        if balance is None:
            raise NoSuchAccount(f"no account {username!r}")
        return int(balance)

    def credit(self, username: str, amount: int, key: str) -> defer.Deferred[int]:
        """Add ``amount`` once per ``key``; fire with the new balance."""
        return defer.ensureDeferred(self._money(_CREDIT, username, amount, key, False))

    def debit(
        self, username: str, amount: int, key: str, force: bool = False
    ) -> defer.Deferred[int]:
        """Take ``amount`` once per ``key`` unless below the floor; fire with the balance."""
        return defer.ensureDeferred(self._money(_DEBIT, username, amount, key, force))

    async def _money(
        self, script: _Script, username: str, amount: int, key: str, force: bool
    ) -> int:
        records.check_amount(amount, positive=script is _CREDIT)
        records.check_key(key)
        records.check_username(username)
        keys = [_acct(username), _acct(username, "balance"), _acct(username, "applied", key)]
        args = [amount, records.IDEMPOTENCY_TTL, "1" if force else "0"]
        status, balance = await self._eval(script, keys, args)
        if status == 0:
            raise NoSuchAccount(f"no account {username!r}")
        if status == 2:
            raise InsufficientFunds(f"balance {balance} does not cover {amount} for {username!r}")
        return int(balance)

    # -- caller IDs -----------------------------------------------------------------
    def _cid_keys(self, username: str, number: str) -> list[str]:
        return [
            _acct(username),
            _acct(username, "cids"),
            _acct(username, "cids", "verified"),
            f"cb:cid:{number}",
        ]

    def add_caller_id(
        self, username: str, number: str, verified: bool = False
    ) -> defer.Deferred[CallerID]:
        """Register ``number`` for the account; InvalidArgument if another account owns it."""
        return defer.ensureDeferred(self._add_caller_id(username, number, verified))

    async def _add_caller_id(self, username: str, number: str, verified: bool) -> CallerID:
        records.check_number(number)
        records.check_username(username)
        args = [username, number, "1" if verified else "0", _score(self.clock.seconds())]
        reply = await self._eval(_ADD_CALLER_ID, self._cid_keys(username, number), args)
        if reply[0] == 0:
            raise NoSuchAccount(f"no account {username!r}")
        if reply[0] == 2:
            raise InvalidArgument(f"{number} belongs to another account")
        return CallerID(number, bool(reply[2]), float(reply[1]))

    def verify_caller_id(self, username: str, number: str) -> defer.Deferred[None]:
        """Mark the number verified; InvalidArgument if it is not the account's."""
        return defer.ensureDeferred(self._verify_caller_id(username, number))

    async def _verify_caller_id(self, username: str, number: str) -> None:
        records.check_number(number)
        records.check_username(username)
        status = await self._eval(_VERIFY_CALLER_ID, self._cid_keys(username, number)[:3], [number])
        if status == 0:
            raise NoSuchAccount(f"no account {username!r}")
        if status == 2:
            raise InvalidArgument(f"{number} is not registered to {username!r}")

    def remove_caller_id(self, username: str, number: str) -> defer.Deferred[None]:
        """Forget the number (nothing happens if it was not registered)."""
        return defer.ensureDeferred(self._remove_caller_id(username, number))

    async def _remove_caller_id(self, username: str, number: str) -> None:
        records.check_number(number)
        records.check_username(username)
        keys = self._cid_keys(username, number)
        if not await self._eval(_REMOVE_CALLER_ID, keys, [username, number]):
            raise NoSuchAccount(f"no account {username!r}")

    def list_caller_ids(self, username: str) -> defer.Deferred[list[CallerID]]:
        """Fire with the account's CallerIDs sorted by number."""
        return defer.ensureDeferred(self._list_caller_ids(username))

    async def _list_caller_ids(self, username: str) -> list[CallerID]:
        records.check_username(username)
        if not await self._call("EXISTS", _acct(username)):
            raise NoSuchAccount(f"no account {username!r}")
        added = _pairs(await self._call("HGETALL", _acct(username, "cids")))
        verified = set(await self._call("SMEMBERS", _acct(username, "cids", "verified")))
        return [CallerID(n, n in verified, float(added[n])) for n in sorted(added)]

    def account_for_caller_id(
        self, number: str, verified_only: bool = True
    ) -> defer.Deferred[str | None]:
        """Fire with the username owning ``number``, or None."""
        return defer.ensureDeferred(self._account_for_caller_id(number, verified_only))

    async def _account_for_caller_id(self, number: str, verified_only: bool) -> str | None:
        records.check_number(number)
        if verified_only:
            # one round trip (the SMS front asks this for every message)
            owner = await self._eval(_VERIFIED_OWNER, [f"cb:cid:{number}"], [number])
        else:
            owner = await self._call("GET", f"cb:cid:{number}")
        return None if owner is None else str(owner)

    # -- chat addresses ---------------------------------------------------------------
    def link_jid(self, jid: str, username: str) -> defer.Deferred[None]:
        """Link the bare JID to the account (replacing any link); NoSuchAccount if none."""
        return defer.ensureDeferred(self._link_jid(jid, username))

    async def _link_jid(self, jid: str, username: str) -> None:
        bare = records.bare_jid(jid)
        records.check_username(username)
        keys = [_acct(username), f"cb:jid:{bare}", _LINKED_JIDS]
        if not await self._eval(_LINK_JID, keys, [username, bare]):
            raise NoSuchAccount(f"no account {username!r}")

    def unlink_jid(self, jid: str) -> defer.Deferred[bool]:
        """Forget the JID's link; fire with True if there was one."""
        return defer.ensureDeferred(self._unlink_jid(jid))

    async def _unlink_jid(self, jid: str) -> bool:
        bare = records.bare_jid(jid)
        return bool(await self._eval(_UNLINK_JID, [f"cb:jid:{bare}", _LINKED_JIDS], [bare]))

    def linked_jids(self) -> defer.Deferred[list[str]]:
        """Fire with every linked bare JID, sorted."""
        d = self._call("SMEMBERS", _LINKED_JIDS)
        return d.addCallback(lambda members: sorted(str(m) for m in members))

    def account_for_jid(self, jid: str) -> defer.Deferred[str | None]:
        """Fire with the username the bare JID is linked to, or None."""
        return defer.ensureDeferred(self._account_for_jid(jid))

    async def _account_for_jid(self, jid: str) -> str | None:
        bare = records.bare_jid(jid)
        owner = await self._call("GET", f"cb:jid:{bare}")
        return None if owner is None else str(owner)

    def request_invite(self, jid: str) -> defer.Deferred[int]:
        """Tell the daemons on the change feed to invite the bare JID; fire with how many heard."""
        try:
            bare = records.bare_jid(jid)
        except InvalidArgument as e:
            return defer.fail(e)
        d = self._call("PUBLISH", CHANGES_CHANNEL, f"{bare} {INVITE_ORIGIN}")
        return d.addCallback(int)

    # -- phonebook -----------------------------------------------------------------
    def _book_keys(self, username: str) -> list[str]:
        return [
            _acct(username),
            _acct(username, "phonebook"),
            _acct(username, "phonebook", "names"),
        ]

    def set_phonebook_entry(self, username: str, entry: PhonebookEntry) -> defer.Deferred[None]:
        """Store ``entry``, replacing the entries with its index or its name."""
        return defer.ensureDeferred(self._set_entry(username, entry))

    async def _set_entry(self, username: str, entry: PhonebookEntry) -> None:
        records.check_entry(entry)
        records.check_username(username)
        args = [entry.index, entry.name, records.entry_to_json(entry)]
        if not await self._eval(_SET_PHONEBOOK_ENTRY, self._book_keys(username), args):
            raise NoSuchAccount(f"no account {username!r}")

    def delete_phonebook_entry(self, username: str, index: int) -> defer.Deferred[None]:
        """Remove the entry with ``index`` (nothing happens if there is none)."""
        return defer.ensureDeferred(self._delete_entry(username, index))

    async def _delete_entry(self, username: str, index: int) -> None:
        records.check_username(username)
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidArgument(f"index must be an integer, got {index!r}")
        if not await self._eval(_DELETE_PHONEBOOK_ENTRY, self._book_keys(username), [index]):
            raise NoSuchAccount(f"no account {username!r}")

    def get_phonebook(self, username: str) -> defer.Deferred[list[PhonebookEntry]]:
        """Fire with the entries sorted by index."""
        return defer.ensureDeferred(self._get_phonebook(username))

    async def _get_phonebook(self, username: str) -> list[PhonebookEntry]:
        records.check_username(username)
        if not await self._call("EXISTS", _acct(username)):
            raise NoSuchAccount(f"no account {username!r}")
        texts = await self._call("HVALS", _acct(username, "phonebook"))
        return sorted((records.entry_from_json(t) for t in texts), key=lambda e: e.index)

    # -- vouchers ------------------------------------------------------------------------
    def create_vouchers(self, batch: str, value: int, count: int) -> defer.Deferred[list[Voucher]]:
        """Create ``count`` vouchers of ``value`` with fresh random 12-digit codes."""
        return defer.ensureDeferred(self._create_vouchers(batch, value, count))

    async def _create_vouchers(self, batch: str, value: int, count: int) -> list[Voucher]:
        records.check_batch(batch)
        records.check_amount(value, positive=True)
        records.check_count(count)
        made: list[Voucher] = []
        while len(made) < count:
            voucher = Voucher(records.new_voucher_code(), batch, value, self.clock.seconds())
            fields = records.voucher_to_fields(voucher)
            keys = [f"cb:voucher:{voucher.code}", f"cb:batch:{batch}"]
            args = [voucher.code, *(x for pair in fields.items() for x in pair)]
            if await self._eval(_CREATE_VOUCHER, keys, args):  # 0: the code exists, draw again
                made.append(voucher)
        return made

    def redeem_voucher(self, code: str, username: str) -> defer.Deferred[int]:
        """Mark the voucher used by ``username`` and credit its value, in one script."""
        return defer.ensureDeferred(self._redeem_voucher(code, username))

    async def _redeem_voucher(self, code: str, username: str) -> int:
        records.check_key(code, "voucher code")
        records.check_username(username)
        keys = [_acct(username), _acct(username, "balance"), f"cb:voucher:{code}"]
        args = [username, _score(self.clock.seconds())]
        status, value = await self._eval_replicated(_REDEEM_VOUCHER, keys, args)
        if status == 0:
            raise NoSuchAccount(f"no account {username!r}")
        if status == 2:
            raise NoSuchVoucher(f"no voucher {code!r}")
        if status == 3:
            raise VoucherUsed(f"voucher {code!r} was already used")
        return int(value)

    def get_voucher(self, code: str) -> defer.Deferred[Voucher | None]:
        """Fire with the Voucher, or None."""
        return defer.ensureDeferred(self._get_voucher(code))

    async def _get_voucher(self, code: str) -> Voucher | None:
        records.check_key(code, "voucher code")
        flat = await self._call("HGETALL", f"cb:voucher:{code}")
        return records.voucher_from_fields(_pairs(flat)) if flat else None

    def list_vouchers(self, batch: str) -> defer.Deferred[list[Voucher]]:
        """Fire with the batch's vouchers sorted by code."""
        return defer.ensureDeferred(self._list_vouchers(batch))

    async def _list_vouchers(self, batch: str) -> list[Voucher]:
        records.check_batch(batch)
        found = []
        for code in sorted(await self._call("SMEMBERS", f"cb:batch:{batch}")):
            voucher = await self._get_voucher(code)
            if voucher is not None:
                found.append(voucher)
        return found

    # -- CDRs ------------------------------------------------------------------------------
    def append_cdr(self, cdr: CDR) -> defer.Deferred[None]:
        """Append ``cdr``; one with the same ``cdr_id`` already stored wins."""
        return defer.ensureDeferred(self._append_cdr(cdr))

    async def _append_cdr(self, cdr: CDR) -> None:
        keys, args = _cdr_parts(cdr)
        await self._eval_replicated(_APPEND_CDR, keys, [*args, cdr.username])

    def charge(self, cdr: CDR, origin: str = "") -> defer.Deferred[int]:
        """Append a leg's CDR and debit its cost in one script, once per CDR id."""
        return defer.ensureDeferred(self._charge(cdr, origin))

    async def _charge(self, cdr: CDR, origin: str) -> int:
        keys, args = _cdr_parts(cdr)
        records.check_origin(origin)
        user = cdr.username
        keys += [_acct(user), _acct(user, "balance")]
        status, balance = await self._eval_replicated(
            _CHARGE, keys, [*args, cdr.cost, user, origin]
        )
        if status == 0:
            raise NoSuchAccount(f"no account {user!r}")
        return int(balance)

    def list_cdrs(
        self, username: str | None = None, since: float = 0.0, until: float | None = None
    ) -> defer.Deferred[list[CDR]]:
        """Fire with the CDRs ended in [since, until], oldest first (ties by id)."""
        return defer.ensureDeferred(self._list_cdrs(username, since, until))

    async def _list_cdrs(
        self, username: str | None, since: float, until: float | None
    ) -> list[CDR]:
        if username is not None:
            records.check_username(username)
        index = "cb:cdrs" if username is None else _acct(username, "cdrs")
        top = "+inf" if until is None else _score(until)
        ids = await self._call("ZRANGEBYSCORE", index, _score(since), top)
        found: list[CDR] = []
        for start in range(0, len(ids), _MGET_CHUNK):
            chunk = ids[start : start + _MGET_CHUNK]
            texts = await self._call("MGET", *(f"cb:cdr:{i}" for i in chunk))
            found.extend(records.cdr_from_json(t) for t in texts if t is not None)
        return found

    # -- sessions ------------------------------------------------------------------------------
    def save_session(self, session_id: str, data: dict[str, Any]) -> defer.Deferred[None]:
        """Store the session's JSON-able dict."""
        return defer.ensureDeferred(self._save_session(session_id, data))

    async def _save_session(self, session_id: str, data: dict[str, Any]) -> None:
        records.check_key(session_id, "session id")
        text = records.check_session(data)
        keys = [f"cb:session:{session_id}", "cb:sessions"]
        await self._eval(_SAVE_SESSION, keys, [text, session_id])

    def load_session(self, session_id: str) -> defer.Deferred[dict[str, Any] | None]:
        """Fire with the stored dict, or None."""
        return defer.ensureDeferred(self._load_session(session_id))

    async def _load_session(self, session_id: str) -> dict[str, Any] | None:
        records.check_key(session_id, "session id")
        text = await self._call("GET", f"cb:session:{session_id}")
        return None if text is None else json.loads(text)

    def delete_session(self, session_id: str) -> defer.Deferred[None]:
        """Forget the session."""
        return defer.ensureDeferred(self._delete_session(session_id))

    async def _delete_session(self, session_id: str) -> None:
        records.check_key(session_id, "session id")
        keys = [f"cb:session:{session_id}", "cb:sessions"]
        await self._eval(_DELETE_SESSION, keys, [session_id])

    def end_session(self, session_id: str, cdr: CDR, origin: str = "") -> defer.Deferred[None]:
        """Append the session's CDR and forget its state, in one script."""
        return defer.ensureDeferred(self._end_session(session_id, cdr, origin))

    async def _end_session(self, session_id: str, cdr: CDR, origin: str) -> None:
        records.check_key(session_id, "session id")
        keys, args = _cdr_parts(cdr)
        records.check_origin(origin)
        keys += [f"cb:session:{session_id}", "cb:sessions"]
        args += [session_id, cdr.username, origin]
        await self._eval_replicated(_END_SESSION, keys, args)

    def list_sessions(self) -> defer.Deferred[list[str]]:
        """Fire with every session id in flight, sorted."""
        return self._call("SMEMBERS", "cb:sessions").addCallback(sorted)

    # -- provider statistics ----------------------------------------------------------------
    def record_provider_attempt(
        self, provider: str, at: float, answered: bool, pdd: float, duration: float, cause: str
    ) -> defer.Deferred[None]:
        """Record one attempt; attempts older than the window before ``at`` are dropped."""
        return defer.ensureDeferred(
            self._record_attempt(provider, at, answered, pdd, duration, cause)
        )

    async def _record_attempt(
        self, provider: str, at: float, answered: bool, pdd: float, duration: float, cause: str
    ) -> None:
        records.check_provider(provider)
        text = json.dumps(records.attempt_record(at, answered, pdd, duration, cause))
        keys = [f"cb:provider:{provider}:attempts", f"cb:provider:{provider}:seq"]
        ttl = int(self.provider_window * 2) + 3600
        args = [_score(at), _score(at - self.provider_window), text, ttl]
        await self._eval(_RECORD_ATTEMPT, keys, args)

    def provider_attempts(self, provider: str, since: float) -> defer.Deferred[list[dict]]:
        """Fire with the attempts at or after ``since``, oldest first."""
        return defer.ensureDeferred(self._provider_attempts(provider, since))

    async def _provider_attempts(self, provider: str, since: float) -> list[dict]:
        records.check_provider(provider)
        members = await self._call(
            "ZRANGEBYSCORE", f"cb:provider:{provider}:attempts", _score(since), "+inf"
        )
        return [json.loads(m.partition("|")[2]) for m in members]

    # -- outbound SMS queue ------------------------------------------------------------------
    def enqueue_sms(
        self, message_id: str, to: str, text: str, gateway: str, not_before: float
    ) -> defer.Deferred[bool]:
        """Queue the SMS unless its id is known (see IStore.enqueue_sms), in one script."""
        return defer.ensureDeferred(self._enqueue_sms(message_id, to, text, gateway, not_before))

    async def _enqueue_sms(
        self, message_id: str, to: str, text: str, gateway: str, not_before: float
    ) -> bool:
        records.check_sms(message_id, to, text, gateway)
        keys = [_SMS_MSG + message_id, f"cb:sms:sent:{message_id}", _SMS_DUE]
        args = [message_id, to, text, gateway, _score(not_before), _score(self.clock.seconds())]
        return bool(await self._eval(_ENQUEUE_SMS, keys, args))

    def due_sms(
        self, now: float, limit: int, lease: float = SMS_LEASE
    ) -> defer.Deferred[list[OutboundSms]]:
        """Claim the due SMS for ``lease`` seconds, in one script (see IStore.due_sms)."""
        return defer.ensureDeferred(self._due_sms(now, limit, lease))

    async def _due_sms(self, now: float, limit: int, lease: float) -> list[OutboundSms]:
        if limit <= 0:
            return []
        args = [_score(now), int(limit), _score(now + lease), _SMS_MSG]
        found = await self._eval(_CLAIM_SMS, [_SMS_DUE], args)
        return [records.sms_from_fields(_pairs(flat)) for flat in found]

    def next_sms_due(self) -> defer.Deferred[float | None]:
        """Fire with the earliest ``not_before`` queued, or None."""
        d = self._call("ZRANGE", _SMS_DUE, 0, 0, "WITHSCORES")
        return d.addCallback(lambda reply: float(reply[1]) if reply else None)

    def sms_sent(self, message_id: str) -> defer.Deferred[None]:
        """Forget the SMS and remember its id for SMS_SENT_TTL seconds."""
        return defer.ensureDeferred(self._sms_sent(message_id))

    async def _sms_sent(self, message_id: str) -> None:
        records.check_key(message_id, "message id")
        keys = [_SMS_MSG + message_id, f"cb:sms:sent:{message_id}", _SMS_DUE]
        await self._eval(_SMS_SENT, keys, [message_id, SMS_SENT_TTL])

    def sms_retry(
        self, message_id: str, not_before: float, attempts: int, last_error: str
    ) -> defer.Deferred[bool]:
        """Requeue the SMS for ``not_before`` with its attempts and error."""
        return defer.ensureDeferred(self._sms_retry(message_id, not_before, attempts, last_error))

    async def _sms_retry(
        self, message_id: str, not_before: float, attempts: int, last_error: str
    ) -> bool:
        records.check_key(message_id, "message id")
        keys = [_SMS_MSG + message_id, _SMS_DUE]
        args = [message_id, _score(not_before), int(attempts), last_error]
        return bool(await self._eval(_SMS_RETRY, keys, args))

    def sms_failed(self, message_id: str, error: str) -> defer.Deferred[bool]:
        """Move the SMS from the queue to the dead letters."""
        return defer.ensureDeferred(self._sms_failed(message_id, error))

    async def _sms_failed(self, message_id: str, error: str) -> bool:
        records.check_key(message_id, "message id")
        keys = [_SMS_MSG + message_id, _SMS_DUE, _SMS_DEAD]
        return bool(await self._eval(_SMS_FAILED, keys, [message_id, error]))

    def dead_sms(self) -> defer.Deferred[list[OutboundSms]]:
        """Fire with the dead letters, oldest first."""
        return defer.ensureDeferred(self._dead_sms())

    async def _dead_sms(self) -> list[OutboundSms]:
        found = []
        for message_id in await self._call("LRANGE", _SMS_DEAD, 0, -1):
            fields = await self._call("HGETALL", _SMS_MSG + message_id)
            if fields:
                found.append(records.sms_from_fields(_pairs(fields)))
        return found

    # -- IVR PIN lockout (phone callback) ------------------------------------------------
    def pin_failed(
        self, username: str, number: str, now: float, attempts: int, period: float
    ) -> defer.Deferred[float]:
        """Count a wrong PIN for the account and the caller ID (see IStore)."""
        return defer.ensureDeferred(self._pin_failed(username, number, now, attempts, period))

    async def _pin_failed(
        self, username: str, number: str, now: float, attempts: int, period: float
    ) -> float:
        keys = _pin_keys(username, number)
        return float(await self._eval(_PIN_FAILED, keys, [repr(now), attempts, repr(period)]))

    def pin_locked_until(self, username: str, number: str, now: float) -> defer.Deferred[float]:
        """The end of a PIN lockout in force (see IStore)."""
        return defer.ensureDeferred(self._pin_locked_until(username, number, now))

    async def _pin_locked_until(self, username: str, number: str, now: float) -> float:
        ends = [
            float(await self._call("HGET", key, "until") or 0)
            for key in _pin_keys(username, number)
        ]
        return max([end for end in ends if end > now], default=0.0)

    def pin_succeeded(self, username: str, number: str) -> defer.Deferred[None]:
        """Forget the PIN failures of the account and the caller ID (see IStore)."""
        return defer.ensureDeferred(self._pin_succeeded(username, number))

    async def _pin_succeeded(self, username: str, number: str) -> None:
        for key in _pin_keys(username, number):
            await self._call("HSET", key, "count", 0, "first", 0)

    # -- the REST API: keys ----------------------------------------------------------------
    def create_api_key(self, username: str, label: str) -> defer.Deferred[tuple[str, str]]:
        """Make a key, in one script; fire with ``(key_id, secret)``."""
        return defer.ensureDeferred(self._create_api_key(username, label))

    async def _create_api_key(self, username: str, label: str) -> tuple[str, str]:
        records.check_username(username)
        records.check_key_label(label)
        key_id, secret = records.new_api_key()
        digest = records.api_key_hash(secret)
        assert digest is not None
        record = {"label": label, "created_at": self.clock.seconds(), "hash": digest}
        keys = ["cb:accounts", f"cb:apikey:{digest}", _acct(username, "apikeys")]
        args = [username, key_id, digest, json.dumps(record)]
        if not await self._eval(_CREATE_API_KEY, keys, args):
            raise NoSuchAccount(f"no account {username!r}")
        return key_id, secret

    def list_api_keys(self, username: str) -> defer.Deferred[list[ApiKey]]:
        """Fire with the account's keys, oldest first."""
        return defer.ensureDeferred(self._list_api_keys(username))

    async def _list_api_keys(self, username: str) -> list[ApiKey]:
        records.check_username(username)
        fields = _pairs(await self._call("HGETALL", _acct(username, "apikeys")))
        keys = []
        for key_id, text in fields.items():
            record = json.loads(text)
            keys.append(ApiKey(key_id, username, record["label"], float(record["created_at"])))
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke_api_key(self, username: str, key_id: str) -> defer.Deferred[bool]:
        """Forget the key, in one script; fire with True if the account had it."""
        return defer.ensureDeferred(self._revoke_api_key(username, key_id))

    async def _revoke_api_key(self, username: str, key_id: str) -> bool:
        records.check_username(username)
        records.check_key(key_id, "key id")
        keys = [_acct(username, "apikeys")]
        return bool(await self._eval(_REVOKE_API_KEY, keys, [key_id, "cb:apikey:"]))

    def account_for_api_key(self, secret: str) -> defer.Deferred[str | None]:
        """Fire with the key's username, or None (one GET)."""
        digest = records.api_key_hash(secret)
        if digest is None:
            return defer.succeed(None)
        d = self._call("GET", f"cb:apikey:{digest}")
        return d.addCallback(lambda found: found.partition(" ")[0] if found else None)

    # -- the REST API: idempotency keys ----------------------------------------------------
    def _idempotency_key(self, username: str, key: str) -> str:
        records.check_username(username)
        records.check_idempotency_key(key)
        return _acct(username, "idem", hashlib.sha256(key.encode("ascii")).hexdigest())

    def claim_idempotency_key(
        self, username: str, key: str, fingerprint: str, ttl: float
    ) -> defer.Deferred[dict[str, Any] | None]:
        """Claim the key (SET NX with the TTL) or fire with what is stored, in one script."""
        return defer.ensureDeferred(self._claim_idempotency_key(username, key, fingerprint, ttl))

    async def _claim_idempotency_key(
        self, username: str, key: str, fingerprint: str, ttl: float
    ) -> dict[str, Any] | None:
        redis_key = self._idempotency_key(username, key)
        records.check_fingerprint(fingerprint)
        fresh = json.dumps({"fingerprint": fingerprint, "response": None})
        found = await self._eval(_CLAIM_IDEMPOTENCY_KEY, [redis_key], [fresh, _ms(ttl)])
        return None if found is None else dict(json.loads(found))

    def settle_idempotency_key(
        self, username: str, key: str, fingerprint: str, response: str, ttl: float
    ) -> defer.Deferred[None]:
        """Store the key's response for ``ttl`` seconds."""
        redis_key = self._idempotency_key(username, key)
        records.check_fingerprint(fingerprint)
        record = json.dumps({"fingerprint": fingerprint, "response": str(response)})
        return self._call("SET", redis_key, record, "PX", _ms(ttl)).addCallback(lambda _: None)

    def release_idempotency_key(self, username: str, key: str) -> defer.Deferred[None]:
        """Forget the key."""
        return self._call("DEL", self._idempotency_key(username, key)).addCallback(lambda _: None)

    # -- the REST API: webhooks ------------------------------------------------------------
    def set_webhook(self, username: str, url: str) -> defer.Deferred[Webhook | None]:
        """Set (or with "" remove) the account's webhook, in one script; keep its secret."""
        return defer.ensureDeferred(self._set_webhook(username, url))

    async def _set_webhook(self, username: str, url: str) -> Webhook | None:
        records.check_username(username)
        if url:
            records.check_webhook_url(url)
        keys = ["cb:accounts", _acct(username, "webhook")]
        args = [username, url, records.new_webhook_secret()]
        secret = await self._eval(_SET_WEBHOOK, keys, args)
        if secret == 0:
            raise NoSuchAccount(f"no account {username!r}")
        return Webhook(url, secret) if url else None

    def get_webhook(self, username: str) -> defer.Deferred[Webhook | None]:
        """Fire with the account's Webhook, or None."""
        records.check_username(username)
        d = self._call("HGETALL", _acct(username, "webhook"))
        return d.addCallback(
            lambda flat: Webhook(**_pairs(flat)) if flat else None  # url, secret
        )

    def enqueue_webhook(
        self, delivery_id: str, username: str, body: str, not_before: float
    ) -> defer.Deferred[bool]:
        """Queue the delivery unless its id is known, in one script."""
        return defer.ensureDeferred(self._enqueue_webhook(delivery_id, username, body, not_before))

    async def _enqueue_webhook(
        self, delivery_id: str, username: str, body: str, not_before: float
    ) -> bool:
        records.check_webhook(delivery_id, username, body)
        keys = [_HOOK_MSG + delivery_id, f"cb:hook:sent:{delivery_id}", _HOOK_DUE]
        args = [delivery_id, username, body, _score(not_before), _score(self.clock.seconds())]
        return bool(await self._eval(_ENQUEUE_WEBHOOK, keys, args))

    def due_webhooks(
        self, now: float, limit: int, lease: float = WEBHOOK_LEASE
    ) -> defer.Deferred[list[WebhookDelivery]]:
        """Claim the due deliveries for ``lease`` seconds (the SMS queue's claim script)."""
        return defer.ensureDeferred(self._due_webhooks(now, limit, lease))

    async def _due_webhooks(self, now: float, limit: int, lease: float) -> list[WebhookDelivery]:
        args = [_score(now), int(limit), _score(now + lease), _HOOK_MSG]
        found = await self._eval(_CLAIM_SMS, [_HOOK_DUE], args)
        return [records.webhook_from_fields(_pairs(flat)) for flat in found]

    def next_webhook_due(self) -> defer.Deferred[float | None]:
        """Fire with the earliest ``not_before`` queued, or None."""
        d = self._call("ZRANGE", _HOOK_DUE, 0, 0, "WITHSCORES")
        return d.addCallback(lambda reply: float(reply[1]) if reply else None)

    def webhook_sent(self, delivery_id: str) -> defer.Deferred[None]:
        """Forget the delivery and remember its id a while."""
        records.check_key(delivery_id, "delivery id")
        keys = [_HOOK_MSG + delivery_id, f"cb:hook:sent:{delivery_id}", _HOOK_DUE]
        d = defer.ensureDeferred(self._eval(_SMS_SENT, keys, [delivery_id, WEBHOOK_SENT_TTL]))
        return d.addCallback(lambda _: None)

    def webhook_retry(
        self, delivery_id: str, not_before: float, attempts: int, last_error: str
    ) -> defer.Deferred[bool]:
        """Requeue the delivery for ``not_before``."""
        records.check_key(delivery_id, "delivery id")
        keys = [_HOOK_MSG + delivery_id, _HOOK_DUE]
        args = [delivery_id, _score(not_before), int(attempts), last_error]
        return defer.ensureDeferred(self._eval(_SMS_RETRY, keys, args)).addCallback(bool)

    def webhook_failed(self, delivery_id: str, error: str) -> defer.Deferred[bool]:
        """Move the delivery to the dead letters."""
        records.check_key(delivery_id, "delivery id")
        keys = [_HOOK_MSG + delivery_id, _HOOK_DUE, _HOOK_DEAD]
        return defer.ensureDeferred(
            self._eval(_SMS_FAILED, keys, [delivery_id, error])
        ).addCallback(bool)

    def dead_webhooks(self) -> defer.Deferred[list[WebhookDelivery]]:
        """Fire with the dead letters, oldest first."""
        return defer.ensureDeferred(self._dead_webhooks())

    async def _dead_webhooks(self) -> list[WebhookDelivery]:
        found = []
        for delivery_id in await self._call("LRANGE", _HOOK_DEAD, 0, -1):
            fields = await self._call("HGETALL", _HOOK_MSG + delivery_id)
            if fields:
                found.append(records.webhook_from_fields(_pairs(fields)))
        return found

    # -- change feed -------------------------------------------------------------------------
    def watch(
        self, on_change: Callable[[str, str], None], on_state: Callable[[bool], None]
    ) -> Callable[[], None]:
        """Hear of account changes by any writer (see IStore.watch); return a stop function.

        Every script that changes an account's record, balance, CDRs or chat links PUBLISHes
        ``"{username} {origin}"`` on ``cb:changes`` in the same atomic step, so a
        watcher hears every change in the order Redis applied them. The watchers of
        a store share one subscribing connection, opened with the first watcher.
        Channels are not per database: a store on another database of the same
        server is told of its own accounts too (a spurious change costs a re-read).
        """
        entry = (on_change, on_state)
        self._watchers.append(entry)
        if self._feed is None:
            self._feed = Feed(
                self.endpoint,
                [CHANGES_CHANNEL],
                self._feed_message,
                self._feed_state,
                self.clock,
                password=self._password.reveal() if self._password else None,
                timeout=self.timeout,
                max_reconnect_delay=self._max_reconnect_delay,
            )
            self._feed.start()
        elif self._feed.subscribed:
            on_state(True)

        def stop() -> None:
            if entry in self._watchers:
                self._watchers.remove(entry)
            if not self._watchers:
                self._stop_feed()

        return stop

    def _stop_feed(self) -> defer.Deferred[None]:
        feed, self._feed = self._feed, None
        return defer.succeed(None) if feed is None else feed.stop()

    def _feed_message(self, channel: str, message: str) -> None:
        username, _, origin = message.partition(" ")
        for on_change, _ in list(self._watchers):
            try:
                on_change(username, origin)
            except Exception:
                log.failure("change feed watcher {watcher!r} failed", watcher=on_change)

    def _feed_state(self, live: bool) -> None:
        if not live:
            if self._feed is None:  # closed on purpose: the last watcher stopped watching
                log.info("redis change feed closed")
            else:
                log.warn("redis change feed lost: account caches are dropped until it is back")
        for _, on_state in list(self._watchers):
            try:
                on_state(live)
            except Exception:
                log.failure("change feed watcher {watcher!r} failed", watcher=on_state)

    # -- SMS front: inbound messages, caller-ID codes, counters ---------------------------
    def record_inbound_sms(
        self, keys: list[str], record: dict[str, Any], now: float, ttl: float
    ) -> defer.Deferred[bool]:
        """Record the SMS unless one of its keys was seen, in one script."""
        return defer.ensureDeferred(self._record_inbound_sms(keys, record, now, ttl))

    async def _record_inbound_sms(
        self, keys: list[str], record: dict[str, Any], now: float, ttl: float
    ) -> bool:
        text = records.check_inbound(keys, record, ttl)
        markers = [_SMS_IN_SEEN + key for key in keys]
        args = [_ms(ttl), keys[0], text, _score(now)]
        reply = await self._eval(_RECORD_INBOUND, [*markers, _SMS_IN_DATA, _SMS_IN_PENDING], args)
        return bool(reply)

    def inbound_sms_handled(self, key: str) -> defer.Deferred[None]:
        """Forget the pending record of ``key``."""
        try:
            records.check_key(key, "dedupe key")
        except InvalidArgument:
            return defer.fail()
        self._call("HDEL", _SMS_IN_DATA, key)
        return self._call("ZREM", _SMS_IN_PENDING, key).addCallback(lambda _: None)

    def pending_inbound_sms(self) -> defer.Deferred[list[tuple[str, dict[str, Any], float]]]:
        """Fire with the pending records, oldest first."""
        return defer.ensureDeferred(self._pending_inbound_sms())

    async def _pending_inbound_sms(self) -> list[tuple[str, dict[str, Any], float]]:
        ranked = _pairs(await self._call("ZRANGE", _SMS_IN_PENDING, 0, -1, "WITHSCORES"))
        found = []
        for key, at in ranked.items():
            text = await self._call("HGET", _SMS_IN_DATA, key)
            if text is not None:
                found.append((str(key), json.loads(text), float(at)))
        return found

    def issue_caller_id_code(
        self, username: str, number: str, code: str, ttl: float, attempts: int = SMS_CODE_ATTEMPTS
    ) -> defer.Deferred[None]:
        """Add the number unverified and keep the code's hash (see the interface)."""
        return defer.ensureDeferred(
            self._issue_caller_id_code(username, number, code, ttl, attempts)
        )

    async def _issue_caller_id_code(
        self, username: str, number: str, code: str, ttl: float, attempts: int
    ) -> None:
        records.check_code(code)
        records.check_period(ttl, "ttl")
        records.check_attempts(attempts)
        await self._add_caller_id(username, number, False)
        key = _CID_CODE + number
        until = _score(self.clock.seconds() + ttl)
        hashed = records.code_hash(number, code)
        self._call(
            "HSET", key, "username", username, "hash", hashed, "until", until, "left", attempts
        )
        await self._call("PEXPIRE", key, _ms(ttl))

    def confirm_caller_id_code(self, number: str, code: str) -> defer.Deferred[str | None]:
        """Fire with the username when ``code`` is the number's live code, in one script."""
        try:
            records.check_number(number)
        except InvalidArgument:
            return defer.fail()
        hashed = records.code_hash(number, code) if isinstance(code, str) else ""
        args = [hashed, _score(self.clock.seconds()), number]
        d = defer.ensureDeferred(self._eval(_CONFIRM_CID_CODE, [_CID_CODE + number], args))
        return d.addCallback(lambda owner: None if owner is None else str(owner))

    def count_hit(self, key: str, period: float) -> defer.Deferred[int]:
        """Count a hit of ``key`` in its window of ``period`` seconds, in one script."""
        try:
            records.check_key(key, "counter")
            records.check_period(period)
        except InvalidArgument:
            return defer.fail()
        return defer.ensureDeferred(self._eval(_COUNT_HIT, [_HITS + key], [_ms(period)]))

    def hit_count(self, key: str) -> defer.Deferred[int]:
        """Fire with the hits of ``key`` in its open window."""
        try:
            records.check_key(key, "counter")
        except InvalidArgument:
            return defer.fail()
        return self._call("GET", _HITS + key).addCallback(lambda n: int(n or 0))

    def clear_hits(self, key: str) -> defer.Deferred[None]:
        """Forget the hits of ``key``."""
        try:
            records.check_key(key, "counter")
        except InvalidArgument:
            return defer.fail()
        return self._call("DEL", _HITS + key).addCallback(lambda _: None)

    # -- web portal sessions -----------------------------------------------------------------
    def create_web_session(self, username: str, role: str, ttl: int) -> defer.Deferred[str]:
        """Open a portal login (``cb:web:{sha256(token)}``, expiring); fire with its token."""
        return defer.ensureDeferred(self._create_web_session(username, role, ttl))

    async def _create_web_session(self, username: str, role: str, ttl: int) -> str:
        token, digest = records.new_web_session(username, role, ttl)
        record = {"username": username, "role": role, "created_at": self.clock.seconds()}
        await self._call("SET", _WEB + digest, json.dumps(record), "EX", ttl)
        return token

    def get_web_session(self, token: str) -> defer.Deferred[dict[str, Any] | None]:
        """Fire with the login's record, or None."""
        digest = records.web_token_digest(token)
        if digest is None:
            return defer.succeed(None)
        return self._call("GET", _WEB + digest).addCallback(
            lambda text: json.loads(text) if text else None
        )

    def delete_web_session(self, token: str) -> defer.Deferred[bool]:
        """End the login; fire with True if there was one."""
        digest = records.web_token_digest(token)
        if digest is None:
            return defer.succeed(False)
        return self._call("DEL", _WEB + digest).addCallback(bool)

    # -- several daemons (cluster): ownership, leases, messages ----------------------------
    def renew_node(self, node_id: str, ttl: float) -> defer.Deferred[bool]:
        """Renew the daemon's lease (``cb:node:{id}``); fire with whether it was held."""
        return defer.ensureDeferred(self._renew_node(node_id, ttl))

    async def _renew_node(self, node_id: str, ttl: float) -> bool:
        records.check_key(node_id, "node id")
        return bool(await self._eval(_RENEW_NODE, [_NODE + node_id], [_ms(ttl)]))

    def open_session(
        self, session_id: str, node_id: str, username: str, limit: int
    ) -> defer.Deferred[int]:
        """Own a new session (epoch 1) unless the account has ``limit`` in flight."""
        return defer.ensureDeferred(self._open_session(session_id, node_id, username, limit))

    async def _open_session(self, session_id: str, node_id: str, username: str, limit: int) -> int:
        records.check_key(session_id, "session id")
        records.check_username(username)
        keys = [_OWNER + session_id, _LIVE + username]
        return int(await self._eval(_OPEN_SESSION, keys, [session_id, node_id, username, limit]))

    def claim_session(self, session_id: str, node_id: str) -> defer.Deferred[int]:
        """Become the session's owner unless a live daemon holds it; fire with the epoch."""
        return defer.ensureDeferred(self._claim_session(session_id, node_id))

    async def _claim_session(self, session_id: str, node_id: str) -> int:
        records.check_key(session_id, "session id")
        records.check_key(node_id, "node id")
        return int(await self._eval(_CLAIM_SESSION, [_OWNER + session_id], [node_id]))

    def session_owner(self, session_id: str) -> defer.Deferred[tuple[str, int] | None]:
        """Fire with the session's (owner, epoch), or None."""
        return defer.ensureDeferred(self._session_owner(session_id))

    async def _session_owner(self, session_id: str) -> tuple[str, int] | None:
        records.check_key(session_id, "session id")
        node, epoch = await self._call("HMGET", _OWNER + session_id, "node", "epoch")
        return None if node is None else (node, int(epoch))

    def orphaned_sessions(self, node_id: str) -> defer.Deferred[list[str]]:
        """Fire with the sessions in flight whose owner (not ``node_id``) is gone."""
        return defer.ensureDeferred(self._orphaned_sessions(node_id))

    async def _orphaned_sessions(self, node_id: str) -> list[str]:
        records.check_key(node_id, "node id")
        return sorted(await self._eval(_ORPHANS, ["cb:sessions"], [node_id]))

    def save_session_as(
        self, session_id: str, data: dict[str, Any], node_id: str, epoch: int
    ) -> defer.Deferred[bool]:
        """save_session while ``node_id`` holds the session at ``epoch``."""
        return defer.ensureDeferred(self._save_session_as(session_id, data, node_id, epoch))

    async def _save_session_as(
        self, session_id: str, data: dict[str, Any], node_id: str, epoch: int
    ) -> bool:
        records.check_key(session_id, "session id")
        text = records.check_session(data)
        keys = [f"cb:session:{session_id}", "cb:sessions", _OWNER + session_id]
        return bool(await self._eval(_SAVE_SESSION_AS, keys, [text, session_id, node_id, epoch]))

    def end_session_as(
        self, session_id: str, cdr: CDR, origin: str, node_id: str, epoch: int
    ) -> defer.Deferred[bool]:
        """end_session while ``node_id`` holds the session at ``epoch``."""
        return defer.ensureDeferred(self._end_session_as(session_id, cdr, origin, node_id, epoch))

    async def _end_session_as(
        self, session_id: str, cdr: CDR, origin: str, node_id: str, epoch: int
    ) -> bool:
        records.check_key(session_id, "session id")
        keys, args = _cdr_parts(cdr)
        records.check_origin(origin)
        keys += [f"cb:session:{session_id}", "cb:sessions", _OWNER + session_id, _LIVE]
        args += [session_id, cdr.username, origin, node_id, epoch]
        return bool(await self._eval(_END_SESSION_AS, keys, args))

    def post_message(self, box: str, text: str, keep: int) -> defer.Deferred[str]:
        """Append ``text`` to the stream ``cb:box:{box}``; fire with its id."""
        try:
            records.check_key(box, "message box")
        except InvalidArgument:
            return defer.fail()
        return self._call("XADD", _BOX + box, "MAXLEN", "~", max(1, int(keep)), "*", "m", text)

    def read_messages(
        self, box: str, after: str, count: int
    ) -> defer.Deferred[list[tuple[str, str]]]:
        """Fire with up to ``count`` (id, text) of ``box`` after ``after``."""
        try:
            records.check_key(box, "message box")
            records.check_key(after, "message id")
        except InvalidArgument:
            return defer.fail()
        d = self._call("XRANGE", _BOX + box, "(" + after, "+", "COUNT", int(count))
        return d.addCallback(lambda entries: [(i, _pairs(f)["m"]) for i, f in entries])

    def last_message_id(self, box: str) -> defer.Deferred[str]:
        """Fire with the id of the last message of ``box`` ("0-0": none)."""
        try:
            records.check_key(box, "message box")
        except InvalidArgument:
            return defer.fail()
        d = self._call("XREVRANGE", _BOX + box, "+", "-", "COUNT", 1)
        return d.addCallback(lambda entries: entries[0][0] if entries else "0-0")

    # -- IVR: the PIN index (unknown callers) -------------------------------------------
    def account_for_pin(self, pin: str) -> defer.Deferred[str | None]:
        """Fire with the account whose PIN this is, or None (see IStore)."""
        if not isinstance(pin, str) or not records.PIN.fullmatch(pin):
            return defer.succeed(None)
        return self._call("HGET", _PIN_INDEX, pin_index(self.pin_pepper, pin))

    async def _pin_free(self, username: str, pin: str) -> None:
        """InvalidArgument when another account has ``pin``."""
        owner = await self._call("HGET", _PIN_INDEX, pin_index(self.pin_pepper, pin))
        if owner is not None and owner != username:
            raise InvalidArgument("that PIN cannot be used: choose another")

    async def _index_pin(self, username: str, pin: str, unless_taken: bool = False) -> None:
        """Make ``pin`` the account's entry of the PIN index (its old one gone)."""
        keys = [_PIN_INDEX, _acct(username, "secrets")]
        entry = pin_index(self.pin_pepper, pin)
        if not await self._eval(_INDEX_PIN, keys, [entry, username, int(unless_taken)]):
            raise InvalidArgument("that PIN cannot be used: choose another")


# -- several daemons (cluster): ownership, leases, messages --------------------------------
_NODE = "cb:node:"
_OWNER = "cb:owner:"
_LIVE = "cb:live:"
_BOX = "cb:box:"

_RENEW_NODE = _Script("""
-- KEYS: node lease; ARGV: ttl ms. Was it still held?
local held = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return held
""")

_OPEN_SESSION = _Script("""
-- KEYS: owner record, account's sessions in flight; ARGV: session id, node, username, limit
-- A session never saved whose owner's lease is gone (it died at once) counts no more.
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local owner = redis.call('HGET', 'cb:owner:' .. sid, 'node')
  if redis.call('EXISTS', 'cb:session:' .. sid) == 0
     and not (owner and redis.call('EXISTS', 'cb:node:' .. owner) == 1) then
    redis.call('SREM', KEYS[2], sid)
    redis.call('DEL', 'cb:owner:' .. sid)
  end
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0
   and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'epoch', 1, 'username', ARGV[3])
return 1
""")

_CLAIM_SESSION = _Script("""
-- KEYS: owner record; ARGV: node. Never two owners: a live owner keeps it.
local owner = redis.call('HGET', KEYS[1], 'node')
if owner == ARGV[1] then return tonumber(redis.call('HGET', KEYS[1], 'epoch')) end
if owner and redis.call('EXISTS', 'cb:node:' .. owner) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'epoch', 1)
""")

_ORPHANS = _Script("""
-- KEYS: sessions; ARGV: node. Sessions whose owner (not ARGV[1]) has no lease.
local found = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local owner = redis.call('HGET', 'cb:owner:' .. sid, 'node')
  if owner and owner ~= ARGV[1] and redis.call('EXISTS', 'cb:node:' .. owner) == 0 then
    found[#found + 1] = sid
  end
end
return found
""")

#: the fence of a session write: KEYS[n] the owner record, ARGV[m-1..m] node and epoch
_FENCE = """
local owner = KEYS[#KEYS - (FENCE_AT)]
if redis.call('HGET', owner, 'node') ~= ARGV[#ARGV - 1]
   or redis.call('HGET', owner, 'epoch') ~= ARGV[#ARGV] then
  return 0
end
"""

_SAVE_SESSION_AS = _Script(_FENCE.replace("FENCE_AT", "0") + _SAVE_SESSION.source)

_END_SESSION_AS = _Script(
    _FENCE.replace("FENCE_AT", "1")
    + """
local username = redis.call('HGET', owner, 'username')
if username then redis.call('SREM', KEYS[#KEYS] .. username, ARGV[4]) end
redis.call('DEL', owner)
"""
    + _END_SESSION.source
)


def store_endpoint(config: Config, reactor: Any) -> tuple[IStreamClientEndpoint | Sentinels, str]:
    """The endpoint of the configured Redis and a description of it (for messages).

    In sentinel mode, the :class:`Sentinels` naming the primary (the store's
    connections ask them before every attempt).
    """
    timeout = max(1, int(config.redis.timeout))
    if config.redis.mode == "sentinel":
        password = config.redis.sentinel_password.reveal()
        sentinels = Sentinels(
            reactor,
            config.redis.sentinel_addresses,
            config.redis.master_name,
            timeout=config.redis.timeout,
            password=password or None,
        )
        return sentinels, str(sentinels)
    if config.redis.mode == "embedded":
        path = str(socket_path(config.state_dir))
        return UNIXClientEndpoint(reactor, path, timeout=timeout), f"unix:{path}"
    if config.redis.unix_socket:
        path = str(config.resolve(config.redis.unix_socket))
        return UNIXClientEndpoint(reactor, path, timeout=timeout), f"unix:{path}"
    host, port = config.redis.host, config.redis.port
    return HostnameEndpoint(reactor, host, port, timeout=timeout), f"{host}:{port}"


def make_store(
    config: Config, reactor: Any, password_hasher: PasswordHasher | None = None
) -> RedisStore:
    """A RedisStore for the configured Redis (not connected yet)."""
    endpoint, address = store_endpoint(config, reactor)
    return RedisStore(
        endpoint,
        clock=reactor,
        password_hasher=password_hasher or BcryptHasher(reactor),
        address=address,
        db=config.redis.db,
        # the embedded server has no password (see callbackd.store.embedded)
        password=None if config.redis.mode == "embedded" else config.redis.password,
        timeout=config.redis.timeout,
        provider_window=float(config.routing.window),
        pin_pepper=load_pin_pepper(config.ivr.pin_pepper.reveal(), config.state_dir),
        wait_replicas=config.redis.wait_replicas,
        wait_timeout=config.redis.wait_timeout,
    )


def connect_store(
    config: Config, reactor: Any, password_hasher: PasswordHasher | None = None
) -> defer.Deferred[RedisStore]:
    """Connect to the configured Redis; fire with the store or errback StoreUnavailable."""
    return make_store(config, reactor, password_hasher).connect()


class StoreService(service.Service):
    """Keeps the daemon's RedisStore connected while the service runs.

    Starting does not wait for Redis: the daemon comes up (unhealthy) while
    Redis is down and the store reconnects by itself when it appears.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        self.store = make_store(config, reactor)

    def startService(self) -> None:
        super().startService()
        self.store.start()

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        super().stopService()
        return self.store.disconnect()

    def health(self) -> defer.Deferred[dict[str, Any]]:
        """Fire with ``{"ok": True}`` if Redis answers, else ``{"ok": False, "error": why}``."""

        def failed(failure: Failure) -> dict[str, Any]:
            return {"ok": False, "error": failure.getErrorMessage()}

        d = self.store.ping().addCallback(lambda ok: {"ok": bool(ok)})
        return d.addErrback(failed)
