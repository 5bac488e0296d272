"""The gateway's own signed tokens (app/policy/tokens.py)."""

from __future__ import annotations

import time

import pytest

from app import create_app, token_key
from app.policy.tokens import TokenExpired, TokenInvalid, TokenSigner
from config import load_settings

SIGNER = TokenSigner(b"k" * 32)


def test_round_trip_keeps_claims_and_expiry():
    token = SIGNER.sign("chat", {"c": "chat_1", "e": "https://a.example"}, int(time.time()) + 60)
    claims = SIGNER.verify("chat", token)
    assert claims["c"] == "chat_1" and claims["e"] == "https://a.example"


def test_expired_token_is_refused_as_expired():
    token = SIGNER.sign("chat", {"c": "x"}, int(time.time()) - 1)
    with pytest.raises(TokenExpired):
        SIGNER.verify("chat", token)


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # signature altered
    lambda t: "e" + t[1:] if t[0] != "e" else "f" + t[1:],  # claims altered
    lambda t: t + "x",
    lambda t: t.replace(".", ""),
    lambda t: "",
    lambda t: "a" * 5000,
    lambda t: None,
    lambda t: 12,
])  # fmt: skip
def test_altered_or_malformed_tokens_are_invalid(mutate):
    token = SIGNER.sign("chat", {"c": "x"}, int(time.time()) + 60)
    with pytest.raises(TokenInvalid) as info:
        SIGNER.verify("chat", mutate(token))
    assert not isinstance(info.value, TokenExpired)


def test_a_token_for_one_purpose_never_passes_as_another():
    token = SIGNER.sign("chat", {"c": "x"}, int(time.time()) + 60)
    with pytest.raises(TokenInvalid):
        SIGNER.verify("transcript", token)


def test_another_key_refuses():
    token = SIGNER.sign("chat", {"c": "x"}, int(time.time()) + 60)
    with pytest.raises(TokenInvalid):
        TokenSigner(b"j" * 32).verify("chat", token)


def test_key_is_shared_by_hosts_with_the_same_retell_key_and_never_the_retell_key_itself():
    one = token_key(load_settings({}, {"RETELL_API_KEY": "key_abc"}))
    two = token_key(load_settings({}, {"RETELL_API_KEY": "key_abc"}))
    assert one == two and b"key_abc" not in one
    assert token_key(load_settings({}, {"RETELL_API_KEY": "key_abd"})) != one
    assert token_key(load_settings({}, {"TOKEN_SIGNING_KEY": "mine"})) == b"mine"


def test_token_signing_key_is_redacted_from_settings():
    settings = load_settings({}, {"TOKEN_SIGNING_KEY": "s3cr3t-signing"})
    assert "s3cr3t-signing" in settings.secrets and "s3cr3t-signing" not in repr(settings)
    assert create_app(settings).extensions["tokens"]
