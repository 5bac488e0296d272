"""Fake captcha siteverify endpoints (Turnstile, hCaptcha, reCAPTCHA v3): one real HTTP
server on loopback, following docs/verification.md. Tokens are the ones `issue()` handed
out (the browser-side fakes use it too); each is good once, like the real services.

    fake = FakeSiteverify().start()
    fake.url_for("turnstile")          # -> the TURNSTILE_VERIFY_URL to configure
    token = fake.issue("turnstile", hostname="client-a.com")
    fake.set_behaviour("turnstile", "timeout")   # ok | fail | garbage | error | timeout
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PATHS = {
    "turnstile": "/turnstile/v0/siteverify",
    "hcaptcha": "/hcaptcha/siteverify",
    "recaptcha": "/recaptcha/api/siteverify",
}
SECRETS = {  # what the fake expects as `secret` (the tests configure the gateway with these)
    "turnstile": "fake-turnstile-secret",
    "hcaptcha": "fake-hcaptcha-secret",
    "recaptcha": "fake-recaptcha-secret",
}


class FakeSiteverify:
    def __init__(self, port: int = 0):
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.release = threading.Event()
        self.reset()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url_for(self, provider: str) -> str:
        return self.url + PATHS[provider]

    def reset(self) -> None:
        with self.lock:
            self.tokens: dict[str, dict] = {}  # token -> what the provider says about it
            self.behaviour = dict.fromkeys(PATHS, "ok")
            self.requests: list[dict] = []
        self.release.set()
        self.release = threading.Event()

    def set_behaviour(self, provider: str, behaviour: str) -> None:
        """ok | fail (success false) | garbage (not JSON) | error (HTTP 500) | timeout."""
        with self.lock:
            self.behaviour[provider] = behaviour

    def issue(
        self, provider: str, hostname: str, *, score: float = 0.9, action: str = "retell_call"
    ) -> str:
        """A token the browser would get on `hostname` (reCAPTCHA: with score and action)."""
        token = f"{provider}-{secrets.token_urlsafe(24)}"
        with self.lock:
            self.tokens[token] = {"hostname": hostname, "score": score, "action": action}
        return token

    def start(self) -> FakeSiteverify:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, provider: str, form: dict[str, str]) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append({"provider": provider, **form})
            behaviour, release = self.behaviour[provider], self.release
            known = self.tokens.pop(form.get("response", ""), None)  # good once
        if behaviour == "timeout":
            release.wait(30)
        if behaviour == "error":
            return 500, b'{"success": false, "error-codes": ["internal-error"]}'
        if behaviour == "garbage":
            return 200, b"<html>oops"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if form.get("secret") != SECRETS[provider]:
            body = {"success": False, "error-codes": ["invalid-input-secret"]}
        elif behaviour == "fail" or known is None:
            body = {"success": False, "error-codes": ["timeout-or-duplicate"]}
        else:
            body = {"success": True, "challenge_ts": now, "hostname": known["hostname"]}
            if provider == "recaptcha":
                body.update(score=known["score"], action=known["action"])
        return 200, json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        fake: FakeSiteverify = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        provider = next((p for p, path in PATHS.items() if path == self.path), None)
        if provider is None:
            status, body = 404, b'{"success": false}'
        else:
            if self.headers.get("Content-Type", "").startswith("application/json"):
                form = {k: str(v) for k, v in json.loads(raw or "{}").items()}
            else:
                form = {k: v[0] for k, v in parse_qs(raw).items()}
            status, body = fake.answer(provider, form)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake captcha siteverify endpoints")
    parser.add_argument("--port", type=int, default=0)
    fake = FakeSiteverify(parser.parse_args().port).start()
    print(f"fake siteverify on {fake.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
