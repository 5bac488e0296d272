"""A fake Retell API: a real HTTP server on loopback, following docs/retell.md.

Implements POST /v2/create-web-call and /v3/create-web-call with Bearer auth, and can be
switched to answer each documented error, hang, answer slowly, send garbage or too much.
v3 answers have the documented shape {access_token, call_id, expires_at, ice_servers,
transport}: no `url` unless asked (`gateway_url` / --with-url), so the app's
RETELL_GATEWAY_BASE/<call_id> fallback is what runs by default.
Used by the tests, by `make run` (python -m devtools.fakes.retell) and by the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_KEY = "key_fake_retell_0123456789abcdef"
ERROR_MESSAGES = {
    400: "Invalid request body",
    401: "Invalid API key",
    402: "Trial ended, please add a payment method",
    422: "Agent not found",
    429: "Rate limited",
    500: "Internal server error",
}


class FakeRetell:
    """Start with .start(); .url is the base to use as RETELL_API_BASE."""

    def __init__(self, api_key: str = DEFAULT_KEY, gateway_url: str | None = None, port: int = 0):
        self.api_key = api_key
        # The switch for the optional `url`: None = documented shape; set = gateway_url/call_id.
        self.gateway_url = gateway_url
        self.requests: list[dict] = []
        self.tokens: set[str] = set()  # access tokens issued (a fake gateway can require them)
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends a "hang"
        self.reset()
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.tokens.clear()
            self.behaviour = "ok"
            self.status = 201
            self.delay = 0.0
            self.error_key = "message"
            self.retry_after: str | None = None
            # ice_servers[].urls: "list", "string" (the SDK allows both) or "alternate".
            self.ice_urls = "alternate"
            self.answers: deque[dict] = deque(maxlen=100)  # latest answers, as sent
            self._served = 0
        self.release.set()
        self.release = threading.Event()

    def set_behaviour(
        self,
        behaviour: str = "ok",
        *,
        status: int = 201,
        delay: float = 0.0,
        error_key: str = "message",
        retry_after: str | None = None,
    ) -> None:
        """behaviour: ok | error (with status) | hang | garbage | huge | close | no_token."""
        with self.lock:
            self.behaviour, self.status, self.delay = behaviour, status, delay
            self.error_key, self.retry_after = error_key, retry_after

    def start(self) -> FakeRetell:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def ice_urls_as_string(self) -> bool:
        """Whether the next answer sends urls as a string (call with the lock held)."""
        self._served += 1
        return self.ice_urls == "string" or (self.ice_urls == "alternate" and self._served % 2 == 0)


def created_answer(
    version: str,
    body: dict,
    variables: dict,
    gateway_url: str | None,
    *,
    ice_urls_as_string: bool = False,
) -> dict:
    """A successful create-web-call answer: v2's whole call object, or v3's connection details."""
    call_id = "call_" + secrets.token_hex(12)
    token = "tok_" + secrets.token_urlsafe(24)
    if version == "v2":
        return {
            "call_type": "web_call",
            "access_token": token,
            "call_id": call_id,
            "agent_id": body["agent_id"],
            "agent_version": body.get("agent_version", 1),
            "call_status": "registered",
            "metadata": body.get("metadata", {}),
            "retell_llm_dynamic_variables": variables,
            "opt_out_sensitive_data_storage": False,
        }
    stun = "stun:127.0.0.1:3478"
    answer = {
        "access_token": token,
        "call_id": call_id,
        "expires_at": int(time.time() * 1000) + 30_000,
        "ice_servers": [{"urls": stun if ice_urls_as_string else [stun]}],
        "transport": "gateway",
    }
    if gateway_url:
        answer["url"] = f"{gateway_url.rstrip('/')}/{call_id}"
    return answer


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connects in a burst of clicks


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeRetell/1"
    # One write per response and no Nagle: otherwise headers and body go out as two
    # segments and the client's delayed ACK adds ~40 ms to every call.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, key: str = "message", headers=None):
        body = {"status": "error", key: ERROR_MESSAGES.get(status, "Error")}
        self._send(status, json.dumps(body).encode(), headers=headers)

    def do_POST(self) -> None:  # noqa: N802
        fake: FakeRetell = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with fake.lock:
            behaviour, status, delay = fake.behaviour, fake.status, fake.delay
            error_key, retry_after, release = fake.error_key, fake.retry_after, fake.release
            fake.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.time()}
            )
        if delay:
            time.sleep(delay)
        version = self.path.split("/")[1] if self.path.count("/") >= 2 else ""
        if self.path not in ("/v2/create-web-call", "/v3/create-web-call"):
            return self._send(404, b'{"status":"error","message":"Not found"}')
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return self._error(401, error_key)
        if not isinstance(body, dict) or not isinstance(body.get("agent_id"), str):
            return self._error(400, error_key)
        variables = body.get("retell_llm_dynamic_variables") or {}
        if not all(isinstance(v, str) for v in variables.values()):
            return self._error(400, error_key)
        if behaviour == "hang":
            release.wait(60)
            return self._error(500, error_key)
        if behaviour == "close":
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)
            return None
        if behaviour == "error":
            headers = {"Retry-After": retry_after} if retry_after else None
            return self._error(status, error_key, headers)
        if behaviour == "garbage":
            return self._send(201, b"<html>not json", "text/html")
        if behaviour == "huge":
            padding = "x" * (70 * 1024)
            return self._send(201, json.dumps({"padding": padding}).encode())
        with fake.lock:
            as_string = fake.ice_urls_as_string()
        answer = created_answer(
            version, body, variables, fake.gateway_url, ice_urls_as_string=as_string
        )
        if behaviour == "no_token":
            del answer["access_token"]
        else:
            with fake.lock:
                fake.tokens.add(answer["access_token"])
                fake.answers.append(answer)
        return self._send(201, json.dumps(answer).encode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Retell API on loopback.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    parser.add_argument(
        "--with-url",
        metavar="BASE",
        default=None,
        help="v3 answers also carry url=BASE/<call_id> (default: the documented shape, no url)",
    )
    parser.add_argument(
        "--ice-urls",
        choices=["list", "string", "alternate"],
        default="alternate",
        help="form of ice_servers[].urls in v3 answers",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    args = parser.parse_args(argv)
    fake = FakeRetell(args.api_key, args.with_url, args.port)
    fake.set_behaviour(delay=args.delay)
    fake.ice_urls = args.ice_urls
    print(f"fake Retell listening on {fake.url}", flush=True)
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake.server.server_close()


if __name__ == "__main__":
    main()
