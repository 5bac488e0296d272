"""A fake Retell API: a real HTTP server on loopback, following docs/retell.md.

Implements POST /v2/create-web-call and /v3/create-web-call with Bearer auth, and can be
switched to answer each documented error, hang, answer slowly, send garbage or too much.
v3 answers have the documented shape {access_token, call_id, expires_at, ice_servers,
transport}: no `url` unless asked (`gateway_url` / --with-url), so the app's
RETELL_GATEWAY_BASE/<call_id> fallback is what runs by default.
Used by the tests, by `make run` (python -m devtools.fakes.retell) and by the benchmarks.

Calls and webhooks (docs/retell.md, "Webhooks"):
- every minted call is kept in `calls[call_id]` as a get-call object, served by
  GET /v2/get-call/{call_id} (Bearer auth; 404 {"status":"error","message":"Not found"});
- `start_call(call_id)` marks it ongoing, `end_call(call_id, ...)` ends it; with
  `webhook_url` set (--webhook-url), each sends Retell's signed webhooks synchronously and
  in order: call_started (joined calls only), call_ended, call_analyzed, each
  {"event", "call"} signed `X-Retell-Signature: v=<ms>,d=hex(HMAC-SHA256(api_key,
  body + str(ms)))`, retried up to 3 more times on a non-2xx answer or no answer (10 s);
- loopback test hooks, no auth: POST /_fake/calls/{call_id}/start and
  POST /_fake/calls/{call_id}/end {duration_ms?, disconnection_reason?, joined?,
  cost_cents?} answer 202 and do the above in a background thread (the fake WebRTC
  gateway reports its sessions this way).
Cost model: CENTS_PER_MINUTE (12) per started minute of duration_ms; a call nobody joined
costs 0. The signing is written here from the documented formula, on purpose not shared
with app/: a wrong implementation in the app must fail against it.

Chat (POST /create-chat, POST /create-chat-completion, PATCH /end-chat/{id},
GET /get-chat/{id}), its agents and its /_fake/chat/ hooks: devtools/fakes/retell_chat.py,
state in `fake.chat`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devtools.fakes.retell_chat import ChatFake
from devtools.fakes.retell_chat import route as chat_route

DEFAULT_KEY = "key_fake_retell_0123456789abcdef"
ERROR_MESSAGES = {
    400: "Invalid request body",
    401: "Invalid API key",
    402: "Trial ended, please add a payment method",
    422: "Agent not found",
    429: "Rate limited",
    500: "Internal server error",
}
CENTS_PER_MINUTE = 12  # the fake's price: per started minute of a joined call
DEFAULT_MAX_CALL_DURATION_MS = 3_600_000  # Retell's default cap when create sends none
WEBHOOK_RETRIES = 3  # Retell retries a delivery up to 3 more times
# Non-ASCII on purpose: a receiver that verifies re-serialised JSON instead of the raw
# bytes fails on it, as it would on a real transcript.
TRANSCRIPT = "Agent: Hello! How can I help?\nUser: Grüße aus Köln, ça va? 👋\n"
_HOOK = re.compile(r"^/_fake/calls/(?P<call_id>[^/]+)/(?P<action>start|end)$")
_GET_CALL = re.compile(r"^/v2/get-call/(?P<call_id>[^/?]+)$")


class FakeRetell:
    """Start with .start(); .url is the base to use as RETELL_API_BASE."""

    def __init__(
        self,
        api_key: str = DEFAULT_KEY,
        gateway_url: str | None = None,
        port: int = 0,
        webhook_url: str | None = None,
    ):
        self.api_key = api_key
        # The switch for the optional `url`: None = documented shape; set = gateway_url/call_id.
        self.gateway_url = gateway_url
        self.requests: list[dict] = []
        self.tokens: set[str] = set()  # access tokens issued (a fake gateway can require them)
        self.calls: dict[str, dict] = {}  # call_id -> the get-call object, as it is now
        self.webhooks: list[dict] = []  # deliveries: {event, call_id, status, attempts}
        self.lock = threading.Lock()
        # One call's events leave in order even when start and end come from two threads.
        self._sequence = threading.RLock()
        self.release = threading.Event()  # ends a "hang"
        self.chat = ChatFake()  # the chat API's chats, agents and log (retell_chat.py)
        self.reset()
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.thread: threading.Thread | None = None
        self.webhook_url = webhook_url  # after reset(), which sets None

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
            self.calls.clear()
            self.webhooks.clear()
            self.webhook_url: str | None = None
            self.webhook_retry_delay = 1.0  # seconds between tries of one delivery
            self.webhook_timeout = 10.0  # Retell waits 10 s for a 2xx
            self.get_call_status: int | None = None  # set: get-call answers this error
        self.chat.reset()
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
        self.chat.release.set()
        self.server.shutdown()
        self.server.server_close()

    def ice_urls_as_string(self) -> bool:
        """Whether the next answer sends urls as a string (call with the lock held)."""
        self._served += 1
        return self.ice_urls == "string" or (self.ice_urls == "alternate" and self._served % 2 == 0)

    # -- calls and webhooks ---------------------------------------------------
    def record_call(self, call_id: str, body: dict) -> dict:
        """Keep a minted call as Retell would report it: registered, nobody joined yet."""
        call = {
            "call_id": call_id,
            "agent_id": body["agent_id"],
            "call_type": "web_call",
            "call_status": "registered",
        }
        if isinstance(body.get("metadata"), dict):
            call["metadata"] = body["metadata"]
        if body.get("retell_llm_dynamic_variables"):
            call["retell_llm_dynamic_variables"] = body["retell_llm_dynamic_variables"]
        override = body.get("agent_override")
        agent = override.get("agent") if isinstance(override, dict) else None
        limit = agent.get("max_call_duration_ms") if isinstance(agent, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool):
            call["max_call_duration_ms"] = limit
        with self.lock:
            self.calls[call_id] = call
        return call

    def get_call(self, call_id: str) -> dict:
        """A copy of the call object as get-call answers it now (KeyError if unknown)."""
        with self.lock:
            return copy.deepcopy(self.calls[call_id])

    def start_call(self, call_id: str) -> list[dict]:
        """The browser joined: ongoing, with start_timestamp; sends call_started.

        Does nothing (returns []) unless the call is still registered.
        """
        with self._sequence:
            return self._start_call(call_id)

    def _start_call(self, call_id: str) -> list[dict]:
        with self.lock:
            call = self.calls[call_id]
            if call["call_status"] != "registered":
                return []
            call["call_status"] = "ongoing"
            call["start_timestamp"] = _now_ms()
            snapshot = copy.deepcopy(call)
            url = self.webhook_url
        if not url:
            return []
        return [
            self._deliver(url, "call_started", call_id, {"event": "call_started", "call": snapshot})
        ]

    def end_call(
        self,
        call_id: str,
        duration_ms: int = 30_000,
        disconnection_reason: str | None = None,
        joined: bool = True,
        cost_cents: float | None = None,
    ) -> list[dict]:
        """End a call as Retell reports it, and deliver its webhooks when webhook_url is set.

        joined=False: nobody connected: no start_timestamp, duration 0, reason
        "error_user_not_joined", and no call_started (but call_ended and call_analyzed).
        A duration over the call's cap (max_call_duration_ms, else Retell's default one
        hour) is clamped to it with reason "max_duration_reached". disconnection_reason
        defaults to "user_hangup" (joined) or "error_user_not_joined" (not joined).
        cost_cents: call_cost.combined_cost; default CENTS_PER_MINUTE per started minute.
        Returns the deliveries [{event, call_id, status, attempts}] (also appended to
        .webhooks); [] without webhook_url, or when the call had already ended.
        """
        with self._sequence:
            return self._end_call(call_id, duration_ms, disconnection_reason, joined, cost_cents)

    def _end_call(
        self,
        call_id: str,
        duration_ms: int,
        disconnection_reason: str | None,
        joined: bool,
        cost_cents: float | None,
    ) -> list[dict]:
        with self.lock:
            call = self.calls[call_id]
            if call["call_status"] == "ended":
                return []
            now = _now_ms()
            limit = call.get("max_call_duration_ms", DEFAULT_MAX_CALL_DURATION_MS)
            if not joined:
                duration_ms = 0
                reason = disconnection_reason or "error_user_not_joined"
            elif duration_ms > limit:
                duration_ms = limit
                reason = "max_duration_reached"
            else:
                duration_ms = max(0, int(duration_ms))
                reason = disconnection_reason or "user_hangup"
            send_started = joined and call["call_status"] == "registered"
            if joined:
                start = call.get("start_timestamp", now - duration_ms)
                call["start_timestamp"] = start
                end = start + duration_ms
            else:
                call.pop("start_timestamp", None)
                end = now
            started = copy.deepcopy(call)
            started["call_status"] = "ongoing"
            call.update(
                call_status="ended",
                end_timestamp=end,
                duration_ms=duration_ms,
                disconnection_reason=reason,
                transcript=TRANSCRIPT if joined else "",
            )
            ended = copy.deepcopy(call)
            cents = call_cost_cents(duration_ms) if cost_cents is None else cost_cents
            # call_cost and call_analysis come with call_analyzed (get-call has them after).
            call["call_cost"] = {
                "combined_cost": cents,
                "total_duration_seconds": math.ceil(duration_ms / 1000),
                "product_costs": [{"product": "fake_retell", "cost": cents}],
            }
            call["call_analysis"] = {
                "call_summary": "A call with the fake Retell.",
                "user_sentiment": "Neutral",
                "call_successful": joined,
                "in_voicemail": False,
            }
            analyzed = copy.deepcopy(call)
            url = self.webhook_url
        if not url:
            return []
        events = [("call_ended", ended), ("call_analyzed", analyzed)]
        if send_started:
            events.insert(0, ("call_started", started))
        return [
            self._deliver(url, event, call_id, {"event": event, "call": snapshot})
            for event, snapshot in events
        ]

    def send_webhook(
        self,
        event: str,
        call_id: str,
        body_override: bytes | str | dict | None = None,
        signature_override: str | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> int | None:
        """One delivery, no retries: {"event", "call": get-call object} unless
        body_override (bytes/str sent as is, a dict serialised); signed over what is sent
        at timestamp_ms (default now) unless signature_override is the header to send.
        Returns the HTTP status, None when nothing answered. Recorded in .webhooks.
        """
        if not self.webhook_url:
            raise RuntimeError("webhook_url is not set")
        if body_override is None:
            body: bytes | dict = {"event": event, "call": self.get_call(call_id)}
        elif isinstance(body_override, str):
            body = body_override.encode()
        else:
            body = body_override
        return self._deliver(
            self.webhook_url,
            event,
            call_id,
            body,
            tries=1,
            signature=signature_override,
            timestamp_ms=timestamp_ms,
        )["status"]

    def signature(self, raw: bytes, timestamp_ms: int) -> str:
        """X-Retell-Signature for raw at timestamp_ms, from the documented formula."""
        digest = hmac.new(
            self.api_key.encode(), raw + str(timestamp_ms).encode(), hashlib.sha256
        ).hexdigest()
        return f"v={timestamp_ms},d={digest}"

    def _deliver(
        self,
        url: str,
        event: str,
        call_id: str,
        body: bytes | dict,
        *,
        tries: int = 1 + WEBHOOK_RETRIES,
        signature: str | None = None,
        timestamp_ms: int | None = None,
    ) -> dict:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be http(s): {url!r}")
        raw = body if isinstance(body, bytes) else webhook_body(body)
        delivery = {"event": event, "call_id": call_id, "status": None, "attempts": 0}
        for attempt in range(tries):
            if attempt:
                time.sleep(self.webhook_retry_delay)
            delivery["attempts"] = attempt + 1
            header = signature or self.signature(
                raw, _now_ms() if timestamp_ms is None else timestamp_ms
            )
            request = urllib.request.Request(  # noqa: S310 -- http(s) only, checked above
                url,
                data=raw,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "X-Retell-Signature": header,
                    "User-Agent": "FakeRetell-Webhook/1",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.webhook_timeout) as answer:  # noqa: S310
                    delivery["status"] = answer.status
            except urllib.error.HTTPError as exc:
                delivery["status"] = exc.code
                exc.close()
            except OSError:  # refused, reset, timed out: no answer
                delivery["status"] = None
            if delivery["status"] is not None and 200 <= delivery["status"] < 300:
                break
        with self.lock:
            self.webhooks.append(dict(delivery))
        return delivery


def _now_ms() -> int:
    return int(time.time() * 1000)


def call_cost_cents(duration_ms: int) -> int:
    """The fake's price: CENTS_PER_MINUTE per started minute (0 ms costs nothing)."""
    return CENTS_PER_MINUTE * math.ceil(max(0, duration_ms) / 60_000)


def webhook_body(body: dict) -> bytes:
    """How the fake serialises a webhook: compact, UTF-8 (not \\u-escaped)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


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

    def do_GET(self) -> None:  # noqa: N802
        if chat_route(self, "GET", None):
            return None
        fake: FakeRetell = self.server.fake  # type: ignore[attr-defined]
        with fake.lock:
            fake.requests.append(
                {
                    "method": "GET",
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": None,
                    "at": time.time(),
                }
            )
            forced = fake.get_call_status
        match = _GET_CALL.match(self.path)
        if not match:
            return self._send(404, b'{"status":"error","message":"Not found"}')
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return self._error(401)
        if forced:
            return self._error(forced)
        try:
            call = fake.get_call(match["call_id"])
        except KeyError:
            return self._send(404, b'{"status":"error","message":"Not found"}')
        return self._send(200, json.dumps(call, ensure_ascii=False).encode())

    def _hook(self, call_id: str, action: str, body) -> None:
        """POST /_fake/calls/{id}/start|end: loopback test hooks, run in a thread."""
        fake: FakeRetell = self.server.fake  # type: ignore[attr-defined]
        body = {} if body is None else body
        kwargs = {}
        if action == "end":
            types = {
                "duration_ms": (int, float),
                "disconnection_reason": str,
                "joined": bool,
                "cost_cents": (int, float),
            }
            if not isinstance(body, dict) or any(
                k not in types or not isinstance(v, types[k]) for k, v in body.items()
            ):
                return self._send(400, b'{"status":"error","message":"Invalid request body"}')
            kwargs = dict(body)
            if "duration_ms" in kwargs:
                kwargs["duration_ms"] = int(kwargs["duration_ms"])
        with fake.lock:
            call = fake.calls.get(call_id)
            status = call["call_status"] if call else None
        if status is None:
            return self._send(404, b'{"status":"error","message":"Not found"}')
        if status == "ended" or (action == "start" and status != "registered"):
            return self._send(
                409, b'{"status":"error","message":"Call already ' + status.encode() + b'"}'
            )
        run = fake.end_call if action == "end" else fake.start_call
        threading.Thread(target=_quietly, args=(run, call_id), kwargs=kwargs, daemon=True).start()
        return self._send(202, json.dumps({"call_id": call_id, "action": action}).encode())

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return None

    def do_PATCH(self) -> None:  # noqa: N802
        if not chat_route(self, "PATCH", self._body()):
            self._send(404, b'{"status":"error","message":"Not found"}')

    def do_POST(self) -> None:  # noqa: N802
        fake: FakeRetell = self.server.fake  # type: ignore[attr-defined]
        body = self._body()
        if chat_route(self, "POST", body):
            return None
        hook = _HOOK.match(self.path)
        if hook:
            return self._hook(hook["call_id"], hook["action"], body)
        with fake.lock:
            behaviour, status, delay = fake.behaviour, fake.status, fake.delay
            error_key, retry_after, release = fake.error_key, fake.retry_after, fake.release
            fake.requests.append(
                {
                    "method": "POST",
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                    "at": time.time(),
                }
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
        fake.record_call(answer["call_id"], body)
        return self._send(201, json.dumps(answer).encode())


def _quietly(run, call_id: str, **kwargs) -> None:
    """A hook's background work: a call forgotten by reset() meanwhile is not an error."""
    with contextlib.suppress(KeyError):
        run(call_id, **kwargs)


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
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        default=None,
        help="POST signed call_started/call_ended/call_analyzed webhooks here when a call "
        "ends (POST /_fake/calls/<call_id>/end)",
    )
    args = parser.parse_args(argv)
    fake = FakeRetell(args.api_key, args.with_url, args.port, webhook_url=args.webhook_url)
    fake.set_behaviour(delay=args.delay)
    fake.ice_urls = args.ice_urls
    print(f"fake Retell listening on {fake.url}", flush=True)
    if args.webhook_url:
        print(f"fake Retell sends signed webhooks to {args.webhook_url}", flush=True)
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake.server.server_close()


if __name__ == "__main__":
    main()
