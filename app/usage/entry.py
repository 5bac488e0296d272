"""The usage entry: one schema for every attempt to start a call or a chat, for every
chat's end and for every feedback attempt, wherever it is written.

An attempt's entry starts with what the request says (UsageEntry.start); then either the
admission script records a refusal, filling the decided fields in the same round trip, or
the route records the outcome after the upstream call (UsageEntry.decided). A chat's end
entry (outcome "ended", or "expired" when its token ran out first) carries its visitor
message count; entries written before `kind` existed are calls. A feedback attempt (kind
"feedback", app/http/feedback.py) is decided and written by its own script, with its rating
and comment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import time

# Every entry has every field, in this order (README's usage stream section).
FIELDS = (
    "ts", "outcome", "status", "error", "origin", "entry", "agent_id", "call_id",
    "upstream_ms", "request_id", "ip", "ua", "kind", "chat_id", "messages",
    "consent_version", "rating", "comment",
)  # fmt: skip
KINDS = ("call", "chat", "feedback")
# Filled by whoever decides the outcome (the admission script or the route).
DECIDED = ("outcome", "status", "error", "entry", "agent_id")
OUTCOMES = (
    "created", "origin_denied", "agent_denied", "rate_limited", "budget_exhausted", "busy",
    "verification_required", "verification_failed", "verification_unavailable", "invalid",
    "upstream_error", "unavailable",
)  # fmt: skip
END_OUTCOMES = ("ended", "expired")  # a chat's end entry: not an attempt
# A feedback attempt's own outcomes (it may also be origin_denied, invalid, rate_limited or
# unavailable): not a call or chat attempt either.
FEEDBACK_OUTCOMES = ("accepted", "unknown_call", "feedback_exists")
ORIGIN_MAX, UA_MAX = 300, 200


@dataclasses.dataclass(frozen=True)
class UsageEntry:
    ts: str = ""
    outcome: str = ""
    status: str = ""
    error: str = ""
    origin: str = ""
    entry: str = ""
    agent_id: str = ""
    call_id: str = ""
    upstream_ms: str = ""
    request_id: str = ""
    ip: str = ""
    ua: str = ""
    kind: str = "call"
    chat_id: str = ""
    messages: str = ""  # a chat's end entry: visitor messages sent
    consent_version: str = ""  # the consent text the visitor agreed to (calls, chats)
    rating: str = ""  # feedback: up or down
    comment: str = ""  # feedback: the visitor's words, bounded and cleaned

    @classmethod
    def start(
        cls, *, origin, ip, user_agent, request_id, kind="call", consent_version=""
    ) -> UsageEntry:
        return cls(
            ts=str(int(time.time() * 1000)),
            kind=kind,
            consent_version=consent_version,
            origin=(origin or "")[:ORIGIN_MAX],
            ip=ip,
            ua=(user_agent or "")[:UA_MAX],
            request_id=request_id,
        )

    def decided(self, outcome: str, status: int, **fields) -> UsageEntry:
        values = {k: "" if v is None else str(v) for k, v in fields.items()}
        return dataclasses.replace(self, outcome=outcome, status=str(status), **values)

    def fields(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FIELDS}


def anonymise_ip(address: str | None, mode: str, key: bytes) -> str:
    """The visitor's address as USAGE_IP_MODE says: hash (HMAC), truncate, full or none."""
    if mode == "none" or not address:
        return ""
    if mode == "full":
        return address
    if mode == "truncate":
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        prefix = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()[:32]
