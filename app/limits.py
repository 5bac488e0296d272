"""Rate-limit identities and headers; the counting itself happens in admission.lua."""

from __future__ import annotations

import ipaddress

from app.admission import Decision

# Exposed so the widget (a cross-origin caller) can read them.
EXPOSED_HEADERS = (
    "Retry-After, X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
)


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


def limit_headers(decision: Decision) -> dict[str, str]:
    if not decision.limit:
        return {}
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(max(decision.remaining, 0)),
        "X-RateLimit-Reset": str(decision.reset),
    }
    if decision.outcome == "rate_limited":
        headers["Retry-After"] = str(max(decision.retry_after, 1))
    return headers
