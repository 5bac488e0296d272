"""usage report and usage export --stream against a real redis-server, both streams seeded
directly (XADD with every field, ids at the entries' own times)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time

import pytest

from app.extensions import redis_store
from app.usage import reports
from app.usage.calls import EVENT_FIELDS
from app.usage.entry import FIELDS

HOUR, DAY = 3_600_000, 86_400_000
A, B = "https://a.com", "https://shop.b.com"
WILD = "https://*.b.com"


def now_ms() -> int:
    return int(time.time() * 1000)


class Streams:
    """Entries for both streams, written in time order by flush() (stream ids must grow)."""

    def __init__(self, redis):
        self.redis, self.pending = redis, []

    def attempt(self, ts, outcome, origin=A, entry=A, agent="agent_a", call_id="", **more):
        fields = dict.fromkeys(FIELDS, "")
        fields.update(ts=str(ts), outcome=outcome, origin=origin, agent_id=agent, call_id=call_id)
        fields["entry"] = entry if outcome not in ("origin_denied", "invalid") else ""
        fields.update(more)
        self.pending.append(("widget:usage", ts, fields))

    def feedback(self, ts, rating, outcome="accepted", call_id="call_1", **where):
        """A feedback attempt on a call (kind feedback), accepted unless said otherwise."""
        self.attempt(ts, outcome, kind="feedback", call_id=call_id, rating=rating, **where)

    def chat(self, ts, chat_id, messages, end="ended", **where):
        """A chat started, and its end entry with its visitor message count."""
        self.attempt(ts, "created", kind="chat", chat_id=chat_id, **where)
        self.attempt(ts + 60_000, end, kind="chat", chat_id=chat_id, messages=str(messages),
                     **where)  # fmt: skip

    def event(self, ts, name, call_id, origin=A, entry=A, agent="agent_a", duration="", cost=""):
        fields = dict.fromkeys(EVENT_FIELDS, "")
        fields.update(ts=str(ts), event=name, call_id=call_id, origin=origin, entry=entry)
        fields.update(agent_id=agent, duration_ms=duration, cost_cents=cost, request_id="req")
        self.pending.append(("widget:call-events", ts, fields))

    def call(self, ts, call_id, duration, cost, **where):
        """A created call, its start, its end and its analysis (where the final cost is)."""
        self.attempt(ts, "created", call_id=call_id, **where)
        self.event(ts + 1000, "call_started", call_id, **where)
        self.event(ts + 1000 + duration, "call_ended", call_id, duration=str(duration), **where)
        self.event(ts + 2000 + duration, "call_analyzed", call_id, cost=cost, **where)

    def flush(self) -> None:
        for stream, ts, fields in sorted(self.pending, key=lambda item: item[1]):
            self.redis.xadd(stream, fields, id=f"{ts}-*")
        self.pending = []


@pytest.fixture
def streams(redis):
    return Streams(redis)


def report(runner, *args) -> list[dict]:
    result = runner.invoke(args=["usage", "report", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_group(rows: list[dict]) -> dict[str, dict]:
    return {row["group"]: row for row in rows}


@pytest.fixture
def seeded(streams):
    """An hour ago: a.com made 2 calls and was refused 3 times; shop.b.com 1 call."""
    t = now_ms() - HOUR
    streams.call(t, "call_1", 90_000, "12.5")
    streams.attempt(t + 10, "rate_limited")
    streams.attempt(t + 20, "rate_limited")
    streams.attempt(t + 30, "busy", agent="agent_b")
    streams.call(t + 100, "call_2", 30_000, "7", agent="agent_b")
    streams.call(t + 200, "call_3", 60_000, "100", origin=B, entry=WILD)
    streams.attempt(t + 300, "origin_denied", origin="https://evil.com")
    streams.flush()
    return t


def test_report_by_origin_counts_attempts_refusals_minutes_and_cost(runner, seeded):
    rows = report(runner)
    assert [row["group"] for row in rows] == [A, B, "https://evil.com"]  # most attempts first
    a = rows[0]
    assert (a["attempts"], a["created"]) == (5, 2)
    assert a["refused"]["rate_limited"] == 2 and a["refused"]["busy"] == 1
    assert a["refused"]["origin_denied"] == 0
    assert set(a["refused"]) >= set(reports.REFUSALS)
    assert a["minutes"] == pytest.approx(2.0)  # 90 s + 30 s
    assert a["cost_usd"] == pytest.approx(0.195)  # 12.5 + 7 cents
    assert rows[1]["minutes"] == pytest.approx(1.0) and rows[1]["cost_usd"] == 1.0
    evil = rows[2]
    assert (evil["attempts"], evil["created"], evil["minutes"], evil["cost_usd"]) == (1, 0, 0, 0)
    assert evil["refused"]["origin_denied"] == 1


def test_report_by_entry_agent_and_outcome(runner, seeded, streams):
    t = seeded
    streams.call(t + 100_000, "call_4", 120_000, "3", origin="https://www.b.com", entry=WILD)
    streams.flush()
    entries = by_group(report(runner, "--by", "entry"))
    assert entries[WILD]["attempts"] == 2 and entries[WILD]["minutes"] == pytest.approx(3.0)
    assert entries[""]["refused"]["origin_denied"] == 1  # a refused origin matched no entry
    origins = by_group(report(runner, "--by", "origin"))
    assert origins[B]["minutes"] == 1.0 and origins["https://www.b.com"]["minutes"] == 2.0

    agents = by_group(report(runner, "--by", "agent"))
    assert agents["agent_b"]["attempts"] == 2 and agents["agent_b"]["refused"]["busy"] == 1
    assert agents["agent_b"]["minutes"] == pytest.approx(0.5)
    assert agents["agent_b"]["cost_usd"] == pytest.approx(0.07)
    assert agents["agent_a"]["minutes"] == pytest.approx(4.5)

    outcomes = by_group(report(runner, "--by", "outcome"))
    assert outcomes["created"]["attempts"] == 4 == outcomes["created"]["created"]
    assert outcomes["created"]["minutes"] == pytest.approx(5.0)  # a call's minutes are created's
    assert outcomes["rate_limited"]["attempts"] == 2
    assert outcomes["rate_limited"]["refused"]["rate_limited"] == 2
    assert outcomes["rate_limited"]["minutes"] == 0


def test_minutes_count_once_per_call_and_the_latest_cost_wins(runner, streams):
    t = now_ms() - HOUR
    streams.attempt(t, "created", call_id="call_1")
    streams.event(t + 60_000, "call_ended", "call_1", duration="60000", cost="10")
    streams.event(t + 61_000, "call_analyzed", "call_1", cost="12.5")
    # settled again later (reconcile, then a late webhook): the last call_ended counts
    streams.event(t + 90_000, "call_ended", "call_1", duration="65000", cost="")
    streams.event(t + 91_000, "transfer_ended", "call_1")
    streams.flush()
    [row] = report(runner)
    assert row["minutes"] == pytest.approx(65_000 / 60_000, abs=1e-4)
    assert row["cost_usd"] == pytest.approx(0.125)  # an empty cost_cents changes nothing


def test_report_by_day_and_month_uses_the_call_ended_date_for_minutes(runner, streams):
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight = int(today.timestamp() * 1000)
    yesterday_late = midnight - 60_000  # 23:59 yesterday: created, ends after midnight
    streams.attempt(midnight - DAY - HOUR, "rate_limited")  # the day before yesterday
    streams.call(yesterday_late, "call_1", 180_000, "30")
    streams.flush()
    if now_ms() < midnight + 200_000:
        pytest.skip("too close to midnight for the events to be in the past")
    days = report(runner, "--by", "day", "--since", "3d")
    names = [row["group"] for row in days]
    day = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()  # noqa: E731
    assert (
        names == sorted(names) == [day(midnight - DAY - HOUR), day(yesterday_late), day(midnight)]
    )
    assert [(r["attempts"], r["created"]) for r in days] == [(1, 0), (1, 1), (0, 0)]
    assert [r["minutes"] for r in days] == [0, 0, 3.0]
    assert days[2]["cost_usd"] == pytest.approx(0.3)

    months = by_group(report(runner, "--by", "month", "--since", "3d"))
    month = today.strftime("%Y-%m")
    assert months[month]["minutes"] == 3.0
    assert sum(row["attempts"] for row in months.values()) == 2


def test_since_window_leaves_out_older_entries_of_both_streams(runner, streams):
    old = now_ms() - 2 * DAY
    streams.call(old, "call_old", 600_000, "500")
    recent = now_ms() - HOUR
    streams.call(recent, "call_new", 60_000, "5")
    streams.flush()
    [row] = report(runner, "--since", "1d")
    assert (row["attempts"], row["minutes"], row["cost_usd"]) == (1, 1.0, 0.05)
    [row] = report(runner, "--since", "3d")
    assert (row["attempts"], row["minutes"], row["cost_usd"]) == (2, 11.0, 5.05)
    assert report(runner, "--since", "30m") == []
    assert runner.invoke(args=["usage", "report", "--since", "1w"]).exit_code != 0


def test_csv_has_a_header_and_one_column_per_refusal(runner, seeded):
    result = runner.invoke(args=["usage", "report", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["origin", "attempts", "created", *reports.REFUSALS, "minutes", "cost_usd",
                       "chats", "messages", "feedback", "feedback_up",
                       "positive_share"]  # fmt: skip
    a = dict(zip(rows[0], rows[1], strict=True))
    assert a["origin"] == A and (a["attempts"], a["created"], a["rate_limited"]) == ("5", "2", "2")
    assert float(a["minutes"]) == 2.0 and float(a["cost_usd"]) == pytest.approx(0.195)
    assert len(rows) == 4  # header, three origins, no total row


def test_table_keeps_attempts_and_created_first_and_adds_the_rest(runner, seeded):
    result = runner.invoke(args=["usage", "report"])  # the defaults: table, origin, 24h
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    columns = ["attempts", "created", "origin_denied", "rate_limited", "busy"]
    assert header.split() == ["origin", *columns, "minutes", "cost_usd"]
    assert lines[0].split() == [A, "5", "2", "0", "2", "1", "2.0", "0.20"]
    assert lines[1].split() == [B, "1", "1", "0", "0", "0", "1.0", "1.00"]
    assert lines[-1].split() == ["total", "7", "3", "1", "2", "1", "3.0", "1.20"]


def test_summarise_reads_in_bounded_batches(app, seeded, monkeypatch):
    counts = []
    original = reports.redis.Redis.xrange

    def spy(self, name, min="-", max="+", count=None):
        counts.append(count)
        return original(self, name, min=min, max=max, count=count)

    monkeypatch.setattr(reports.redis.Redis, "xrange", spy)
    with app.app_context():
        small = reports.summarise(
            redis_store.client, "widget:usage", "widget:call-events", dt.timedelta(days=1),
            "origin", batch=2,
        )  # fmt: skip
    monkeypatch.undo()
    with app.app_context():
        whole = reports.summarise(
            redis_store.client, "widget:usage", "widget:call-events", dt.timedelta(days=1),
            "origin",
        )  # fmt: skip
    assert counts == [2] * 9  # 7 usage entries in 4 reads, 9 call events in 5
    assert [r.as_dict() for r in small] == [r.as_dict() for r in whole]


def test_export_call_events_stream(runner, seeded, redis):
    result = runner.invoke(args=["usage", "export", "--stream", "call-events", "--group", "wh"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == redis.xlen("widget:call-events") == 9
    assert {line["event"] for line in lines} == {"call_started", "call_ended", "call_analyzed"}
    assert redis.xpending("widget:call-events", "wh")["pending"] == 0
    assert not redis.exists("widget:usage") or not redis.xinfo_groups("widget:usage")
    again = runner.invoke(args=["usage", "export", "--stream", "call-events", "--group", "wh"])
    assert again.stdout == ""
    usage = runner.invoke(args=["usage", "export", "--group", "wh"])  # the default stream
    assert len(usage.stdout.splitlines()) == redis.xlen("widget:usage") == 7


def test_chats_and_messages_beside_calls_and_minutes(runner, seeded, streams):
    t = seeded
    streams.chat(t + 1000, "chat_1", 4)
    streams.chat(t + 2000, "chat_2", 7, end="expired")  # nobody ended it: its token did
    streams.attempt(t + 3000, "rate_limited", kind="chat")
    streams.chat(t + 4000, "chat_3", 2, origin=B, entry=WILD)
    streams.flush()
    a, b = by_group(report(runner))[A], by_group(report(runner))[B]
    assert (a["attempts"], a["created"], a["chats"], a["messages"]) == (8, 2, 2, 11)
    assert a["refused"]["rate_limited"] == 3  # calls' and chats' refusals alike
    assert a["minutes"] == pytest.approx(2.0)  # chats have no minutes
    assert (b["attempts"], b["created"], b["chats"], b["messages"]) == (2, 1, 1, 2)
    header, *lines = runner.invoke(args=["usage", "report"]).stdout.splitlines()
    columns = ["attempts", "created", "chats", "origin_denied", "rate_limited", "busy"]
    assert header.split() == ["origin", *columns, "minutes", "messages", "cost_usd"]
    assert lines[0].split() == [A, "8", "2", "2", "0", "3", "1", "2.0", "11", "0.20"]
    assert lines[-1].split() == ["total", "11", "3", "3", "1", "3", "1", "3.0", "13", "1.20"]
    result = runner.invoke(args=["usage", "report", "--format", "csv"])
    rows = list(csv.reader(io.StringIO(result.stdout)))
    a_csv = dict(zip(rows[0], rows[1], strict=True))
    assert (a_csv["chats"], a_csv["messages"]) == ("2", "11")


def test_entries_without_kind_count_as_calls(runner, streams):
    t = now_ms() - HOUR
    streams.attempt(t, "created", call_id="call_old")  # kind "" (written before chats)
    streams.flush()
    [row] = report(runner)
    assert (row["attempts"], row["created"], row["chats"], row["messages"]) == (1, 1, 0, 0)


def test_feedback_per_origin_with_its_positive_share(runner, seeded, streams):
    t = seeded
    for i, rating in enumerate(("up", "up", "down", "up")):
        streams.feedback(t + 1000 + i, rating, call_id=f"call_{i}")
    streams.feedback(t + 2000, "up", outcome="feedback_exists")  # refused: not counted
    streams.feedback(t + 2001, "down", outcome="unknown_call", call_id="call_x")
    streams.feedback(t + 2002, "down", outcome="rate_limited")
    streams.feedback(t + 2003, "up", outcome="origin_denied", origin="https://evil.com")
    streams.feedback(t + 3000, "down", origin=B, entry=WILD, call_id="call_3")
    streams.flush()
    rows = by_group(report(runner))
    a, b, evil = rows[A], rows[B], rows["https://evil.com"]
    assert (a["feedback"], a["feedback_up"], a["positive_share"]) == (4, 3, 0.75)
    assert (b["feedback"], b["feedback_up"], b["positive_share"]) == (1, 0, 0.0)
    assert (evil["feedback"], evil["positive_share"]) == (0, None)
    # Feedback is no attempt: calls, chats and refusals are as they were.
    assert (a["attempts"], a["created"], a["refused"]["rate_limited"]) == (5, 2, 2)
    assert evil["attempts"] == 1 and evil["refused"]["origin_denied"] == 1
    assert "feedback_exists" not in a["refused"] and "unknown_call" not in a["refused"]
    entries = by_group(report(runner, "--by", "entry"))
    assert entries[WILD]["feedback"] == 1 and entries[A]["positive_share"] == 0.75

    header, *lines = runner.invoke(args=["usage", "report"]).stdout.splitlines()
    columns = ["attempts", "created", "origin_denied", "rate_limited", "busy"]
    assert header.split() == ["origin", *columns, "minutes", "cost_usd", "feedback", "positive"]
    assert lines[0].split() == [A, "5", "2", "0", "2", "1", "2.0", "0.20", "4", "75%"]
    assert lines[2].split()[-2:] == ["0", "-"]
    assert lines[-1].split()[-2:] == ["5", "60%"]
    result = runner.invoke(args=["usage", "report", "--format", "csv"])
    header, *values = list(csv.reader(io.StringIO(result.stdout)))
    by_origin = {row[0]: dict(zip(header, row, strict=True)) for row in values}
    assert (by_origin[A]["feedback"], by_origin[A]["positive_share"]) == ("4", "0.75")
    assert by_origin["https://evil.com"]["positive_share"] == ""
    tail = runner.invoke(args=["usage", "tail", "-n", "9"]).stdout
    assert "rating=up" in tail and "rating=down" in tail


def test_without_feedback_the_table_has_no_feedback_columns(runner, seeded):
    header = runner.invoke(args=["usage", "report"]).stdout.splitlines()[0]
    assert "feedback" not in header and "positive" not in header
    [row] = [r for r in report(runner) if r["group"] == A]
    assert (row["feedback"], row["feedback_up"], row["positive_share"]) == (0, 0, None)
