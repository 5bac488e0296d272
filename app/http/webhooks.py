"""POST /api/retell-webhook: Retell tells us how each call went; we settle what it cost.

Set it as the webhook URL of the Retell account (or of the agents the widgets use).
Signed with the API key (app/retell/webhooks.py); 204 for anything verified, 401 for a
bad signature (nothing recorded), 503 while Redis is down so that Retell retries.
"""

from __future__ import annotations

import json
import logging
import time

import redis
from flask import Blueprint, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from app import metrics
from app.errors import ApiError
from app.retell import webhooks
from app.retell.calls import CALL_ID

bp = Blueprint("webhooks", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024  # a call object carries its whole transcript
# Events that change what a call cost; Retell sends more (transcript_updated, ...).
USED_EVENTS = ("call_started", "call_ended", "call_analyzed", "transfer_ended")


@bp.post("/retell-webhook")
def retell_webhook():
    raw = _raw_body()
    key = current_app.config["SETTINGS"].retell_api_key.reveal()
    if not webhooks.verify(raw, request.headers.get("X-Retell-Signature"), key, _now_ms()):
        log.warning("webhook refused: missing, invalid or stale signature")
        metrics.webhook("unverified", "invalid_signature")
        raise ApiError(401, "invalid_signature", "The signature is missing, invalid or stale.")
    event, call = _event(raw)
    if event not in USED_EVENTS:
        metrics.webhook("other", "ignored")  # any event name: a label with few values
        return "", 204
    call_id = call.get("call_id")
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise ApiError(400, "invalid_request", "call.call_id is missing or malformed.")
    values = webhooks.call_values(event, call)
    try:
        outcome = current_app.extensions["ledger"].event(
            call_id, event, {**values, "request_id": g.request_id}
        )
    except redis.RedisError as exc:
        log.error("webhook not settled, redis unavailable: %s", type(exc).__name__)
        metrics.webhook(event, "unavailable")
        metrics.redis_error()
        raise ApiError(503, "unavailable", "The service is temporarily unavailable.") from None
    log.info("webhook %s for %s: %s", event, call_id, outcome)
    metrics.webhook(event, outcome)
    return "", 204


def _now_ms() -> int:
    return int(time.time() * 1000)


def _raw_body() -> bytes:
    request.max_content_length = MAX_WEBHOOK_BYTES
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(413, "payload_too_large", "The body is larger than 1 MiB.") from None


def _event(raw: bytes) -> tuple[str, dict]:
    """(event, call) from {"event", "call"}, or the older {"event_type", "data"}."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    except RecursionError:
        raise ApiError(400, "invalid_request", "The body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    event = body.get("event", body.get("event_type"))
    call = body.get("call", body.get("data"))
    if not isinstance(event, str) or not isinstance(call, dict):
        raise ApiError(400, "invalid_request", "Expected {event, call}.")
    return event, call
