"""flask --app wsgi origins|agents|snippet: the allowlist, agent grants, the embed HTML.

They validate and canonicalise what they write, so the allowlist holds only entries the
gateway can match. Plain redis-cli edits work too (README); `origins check` reports bad ones.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import sys

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from app.extensions import redis_store
from app.policy.admission import AGENT_ID
from app.policy.allowlist import allowlist_problems
from app.policy.origins import InvalidOrigin, canonical_entry

origins_cli = AppGroup("origins", help="The origin allowlist.")
agents_cli = AppGroup(
    "agents", help="Which agents (voice, or chat with --chat) each origin may use."
)


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


def _grants(entry: str, chat: bool) -> str:
    """The key of an entry's voice grants, or of its chat grants."""
    return redis_store.key("chat-agents" if chat else "agents", entry)


def _agent(value: str) -> str:
    if not AGENT_ID.fullmatch(value):
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
    """Stop allowing ORIGINS (and drop their voice and chat grants)."""
    entries = [_entry(o) for o in origins]
    pipe = _redis().pipeline()
    pipe.srem(redis_store.key("origins"), *entries)
    if not keep_agents:
        for grants in (_grants(e, chat) for e in entries for chat in (False, True)):
            pipe.delete(grants)  # one key a DEL: a cluster pipeline takes no multi-key DEL
    removed = pipe.execute()[0]
    click.echo(f"{removed} removed", err=True)


LIMIT_FIELDS = ("per_day", "minutes_per_day", "minutes_per_month", "max_concurrent")
USED_COLUMNS = ("minutes_today", "minutes_month", "live")
CHAT_COLUMNS = ("chat_agents", "chats_per_day")


@origins_cli.command("list")
def origins_list():
    """Allowed origins: agents, budgets in effect, minutes used (UTC day, month), live
    calls, chat agents and the chat cap in effect.

    Columns (tab-separated; the header goes to stderr): entry, agents, per_day,
    minutes_per_day, minutes_per_month, max_concurrent ("-": none), minutes_today,
    minutes_month, live, chat_agents, chats_per_day. One pipeline for every entry.
    """
    entries = sorted(_redis().smembers(redis_store.key("origins")))
    settings = current_app.config["SETTINGS"]
    defaults = (
        settings.rate_limit_per_origin_day,
        settings.minutes_per_origin_day,
        settings.minutes_per_origin_month,
        settings.concurrent_calls_per_origin,
        settings.rate_limit_chats_per_origin_day,
    )
    now = dt.datetime.now(dt.UTC)
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    now_ms = int(now.timestamp() * 1000)
    pipe = _redis().pipeline()
    for entry in entries:
        pipe.smembers(_grants(entry, chat=False))
        pipe.hmget(redis_store.key("limits", entry), (*LIMIT_FIELDS, "chats_per_day"))
        pipe.get(redis_store.key("minutes", "origin", entry, day))
        pipe.get(redis_store.key("minutes", "origin", entry, month))
        pipe.zcount(redis_store.key("live", "origin", entry), f"({now_ms}", "+inf")
        pipe.smembers(_grants(entry, chat=True))
    replies = pipe.execute(raise_on_error=False) if entries else []
    header = ("entry", "agents", *LIMIT_FIELDS, *USED_COLUMNS, *CHAT_COLUMNS)
    click.echo("\t".join(header), err=True)
    for i, entry in enumerate(entries):
        agents, limits, used_day, used_month, live, chat_agents = replies[i * 6 : i * 6 + 6]
        if isinstance(limits, list):
            budgets = [_effective(v, d) for v, d in zip(limits, defaults, strict=True)]
        else:
            budgets = ["?"] * (len(LIMIT_FIELDS) + 1)
        used = [_minutes(used_day), _minutes(used_month), live if isinstance(live, int) else "?"]
        row = [entry, _names(agents, "(no agents)"), *budgets[:-1], *map(str, used)]
        click.echo("\t".join([*row, _names(chat_agents, "-"), budgets[-1]]))


def _names(agents, none: str) -> str:
    if not isinstance(agents, set):
        return "(wrong key type)"
    return ", ".join(sorted(agents)) or none


def _effective(stored: str | None, default: int) -> str:
    """As admission.lua reads it: a stored number overrides (-1 or below: none), else the
    default (0: none)."""
    try:
        override = float(stored) if stored is not None else None
    except ValueError:
        override = None
    if override is not None and math.isfinite(override):  # Lua's tonumber has no nan, inf
        if override < 0:
            return "-"
        return str(int(override)) if override.is_integer() else str(override)
    return str(default) if default > 0 else "-"


def _minutes(counter) -> str:
    """A minute counter (milliseconds reserved and settled) in minutes, 1 decimal."""
    try:
        return f"{int(counter or 0) / 60000:.1f}"
    except (TypeError, ValueError):
        return "?"


@origins_cli.command("check")
def origins_check():
    """Report invalid entries, wrong key types and origins without agents; exit 1 if any."""
    verify = (current_app.config["SETTINGS"].verify_default,
              current_app.extensions["verifier"].readiness())  # fmt: skip
    problems = allowlist_problems(_redis(), redis_store.key, verify)
    for line in problems:
        click.echo(line)
    if problems:
        sys.exit(1)
    click.echo("allowlist ok", err=True)


CHAT_OPTION = click.option(
    "--chat", is_flag=True, help="Chat agents (widget:chat-agents), not voice agents."
)


@agents_cli.command("grant")
@click.argument("origin")
@click.argument("agents", nargs=-1, required=True)
@CHAT_OPTION
def agents_grant(origin, agents, chat):
    """Let ORIGIN use AGENTS (the origin is allowed too); --chat for chat agents."""
    entry = _entry(origin)
    pipe = _redis().pipeline()
    pipe.sadd(redis_store.key("origins"), entry)
    pipe.sadd(_grants(entry, chat), *[_agent(a) for a in agents])
    pipe.execute()
    click.echo(f"{entry}: {', '.join(sorted(_redis().smembers(_grants(entry, chat))))}")


@agents_cli.command("revoke")
@click.argument("origin")
@click.argument("agents", nargs=-1, required=True)
@CHAT_OPTION
def agents_revoke(origin, agents, chat):
    """Stop ORIGIN from using AGENTS; --chat for chat agents."""
    entry = _entry(origin)
    removed = _redis().srem(_grants(entry, chat), *[_agent(a) for a in agents])
    click.echo(f"{removed} revoked", err=True)


@agents_cli.command("list")
@click.argument("origin")
@CHAT_OPTION
def agents_list(origin, chat):
    """Agents ORIGIN may use: voice agents, then chat agents marked "(chat)"; with --chat,
    only the chat agents, unmarked."""
    entry = _entry(origin)
    if not chat:
        for agent in sorted(_redis().smembers(_grants(entry, chat=False))):
            click.echo(agent)
    for agent in sorted(_redis().smembers(_grants(entry, chat=True))):
        click.echo(agent if chat else f"{agent}\t(chat)")


@click.command("snippet")
@with_appcontext
@click.argument("origin")
@click.option("--base-url", required=True, help="Where nginx serves /v1/ and /api/.")
@click.option("--agent", "agent_id", help="Agent id (default: the origin's only agent).")
@click.option("--chat-agent", "chat_agent_id", help="Chat agent (default: the only one, if any).")
def snippet(origin, base_url, agent_id, chat_agent_id):
    """Print the embed HTML for ORIGIN (with "Type instead" when it has a chat agent)."""
    entry = _entry(origin)
    agents = sorted(_redis().smembers(redis_store.key("agents", entry)))
    if agent_id is None and len(agents) != 1:
        raise click.UsageError(f"{entry} has {len(agents)} agents; choose one with --agent")
    agent_id = _agent(agent_id or agents[0])
    if agent_id not in agents:
        click.echo(f"warning: {agent_id} is not granted to {entry} yet", err=True)
    chat_agents = sorted(_redis().smembers(redis_store.key("chat-agents", entry)))
    if chat_agent_id is None and len(chat_agents) > 1:
        raise click.UsageError(
            f"{entry} has {len(chat_agents)} chat agents; choose one with --chat-agent"
        )
    chat_agent_id = _agent(chat_agent_id) if chat_agent_id else "".join(chat_agents)
    if chat_agent_id and chat_agent_id not in chat_agents:
        click.echo(f"warning: chat agent {chat_agent_id} is not granted to {entry} yet", err=True)
    base = base_url.rstrip("/")
    integrity = _integrity(current_app.config["SETTINGS"].widget_manifest)
    js_sri = integrity.get("v1/retell-widget.js", "")
    attr = lambda v: html.escape(v, quote=True)  # noqa: E731
    sri = lambda v: f' integrity="{attr(v)}" crossorigin="anonymous"' if v else ""  # noqa: E731
    chat = f'\n        data-chat-agent-id="{attr(chat_agent_id)}"' if chat_agent_id else ""
    # The site relays live transcripts: show them (the widget's default is off).
    stored = _redis().hget(redis_store.key("limits", entry), "transcript")
    default = current_app.config["SETTINGS"].transcript_default
    if stored == "1" or (stored != "0" and default):
        chat += "\n        data-transcript"
    click.echo(
        f'<script src="{attr(base)}/v1/retell-widget.js"{sri(js_sri)}\n'
        f'        data-proxy-endpoint="{attr(base)}/api/create-web-call"\n'
        f'        data-agent-id="{attr(agent_id)}"{chat} async></script>'
    )


def _integrity(path) -> dict[str, str]:
    try:
        files = json.loads(path.read_text())["files"]
        return {name: info["integrity"] for name, info in files.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
