"""flask --app wsgi usage tail|report|export: reading the usage stream."""

from __future__ import annotations

import datetime as dt
import re
import sys

import click
from flask.cli import AppGroup

from app.extensions import redis_store
from app.usage import reports

usage_cli = AppGroup("usage", help="Read the usage stream.")
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
            fields.get("call_id", "") or "",
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
@click.option(
    "--by",
    type=click.Choice(["origin", "agent", "outcome", "day"]),
    default="origin",
    show_default=True,
)
def usage_report(since, by):
    """Attempts and created calls per origin, agent, outcome or day."""
    field = "agent_id" if by == "agent" else by
    rows = reports.report(_redis(), redis_store.key("usage"), _since(since), field)
    width = max([len(by), *(len(str(r[0]) or "-") for r in rows)])
    click.echo(f"{by:<{width}}  {'attempts':>8}  {'created':>8}")
    for group, attempts, created in rows:
        click.echo(f"{group or '-':<{width}}  {attempts:>8}  {created:>8}")
    click.echo(f"{'total':<{width}}  {sum(r[1] for r in rows):>8}  {sum(r[2] for r in rows):>8}")


@usage_cli.command("export")
@click.option("--group", required=True, help="Consumer group (one per warehouse loader).")
@click.option("--consumer", default="exporter", show_default=True)
@click.option(
    "--claim-idle", default=60, show_default=True, help="Seconds before claiming pending."
)
def usage_export(group, consumer, claim_idle):
    """JSON lines to stdout, at least once, through a consumer group."""

    def write(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    written = reports.export(
        _redis(), redis_store.key("usage"), group, consumer, write, claim_idle * 1000
    )
    click.echo(f"{written} exported", err=True)
