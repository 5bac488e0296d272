"""Prometheus metrics: what the gateway counts, and GET /metrics.

Under gunicorn, prometheus_client runs in multiprocess mode: deploy/gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before any worker starts, each worker writes its values to files
there, and /metrics adds every worker's up (the config drops a dead worker's live gauges).
Without it (tests, `flask run`, the CLI) the values are this process's own.

Nothing here costs a Redis round trip on the request path: counters and histograms are
local. The gauges that live in Redis (calls and chats live now) are read once per scrape.
METRICS_ENABLED=0 turns every count into a no-op and /metrics into a 404 (for comparing
the cost, bench/).
"""

from __future__ import annotations

import ipaddress
import logging
import time

import redis
from flask import Flask, Response, current_app, g, has_request_context, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from app.errors import UPSTREAM_ERRORS

log = logging.getLogger(__name__)
MULTIPROCESS = values.ValueClass is not values.MutexValue  # chosen at import, from the env

CREATE_ATTEMPTS = Counter(
    "widget_create_attempts", "create-web-call attempts, by outcome (the usage stream's)",
    ["outcome"],
)  # fmt: skip
CHAT_ATTEMPTS = Counter(
    "widget_chat_attempts", "Chat starts (POST /api/chat), by outcome (the usage stream's)",
    ["outcome"],
)  # fmt: skip
CHAT_MESSAGES = Counter(
    "widget_chat_messages", "Visitor chat messages, by outcome: sent, or the error code",
    ["outcome"],
)  # fmt: skip
UPSTREAM = Histogram(
    "widget_upstream_seconds", "Retell API requests, by endpoint and HTTP status (or "
    "timeout, unreachable)", ["api", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 15, 30, 60, 120, 300),
)  # fmt: skip
ADMISSION = Histogram(
    "widget_admission_seconds", "The admission round trip (one Redis script), by kind",
    ["kind"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)  # fmt: skip
REDIS_ERRORS = Counter(
    "widget_redis_errors", "Requests (and background writes) that met a Redis error"
)
USAGE_WRITE_FAILURES = Counter(
    "widget_usage_write_failures", "Usage entries and call or chat records Redis did not take"
)
WEBHOOK_EVENTS = Counter(
    "widget_webhook_events", "Retell webhooks, by event and outcome (accepted, duplicate, "
    "unknown, ignored, invalid_signature, unavailable)", ["event", "outcome"],
)  # fmt: skip
SPOOL_WRITES = Counter(
    "widget_spool_writes", "Records written to the usage spool (spooled) or lost (neither "
    "Redis nor the spool took them)", ["result"],
)  # fmt: skip
SPOOL_REPLAYED = Counter(
    "widget_spool_replayed", "Spooled records replayed: applied, duplicate (already in "
    "Redis) or rejected (kept in rejected.jsonl)", ["result"],
)  # fmt: skip
TRANSCRIPT_RELAYS = Gauge(
    "widget_transcript_relays", "Retell monitor sockets held (live transcripts being relayed)",
    multiprocess_mode="livesum",
)  # fmt: skip
TRANSCRIPT_LISTENERS = Gauge(
    "widget_transcript_listeners", "Browsers following a live transcript",
    multiprocess_mode="livesum",
)  # fmt: skip
# Read from Redis and the spool directory at scrape time (Scraped below).
SCRAPED = {
    "widget_live_calls": "Minted calls not settled yet whose reservation has not run out",
    "widget_live_chats": "Chats not ended whose token has not expired",
    "widget_spool_pending": "Spooled records on this host waiting for Redis",
}

# An answer's error code -> the attempt's outcome, in the usage stream's words (entry.py).
ATTEMPT_OUTCOMES = {
    "origin_not_allowed": "origin_denied", "agent_not_allowed": "agent_denied",
    "invalid_request": "invalid", "invalid_json": "invalid",
    "unsupported_media_type": "invalid", "payload_too_large": "invalid",
    "rate_limited": "rate_limited", "budget_exhausted": "budget_exhausted", "busy": "busy",
    "verification_required": "verification_required",
    "verification_failed": "verification_failed",
    "verification_unavailable": "verification_unavailable",
    "unavailable": "unavailable", "internal_error": "unavailable",
    **{code: "upstream_error" for _, code, _ in UPSTREAM_ERRORS.values()},
}  # fmt: skip
# Routes counted after each answer (POST only): endpoint -> (counter, outcome on success).
COUNTED = {
    "calls.create_web_call": (CREATE_ATTEMPTS, "created"),
    "chat.start_chat": (CHAT_ATTEMPTS, "created"),
    "chat.send_message": (CHAT_MESSAGES, "sent"),
}
_enabled = True
_children: dict[tuple, object] = {}  # .labels() costs ~2 us a call; the same few repeat


def _child(metric, *labels):
    child = _children.get((metric, labels))
    if child is None:
        child = _children.setdefault((metric, labels), metric.labels(*labels))
    return child


def enabled() -> bool:
    return _enabled


def upstream(api: str, status: str, seconds: float) -> None:
    """One Retell request: api is the endpoint's name, status its HTTP status or why not."""
    if _enabled:
        _child(UPSTREAM, api, status).observe(seconds)


def admission(kind: str, seconds: float) -> None:
    if _enabled:
        _child(ADMISSION, kind).observe(seconds)


def redis_error() -> None:
    """Once per request however many steps saw it; each time outside a request."""
    if not _enabled:
        return
    if has_request_context():
        if g.get("_redis_error_counted"):
            return
        g._redis_error_counted = True
    REDIS_ERRORS.inc()


def usage_write_failed() -> None:
    if _enabled:
        USAGE_WRITE_FAILURES.inc()
        redis_error()


def webhook(event: str, outcome: str) -> None:
    if _enabled:
        _child(WEBHOOK_EVENTS, event, outcome).inc()


def spool_written(result: str) -> None:
    if _enabled:
        SPOOL_WRITES.labels(result).inc()


def spool_replayed(result: str, count: int = 1) -> None:
    if _enabled and count:
        SPOOL_REPLAYED.labels(result).inc(count)


def gauge_add(gauge: Gauge, amount: int) -> None:
    if _enabled:
        gauge.inc(amount)


class Scraped:
    """The gauges read at scrape time: Redis (one pipeline) and the local spool."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        from app.extensions import redis_store  # the app's client, set by init_app

        found = {name: GaugeMetricFamily(name, text) for name, text in SCRAPED.items()}
        now_ms = int(time.time() * 1000)
        try:
            with redis_store.client.pipeline(transaction=False) as pipe:
                pipe.zcount(redis_store.key("calls", "open"), now_ms, "+inf")
                pipe.zcount(redis_store.key("chats", "live"), now_ms, "+inf")
                calls, chats = pipe.execute()
            found["widget_live_calls"].add_metric([], calls)
            found["widget_live_chats"].add_metric([], chats)
        except redis.RedisError as exc:  # the scrape still answers, without these two
            log.warning("metrics: live counts not read (%s)", type(exc).__name__)
            redis_error()
        spool = self.app.extensions.get("spool")
        if spool is not None and spool.directory is not None:
            found["widget_spool_pending"].add_metric([], spool.pending())
        yield from (family for family in found.values() if family.samples)


def _allowed(address: str | None, networks) -> bool:
    """A unix-socket peer (no address) is on this host; else the address must be listed."""
    if not address:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def metrics_page():
    settings = current_app.config["SETTINGS"]
    if not _allowed(request.remote_addr, settings.metrics_allow_from):
        return Response("forbidden\n", 403, mimetype="text/plain")
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(current_app.extensions["metrics_scraped"])
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY) + generate_latest(current_app.extensions["metrics_only"])
    # The classic text format: what every Prometheus 2 and 3 reads (Debian 12 has 2.42).
    headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"}
    return Response(body, 200, headers)


def init_app(app: Flask) -> None:
    global _enabled
    settings = app.config["SETTINGS"]
    _enabled = settings.metrics_enabled
    if not _enabled:
        return
    scraped = app.extensions["metrics_scraped"] = Scraped(app)
    only = app.extensions["metrics_only"] = CollectorRegistry()  # the scraped, single-process
    only.register(scraped)
    app.add_url_rule("/metrics", "metrics", metrics_page, methods=["GET"])

    @app.after_request
    def count_answer(response):
        counted = COUNTED.get(request.endpoint)
        if counted is None or request.method != "POST":
            return response
        counter, success = counted
        if response.status_code < 400:
            outcome = success
        else:
            code = g.get("error_code", "")
            outcome = ATTEMPT_OUTCOMES.get(code, "unavailable") if success == "created" else code
        _child(counter, outcome or "error").inc()
        return response
