"""POST /api/feedback: after a call, the visitor's thumbs up or down and an optional comment.

The create-web-call origin policy and CORS (app/http/calls.py), then one Redis round trip
that decides and records (app/usage/feedback.lua): the allowlist entry, the per-IP limit
(RATE_LIMIT_FEEDBACK_PER_IP), a call this gateway minted for that same entry, one feedback
per call, and the attempt's usage entry (kind "feedback") whatever the answer.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import redis
from flask import Blueprint, current_app, jsonify, request

from app.errors import ApiError
from app.extensions import redis_store
from app.http import cors
from app.http.calls import (
    Caller,
    json_object,
    origin_refused,
    preflight,
    read_body,
    start_entry,
    unavailable,
)
from app.policy.admission import ip_bucket
from app.policy.origins import candidate_entries
from app.usage import stream
from app.usage.entry import UsageEntry
from app.usage.feedback import FeedbackRequest

bp = Blueprint("feedback", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

FIELDS = ("call_id", "rating", "comment")
RATINGS = ("up", "down")
CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # as minted by Retell (fullmatch)
MAX_COMMENT = 1000  # characters (code points) as sent
# 1,000 characters even \u-escaped (12 bytes for one outside the BMP), with the other fields.
MAX_BODY, BODY_SIZE = 16 * 1024, "16 KiB"
# Kept out of a comment: control characters but newline and tab, and lone surrogates
# (Redis takes UTF-8 only).
UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


@bp.route("/feedback", methods=["POST", "OPTIONS"])
@cors.exact
def feedback():
    caller = Caller.from_request()
    if request.method == "OPTIONS":
        return preflight(caller, "POST", "feedback")
    request.max_content_length = MAX_BODY
    body, body_error = read_body(caller, parse_body)
    usage = start_entry(caller, "feedback")
    if body:
        usage = dataclasses.replace(usage, **body)
    reply = decide(caller, usage, body_error)
    outcome = reply.get("outcome")
    if outcome != "origin_denied":
        cors.allow(caller.raw_origin)  # the site is allowed: it may read why it was refused
    headers = _limit_headers(reply)
    match outcome:
        case "accepted":
            return jsonify({"call_id": usage.call_id, "rating": usage.rating}), 201, headers
        case "origin_denied":
            raise origin_refused("feedback")
        case "invalid" if body_error is not None:
            raise body_error
        case "rate_limited":
            retry_after = max(int(reply.get("retry_after", 1)), 1)
            headers["Retry-After"] = str(retry_after)
            raise ApiError(
                429, "rate_limited", "Too much feedback was sent; try again later.", headers,
                retry_after=retry_after,
            )  # fmt: skip
        case "unknown_call":
            raise ApiError(404, "unknown_call", "No such call on this site.")
        case "feedback_exists":
            raise ApiError(409, "feedback_exists", "This call already has its feedback.")
        case _:  # an outcome this code does not know: refused, and said so on the stream
            log.error("unknown feedback outcome %r: refused", outcome)
            _record(usage.decided("unavailable", 500, error="internal_error"))
            raise ApiError(500, "internal_error", "Something went wrong on our side.")


def parse_body() -> dict:
    """call_id, rating and the cleaned comment; raises ApiError naming what is wrong."""
    body = json_object(FIELDS, BODY_SIZE)
    call_id, rating = body.get("call_id"), body.get("rating")
    if not (isinstance(call_id, str) and CALL_ID.fullmatch(call_id)):
        raise ApiError(400, "invalid_request", "call_id must be 1-128 of A-Z a-z 0-9 _ -")
    if rating not in RATINGS:  # also refuses a non-string
        raise ApiError(400, "invalid_request", "rating must be up or down")
    comment = body.get("comment", "")
    if not (isinstance(comment, str) and len(comment) <= MAX_COMMENT):
        raise ApiError(
            400, "invalid_request", f"comment must be a string of at most {MAX_COMMENT} characters"
        )
    return {"call_id": call_id, "rating": rating, "comment": clean(comment)}


def clean(comment: str) -> str:
    """The comment as stored: line ends as \\n, no other control characters, trimmed."""
    comment = comment.replace("\r\n", "\n").replace("\r", "\n")
    return UNPRINTABLE.sub("", comment).strip()


def decide(caller: Caller, usage: UsageEntry, body_error: ApiError | None) -> dict:
    """One round trip; the script records every attempt itself."""
    ledger = current_app.extensions["feedback"]
    asked = FeedbackRequest(
        candidates=candidate_entries(caller.origin) if caller.origin else [],
        implicit=caller.implicit,
        ip_bucket=ip_bucket(caller.ip),
        usage=usage,
        body_error=(body_error.status, body_error.code) if body_error else None,
    )
    try:
        return ledger.decide(asked)
    except redis.RedisError as exc:
        if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            _record(usage.decided("unavailable", 503, error="unavailable"))
        raise unavailable(exc) from None


def _record(entry: UsageEntry) -> None:
    maxlen = current_app.config["SETTINGS"].usage_stream_maxlen
    stream.record(redis_store.client, redis_store.key("usage"), maxlen, entry)


def _limit_headers(reply: dict) -> dict[str, str]:
    if not reply.get("limit"):
        return {}
    return {
        "X-RateLimit-Limit": str(reply["limit"]),
        "X-RateLimit-Remaining": str(max(int(reply.get("remaining", 0)), 0)),
        "X-RateLimit-Reset": str(reply.get("reset", 0)),
    }
