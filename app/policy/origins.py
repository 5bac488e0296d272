"""The origin grammar: one canonical form for allowlist entries and request Origin headers.

An origin is scheme://host[:port], lowercase, IDNA (punycode) host, default port dropped.
A wildcard entry https://*.example.com matches one or more whole labels in front of
example.com, with the same scheme and port. Matching is exact string equality between the
request's canonical origin and a small list of candidate entries (see `candidate_entries`),
so it costs O(labels) set lookups whatever the size of the allowlist.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import idna

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
ORIGIN_SHAPE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)$")


class InvalidOrigin(ValueError):
    """Not an origin (or entry) in our grammar; the message says why."""


def _split_authority(authority: str) -> tuple[str, str | None]:
    if "@" in authority:
        raise InvalidOrigin("userinfo is not allowed")
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidOrigin("malformed IPv6 host")
        return f"[{host}]", rest[1:] if rest else None
    host, sep, port = authority.rpartition(":")
    return (host, port) if sep else (authority, None)


def _canonical_host(host: str) -> str:
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise InvalidOrigin("malformed IPv6 host") from None
    if not host:
        raise InvalidOrigin("empty host")
    if host.endswith("."):
        raise InvalidOrigin("trailing dot in host")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidOrigin(f"invalid host: {exc}") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(LABEL.match(label) for label in labels):
        raise InvalidOrigin("invalid host")
    return ascii_host


def _canonical_port(scheme: str, port: str | None) -> str:
    if port is None:
        return ""
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidOrigin("invalid port")
    return "" if int(port) == DEFAULT_PORTS[scheme] else f":{int(port)}"


def _parse(value: str, allow_wildcard: bool) -> str:
    if not isinstance(value, str) or not value or value != value.strip() or len(value) > 300:
        raise InvalidOrigin("empty, padded or too long")
    if any(ord(c) < 0x21 or c == "\x7f" for c in value):
        raise InvalidOrigin("control or space characters")
    match = ORIGIN_SHAPE.match(value)
    if not match:
        raise InvalidOrigin("expected scheme://host[:port] with no path, query or fragment")
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidOrigin("scheme must be http or https")
    host, port = _split_authority(match["authority"])
    wildcard = host.startswith("*.")
    if wildcard:
        if not allow_wildcard:
            raise InvalidOrigin("wildcards are for allowlist entries only")
        host = host[2:]
    host = _canonical_host(host)
    if wildcard and (host.startswith("[") or _is_ip(host) or host.count(".") < 1):
        raise InvalidOrigin("a wildcard needs a domain of at least two labels after '*.'")
    return f"{scheme}://{'*.' if wildcard else ''}{host}{_canonical_port(scheme, port)}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def canonical_origin(value: str) -> str:
    """The canonical form of a request Origin header; raises InvalidOrigin."""
    return _parse(value, allow_wildcard=False)


def canonical_entry(value: str) -> str:
    """The canonical form of an allowlist entry (exact origin or https://*.domain)."""
    return _parse(value, allow_wildcard=True)


def is_insecure(origin: str) -> bool:
    return origin.startswith("http://")


def is_dev_loopback(origin: str) -> bool:
    """localhost or 127.0.0.1 on any port, by hostname equality (never a substring)."""
    return origin.split("://", 1)[1].split(":", 1)[0] in LOOPBACK_HOSTS


def candidate_entries(origin: str) -> list[str]:
    """Entries that would admit this canonical origin: itself first, then wildcards.

    https://a.b.example.com:8443 -> [itself, https://*.b.example.com:8443,
    https://*.example.com:8443]. A wildcard's base keeps at least two labels.
    """
    scheme, rest = origin.split("://", 1)
    if rest.startswith("["):
        return [origin]
    host, _, port = rest.partition(":")
    if _is_ip(host):
        return [origin]
    suffix = f":{port}" if port else ""
    labels = host.split(".")
    wildcards = [f"{scheme}://*.{'.'.join(labels[i:])}{suffix}" for i in range(1, len(labels) - 1)]
    return [origin, *wildcards]
