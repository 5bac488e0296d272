"""GET /api/calls/<call_id>/transcript: a call's live transcript as Server-Sent Events.

    retry: 3000
    id: <stream id>            (resume: EventSource sends it back as Last-Event-ID)
    event: transcript
    data: {"id": "...", "role": "agent" | "user", "content": "...", "final": false}

    : ping                     (every HEARTBEAT_S of silence)
    event: end
    data: {"reason": "call_ended" | "expired" | "not_live" | "unavailable" | ...}

Auth: the call's `transcript_token` (transcript_grant, minted with create-web-call), as
`?token=` (EventSource sends no headers) or `Authorization: Bearer`. The app's request log
has the path only; nginx logs this location without its query string.
"""

from __future__ import annotations

import json
import logging
import time

import redis
from flask import Blueprint, Response, current_app, request, url_for

from app.errors import ApiError
from app.extensions import redis_store
from app.http import cors
from app.policy import admission
from app.policy.admission import AdmissionRequest
from app.policy.origins import InvalidOrigin, canonical_origin, is_dev_loopback, is_insecure
from app.policy.tokens import TokenExpired, TokenInvalid
from app.redis_clients import make_redis_client
from app.retell.calls import CALL_ID
from app.retell.monitor import Monitor
from app.transcript import relay as transcript_relay

bp = Blueprint("transcript", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

PURPOSE = "transcript"
MAX_TOKEN_S = 7200 + 300  # the longest call (MAX_CALL_DURATION_MS) and time to join it
JOIN_MARGIN_S = 300  # the reservation counts from admission; the call starts a bit later
RETRY_MS = 3000


@bp.record_once
def _setup(state) -> None:
    """The relay, built once per app: its own Redis pool for blocking reads."""
    settings = state.app.config["SETTINGS"]
    blocking = make_redis_client(
        settings,
        socket_timeout=transcript_relay.HEARTBEAT_S + settings.redis_socket_timeout + 1,
        max_connections=1024,  # a listener holds one while it waits (gevent: ~1000/worker)
        client_name="retell-widget-transcript",
    )
    monitor = Monitor(settings.retell_monitor_base, settings.retell_api_key.reveal())
    state.app.extensions["transcripts"] = transcript_relay.TranscriptRelay(
        redis_store.client, blocking, settings.redis_key_prefix, monitor
    )


def transcript_grant(decision, call_id: str, origin: str) -> dict:
    """For create-web-call's answer: {transcript_url, transcript_token} when the entry has the
    transcript on, else {}. transcript_url is a path: resolve it against the endpoint URL."""
    if not getattr(decision, "transcript", False):
        return {}
    settings = current_app.config["SETTINGS"]
    seconds = (decision.reserved_ms or settings.max_call_ms) / 1000 + JOIN_MARGIN_S
    expires_at = int(time.time() + min(seconds, MAX_TOKEN_S))
    claims = {"c": call_id, "e": decision.entry, "o": origin}
    token = current_app.extensions["tokens"].sign(PURPOSE, claims, expires_at)
    return {
        "transcript_url": url_for("transcript.stream", call_id=call_id),
        "transcript_token": token,
    }


def _origin_refused() -> ApiError:
    return ApiError(403, "origin_not_allowed", "This site may not read this transcript.")


def _request_origin() -> tuple[str, str | None]:
    values = request.headers.getlist("Origin")
    raw = values[0] if len(values) == 1 else ""
    try:
        return raw, canonical_origin(raw) if raw else None
    except InvalidOrigin:
        return raw, None


def _token() -> str:
    given = request.args.get("token", "")
    auth = request.headers.get("Authorization", "")
    if not given and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given


@bp.route("/calls/<call_id>/transcript", methods=["GET", "OPTIONS"])
@cors.exact
def stream(call_id: str):
    if not CALL_ID.fullmatch(call_id):  # no token is for it
        raise ApiError(403, "transcript_wrong_call", "This token is for another call.")
    raw_origin, origin = _request_origin()
    if request.method == "OPTIONS":
        return _preflight(raw_origin, origin)
    try:
        claims = current_app.extensions["tokens"].verify(PURPOSE, _token())
    except TokenExpired:
        raise ApiError(403, "transcript_token_expired", "This transcript has expired.") from None
    except TokenInvalid:
        raise ApiError(
            403, "transcript_token_invalid", "The transcript token is not valid."
        ) from None
    if not origin or claims.get("o") != origin:
        raise _origin_refused()
    cors.allow(raw_origin)
    if claims.get("c") != call_id:
        raise ApiError(403, "transcript_wrong_call", "This token is for another call.")
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # nothing would read the stream: open no listener
        return Response(mimetype="text/event-stream", headers=headers)
    relay = current_app.extensions["transcripts"]
    try:
        listener = relay.open(call_id, claims["exp"], request.headers.get("Last-Event-ID"))
    except redis.RedisError as exc:
        log.error("redis unavailable: %s", type(exc).__name__)
        raise ApiError(503, "unavailable", "The service is temporarily unavailable.") from None
    return Response(_sse(listener), mimetype="text/event-stream", headers=headers)


def _sse(listener) -> str:
    """The listener's events as SSE text; never raises (gunicorn would log the query)."""
    yield f"retry: {RETRY_MS}\n: connected\n\n"
    events = listener.events()
    try:
        for event in events:
            if event is None:
                yield ": ping\n\n"
                continue
            kind, event_id, data = event
            head = f"id: {event_id}\n" if event_id else ""
            yield f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
    except redis.RedisError as exc:  # the client reconnects; Redis still down is a 503 then
        log.warning("transcript stream: redis %s", type(exc).__name__)
    except Exception:
        log.exception("transcript stream for %s failed", listener.call_id)
    finally:
        events.close()


def _preflight(raw_origin: str, origin: str | None):
    """Only for a fetch() with `Authorization: Bearer`; EventSource never preflights."""
    settings = current_app.config["SETTINGS"]
    method = request.headers.get("Access-Control-Request-Method", "")
    if origin and is_insecure(origin) and not settings.insecure_origins_allowed:
        origin = None
    if not origin or method.upper() != "GET":
        raise _origin_refused()
    implicit = not settings.production and is_dev_loopback(origin)
    try:
        decision = current_app.extensions["admission"].decide(
            AdmissionRequest(mode="preflight", origin=origin, implicit=implicit)
        )
    except redis.RedisError as exc:
        log.error("redis unavailable: %s", type(exc).__name__)
        raise ApiError(503, "unavailable", "The service is temporarily unavailable.") from None
    if decision.outcome != admission.ADMITTED:
        raise _origin_refused()
    cors.allow(raw_origin)
    response = cors.preflight_response("GET, OPTIONS", settings.cors_max_age)
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Last-Event-ID"
    return response
