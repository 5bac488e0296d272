"""The usage stream: one entry per create-web-call attempt, and the readers the CLI uses.

Refusals are written by admission.lua in the same round trip as the decision; created
calls and upstream failures are written here after the upstream answer.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Iterator

import redis

log = logging.getLogger(__name__)

# Outcomes: created, origin_denied, agent_denied, rate_limited, invalid, upstream_error,
# unavailable (README's usage stream section).
UA_MAX = 200


class FailureCounter:
    """Counts usage writes that failed in this process (shown by /api/health/ready)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1


write_failures = FailureCounter()


def anonymise_ip(address: str | None, mode: str, key: bytes) -> str:
    if mode == "none" or not address:
        return ""
    if mode == "full":
        return address
    if mode == "truncate":
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        prefix = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()[:32]


def base_fields(*, origin, ip, user_agent, request_id) -> dict[str, str]:
    """The fields every entry carries; outcome, status, entry and agent_id come later."""
    return {
        "ts": str(int(time.time() * 1000)),
        "origin": (origin or "")[:300],
        "ip": ip,
        "ua": (user_agent or "")[:UA_MAX],
        "request_id": request_id,
    }


def record(client: redis.Redis, stream: str, maxlen: int, fields: dict) -> None:
    """Writes one entry; a failure is logged and counted, never raised."""
    try:
        client.xadd(
            stream,
            {k: "" if v is None else str(v) for k, v in fields.items()},
            maxlen=maxlen or None,
            approximate=True,
        )
    except redis.RedisError as exc:
        write_failures.add()
        log.error("usage entry not written (%s): %s", type(exc).__name__, fields.get("outcome"))


# Readers, for the CLI.


def entry_time(entry_id: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, tz=dt.UTC)


def tail(client: redis.Redis, stream: str, count: int) -> list[tuple[str, dict]]:
    return list(reversed(client.xrevrange(stream, count=count)))


def follow(client: redis.Redis, stream: str, last_id: str = "$") -> Iterator[tuple[str, dict]]:
    while True:
        for _, entries in client.xread({stream: last_id}, block=1000, count=100) or []:
            for entry_id, fields in entries:
                last_id = entry_id
                yield entry_id, fields


def report(client: redis.Redis, stream: str, since: dt.timedelta, by: str) -> list[tuple]:
    """Rows (group, attempts, created) over the window, most attempts first."""
    start = int((time.time() - since.total_seconds()) * 1000)
    attempts: collections.Counter = collections.Counter()
    created: collections.Counter = collections.Counter()
    cursor = f"{start}-0"
    while True:
        batch = client.xrange(stream, min=cursor, count=1000)
        for entry_id, fields in batch:
            group = entry_time(entry_id).date().isoformat() if by == "day" else fields.get(by, "")
            attempts[group] += 1
            created[group] += fields.get("outcome") == "created"
        if len(batch) < 1000:
            break
        cursor = "(" + batch[-1][0]
    return [(group, n, created[group]) for group, n in attempts.most_common()]


def export(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    write,
    claim_idle_ms: int,
    batch: int = 500,
    block_ms: int | None = None,
) -> int:
    """Writes entries as JSON lines through a consumer group, acking each after writing.

    At least once: an entry is acknowledged only after `write` returned, and entries left
    pending by a dead consumer for claim_idle_ms are claimed first. Returns entries written.
    """
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    written = 0
    claim_from = "0-0"
    while True:  # first what others left pending, then our own pending, then new entries
        claim_from, claimed, _ = client.xautoclaim(
            stream, group, consumer, min_idle_time=claim_idle_ms, start_id=claim_from, count=batch
        )
        written += _write_and_ack(client, stream, group, claimed, write)
        if claim_from == "0-0":
            break
    for cursor in ("0", ">"):
        while True:
            reply = client.xreadgroup(
                group, consumer, {stream: cursor}, count=batch, block=block_ms
            )
            entries = reply[0][1] if reply else []
            if not entries:
                break
            written += _write_and_ack(client, stream, group, entries, write)
            if cursor == "0":
                cursor = entries[-1][0]
    return written


def _write_and_ack(client, stream, group, entries, write) -> int:
    written = 0
    for entry_id, fields in entries:
        if fields:  # an entry trimmed away while pending has no fields: ack it only
            write(json.dumps({"id": entry_id, **fields}, separators=(",", ":")) + "\n")
            written += 1
    if entries:
        client.xack(stream, group, *[entry_id for entry_id, _ in entries])
    return written
