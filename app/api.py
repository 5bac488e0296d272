"""The API blueprint: create-web-call, health, widget-version."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

import redis
from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from app import usage
from app.errors import ApiError
from app.extensions import redis_store, retell_client
from app.limits import EXPOSED_HEADERS, ip_bucket, limit_headers
from app.origins import InvalidOrigin, canonical_origin, is_dev_loopback, is_insecure
from app.retell import UpstreamFailure
from app.widget import widget_version

bp = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

AGENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
BODY_FIELDS = ("agent_id", "metadata", "dynamic_variables")
MAX_PAIRS, MAX_KEY, MAX_VALUE = 20, 64, 200
PREFLIGHT_HEADERS = "Content-Type, X-Request-ID"


def _settings():
    return current_app.config["SETTINGS"]


def resolve_origin(values: list[str]) -> tuple[str | None, bool]:
    """(canonical origin or None when refused outright, allowed-without-entry in development)."""
    if len(values) != 1:
        return None, False
    try:
        origin = canonical_origin(values[0])
    except InvalidOrigin:
        return None, False
    settings = _settings()
    if is_insecure(origin) and not settings.insecure_origins_allowed:
        return None, False
    return origin, not settings.production and is_dev_loopback(origin)


def _flat_strings(name: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", f"{name} must be an object of strings")
    if len(value) > MAX_PAIRS:
        raise ApiError(400, "invalid_request", f"{name} has more than {MAX_PAIRS} keys")
    for key, item in value.items():
        if not key or len(key) > MAX_KEY:
            raise ApiError(400, "invalid_request", f"{name} keys must be 1-{MAX_KEY} characters")
        if not isinstance(item, str) or len(item) > MAX_VALUE:
            raise ApiError(
                400, "invalid_request", f"{name}.{key} must be a string of at most {MAX_VALUE}"
            )
    return value


def parse_body() -> dict:
    """The validated body; raises ApiError naming what is wrong."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(413, "payload_too_large", "The body is larger than 8 KiB.") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise ApiError(400, "invalid_request", f"Unknown field: {unknown[0]}")
    agent_id = body.get("agent_id")
    if agent_id is not None and (not isinstance(agent_id, str) or not AGENT_ID.match(agent_id)):
        raise ApiError(400, "invalid_request", "agent_id must be 1-128 of A-Z a-z 0-9 _ -")
    return {
        "agent_id": agent_id or "",
        "metadata": _flat_strings("metadata", body.get("metadata")),
        "dynamic_variables": _flat_strings("dynamic_variables", body.get("dynamic_variables")),
    }


@bp.after_request
def cors_for_create(response):
    if request.endpoint == "api.create_web_call":
        response.vary.add("Origin")
        if g.get("cors_origin"):
            response.headers["Access-Control-Allow-Origin"] = g.cors_origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response


def _refused():
    return ApiError(403, "origin_not_allowed", "This site is not allowed to start calls.")


def _unavailable(exc: Exception):
    log.error("redis unavailable: %s", type(exc).__name__)
    return ApiError(503, "unavailable", "The service is temporarily unavailable.")


@bp.route("/create-web-call", methods=["POST", "OPTIONS"])
def create_web_call():
    raw_origins = request.headers.getlist("Origin")
    origin, implicit = resolve_origin(raw_origins)
    gate = current_app.extensions["admission"]
    if request.method == "OPTIONS":
        return _preflight(gate, origin, implicit, raw_origins)

    settings = _settings()
    body, body_error = None, None
    if origin:  # a refused origin's body is never parsed
        try:
            body = parse_body()
        except ApiError as exc:
            body_error = exc
    client_ip = request.remote_addr
    fields = usage.base_fields(
        origin=origin or (raw_origins[0] if raw_origins else ""),
        ip=usage.anonymise_ip(
            client_ip, settings.usage_ip_mode, current_app.config["USAGE_IP_HASH_KEY"]
        ),
        user_agent=request.headers.get("User-Agent"),
        request_id=g.request_id,
    )
    try:
        decision = gate.check(
            mode="create",
            origin=origin,
            implicit=implicit,
            agent_id=body["agent_id"] if body else "",
            body_status=body_error.status if body_error else 0,
            body_code=body_error.code if body_error else "",
            ip_bucket=ip_bucket(client_ip),
            usage_fields={**fields, "error": body_error.code if body_error else ""},
        )
    except redis.RedisError as exc:
        if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            _record(fields, "unavailable", 503, error="unavailable")
        raise _unavailable(exc) from None

    if decision.outcome == "origin_denied":
        raise _refused()
    g.cors_origin = raw_origins[0]
    if decision.outcome == "invalid":
        raise body_error
    if decision.outcome == "agent_required":
        raise ApiError(400, "invalid_request", "agent_id is required for this site.")
    if decision.outcome == "agent_denied":
        raise ApiError(403, "agent_not_allowed", "This agent is not available on this site.")
    headers = limit_headers(decision)
    if decision.outcome == "rate_limited":
        raise ApiError(
            429,
            "rate_limited",
            "Too many calls were started; try again later.",
            headers,
            retry_after=max(decision.retry_after, 1),
        )

    metadata = {**body["metadata"], "origin": origin}
    if request.referrer:
        metadata["page_url"] = request.referrer[:MAX_VALUE]
    try:
        result, latency_ms = retell_client.create_web_call(
            decision.agent_id, metadata, body["dynamic_variables"]
        )
    except UpstreamFailure as exc:
        _record(
            fields,
            "upstream_error",
            exc.status,
            decision,
            error=exc.code,
            upstream_ms=exc.latency_ms,
        )
        exc.headers = {**headers, **exc.headers}
        raise
    except Exception:
        # A bug of ours still leaves its trace on the stream: nothing is lost.
        _record(fields, "unavailable", 500, decision, error="internal_error")
        raise
    _record(fields, "created", 201, decision, call_id=result["call_id"], upstream_ms=latency_ms)
    return jsonify(result), 201, headers


def _record(fields, outcome, status, decision=None, **extra) -> None:
    settings = _settings()
    entry = {
        **fields,
        "outcome": outcome,
        "status": status,
        "entry": decision.entry if decision else "",
        "agent_id": decision.agent_id if decision else "",
        **extra,
    }
    usage.record(redis_store.client, redis_store.key("usage"), settings.usage_stream_maxlen, entry)


def _preflight(gate, origin, implicit, raw_origins):
    method = request.headers.get("Access-Control-Request-Method", "")
    if not origin or method.upper() != "POST":
        raise _refused()
    try:
        decision = gate.check(mode="preflight", origin=origin, implicit=implicit)
    except redis.RedisError as exc:
        raise _unavailable(exc) from None
    if decision.outcome != "allowed":
        raise _refused()
    g.cors_origin = raw_origins[0]
    response = current_app.response_class(status=204, content_type=None)
    response.headers.pop("Content-Type", None)
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = PREFLIGHT_HEADERS
    response.headers["Access-Control-Max-Age"] = str(_settings().cors_max_age)
    return response


@bp.get("/health")
def health():
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return jsonify({"status": "ok", "timestamp": now})


@bp.get("/health/ready")
def ready():
    settings = _settings()
    components = {}
    try:
        redis_store.client.ping()
        components["redis"] = {"status": "ok"}
    except redis.RedisError as exc:
        components["redis"] = {"status": "error", "detail": type(exc).__name__}
    components["retell"] = (
        {"status": "ok", "api_version": settings.retell_api_version}
        if settings.retell_api_key
        else {"status": "error", "detail": "RETELL_API_KEY is not set"}
    )
    components["usage_stream"] = {"status": "ok", "write_failures": usage.write_failures.count}
    healthy = all(c["status"] == "ok" for c in components.values())
    body = {"status": "ok" if healthy else "unavailable", "components": components}
    return jsonify(body), 200 if healthy else 503


@bp.get("/widget-version")
def widget_version_route():
    current = request.args.get("v")
    response = jsonify(widget_version(_settings(), current))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
