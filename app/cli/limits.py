"""flask --app wsgi limits set|unset|show: an entry's or an agent's own limits, budgets,
cap and verification, in widget:limits:<entry> (or widget:limits:agent:<id>).

The same hash operators may edit with redis-cli (README); these commands check names and
values first, so a typo never silently means "the default".
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from app.cli.origins import _agent, _entry
from app.extensions import redis_store
from app.policy.verify import PROVIDERS

limits_cli = AppGroup("limits", help="Per-site and per-agent limits, budgets and checks.")
NUMBERS = ("per_day", "minutes_per_day", "minutes_per_month", "max_concurrent", "chats_per_day")
AGENT_FIELDS = ("per_day", "minutes_per_day", "minutes_per_month", "chats_per_day")
CHECKS = ("none", *PROVIDERS)


def _key(target: str, agent: bool) -> tuple[str, tuple[str, ...]]:
    if agent:
        return redis_store.key("limits", "agent", _agent(target)), AGENT_FIELDS
    return redis_store.key("limits", _entry(target)), (*NUMBERS, "verify", "transcript")


def _value(field: str, value: str) -> str:
    if field == "transcript":  # the live transcript relay: on (1) or off (0)
        if value not in ("0", "1"):
            raise click.BadParameter("transcript must be 1 (on) or 0 (off)")
        return value
    if field == "verify":
        if value not in CHECKS:
            raise click.BadParameter(f"verify must be one of {', '.join(CHECKS)}")
        if not current_app.extensions["verifier"].ready(value):
            click.echo(f"warning: {value} is not configured here: calls will be refused", err=True)
        return value
    try:
        number = int(value)
    except ValueError:
        number = -2
    if number < -1:
        raise click.BadParameter(f"{field} must be a whole number >= 0, or -1 for none")
    return str(number)


@limits_cli.command("set")
@click.argument("target")
@click.argument("settings", nargs=-1, required=True)
@click.option("--agent", is_flag=True, help="TARGET is an agent id, not an allowlist entry.")
def limits_set(target, settings, agent):
    """Set FIELD=VALUE on TARGET: per_day, minutes_per_day, minutes_per_month,
    max_concurrent, chats_per_day (N >= 0; 0 pauses; -1 none), verify
    (none|pow|turnstile|...) and transcript (1|0)."""
    key, fields = _key(target, agent)
    mapping = {}
    for setting in settings:
        field, sep, value = setting.partition("=")
        if not sep or field not in fields:
            raise click.BadParameter(f"{setting!r}: expected FIELD=VALUE, FIELD one of {fields}")
        mapping[field] = _value(field, value.strip())
    redis_store.client.hset(key, mapping=mapping)
    _show(key)


@limits_cli.command("unset")
@click.argument("target")
@click.argument("fields", nargs=-1, required=True)
@click.option("--agent", is_flag=True, help="TARGET is an agent id, not an allowlist entry.")
def limits_unset(target, fields, agent):
    """Drop FIELDS from TARGET: the defaults from the environment apply again."""
    key, known = _key(target, agent)
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r}: expected one of {known}")
    redis_store.client.hdel(key, *fields)
    _show(key)


@limits_cli.command("show")
@click.argument("target")
@click.option("--agent", is_flag=True, help="TARGET is an agent id, not an allowlist entry.")
def limits_show(target, agent):
    """TARGET's own settings (unset fields use the defaults)."""
    _show(_key(target, agent)[0])


def _show(key: str) -> None:
    stored = redis_store.client.hgetall(key)
    for field, value in sorted(stored.items()):
        click.echo(f"{field}\t{value}")
    if not stored:
        click.echo("(nothing set: the defaults apply)", err=True)
