"""Reading the usage stream, for the CLI: tail, follow, report and export."""

from __future__ import annotations

import collections
import datetime as dt
import json
import time
from collections.abc import Iterator

import redis


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
