"""Tokens the gateway signs and later checks itself: a chat's token, a call's transcript token.

Format: base64url(JSON claims) "." base64url(HMAC-SHA256). The MAC covers the purpose too,
so a token minted for one purpose never passes as another's. Claims are short names chosen by
the caller, plus "exp" (unix seconds). Stateless: every gateway host sharing
TOKEN_SIGNING_KEY checks every other host's tokens without Redis.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time

MAX_TOKEN = 1024  # longer than any token we mint; longer input is refused unread
SHAPE = re.compile(r"[A-Za-z0-9_-]{2,900}\.[A-Za-z0-9_-]{43}")  # fullmatch


class TokenInvalid(Exception):
    """Not ours, altered, malformed, or minted for another purpose."""


class TokenExpired(TokenInvalid):
    """Ours and intact, but past its expiry."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: bytes):
        if not key:
            raise ValueError("a token signing key is required")
        self._key = key

    def _mac(self, purpose: str, payload: str) -> str:
        message = f"{purpose}.{payload}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def sign(self, purpose: str, claims: dict, expires_at: int) -> str:
        """claims: small JSON values; expires_at: unix seconds."""
        body = json.dumps({**claims, "exp": int(expires_at)}, separators=(",", ":"))
        payload = _b64(body.encode())
        return f"{payload}.{self._mac(purpose, payload)}"

    def verify(self, purpose: str, token, now: float | None = None) -> dict:
        """The claims of a good token; raises TokenExpired or TokenInvalid."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN or not SHAPE.fullmatch(token):
            raise TokenInvalid("malformed")
        payload, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, payload)):
            raise TokenInvalid("bad signature")
        try:
            claims = json.loads(_unb64(payload))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TokenInvalid("unreadable claims") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            raise TokenInvalid("no expiry")
        if claims["exp"] <= (time.time() if now is None else now):
            raise TokenExpired("expired")
        return claims
