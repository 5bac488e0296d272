"""Reading the usage and call-events streams, for the CLI: tail, follow, report and export."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import json
import time
from collections.abc import Iterator

import redis

from app.usage.entry import END_OUTCOMES, OUTCOMES

# usage report --by: the field each stream's entries are grouped by (day and month: UTC ts).
BY = ("origin", "entry", "agent", "outcome", "day", "month")
FIELD = {"origin": "origin", "entry": "entry", "agent": "agent_id", "outcome": "outcome"}
PERIOD = {"day": "%Y-%m-%d", "month": "%Y-%m"}
REFUSALS = tuple(o for o in OUTCOMES if o != "created")  # every attempt that started nothing
BATCH = 1000


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


def scan(
    client: redis.Redis, stream: str, start_ms: int, batch: int = BATCH
) -> Iterator[tuple[str, dict]]:
    """Entries from start_ms on, oldest first, read in XRANGE batches of `batch`."""
    cursor = f"{start_ms}-0"
    while True:
        entries = client.xrange(stream, min=cursor, count=batch)
        yield from entries
        if len(entries) < batch:
            return
        cursor = "(" + entries[-1][0]


@dataclasses.dataclass
class Row:
    """One group of `usage report`: attempts by outcome (created calls and chats apart),
    settled minutes and cost, the visitor messages of the chats that ended, and the
    feedback taken."""

    group: str
    attempts: int = 0
    created: int = 0  # calls
    chats: int = 0  # chats started
    messages: int = 0  # visitor messages, counted when their chat ended
    feedback: int = 0  # feedback accepted (refused feedback is on the stream only)
    feedback_up: int = 0  # of which thumbs up
    refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    duration_ms: int = 0
    cost_cents: decimal.Decimal = decimal.Decimal(0)

    @property
    def minutes(self) -> float:
        return round(self.duration_ms / 60000, 4)

    @property
    def cost_usd(self) -> float:
        return round(float(self.cost_cents / 100), 6)

    @property
    def positive_share(self) -> float | None:
        """up / (up + down), or None without feedback."""
        return round(self.feedback_up / self.feedback, 4) if self.feedback else None

    def as_dict(self, reasons: tuple[str, ...] = REFUSALS) -> dict:
        return {
            "group": self.group,
            "attempts": self.attempts,
            "created": self.created,
            "refused": {reason: self.refused[reason] for reason in reasons},
            "minutes": self.minutes,
            "cost_usd": self.cost_usd,
            "chats": self.chats,
            "messages": self.messages,
            "feedback": self.feedback,
            "feedback_up": self.feedback_up,
            "positive_share": self.positive_share,
        }


def refusal_reasons(rows: list[Row]) -> tuple[str, ...]:
    """The known refusal outcomes, then any other outcome the rows hold."""
    seen = {reason for row in rows for reason in row.refused}
    return REFUSALS + tuple(sorted(seen - set(REFUSALS)))


def _ts_ms(entry_id: str, fields: dict) -> int:
    try:
        return int(fields.get("ts", ""))
    except ValueError:
        return int(entry_id.split("-")[0])


def _group(by: str, entry_id: str, fields: dict, call_event: bool = False) -> str:
    if by in PERIOD:
        when = dt.datetime.fromtimestamp(_ts_ms(entry_id, fields) / 1000, tz=dt.UTC)
        return when.strftime(PERIOD[by])
    if by == "outcome" and call_event:
        return "created"  # minutes and cost belong to created calls
    return fields.get(FIELD[by], "")


def _duration(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


def _cents(value: str | None) -> decimal.Decimal | None:
    try:
        cents = decimal.Decimal(value or "")
    except decimal.InvalidOperation:
        return None
    return cents if cents.is_finite() and cents >= 0 else None


def summarise(
    client: redis.Redis,
    usage_stream: str,
    events_stream: str,
    since: dt.timedelta,
    by: str,
    batch: int = BATCH,
) -> list[Row]:
    """Rows per group over the window: day and month in order, others most attempts first.

    Attempts, created calls and chats come from the usage stream, messages from its chat
    end entries (in the group of the end), and feedback from its accepted feedback entries
    (which are not attempts). Minutes are each call's last call_ended duration
    and cost its latest cost_cents, both in the group of that call_ended (for day and month,
    its date; a cost without a call_ended in the window goes to the cost event's group).
    Both streams are read in batches; what stays in memory is one counter row per group and
    one small tuple per call that ended or was billed in the window.
    """
    start = int((time.time() - since.total_seconds()) * 1000)
    rows: dict[str, Row] = {}

    def row(group: str) -> Row:
        if group not in rows:
            rows[group] = Row(group)
        return rows[group]

    for entry_id, fields in scan(client, usage_stream, start, batch):
        outcome = fields.get("outcome", "")
        if fields.get("kind") == "feedback":
            if outcome == "accepted":
                target = row(_group(by, entry_id, fields))
                target.feedback += 1
                target.feedback_up += fields.get("rating") == "up"
            continue
        target = row(_group(by, entry_id, fields))
        if outcome in END_OUTCOMES:  # a chat's end: its messages, not an attempt
            target.messages += _duration(fields.get("messages"))
            continue
        target.attempts += 1
        if outcome != "created":
            target.refused[outcome or "unknown"] += 1
        elif fields.get("kind") == "chat":  # entries from before `kind` are calls
            target.chats += 1
        else:
            target.created += 1

    # call id -> (group of its last call_ended, duration_ms, group of its latest cost, cents)
    calls: dict[str, tuple] = {}
    for entry_id, fields in scan(client, events_stream, start, batch):
        ended = fields.get("event") == "call_ended"
        cost = _cents(fields.get("cost_cents"))
        if not ended and cost is None:
            continue
        group = _group(by, entry_id, fields, call_event=True)
        call_id = fields.get("call_id") or entry_id
        ended_group, duration, cost_group, cents = calls.get(call_id, (None, 0, None, None))
        if ended:
            ended_group, duration = group, _duration(fields.get("duration_ms"))
        if cost is not None:
            cost_group, cents = group, cost
        calls[call_id] = (ended_group, duration, cost_group, cents)
    for ended_group, duration, cost_group, cents in calls.values():
        if ended_group is not None:
            row(ended_group).duration_ms += duration
        if cents is not None:
            row(ended_group if ended_group is not None else cost_group).cost_cents += cents

    if by in PERIOD:
        return [rows[group] for group in sorted(rows)]
    return sorted(rows.values(), key=lambda r: (-r.attempts, -r.duration_ms, r.group))


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
