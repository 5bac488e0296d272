"""Who may start a call or a chat, decided in one Redis round trip (admission.lua).

The script checks the origin against its candidate allowlist entries, the agent against
that entry's grants (voice or chat, by kind), and every rate limit at once (all or nothing,
so a refused request spends no budget), and writes the usage entry itself when it says no.
It takes one JSON request (AdmissionRequest) and gives one JSON reply (Decision), both
with named fields.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import re
from pathlib import Path

import redis

from app.policy.origins import candidate_entries
from app.redis_clients import raise_if_readonly
from app.usage import scripts
from app.usage.entry import FIELDS, UsageEntry

log = logging.getLogger(__name__)
SCRIPT = scripts.load(Path(__file__).with_name("admission.lua"))
AGENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # what an agent grant may hold (fullmatch)

# Outcomes, one vocabulary with the usage stream's (except "admitted", which is not an entry).
ADMITTED, ORIGIN_DENIED, INVALID = "admitted", "origin_denied", "invalid"
AGENT_DENIED, RATE_LIMITED = "agent_denied", "rate_limited"
BUDGET_EXHAUSTED, BUSY = "budget_exhausted", "busy"
VERIFY = "verify"  # not a refusal: a token came and the entry needs one; check it, ask again
VERIFICATION_REQUIRED, VERIFICATION_FAILED = "verification_required", "verification_failed"
VERIFICATION_UNAVAILABLE = "verification_unavailable"
REPLAY_TTL_MS = 10 * 60_000  # longer than any token lives (ALTCHA 300 s, captchas <= 300 s)
MIN_CALL_MS = 60_000  # Retell's shortest max_call_duration_ms: less left refuses the call
JOIN_WINDOW_MS = 60_000  # a minted call not joined within ~30 s ends with error_user_not_joined
BUSY_RETRY_AFTER = 30  # seconds: live calls end at their own pace, so ask again soon
BUDGET_RETENTION_MS = 40 * 86_400_000  # minute counters outlive their period, for reports

# Refusal reason -> the status and error code the API answers with (and the stream records).
REFUSALS = {
    "origin_denied": {"status": 403, "error": "origin_not_allowed"},
    "agent_denied": {"status": 403, "error": "agent_not_allowed"},
    "agent_required": {"status": 400, "error": "invalid_request"},
    "rate_limited": {"status": 429, "error": "rate_limited"},
    "budget_exhausted": {"status": 429, "error": "budget_exhausted"},
    "busy": {"status": 429, "error": "busy"},
    "verification_required": {"status": 403, "error": "verification_required"},
    "verification_failed": {"status": 403, "error": "verification_failed"},
    "verification_replayed": {"status": 403, "error": "verification_failed"},
    "verification_unavailable": {"status": 503, "error": "verification_unavailable"},
}


@dataclasses.dataclass(frozen=True)
class AdmissionRequest:
    """What the script needs to decide: built from the HTTP request by the route."""

    mode: str  # "create" or "preflight"
    origin: str | None  # canonical, or None when the Origin header was refused outright
    implicit: bool = False  # a development loopback origin allowed without an entry
    agent_id: str = ""
    body_error: tuple[int, str] | None = None  # (status, code) when the body was refused
    ip_bucket: str = ""
    usage: UsageEntry | None = None  # the attempt's entry, for refusals the script records
    has_token: bool = False  # the body carries a verification token, not checked yet
    verified: str = ""  # the provider whose check the token passed
    replay_key: str = ""  # that token's key: admits one call (or chat) only
    kind: str = "call"  # or "chat": chat grants, chat limits, no budgets or caps


@dataclasses.dataclass(frozen=True)
class Decision:
    outcome: str  # admitted | origin_denied | invalid | agent_denied | rate_limited | ...
    reason: str = ""  # for refusals: a key of REFUSALS, or "body"
    entry: str = ""
    agent_id: str = ""
    limit: int = 0
    remaining: int = 0
    reset: int = 0  # unix seconds
    retry_after: int = 0
    # What an admitted call holds until it is settled (app/usage/calls.py):
    reserved_ms: int = 0  # of every minute budget that applies
    budgeted: bool = False  # some budget applies: Retell must end the call at reserved_ms
    counters: tuple[str, ...] = ()  # minute counters the reservation was added to
    live: tuple[str, ...] = ()  # concurrency sets holding the call
    pending: str = ""  # its member there until the call id is known
    minted_ms: int = 0  # Redis time of admission
    provider: str = ""  # the verification the entry asks for (verify / verification_*)
    transcript: bool = False  # an admitted call gets the live transcript relay

    @property
    def refusal(self) -> dict:
        return REFUSALS.get(self.reason, {})


class Admission:
    def __init__(self, client: redis.Redis, settings, providers_ready: dict | None = None):
        """providers_ready: which verification providers have their keys (Verifier)."""
        self.client, self.script = client, client.register_script(SCRIPT)
        self.keys = [settings.redis_key_prefix + "origins"]  # routes the script in a cluster
        # The parts of every request that come from settings, encoded once.
        self.fixed = {
            "prefix": settings.redis_key_prefix,
            "ip_limits": [{"count": n, "window": w} for n, w in settings.rate_limit_per_ip],
            "origin_per_day": settings.rate_limit_per_origin_day,
            "agent_per_day": settings.rate_limit_per_agent_day,
            "chat": {
                "ip_limits": [
                    {"count": n, "window": w} for n, w in settings.rate_limit_chats_per_ip
                ],
                "origin_per_day": settings.rate_limit_chats_per_origin_day,
                "agent_per_day": settings.rate_limit_chats_per_agent_day,
            },
            "transcript_default": settings.transcript_default,
            "maxlen": settings.usage_stream_maxlen,
            "refusals": REFUSALS,
            "minutes": {
                "origin_day": settings.minutes_per_origin_day,
                "origin_month": settings.minutes_per_origin_month,
                "agent_day": settings.minutes_per_agent_day,
                "agent_month": settings.minutes_per_agent_month,
            },
            "concurrent": {
                "origin": settings.concurrent_calls_per_origin,
                "total": settings.concurrent_calls_total,
            },
            "max_call_ms": settings.max_call_ms,
            "min_call_ms": MIN_CALL_MS,
            "join_window_ms": JOIN_WINDOW_MS,
            "busy_retry_after": BUSY_RETRY_AFTER,
            "budget_retention_ms": BUDGET_RETENTION_MS,
            "verify_default": settings.verify_default,
            "providers_ready": providers_ready or {"none": True},
            "replay_ttl_ms": REPLAY_TTL_MS,
            "usage_order": FIELDS,
        }
        # Encoded once: each request's JSON is this, then its own fields.
        self.fixed_json = json.dumps(self.fixed)[:-1] + ","

    def decide(self, request: AdmissionRequest) -> Decision:
        """Raises redis.RedisError when Redis cannot answer (the caller fails closed)."""
        payload = {
            "mode": request.mode,
            "kind": request.kind,
            "candidates": candidate_entries(request.origin) if request.origin else [],
            "implicit": bool(request.implicit and request.origin),
            "agent_id": request.agent_id,
            "ip_bucket": request.ip_bucket,
            "usage": request.usage.fields() if request.usage else {},
            "has_token": request.has_token,
        }
        if request.verified:
            payload["verified"], payload["replay_key"] = request.verified, request.replay_key
        if request.body_error:
            payload["body_error"] = dict(zip(("status", "error"), request.body_error, strict=True))
        args = [self.fixed_json + json.dumps(payload)[1:]]
        reply = json.loads(self.script(keys=self.keys, args=args))
        problems = reply.pop("problems", "")
        if problems:
            raise_if_readonly(self.client, problems)
            # A wrong-type key or a failed usage write: the request still failed closed.
            log.warning("redis problems during admission: %s", problems)
        names = {f.name for f in dataclasses.fields(Decision)}
        for listed in ("counters", "live"):  # cjson writes an empty list as {}
            reply[listed] = tuple(reply.get(listed) or ())
        return Decision(**{k: v for k, v in reply.items() if k in names})


def ip_bucket(remote_addr: str | None) -> str:
    """The per-IP bucket: the address itself, or its /64 for IPv6 (one subscriber's range)."""
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return "unknown"
    if address.version == 6 and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
