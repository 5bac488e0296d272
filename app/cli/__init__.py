"""Operator commands, registered on `flask --app wsgi`."""

from __future__ import annotations

from app.cli.calls import calls_cli
from app.cli.chats import chats_cli
from app.cli.limits import limits_cli
from app.cli.origins import agents_cli, origins_cli, snippet
from app.cli.usage import usage_cli


def init_app(app) -> None:
    for command in (origins_cli, agents_cli, limits_cli, usage_cli, calls_cli, chats_cli, snippet):
        app.cli.add_command(command)
