"""Proving a person is there: built-in proof of work (ALTCHA v1) or a captcha's siteverify.

Which check an allowlist entry needs is read live in admission (`verify` in its limits
hash). A token is checked here, before the admission that counts it; its replay key is
then kept in Redis by that same admission script, so each token admits one call, across
every gateway host.

ALTCHA v1, so ALTCHA's own widget and libraries interoperate:
    challenge = hex(SHA-256(salt + str(number))), signature = hex(HMAC-SHA256(key, challenge))
    salt = <random hex>?expires=<unix s>&   (the trailing & stops salt splicing)
    solution = base64(JSON {algorithm, challenge, number, salt, signature})
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import urllib3

log = logging.getLogger(__name__)

PROVIDERS = ("pow", "turnstile", "hcaptcha", "recaptcha")
POW_TTL_S = 300
MAX_TOKEN = 4096
RECAPTCHA_ACTION = "retell_call"  # the widget executes reCAPTCHA v3 with this action


class VerificationFailed(Exception):
    """The token is wrong, expired, for another site, or scored too low: 403."""


class VerificationUnavailable(Exception):
    """The provider could not answer in time, or is not configured: 503 (fail closed)."""


class Verifier:
    def __init__(self, settings, pow_key: bytes):
        self.settings = settings
        self.pow_key = pow_key
        # Its own pool: a slow provider must not hold the connections Retell calls need.
        self.http = urllib3.PoolManager(num_pools=3, maxsize=64, block=False, retries=False)

    def ready(self, provider: str) -> bool:
        """Whether this provider has the keys it needs."""
        s = self.settings
        return {
            "none": True,
            "pow": bool(self.pow_key),
            "turnstile": bool(s.turnstile_site_key and s.turnstile_secret_key),
            "hcaptcha": bool(s.hcaptcha_site_key and s.hcaptcha_secret_key),
            "recaptcha": bool(s.recaptcha_site_key and s.recaptcha_secret_key),
        }.get(provider, False)

    def readiness(self) -> dict[str, bool]:
        return {provider: self.ready(provider) for provider in ("none", *PROVIDERS)}

    def challenge_for(self, provider: str) -> dict:
        """What the widget needs to get a token: the 403 verification_required's `verify`."""
        if provider == "pow":
            return {"provider": "pow", "challenge": self.pow_challenge()}
        site_key = getattr(self.settings, f"{provider}_site_key")
        answer = {"provider": provider, "site_key": site_key}
        if provider == "recaptcha":
            answer["action"] = RECAPTCHA_ACTION
        return answer

    def check(self, provider: str, token: str, origin: str, remote_ip: str | None) -> str:
        """The token's replay key when it is good; raises VerificationFailed/Unavailable."""
        if not self.ready(provider):
            raise VerificationUnavailable(f"{provider} is not configured")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
            raise VerificationFailed("malformed token")
        if provider == "pow":
            return self.check_pow(token)
        self.siteverify(provider, token, origin, remote_ip)
        return hashlib.sha256(f"{provider}:{token}".encode()).hexdigest()

    # Proof of work

    def pow_challenge(self, now: float | None = None) -> dict:
        expires = int((now or time.time()) + POW_TTL_S)
        salt = f"{secrets.token_hex(12)}?expires={expires}&"
        number = secrets.randbelow(self.settings.pow_difficulty + 1)
        challenge = hashlib.sha256(f"{salt}{number}".encode()).hexdigest()
        return {
            "algorithm": "SHA-256",
            "challenge": challenge,
            "maxnumber": self.settings.pow_difficulty,
            "salt": salt,
            "signature": self._sign(challenge),
        }

    def check_pow(self, token: str, now: float | None = None) -> str:
        try:
            solution = json.loads(base64.b64decode(token, validate=True))
            algorithm, challenge = solution["algorithm"], solution["challenge"]
            number, salt, signature = solution["number"], solution["salt"], solution["signature"]
        except (ValueError, TypeError, KeyError):
            raise VerificationFailed("not an ALTCHA solution") from None
        if algorithm != "SHA-256" or not all(isinstance(v, str) for v in (challenge, salt)):
            raise VerificationFailed("unsupported algorithm")
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise VerificationFailed("bad number")
        if not isinstance(signature, str) or not hmac.compare_digest(
            self._sign(challenge), signature
        ):
            raise VerificationFailed("not signed by this gateway")
        if hashlib.sha256(f"{salt}{number}".encode()).hexdigest() != challenge:
            raise VerificationFailed("wrong number")
        expires = parse_qs(salt.partition("?")[2]).get("expires", [""])[0]
        if not expires.isdigit() or int(expires) < (now or time.time()):
            raise VerificationFailed("expired")
        return f"pow:{signature}"

    def _sign(self, challenge: str) -> str:
        return hmac.new(self.pow_key, challenge.encode(), hashlib.sha256).hexdigest()

    # Captchas

    def siteverify(self, provider: str, token: str, origin: str, remote_ip: str | None) -> None:
        s = self.settings
        fields = {
            "secret": getattr(s, f"{provider}_secret_key").reveal(),
            "response": token,
        }
        if remote_ip:
            fields["remoteip"] = remote_ip
        if provider == "hcaptcha":
            fields["sitekey"] = s.hcaptcha_site_key
        try:
            response = self.http.request(
                "POST",
                getattr(s, f"{provider}_verify_url"),
                body=urlencode(fields).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=urllib3.Timeout(connect=s.verify_timeout, read=s.verify_timeout),
                redirect=False,
            )
            answer = json.loads(response.data[:65536])
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            log.warning("%s siteverify failed: %s", provider, type(exc).__name__)
            raise VerificationUnavailable(provider) from None
        if response.status >= 500 or not isinstance(answer, dict):
            log.warning("%s siteverify answered HTTP %s", provider, response.status)
            raise VerificationUnavailable(provider)
        if "internal-error" in (answer.get("error-codes") or []):
            raise VerificationUnavailable(provider)
        self._judge(provider, answer, origin)

    def _judge(self, provider: str, answer: dict, origin: str) -> None:
        if answer.get("success") is not True:
            raise VerificationFailed(f"{provider}: {answer.get('error-codes') or 'not a success'}")
        if answer.get("hostname") != urlsplit(origin).hostname:
            raise VerificationFailed(f"{provider}: token for another hostname")
        if provider == "recaptcha":
            score = answer.get("score")
            if not isinstance(score, int | float) or score < self.settings.recaptcha_min_score:
                raise VerificationFailed("recaptcha: score too low")
            if answer.get("action") != RECAPTCHA_ACTION:
                raise VerificationFailed("recaptcha: another action")
