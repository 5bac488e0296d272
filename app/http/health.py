"""GET /api/health (the process answers) and /api/health/ready (it can serve calls)."""

from __future__ import annotations

import datetime as dt

import redis
from flask import Blueprint, current_app, jsonify

from app import metrics
from app.extensions import redis_store
from app.http import cors
from app.usage import replicas, stream

bp = Blueprint("health", __name__, url_prefix="/api")


def _iso(ms) -> str | None:
    try:
        when = dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.UTC)
    except (TypeError, ValueError):
        return None
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


@bp.get("/health")
@cors.public
def health():
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return jsonify({"status": "ok", "timestamp": now})


@bp.get("/health/ready")
@cors.public
def ready():
    settings = current_app.config["SETTINGS"]
    components = {}
    last_webhook = None
    try:
        last_webhook = redis_store.client.get(redis_store.key("webhooks", "last"))
        components["redis"] = {"status": "ok"}
    except redis.RedisError as exc:
        components["redis"] = {"status": "error", "detail": type(exc).__name__}
        metrics.redis_error()
    components["retell"] = (
        {"status": "ok", "api_version": settings.retell_api_version}
        if settings.retell_api_key
        else {"status": "error", "detail": "RETELL_API_KEY is not set"}
    )
    components["usage_stream"] = {"status": "ok", "write_failures": stream.write_failures.count}
    # Where records go while Redis is away: unwritable is an error (they would be lost).
    components["spool"] = current_app.extensions["spool"].status()
    if settings.redis_wait_replicas:  # records WAIT saw on fewer replicas than asked (logged)
        components["redis"]["wait_shortfalls"] = replicas.shortfalls.count
    if settings.spend_limited or last_webhook:
        # Budgets and caps are settled by webhooks: say when one last arrived (never fatal).
        components["webhooks"] = {"status": "ok", "last_received": _iso(last_webhook)}
    healthy = all(c["status"] == "ok" for c in components.values())
    body = {"status": "ok" if healthy else "unavailable", "components": components}
    return jsonify(body), 200 if healthy else 503
