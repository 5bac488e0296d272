"""Retell's webhook signatures, checked exactly as Retell's SDKs check them.

    X-Retell-Signature: v=<unix ms>,d=<hex>
    d = hex(HMAC-SHA256(key = RETELL_API_KEY, message = raw body bytes + str(ms)))

over the raw bytes as received (re-serialised JSON would not match non-ASCII text),
compared in constant time, with the timestamp at most 5 minutes off either way. The SDKs
compare against lower-case hex, so an upper-case digest does not verify here either.
"""

from __future__ import annotations

import hashlib
import hmac
import re

SIGNATURE = re.compile(r"v=([0-9]{1,16}),d=([0-9a-f]{64})")
TOLERANCE_MS = 5 * 60 * 1000


def digest(raw: bytes, key: str, timestamp_ms: int) -> str:
    return hmac.new(key.encode(), raw + str(timestamp_ms).encode(), hashlib.sha256).hexdigest()


def signature(raw: bytes, key: str, timestamp_ms: int) -> str:
    """The header value Retell would send (our tests and tools sign with it)."""
    return f"v={timestamp_ms},d={digest(raw, key, timestamp_ms)}"


def verify(raw: bytes, header: str | None, key: str, now_ms: int) -> bool:
    match = SIGNATURE.fullmatch(header or "")
    if not match or not key:
        return False
    timestamp = int(match[1])
    if abs(now_ms - timestamp) > TOLERANCE_MS:
        return False
    return hmac.compare_digest(digest(raw, key, timestamp), match[2])


def call_values(event: str, call: dict) -> dict[str, str]:
    """What a call object says about its cost, as call-events fields."""
    return {
        "event": event,
        "call_id": str(call.get("call_id", "")),
        "duration_ms": _duration_ms(call) if event == "call_ended" else "",
        "disconnection_reason": _text(call.get("disconnection_reason")),
        "cost_cents": _cost_cents(call),
    }


def _number(value) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _duration_ms(call: dict) -> str:
    """The call's length; a call nobody joined (no timestamps) lasted 0 ms."""
    duration = _number(call.get("duration_ms"))
    if duration is None:
        start, end = _number(call.get("start_timestamp")), _number(call.get("end_timestamp"))
        duration = end - start if start is not None and end is not None and end >= start else 0
    return str(int(duration))


def _cost_cents(call: dict) -> str:
    cost = call.get("call_cost")
    combined = _number(cost.get("combined_cost")) if isinstance(cost, dict) else None
    if combined is None:
        return ""
    return str(int(combined)) if float(combined).is_integer() else f"{combined:.4f}"


def _text(value, limit: int = 100) -> str:
    return value[:limit] if isinstance(value, str) else ""
