"""flask --app wsgi chats sweep: close the chats nobody ended (the tab was closed).

Each chat start already closes a few expired chats in its own round trip; run this from
cron (e.g. every 15 minutes) so every chat gets its end entry, with its message count, even
on a quiet site, and Retell hears end-chat for it.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from app.extensions import chat_client
from app.retell.upstream import UpstreamFailure

chats_cli = AppGroup("chats", help="Chats started through this gateway.")
BATCH = 100


@chats_cli.command("sweep")
@click.option("--limit", default=10_000, show_default=True, help="At most this many chats.")
def chats_sweep(limit):
    """Close chats whose token expired: an end entry each, then Retell's end-chat."""
    ledger = current_app.extensions["chats"]
    closed: list[str] = []
    more = True
    while more and len(closed) < limit:
        swept, more = ledger.sweep("sweep", min(BATCH, limit - len(closed)))
        closed += swept
    failed = 0
    for chat_id in closed:
        try:
            chat_client.end_chat(chat_id)
        except UpstreamFailure as exc:
            failed += 1
            click.echo(f"{chat_id}: closed here; Retell's end-chat failed ({exc.kind})")
        else:
            click.echo(f"{chat_id}: closed")
    click.echo(f"{len(closed)} closed, {failed} not ended upstream", err=True)
