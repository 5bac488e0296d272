"""flask --app wsgi usage tail|report|export|replay: reading the usage and call-events
streams, and applying the usage spool."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from app.extensions import redis_store
from app.usage import reports

usage_cli = AppGroup("usage", help="Read the usage and call-events streams; replay the spool.")
DURATION = re.compile(r"([0-9]+)([smhd])")


def _redis():
    return redis_store.client


def _since(value: str) -> dt.timedelta:
    match = DURATION.fullmatch(value)
    if not match:
        raise click.BadParameter("use e.g. 30m, 24h, 7d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
    return dt.timedelta(**{unit: int(match[1])})


def _line(entry_id: str, fields: dict) -> str:
    when = reports.entry_time(entry_id).strftime("%Y-%m-%d %H:%M:%S")
    return "  ".join(
        [
            when,
            f"{fields.get('outcome', ''):<14}",
            f"{fields.get('status', ''):<3}",
            f"{fields.get('origin', '') or '-':<32}",
            fields.get("agent_id", "") or "-",
            fields.get("call_id", "") or fields.get("chat_id", "") or "",
            f"messages={fields['messages']}" if fields.get("messages") else "",
            f"rating={fields['rating']}" if fields.get("rating") else "",
        ]
    ).rstrip()


@usage_cli.command("tail")
@click.option("-n", "count", default=20, show_default=True, help="How many recent entries.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new entries.")
def usage_tail(count, follow):
    """Recent usage entries, oldest first."""
    stream = redis_store.key("usage")
    last = "$"
    for entry_id, fields in reports.tail(_redis(), stream, count):
        click.echo(_line(entry_id, fields))
        last = entry_id
    if follow:
        for entry_id, fields in reports.follow(_redis(), stream, last):
            click.echo(_line(entry_id, fields))


@usage_cli.command("report")
@click.option("--since", default="24h", show_default=True, help="Window, e.g. 30m, 24h, 7d.")
@click.option("--by", type=click.Choice(reports.BY), default="origin", show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def usage_report(since, by, fmt):
    """Attempts, created calls, chats, refusals, settled minutes, cost, chat messages and
    feedback per group."""
    rows = reports.summarise(
        _redis(), redis_store.key("usage"), redis_store.key("call-events"), _since(since), by
    )
    reasons = reports.refusal_reasons(rows)
    if fmt == "json":
        click.echo(json.dumps([row.as_dict(reasons) for row in rows], indent=2))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([by, "attempts", "created", *reasons, "minutes", "cost_usd", "chats",
                         "messages", "feedback", "feedback_up", "positive_share"])  # fmt: skip
        for row in rows:
            refused = [row.refused[reason] for reason in reasons]
            share = "" if row.positive_share is None else row.positive_share
            writer.writerow([row.group, row.attempts, row.created, *refused, row.minutes,
                             row.cost_usd, row.chats, row.messages, row.feedback,
                             row.feedback_up, share])  # fmt: skip
        click.echo(out.getvalue(), nl=False)
    else:
        _table(by, rows, [r for r in reasons if any(row.refused[r] for row in rows)])


def _table(by: str, rows: list, reasons: list[str]) -> None:
    """attempts and created first (as before), chats when there were any, the refusals
    seen, then minutes, messages (with chats) and cost; feedback and its positive share
    last, when there was any."""
    total = reports.Row("total")
    for row in rows:
        total.attempts += row.attempts
        total.created += row.created
        total.chats += row.chats
        total.messages += row.messages
        total.feedback += row.feedback
        total.feedback_up += row.feedback_up
        total.refused.update(row.refused)
        total.duration_ms += row.duration_ms
        total.cost_cents += row.cost_cents
    chats = bool(total.chats or total.messages)
    feedback = bool(total.feedback)
    headers = ["attempts", "created", *(["chats"] if chats else []), *reasons, "minutes",
               *(["messages"] if chats else []), "cost_usd",
               *(["feedback", "positive"] if feedback else [])]  # fmt: skip

    def cells(row) -> list[str]:
        refused = [str(row.refused[reason]) for reason in reasons]
        minutes = f"{row.duration_ms / 60000:.1f}"
        cost = f"{row.cost_cents / 100:.2f}"
        share = "-" if row.positive_share is None else f"{row.positive_share:.0%}"
        rated = [str(row.feedback), share] if feedback else []
        if not chats:
            return [str(row.attempts), str(row.created), *refused, minutes, cost, *rated]
        return [str(row.attempts), str(row.created), str(row.chats), *refused, minutes,
                str(row.messages), cost, *rated]  # fmt: skip

    lines = [[by, *headers], *([row.group or "-", *cells(row)] for row in [*rows, total])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        first = f"{line[0]:<{widths[0]}}"
        rest = (f"{c:>{w}}" for c, w in zip(line[1:], widths[1:], strict=True))
        click.echo("  ".join([first, *rest]))


@usage_cli.command("export")
@click.option("--group", required=True, help="Consumer group (one per warehouse loader).")
@click.option("--consumer", default="exporter", show_default=True)
@click.option(
    "--claim-idle", default=60, show_default=True, help="Seconds before claiming pending."
)
@click.option(
    "--stream",
    type=click.Choice(["usage", "call-events"]),
    default="usage",
    show_default=True,
    help="Which stream: create-web-call attempts or webhook call events.",
)
def usage_export(group, consumer, claim_idle, stream):
    """JSON lines to stdout, at least once, through a consumer group."""

    def write(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    written = reports.export(
        _redis(), redis_store.key(stream), group, consumer, write, claim_idle * 1000
    )
    click.echo(f"{written} exported", err=True)


@usage_cli.command("replay")
def usage_replay():
    """Apply the usage spool (USAGE_SPOOL_DIR): records Redis could not take, each once.
    Exit status 1 while lines remain (Redis still unavailable)."""
    spool = current_app.extensions["spool"]
    if spool.directory is None:
        raise click.ClickException("USAGE_SPOOL_DIR is not set")
    done = spool.replay()
    click.echo(
        f"{done.applied} applied, {done.duplicate} already there, {done.kept} kept "
        f"(Redis unavailable), {done.rejected} rejected; {spool.pending()} pending"
    )
    if done.kept:
        sys.exit(1)
