"""Retell's call monitor socket: the one module that knows it (docs/retell.md, Live transcript).

    {RETELL_MONITOR_BASE}/v2/monitor-call/{call_id}, subprotocols ["bearer", <API key>]
    {type: "transcript_snapshot" | "transcript_updated", transcripts: [{id, time_sec, role,
     content}]}   a seen id replaces the earlier item
    {type: "call_ended", disconnection_reason?}
    close 4004: not live yet (retry with backoff); other 4xxx: final; 1000 "call_ended": done

`watch()` is a generator: it yields a list of items per message, None on every idle tick
(so the caller can do its housekeeping, and stop by closing the generator), and returns
the reason the call ended; it raises MonitorGone when the socket cannot be had. It
reconnects by itself after a lost connection; a snapshot then repeats what was seen.
websocket-client is plain sockets: under gevent's monkey-patching it yields to others.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import struct
import time
from collections.abc import Callable, Iterator

import websocket

log = logging.getLogger(__name__)

TICK_S = 1.0  # how often watch() yields None while the socket is quiet
NOT_LIVE_BACKOFF = (0.5, 1, 2, 4, 8, 15)  # 4004 until the browser joins: ~30 s in all
LOST_BACKOFF = (0.5, 2, 5)  # a dropped connection, a 5xx, a timeout
MAX_MESSAGE = 1 << 20
MAX_CONTENT = 10_000
ROLES = ("agent", "user")


class MonitorGone(Exception):
    """No transcript from Retell for this call: `reason` is not_live, refused or lost."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    time_sec: float
    role: str
    content: str


def parse_items(values) -> list[Item]:
    """Retell's transcript items, well-formed ones only, in time order."""
    items = []
    for value in values if isinstance(values, list) else ():
        if not isinstance(value, dict):
            continue
        item_id, role, content = value.get("id"), value.get("role"), value.get("content")
        at = value.get("time_sec", 0)
        if isinstance(item_id, bool) or not isinstance(item_id, str | int):
            continue
        if role not in ROLES or not isinstance(content, str):
            continue
        if isinstance(at, bool) or not isinstance(at, int | float):
            at = 0
        items.append(Item(str(item_id)[:64], float(at), role, content[:MAX_CONTENT]))
    return sorted(items, key=lambda item: item.time_sec)


class _Closed(Exception):
    def __init__(self, code: int | None, reason: str):
        super().__init__(code)
        self.code, self.reason = code, reason


def _close_of(frame) -> _Closed:
    data = frame.data or b""
    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
    return _Closed(code, data[2:].decode("utf-8", "replace"))


class Monitor:
    def __init__(self, base: str, api_key: str, connect_timeout: float = 5.0):
        self.base = base.rstrip("/")
        self._key = api_key  # only ever in the subprotocol header, never logged
        self.connect_timeout = connect_timeout
        self.sleep: Callable[[float], None] = time.sleep

    def url(self, call_id: str) -> str:
        return f"{self.base}/v2/monitor-call/{call_id}"

    def watch(self, call_id: str) -> Iterator[list[Item] | None]:
        tries = {"not_live": 0, "lost": 0}
        while True:
            heard = [False]
            try:
                return (yield from self._session(call_id, heard))
            except _Closed as closed:
                detail = f"close {closed.code}"
                if closed.code == 4004:
                    reason = "not_live"
                elif closed.code is not None and 4000 <= closed.code < 5000:
                    raise MonitorGone("refused", detail) from None
                else:
                    reason = "lost"
            except websocket.WebSocketBadStatusException as exc:
                detail = f"status {exc.status_code}"
                if 400 <= exc.status_code < 500 and exc.status_code != 429:
                    raise MonitorGone("refused", detail) from None
                reason = "lost"
            except (OSError, websocket.WebSocketException) as exc:
                reason, detail = "lost", type(exc).__name__
            if heard[0]:  # it was live and talking: the retries start afresh
                tries = {"not_live": 0, "lost": 0}
            tries[reason] += 1
            schedule = NOT_LIVE_BACKOFF if reason == "not_live" else LOST_BACKOFF
            if tries[reason] > len(schedule):
                raise MonitorGone(reason, detail)
            log.info("monitor socket for %s: %s, retrying", call_id, detail)
            yield from self._pause(schedule[tries[reason] - 1])

    def _pause(self, seconds: float) -> Iterator[None]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sleep(min(left, TICK_S))
            yield None

    def _session(self, call_id: str, heard: list[bool]) -> Iterator[list[Item] | None]:
        ws = websocket.create_connection(
            self.url(call_id),
            subprotocols=["bearer", self._key],
            timeout=self.connect_timeout,
            enable_multithread=False,
            redirect_limit=0,  # the key rides in a header: never resent elsewhere
        )
        try:
            ws.settimeout(TICK_S)
            while True:
                try:
                    opcode, frame = ws.recv_data_frame()
                except websocket.WebSocketTimeoutException:
                    yield None
                    continue
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    closed = _close_of(frame)
                    if closed.code == 1000 and closed.reason == "call_ended":
                        return "call_ended"
                    raise closed
                if opcode != websocket.ABNF.OPCODE_TEXT or len(frame.data) > MAX_MESSAGE:
                    continue
                message = _json(frame.data)
                kind = message.get("type")
                if kind in ("transcript_snapshot", "transcript_updated"):
                    heard[0] = True
                    yield parse_items(message.get("transcripts"))
                elif kind == "call_ended":
                    reason = message.get("disconnection_reason")
                    return reason[:64] if isinstance(reason, str) and reason else "call_ended"
        finally:
            ws.close(timeout=1)


def _json(data) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
