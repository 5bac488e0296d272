"""At most one monitor socket per call, across every worker and host; listeners anywhere.

Redis, per call (all expiring; REDIS_KEY_PREFIX first):
    transcript:<call_id>            stream: one entry per change, `item` (JSON) or `end`
    transcript:<call_id>:items      hash: item id -> its latest state, `_end` -> why it ended
    transcript:<call_id>:relay      string: who holds the monitor socket (TTL, refreshed)
    transcript:<call_id>:listeners  sorted set: listener id -> when its heartbeat runs out

A listener joins (and claims the relay if nobody holds it: a worker that died loses its
claim with the TTL, and the next heartbeat of any listener takes over), reads a snapshot
from the hash, then tails the stream. The relay (a thread: a greenlet under gevent)
writes each change through a script that checks it still holds the claim, and stops when
the call ends, its token's expiry passes, or no listener is left for LEAVE_GRACE_S.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import redis

from app import metrics
from app.retell.monitor import Monitor, MonitorGone
from app.transcript import items as transcript_items

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000  # a dead holder is replaced within this
LISTENER_TTL_MS = 30_000  # a listener that stops refreshing is gone after this
HEARTBEAT_S = 5.0  # a listener's idle wait (then a comment line) and its refresh
LEAVE_GRACE_S = 3.0  # room for an EventSource reconnect before the socket is closed
END_TTL_MS = 600_000  # an ended transcript stays readable this long
KEEP_MS = 60_000  # the keys outlive the token by this
STREAM_MAXLEN = 2000  # changes kept for Last-Event-ID resumes; the hash has every item

# KEYS: listeners, relay, items. ARGV: listener, holder, expire_at_ms. -> 1 claimed,
# 0 held by someone, -1 the call has ended.
JOIN = f"""
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now + {LISTENER_TTL_MS}, ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
if redis.call('HEXISTS', KEYS[3], '_end') == 1 then return -1 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', {LOCK_TTL_MS}) then return 1 end
return 0
"""
# KEYS: relay, listeners. ARGV: holder. -> listeners left, or -1 when the claim is lost.
TICK = f"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], {LOCK_TTL_MS})
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t[1] * 1000 + math.floor(t[2] / 1000))
return redis.call('ZCARD', KEYS[2])
"""
# KEYS: stream, items, relay, listeners. ARGV: holder, expire_at_ms, end reason or '',
# then id, JSON pairs. -> 0 when the claim is lost (nothing written).
WRITE = f"""
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', {STREAM_MAXLEN}, '*', 'item', ARGV[i + 1])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], '_end', ARGV[3])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', {STREAM_MAXLEN}, '*', 'end', ARGV[3])
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('PEXPIRE', KEYS[1], {END_TTL_MS})
  redis.call('PEXPIRE', KEYS[2], {END_TTL_MS})
else
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
return 1
"""
# KEYS: relay. ARGV: holder.
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"


def _stream_id(text: str | None) -> tuple[int, int] | None:
    head, _, tail = (text or "").partition("-")
    if not (head.isdigit() and tail.isdigit() and len(text) <= 41):
        return None
    return int(head), int(tail)


class Keys:
    def __init__(self, prefix: str, call_id: str):
        base = f"{prefix}transcript:{call_id}"
        self.stream, self.items = base, f"{base}:items"
        self.relay, self.listeners = f"{base}:relay", f"{base}:listeners"


class TranscriptRelay:
    def __init__(self, client: redis.Redis, blocking: redis.Redis, prefix: str, monitor: Monitor):
        """blocking: a client whose socket timeout outlasts HEARTBEAT_S (XREAD BLOCK)."""
        self.client, self.blocking, self.prefix, self.monitor = client, blocking, prefix, monitor
        self._join = client.register_script(JOIN)
        self._tick = client.register_script(TICK)
        self._write = client.register_script(WRITE)
        self._release = client.register_script(RELEASE)
        self.relays: dict[str, threading.Thread] = {}  # this process's, by call id

    # -- listeners -----------------------------------------------------------------
    def open(self, call_id: str, expires_at: int, last_event_id: str | None) -> Listener:
        """Joins (claiming the relay when free) and reads where to start: raises RedisError
        before anything is streamed."""
        listener = Listener(self, call_id, expires_at)
        listener.join()
        listener.start(last_event_id)
        return listener

    def _joined(self, keys: Keys, listener_id: str, call_id: str, expires_at: int) -> int:
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        expire_ms = (expires_at * 1000) + KEEP_MS
        claimed = self._join(
            keys=[keys.listeners, keys.relay, keys.items], args=[listener_id, holder, expire_ms]
        )
        if claimed == 1:
            thread = threading.Thread(
                target=self._run,
                args=(call_id, holder, expires_at),
                name=f"transcript-relay-{call_id}",
                daemon=True,
            )
            self.relays[call_id] = thread
            thread.start()
        return claimed

    # -- the relay -----------------------------------------------------------------
    def _run(self, call_id: str, holder: str, expires_at: int) -> None:
        keys = Keys(self.prefix, call_id)
        expire_ms = expires_at * 1000 + KEEP_MS
        ending = ""
        watch = self.monitor.watch(call_id)
        metrics.gauge_add(metrics.TRANSCRIPT_RELAYS, 1)
        try:
            known = self._known(keys)
            next_tick, alone_since = 0.0, None
            while True:
                try:
                    batch = next(watch)
                except StopIteration as stop:
                    ending = stop.value or "call_ended"
                    break
                except MonitorGone as gone:
                    log.warning("no transcript for %s: %s (%s)", call_id, gone.reason, gone.detail)
                    ending = "unavailable" if gone.reason != "not_live" else "not_live"
                    break
                if batch and not self._store(keys, holder, expire_ms, known, batch):
                    return  # another holder took over
                now = time.monotonic()
                if now < next_tick:
                    continue
                next_tick = now + 1.0
                left = self._tick(keys=[keys.relay, keys.listeners], args=[holder])
                if left < 0:
                    return
                alone_since = None if left else alone_since or now
                if alone_since is not None and now - alone_since >= LEAVE_GRACE_S:
                    log.info("transcript relay for %s: no listeners left", call_id)
                    return
                if time.time() >= expires_at:
                    ending = "expired"
                    break
            watch.close()
            self._put(keys, holder, expire_ms, transcript_items.finish(known), ending)
        except redis.RedisError as exc:
            log.warning("transcript relay for %s: redis %s", call_id, type(exc).__name__)
        except Exception:
            log.exception("transcript relay for %s failed", call_id)
        finally:
            metrics.gauge_add(metrics.TRANSCRIPT_RELAYS, -1)
            watch.close()
            self.relays.pop(call_id, None)
            if not ending:
                with contextlib.suppress(redis.RedisError):  # else the TTL releases it
                    self._release(keys=[keys.relay], args=[holder])

    def _known(self, keys: Keys) -> dict[str, dict]:
        """What was relayed already (an earlier relay of this call), so nothing repeats."""
        known = {}
        for item_id, text in self.client.hgetall(keys.items).items():
            state = transcript_items.decode(text) if item_id != "_end" else None
            if state:
                known[item_id] = state
        return known

    def _store(self, keys: Keys, holder: str, expire_ms: int, known: dict, batch) -> bool:
        changed = transcript_items.merge(known, batch)
        return self._put(keys, holder, expire_ms, changed, "") if changed else True

    def _put(self, keys: Keys, holder: str, expire_ms: int, changed: list, ending: str) -> bool:
        """One round trip; False when the claim was lost (nothing written)."""
        pairs = [part for s in changed for part in (s["id"], transcript_items.encode(s))]
        written = self._write(
            keys=[keys.stream, keys.items, keys.relay, keys.listeners],
            args=[holder, expire_ms, ending, *pairs],
        )
        return bool(written)


class Listener:
    """One SSE client: events() yields ("transcript" | "end", stream id or None, data) and
    None when it is time for a heartbeat. Leaves (ZREM) when closed."""

    def __init__(self, relay: TranscriptRelay, call_id: str, expires_at: int):
        self.relay, self.call_id, self.expires_at = relay, call_id, expires_at
        self.keys = Keys(relay.prefix, call_id)
        self.id = uuid.uuid4().hex
        self.cursor = "0-0"
        self.snapshot: list[tuple[str, str | None, dict]] = []
        self.joined_at = 0.0

    def join(self) -> None:
        self.relay._joined(self.keys, self.id, self.call_id, self.expires_at)
        self.joined_at = time.monotonic()

    def start(self, last_event_id: str | None) -> None:
        wanted = _stream_id(last_event_id)
        if wanted:
            first = self.relay.client.xrange(self.keys.stream, count=1)
            if first and _stream_id(first[0][0]) <= wanted:
                self.cursor = last_event_id
                return
        with self.relay.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.items)
            pipe.xrevrange(self.keys.stream, count=1)
            states, last = pipe.execute()
        self.cursor = last[0][0] if last else "0-0"
        ordered = [transcript_items.decode(text) for key, text in states.items() if key != "_end"]
        ordered = sorted(filter(None, ordered), key=lambda s: s["t"])
        # Only the last event carries the id: a reconnect mid-snapshot starts it over.
        self.snapshot = [("transcript", None, transcript_items.public(s)) for s in ordered]
        if "_end" in states:
            self.snapshot.append(("end", None, {"reason": states["_end"]}))
        if self.snapshot and last:
            kind, _, data = self.snapshot[-1]
            self.snapshot[-1] = (kind, self.cursor, data)

    def events(self) -> Iterator[tuple[str, str | None, dict] | None]:
        metrics.gauge_add(metrics.TRANSCRIPT_LISTENERS, 1)
        try:
            for event in self.snapshot:
                yield event
                if event[0] == "end":
                    return
            while True:
                if time.time() >= self.expires_at:
                    yield "end", None, {"reason": "expired"}
                    return
                if time.monotonic() - self.joined_at >= HEARTBEAT_S:
                    self.join()  # refresh, and take the relay over if its holder is gone
                found = self.relay.blocking.xread(
                    {self.keys.stream: self.cursor}, count=100, block=int(HEARTBEAT_S * 1000)
                )
                if not found:
                    yield None
                    continue
                for entry_id, fields in found[0][1]:
                    self.cursor = entry_id
                    if "end" in fields:
                        yield "end", entry_id, {"reason": fields["end"]}
                        return
                    state = transcript_items.decode(fields.get("item", ""))
                    if state:
                        yield "transcript", entry_id, transcript_items.public(state)
        finally:
            metrics.gauge_add(metrics.TRANSCRIPT_LISTENERS, -1)
            self.leave()

    def leave(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else its heartbeat runs out
            self.relay.client.zrem(self.keys.listeners, self.id)
