"""flask --app wsgi calls reconcile: settle calls whose call_ended webhook never came.

A call with no webhook keeps its whole reservation (safe: its minutes and its live slot
stay taken). Once its reservation has run out, Retell's get-call says how it really went.
"""

from __future__ import annotations

import time

import click
from flask import current_app
from flask.cli import AppGroup

from app.extensions import redis_store, retell_client
from app.retell import webhooks
from app.retell.calls import AGENT_NOT_FOUND, UpstreamFailure

calls_cli = AppGroup("calls", help="Calls minted by this gateway.")
ENDED = ("ended", "error", "not_connected")


@calls_cli.command("reconcile")
@click.option("--limit", default=500, show_default=True, help="At most this many calls.")
def calls_reconcile(limit):
    """Settle calls older than their reservation from Retell's get-call."""
    ledger = current_app.extensions["ledger"]
    now_ms = int(time.time() * 1000)
    due = redis_store.client.zrangebyscore(
        redis_store.key("calls", "open"), "-inf", now_ms, start=0, num=limit
    )
    settled = waiting = failed = 0
    for call_id in due:
        try:
            call = retell_client.get_call(call_id)
        except UpstreamFailure as exc:
            if exc.kind != AGENT_NOT_FOUND:
                click.echo(f"{call_id}: Retell did not answer ({exc.kind}); try again later")
                failed += 1
                continue
            call = {"call_status": "ended", "disconnection_reason": "unknown_to_retell"}
        if call.get("call_status") not in ENDED and "end_timestamp" not in call:
            click.echo(f"{call_id}: still {call.get('call_status', 'unknown')}")
            waiting += 1
            continue
        values = webhooks.call_values("call_ended", {**call, "call_id": call_id})
        outcome = ledger.event(call_id, "call_ended", {**values, "request_id": "reconcile"})
        click.echo(f"{call_id}: {outcome}")
        settled += outcome == "accepted"
    click.echo(f"{settled} settled, {waiting} still live, {failed} unanswered", err=True)
    if failed:
        raise SystemExit(1)
