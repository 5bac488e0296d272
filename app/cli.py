"""Operator commands: flask --app wsgi origins|agents|snippet|usage ...

They validate and canonicalise what they write, so the allowlist holds only entries the
gateway can match. Plain redis-cli edits work too (README); `origins check` reports bad ones.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import sys

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from app import usage
from app.admission import allowlist_problems
from app.api import AGENT_ID
from app.extensions import redis_store
from app.origins import InvalidOrigin, canonical_entry

origins_cli = AppGroup("origins", help="The origin allowlist.")
agents_cli = AppGroup("agents", help="Which agents each origin may use.")
usage_cli = AppGroup("usage", help="Read the usage stream.")
DURATION = re.compile(r"^(\d+)([smhd])$")


def _redis():
    return redis_store.client


def _entry(value: str) -> str:
    try:
        entry = canonical_entry(value)
    except InvalidOrigin as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from None
    settings = current_app.config["SETTINGS"]
    if entry.startswith("http://") and settings.production and not settings.allow_insecure_origins:
        click.echo(f"warning: {entry} is http:// and production refuses it", err=True)
    return entry


def _agent(value: str) -> str:
    if not AGENT_ID.match(value):
        raise click.BadParameter(f"{value!r}: 1-128 of A-Z a-z 0-9 _ -")
    return value


@origins_cli.command("add")
@click.argument("origins", nargs=-1, required=True)
def origins_add(origins):
    """Allow ORIGINS (https://site.com or https://*.site.com)."""
    entries = [_entry(o) for o in origins]
    added = _redis().sadd(redis_store.key("origins"), *entries)
    for entry in entries:
        click.echo(entry)
    click.echo(f"{added} added", err=True)


@origins_cli.command("remove")
@click.argument("origins", nargs=-1, required=True)
@click.option("--keep-agents", is_flag=True, help="Keep the origin's agent grants.")
def origins_remove(origins, keep_agents):
    """Stop allowing ORIGINS (and drop their grants)."""
    entries = [_entry(o) for o in origins]
    pipe = _redis().pipeline()
    pipe.srem(redis_store.key("origins"), *entries)
    if not keep_agents:
        pipe.delete(*[redis_store.key("agents", e) for e in entries])
    removed = pipe.execute()[0]
    click.echo(f"{removed} removed", err=True)


@origins_cli.command("list")
def origins_list():
    """Allowed origins with their agents."""
    entries = sorted(_redis().smembers(redis_store.key("origins")))
    pipe = _redis().pipeline()
    for entry in entries:
        pipe.smembers(redis_store.key("agents", entry))
    for entry, agents in zip(entries, pipe.execute(raise_on_error=False), strict=True):
        names = ", ".join(sorted(agents)) if isinstance(agents, set) else "(wrong key type)"
        click.echo(f"{entry}\t{names or '(no agents)'}")


@origins_cli.command("check")
def origins_check():
    """Report invalid entries, wrong key types and origins without agents; exit 1 if any."""
    problems = allowlist_problems(_redis(), redis_store.key)
    for line in problems:
        click.echo(line)
    if problems:
        sys.exit(1)
    click.echo("allowlist ok", err=True)


@agents_cli.command("grant")
@click.argument("origin")
@click.argument("agents", nargs=-1, required=True)
def agents_grant(origin, agents):
    """Let ORIGIN use AGENTS (the origin is allowed too)."""
    entry = _entry(origin)
    pipe = _redis().pipeline()
    pipe.sadd(redis_store.key("origins"), entry)
    pipe.sadd(redis_store.key("agents", entry), *[_agent(a) for a in agents])
    pipe.execute()
    click.echo(f"{entry}: {', '.join(sorted(_redis().smembers(redis_store.key('agents', entry))))}")


@agents_cli.command("revoke")
@click.argument("origin")
@click.argument("agents", nargs=-1, required=True)
def agents_revoke(origin, agents):
    """Stop ORIGIN from using AGENTS."""
    entry = _entry(origin)
    removed = _redis().srem(redis_store.key("agents", entry), *[_agent(a) for a in agents])
    click.echo(f"{removed} revoked", err=True)


@agents_cli.command("list")
@click.argument("origin")
def agents_list(origin):
    """Agents ORIGIN may use."""
    for agent in sorted(_redis().smembers(redis_store.key("agents", _entry(origin)))):
        click.echo(agent)


@click.command("snippet")
@with_appcontext
@click.argument("origin")
@click.option("--base-url", required=True, help="Where nginx serves /v1/ and /api/.")
@click.option("--agent", "agent_id", help="Agent id (default: the origin's only agent).")
def snippet(origin, base_url, agent_id):
    """Print the embed HTML for ORIGIN."""
    entry = _entry(origin)
    agents = sorted(_redis().smembers(redis_store.key("agents", entry)))
    if agent_id is None and len(agents) != 1:
        raise click.UsageError(f"{entry} has {len(agents)} agents; choose one with --agent")
    agent_id = _agent(agent_id or agents[0])
    if agent_id not in agents:
        click.echo(f"warning: {agent_id} is not granted to {entry} yet", err=True)
    base = base_url.rstrip("/")
    integrity = _integrity(current_app.config["SETTINGS"].widget_manifest)
    css_sri = integrity.get("v1/retell-widget.css", "")
    js_sri = integrity.get("v1/retell-widget.js", "")
    attr = lambda v: html.escape(v, quote=True)  # noqa: E731
    sri = lambda v: f' integrity="{attr(v)}" crossorigin="anonymous"' if v else ""  # noqa: E731
    click.echo(f'<link rel="stylesheet" href="{attr(base)}/v1/retell-widget.css"{sri(css_sri)}>')
    click.echo(
        f'<script src="{attr(base)}/v1/retell-widget.js"{sri(js_sri)}\n'
        f'        data-proxy-endpoint="{attr(base)}/api/create-web-call"\n'
        f'        data-agent-id="{attr(agent_id)}" async></script>'
    )


def _integrity(path) -> dict[str, str]:
    try:
        files = json.loads(path.read_text())["files"]
        return {name: info["integrity"] for name, info in files.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _since(value: str) -> dt.timedelta:
    match = DURATION.match(value)
    if not match:
        raise click.BadParameter("use e.g. 30m, 24h, 7d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
    return dt.timedelta(**{unit: int(match[1])})


def _line(entry_id: str, fields: dict) -> str:
    when = usage.entry_time(entry_id).strftime("%Y-%m-%d %H:%M:%S")
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
    for entry_id, fields in usage.tail(_redis(), stream, count):
        click.echo(_line(entry_id, fields))
        last = entry_id
    if follow:
        for entry_id, fields in usage.follow(_redis(), stream, last):
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
    rows = usage.report(_redis(), redis_store.key("usage"), _since(since), field)
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

    written = usage.export(
        _redis(), redis_store.key("usage"), group, consumer, write, claim_idle * 1000
    )
    click.echo(f"{written} exported", err=True)


def init_app(app) -> None:
    for command in (origins_cli, agents_cli, usage_cli, snippet):
        app.cli.add_command(command)
