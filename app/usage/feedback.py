"""The feedback ledger: a visitor's rating of a call, decided and recorded in one round trip
(feedback.lua).

The script finds the origin's allowlist entry, counts the per-IP limit, checks that the call
was minted for that entry and takes its one feedback (HSETNX on `call:<call_id>`), and
writes the attempt's usage entry whatever it decided. Nothing is spooled: without Redis no
decision can be made, so the route answers 503 and the widget may send it again (a feedback
that did land then answers 409 feedback_exists).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import redis

from app.usage import scripts
from app.usage.entry import UsageEntry
from app.usage.ledger import Ledger

SCRIPT = scripts.load(Path(__file__).with_name("feedback.lua"))

# Outcome -> the status and error code the API answers with (and the stream records).
ANSWERS = {
    "accepted": {"status": 201, "error": ""},
    "origin_denied": {"status": 403, "error": "origin_not_allowed"},
    "rate_limited": {"status": 429, "error": "rate_limited"},
    "unknown_call": {"status": 404, "error": "unknown_call"},
    "feedback_exists": {"status": 409, "error": "feedback_exists"},
}


@dataclasses.dataclass(frozen=True)
class FeedbackRequest:
    candidates: list[str]  # the origin's candidate allowlist entries (none: refused)
    implicit: bool  # a development loopback origin, allowed without an entry
    ip_bucket: str
    usage: UsageEntry  # the attempt's entry, with call_id, rating and comment when read
    body_error: tuple[int, str] | None = None  # (status, code) when the body was refused


class FeedbackLedger(Ledger):
    name = "feedback ledger"

    def __init__(self, client: redis.Redis, settings):
        limits = settings.rate_limit_feedback_per_ip
        fixed = {
            "ip_limits": [{"count": n, "window": w} for n, w in limits],
            "answers": ANSWERS,
        }
        super().__init__(client, settings, SCRIPT, fixed)

    def decide(self, request: FeedbackRequest) -> dict:
        """{outcome, limit, remaining, reset, retry_after}. Raises redis.RedisError."""
        usage = request.usage
        payload = {
            "op": "feedback",
            "candidates": request.candidates,
            "implicit": bool(request.implicit and request.candidates),
            "ip_bucket": request.ip_bucket,
            "call_id": usage.call_id,
            "rating": usage.rating,
            "comment": usage.comment,
            "usage": usage.fields(),
        }
        if request.body_error:
            payload["body_error"] = dict(zip(("status", "error"), request.body_error, strict=True))
        return self._reply(payload)
