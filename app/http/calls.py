"""POST /api/create-web-call: parse, admit, refuse or mint, record.

Redis work: one round trip to decide (admission, which also records a refusal) and one to
record the outcome of the upstream call. The steps up to the decision (`admit_request`)
serve POST /api/chat too (app/http/chat.py), with kind "chat".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time

import redis
from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from app import metrics
from app.errors import ApiError, upstream_error
from app.extensions import redis_store, retell_client
from app.http import cors
from app.http.transcript import transcript_grant
from app.policy import admission
from app.policy.admission import AGENT_ID, AdmissionRequest, Decision, ip_bucket
from app.policy.origins import InvalidOrigin, canonical_origin, is_dev_loopback, is_insecure
from app.policy.verify import MAX_TOKEN, VerificationFailed, VerificationUnavailable
from app.retell.calls import UpstreamFailure
from app.usage import stream
from app.usage.entry import UsageEntry, anonymise_ip

bp = Blueprint("calls", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

BODY_FIELDS = ("agent_id", "metadata", "dynamic_variables", "verification", "consent_version")
MAX_PAIRS, MAX_KEY, MAX_VALUE = 20, 64, 200
# The consent text's version the widget showed: visible ASCII, no spaces (fullmatch).
CONSENT_VERSION = re.compile(r"[!-~]{1,64}")
NOUNS = {"call": "calls", "chat": "chats"}  # what a rate limit says was started too often
REFUSED = {"call": "start calls", "chat": "start chats", "feedback": "send feedback"}


def _settings():
    return current_app.config["SETTINGS"]


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is asking, from the headers alone (before any body is read)."""

    raw_origin: str  # as sent (echoed in CORS), or "" when absent
    origin: str | None  # canonical, or None when refused outright (none, several, malformed)
    implicit: bool  # a development loopback origin, allowed without an allowlist entry
    ip: str | None

    @classmethod
    def from_request(cls) -> Caller:
        values = request.headers.getlist("Origin")
        raw = values[0] if values else ""
        origin = None
        if len(values) == 1:
            try:
                origin = canonical_origin(raw)
            except InvalidOrigin:
                origin = None
        settings = _settings()
        if origin and is_insecure(origin) and not settings.insecure_origins_allowed:
            origin = None
        implicit = bool(origin) and not settings.production and is_dev_loopback(origin)
        return cls(raw, origin, implicit, request.remote_addr)


# The body: validated and bounded, next to the route that reads it.


def _flat_strings(name: str, value) -> dict:
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


def json_object(fields: tuple[str, ...], size: str = "8 KiB") -> dict:
    """The body as a JSON object of only these fields (any of them may be missing); raises
    ApiError for the media type, the size (`size` names the request's limit), bad JSON,
    any depth, another shape or an unknown field."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(413, "payload_too_large", f"The body is larger than {size}.") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    except RecursionError:  # a few KiB of brackets: valid JSON, but no body of ours
        raise ApiError(400, "invalid_request", "The body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(400, "invalid_request", f"Unknown field: {unknown[0]}")
    return body


def parse_body() -> dict:
    """The validated body; raises ApiError naming what is wrong. Null is never a value."""
    body = json_object(BODY_FIELDS)
    agent_id = body.get("agent_id", "")  # omitted: the site's one agent
    if "agent_id" in body and not (isinstance(agent_id, str) and AGENT_ID.fullmatch(agent_id)):
        raise ApiError(400, "invalid_request", "agent_id must be 1-128 of A-Z a-z 0-9 _ -")
    token = body.get("verification", "")
    if "verification" in body and not (isinstance(token, str) and 0 < len(token) <= MAX_TOKEN):
        raise ApiError(400, "invalid_request", f"verification must be 1-{MAX_TOKEN} characters")
    consent = body.get("consent_version", "")
    if "consent_version" in body and not (
        isinstance(consent, str) and CONSENT_VERSION.fullmatch(consent)
    ):
        raise ApiError(
            400, "invalid_request", "consent_version must be 1-64 visible ASCII characters"
        )
    return {
        "agent_id": agent_id,
        "verification": token,
        "consent_version": consent,
        "metadata": _flat_strings("metadata", body.get("metadata", {})),
        "dynamic_variables": _flat_strings("dynamic_variables", body.get("dynamic_variables", {})),
    }


def unavailable(exc: Exception):
    log.error("redis unavailable: %s", type(exc).__name__)
    metrics.redis_error()
    return ApiError(503, "unavailable", "The service is temporarily unavailable.")


def origin_refused(kind: str = "call"):
    return ApiError(403, "origin_not_allowed", f"This site is not allowed to {REFUSED[kind]}.")


@bp.route("/create-web-call", methods=["POST", "OPTIONS"])
@cors.exact
def create_web_call():
    caller = Caller.from_request()
    if request.method == "OPTIONS":
        return preflight(caller)
    decision, body, entry = admit_request(caller, "call")
    headers = limit_headers(decision)
    return jsonify(mint(decision, caller, body, entry, headers)), 201, headers


def admit_request(caller: Caller, kind: str) -> tuple[Decision, dict, UsageEntry]:
    """Parse, admit (one round trip; one more only to check a verification token), and
    refuse unless admitted: (decision, body, the attempt's usage entry) for an admitted
    call or chat; otherwise raises the refusal, already recorded."""
    body, body_error = read_body(caller)
    entry = start_entry(caller, kind, body["consent_version"] if body else "")
    decision = admit(caller, body, body_error, entry)
    if decision.outcome != admission.ORIGIN_DENIED:
        cors.allow(caller.raw_origin)  # the site is allowed: it may read why it was refused
    if decision.outcome == admission.VERIFY:
        provider, replay_key = check_token(decision, caller, body["verification"], entry)
        decision = admit(caller, body, None, entry, verified=provider, replay_key=replay_key)
    refuse_unless_admitted(decision, caller, body_error, entry)
    return decision, body, entry


def read_body(caller: Caller, parse=parse_body) -> tuple[dict | None, ApiError | None]:
    """Only a well-formed Origin's body is parsed (bounded in size, any depth), before the
    allowlist answers, so that the decision, agent included, stays one round trip."""
    if not caller.origin:
        return None, None
    try:
        return parse(), None
    except ApiError as exc:
        return None, exc


def start_entry(caller: Caller, kind: str = "call", consent_version: str = "") -> UsageEntry:
    ip = anonymise_ip(caller.ip, _settings().usage_ip_mode, current_app.config["USAGE_IP_HASH_KEY"])
    return UsageEntry.start(
        origin=caller.origin or caller.raw_origin,
        ip=ip,
        user_agent=request.headers.get("User-Agent"),
        request_id=g.request_id,
        kind=kind,
        consent_version=consent_version,
    )


def admit(
    caller: Caller, body, body_error: ApiError | None, entry: UsageEntry, **verification
) -> Decision:
    """One round trip; a refusal is recorded by the script itself. The entry's kind says
    whether a call or a chat is asked for."""
    gate = current_app.extensions["admission"]
    started = time.perf_counter()
    try:
        return gate.decide(
            AdmissionRequest(
                mode="create",
                kind=entry.kind,
                origin=caller.origin,
                implicit=caller.implicit,
                agent_id=body["agent_id"] if body else "",
                body_error=(body_error.status, body_error.code) if body_error else None,
                ip_bucket=ip_bucket(caller.ip),
                usage=entry,
                has_token=bool(body and body["verification"]),
                **verification,
            )
        )
    except redis.RedisError as exc:
        if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            _record(entry.decided("unavailable", 503, error="unavailable"))
        raise unavailable(exc) from None
    finally:
        metrics.admission(entry.kind, time.perf_counter() - started)


def refuse_unless_admitted(
    decision: Decision, caller: Caller, body_error: ApiError | None, entry: UsageEntry
) -> None:
    """Raises the refusal's error; returns only for an admitted call or chat (fail closed)."""
    kind = entry.kind
    match decision.outcome, decision.reason:
        case admission.ADMITTED, _:
            return
        case admission.ORIGIN_DENIED, _:
            raise origin_refused(kind)
        case admission.INVALID, "body" if body_error is not None:
            raise body_error
        case admission.INVALID, "agent_required":
            raise ApiError(400, "invalid_request", "agent_id is required for this site.")
        case admission.AGENT_DENIED, _:
            raise ApiError(403, "agent_not_allowed", "This agent is not available on this site.")
        case admission.RATE_LIMITED, _:
            raise ApiError(
                429,
                "rate_limited",
                f"Too many {NOUNS[kind]} were started; try again later.",
                limit_headers(decision),
                retry_after=max(decision.retry_after, 1),
            )
        case admission.BUDGET_EXHAUSTED, _:
            raise _retry_later(
                decision, "budget_exhausted", "Calls are paused on this site for now."
            )
        case admission.BUSY, _:
            raise _retry_later(decision, "busy", "All lines are busy; try again in a minute.")
        case admission.VERIFICATION_REQUIRED, _:
            verify = current_app.extensions["verifier"].challenge_for(decision.provider)
            raise ApiError(
                403, "verification_required", "Show that a person is here.", verify=verify
            )
        case admission.VERIFICATION_FAILED, _:
            raise verification_failed()
        case admission.VERIFICATION_UNAVAILABLE, _:
            raise verification_unavailable()
        case _:  # an outcome this code does not know never reaches the upstream call
            log.error("unknown admission decision %r: refused", decision)
            _record(entry.decided("unavailable", 500, error="internal_error",
                                  entry=decision.entry, agent_id=decision.agent_id))  # fmt: skip
            raise ApiError(500, "internal_error", "Something went wrong on our side.")


def _retry_later(decision: Decision, code: str, message: str) -> ApiError:
    retry_after = max(decision.retry_after, 1)
    headers = {"Retry-After": str(retry_after)}
    return ApiError(429, code, message, headers, retry_after=retry_after)


def verification_failed() -> ApiError:
    return ApiError(403, "verification_failed", "The check did not pass; please try again.")


def verification_unavailable() -> ApiError:
    return ApiError(503, "verification_unavailable", "The check is unavailable; try later.")


def check_token(decision: Decision, caller: Caller, token: str, entry: UsageEntry):
    """(provider, replay key) for a good token (a captcha costs its siteverify call);
    otherwise the refusal, recorded like any other."""
    verifier = current_app.extensions["verifier"]
    try:
        return decision.provider, verifier.check(decision.provider, token, caller.origin, caller.ip)
    except VerificationFailed:
        error = verification_failed()
    except VerificationUnavailable:
        error = verification_unavailable()
    _record(entry.decided(error.code, error.status, error=error.code,
                          entry=decision.entry, agent_id=decision.agent_id))  # fmt: skip
    raise error


def limit_headers(decision: Decision) -> dict[str, str]:
    if not decision.limit:
        return {}
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(max(decision.remaining, 0)),
        "X-RateLimit-Reset": str(decision.reset),
    }
    if decision.outcome == admission.RATE_LIMITED:
        headers["Retry-After"] = str(max(decision.retry_after, 1))
    return headers


def mint(decision: Decision, caller: Caller, body: dict, entry: UsageEntry, headers) -> dict:
    """Creates the call upstream (never retried) and records the outcome: one round trip."""
    ledger = current_app.extensions["ledger"]
    entry = dataclasses.replace(entry, entry=decision.entry, agent_id=decision.agent_id)
    metadata = server_metadata(body, caller)
    # A budget's reservation is the call's length limit; else the configured cap, if any.
    max_call_ms = decision.reserved_ms if decision.budgeted else _settings().max_call_duration_ms
    try:
        result, latency_ms = retell_client.create_web_call(
            decision.agent_id, metadata, body["dynamic_variables"], max_call_ms
        )
    except UpstreamFailure as exc:
        error = upstream_error(exc.kind, exc.retry_after, headers)
        ledger.released(
            decision,
            entry.decided(
                "upstream_error", error.status, error=error.code, upstream_ms=exc.latency_ms
            ),
        )
        raise error from None
    except Exception:
        # A bug of ours still leaves its trace on the stream, and gives the minutes back.
        ledger.released(decision, entry.decided("unavailable", 500, error="internal_error"))
        raise
    ledger.created(
        decision,
        result["call_id"],
        caller.origin,
        entry.decided("created", 201, call_id=result["call_id"], upstream_ms=latency_ms),
    )
    # Signed here, no Redis: the live transcript's URL and token when the site has it on.
    return {**result, **transcript_grant(decision, result["call_id"], caller.origin)}


def server_metadata(body: dict, caller: Caller) -> dict:
    """The browser's metadata under what the gateway itself vouches for: its origin, the
    page (Referer) and the consent version; the browser's own values for those never pass."""
    metadata = {k: v for k, v in body["metadata"].items() if k != "consent_version"}
    metadata["origin"] = caller.origin
    if request.referrer:
        metadata["page_url"] = request.referrer[:MAX_VALUE]
    if body["consent_version"]:
        metadata["consent_version"] = body["consent_version"]
    return metadata


def _record(entry: UsageEntry) -> None:
    stream.record(
        redis_store.client, redis_store.key("usage"), _settings().usage_stream_maxlen, entry
    )


def preflight(caller: Caller, method: str = "POST", kind: str = "call", headers=None):
    """A route's CORS preflight: one round trip (the allowlist), for `method` only."""
    asked = request.headers.get("Access-Control-Request-Method", "")
    if not caller.origin or asked.upper() != method:
        raise origin_refused(kind)
    gate = current_app.extensions["admission"]
    try:
        decision = gate.decide(
            AdmissionRequest(mode="preflight", origin=caller.origin, implicit=caller.implicit)
        )
    except redis.RedisError as exc:
        raise unavailable(exc) from None
    if decision.outcome != admission.ADMITTED:
        raise origin_refused(kind)
    cors.allow(caller.raw_origin)
    return cors.preflight_response(f"{method}, OPTIONS", _settings().cors_max_age, headers)
