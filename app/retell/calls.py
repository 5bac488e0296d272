"""The upstream client: one connection pool per process, v3 or v2 create-web-call.

The widget gets one response shape whatever the API generation, and nothing else from the
upstream body. A create is never retried: Retell has no idempotency key, so a retry after
the request may have arrived could mint a second, orphaned (billed) call.
"""

from __future__ import annotations

import json
import logging
import re
import time

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as UrllibTimeout

from config import Settings

log = logging.getLogger(__name__)

MAX_UPSTREAM_BYTES = 64 * 1024
CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # fullmatch
DEFAULT_RETRY_AFTER = 5

# What went wrong upstream; app/errors.py maps each kind to our status, code and message.
TIMEOUT, UNREACHABLE, OVERSIZED, UNUSABLE = "timeout", "unreachable", "oversized", "unusable"
UNAUTHORIZED, PAYMENT_REQUIRED, AGENT_NOT_FOUND = "unauthorized", "payment_required", "no_agent"
RATE_LIMITED, FAILED = "rate_limited", "failed"


class UpstreamFailure(Exception):
    """Retell did not create the call; `kind` says why, in Retell's terms, not ours."""

    def __init__(self, kind: str, latency_ms: int, retry_after: int | None = None):
        super().__init__(kind)
        self.kind, self.latency_ms, self.retry_after = kind, latency_ms, retry_after


class RetellClient:
    def __init__(self, app=None):
        self.http: urllib3.PoolManager | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app) -> None:
        self.settings: Settings = app.config["SETTINGS"]
        # urllib3 directly: requests' layers cost ~0.4 ms CPU per call (bench/). retries=False:
        # no retry of any kind, no redirects followed. maxsize covers a gevent worker's burst.
        self.http = urllib3.PoolManager(num_pools=4, maxsize=256, block=False, retries=False)
        app.extensions["retell"] = self

    def create_web_call(
        self, agent_id: str, metadata: dict, dynamic_variables: dict, max_call_ms: int | None
    ) -> tuple[dict, int]:
        """Returns (the widget's response body, upstream latency ms); raises UpstreamFailure.

        max_call_ms, when given, is sent as agent_override.agent.max_call_duration_ms, so
        Retell itself ends the call there (a minute budget's reservation, or the cap).
        """
        body: dict = {"agent_id": agent_id, "metadata": metadata}
        if dynamic_variables:
            body["retell_llm_dynamic_variables"] = dynamic_variables
        if max_call_ms:
            body["agent_override"] = {"agent": {"max_call_duration_ms": max_call_ms}}
        version = self.settings.retell_api_version
        data, latency_ms = self._call("POST", f"/{version}/create-web-call", body)
        try:
            return self._normalise(data), latency_ms
        except (ValueError, TypeError, KeyError):
            log.warning("upstream create-web-call answered with an unusable body")
            raise UpstreamFailure(UNUSABLE, latency_ms) from None

    def get_call(self, call_id: str) -> dict:
        """Retell's call object (GET /v2/get-call/{id}), for reconciling a missed webhook."""
        if not CALL_ID.fullmatch(call_id):
            raise UpstreamFailure(AGENT_NOT_FOUND, 0)
        data, _ = self._call("GET", f"/v2/get-call/{call_id}")
        if not isinstance(data, dict):
            raise UpstreamFailure(UNUSABLE, 0)
        return data

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[object, int]:
        """One request, never retried; (parsed JSON, latency ms) or UpstreamFailure."""
        s = self.settings
        headers = {
            "Authorization": f"Bearer {s.retell_api_key.reveal()}",
            "Accept": "application/json",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()

        def failure(kind, retry_after=None):
            elapsed = round((time.perf_counter() - started) * 1000)
            return UpstreamFailure(kind, elapsed, retry_after)

        try:
            response = self.http.request(
                method,
                f"{s.retell_api_base}{path}",
                body=None if body is None else json.dumps(body).encode(),
                headers=headers,
                timeout=urllib3.Timeout(
                    connect=s.upstream_connect_timeout, read=s.upstream_read_timeout
                ),
                preload_content=False,
                redirect=False,
            )
            raw = _read_bounded(response)
        except (HTTPError, OSError) as exc:
            cause = exc.reason if isinstance(exc, MaxRetryError) else exc
            # NewConnectionError (refused, unreachable) subclasses the timeout error.
            if isinstance(cause, UrllibTimeout) and not isinstance(cause, NewConnectionError):
                raise failure(TIMEOUT) from None
            log.warning("upstream request failed: %s", type(cause).__name__)
            raise failure(UNREACHABLE) from None
        latency_ms = round((time.perf_counter() - started) * 1000)
        if raw is None:
            raise failure(OVERSIZED)
        if not 200 <= response.status < 300:
            raise _map_error(response, failure)
        try:
            return json.loads(raw), latency_ms
        except ValueError:
            log.warning("upstream answered %s with an unusable body", response.status)
            raise failure(UNUSABLE) from None

    def _normalise(self, data: dict) -> dict:
        token, call_id = data["access_token"], data["call_id"]
        if not isinstance(token, str) or not token or not CALL_ID.fullmatch(str(call_id)):
            raise ValueError("missing token or call id")
        if self.settings.retell_api_version == "v2":
            return {"access_token": token, "call_id": call_id, "transport": "livekit"}
        result = {
            "access_token": token,
            "call_id": call_id,
            "transport": "gateway",
            "gateway_url": _gateway_url(data.get("url"))
            or f"{self.settings.retell_gateway_base}/{call_id}",
        }
        if isinstance(data.get("expires_at"), int) and not isinstance(data["expires_at"], bool):
            result["expires_at"] = data["expires_at"]
        servers = _ice_servers(data.get("ice_servers"))
        if servers:
            result["ice_servers"] = servers
        return result


def _read_bounded(response: urllib3.BaseHTTPResponse) -> bytes | None:
    """The body, or None when it is larger than MAX_UPSTREAM_BYTES."""
    chunks, size = [], 0
    for chunk in response.stream(16384):
        size += len(chunk)
        if size > MAX_UPSTREAM_BYTES:
            response.close()  # the connection is not reused after an oversized answer
            return None
        chunks.append(chunk)
    response.release_conn()
    return b"".join(chunks)


def _map_error(response: urllib3.BaseHTTPResponse, failure) -> UpstreamFailure:
    status = response.status
    # Log the status only: the upstream body may echo what we sent.
    if status in (401, 403):
        log.error("UPSTREAM REJECTED OUR API KEY (HTTP %s): check RETELL_API_KEY", status)
        return failure(UNAUTHORIZED)
    if status == 402:
        log.error("upstream says payment required (HTTP 402): check the Retell account")
        return failure(PAYMENT_REQUIRED)
    if status in (404, 422):
        return failure(AGENT_NOT_FOUND)
    if status == 429:
        return failure(RATE_LIMITED, _retry_after(response.headers.get("Retry-After")))
    log.warning("upstream answered HTTP %s", status)
    return failure(FAILED)


def _retry_after(value: str | None) -> int:
    try:
        return max(1, min(int(value or DEFAULT_RETRY_AFTER), 3600))
    except ValueError:
        return DEFAULT_RETRY_AFTER


def _gateway_url(value) -> str | None:
    if isinstance(value, str) and value.startswith(("https://", "http://")) and len(value) < 500:
        return value.rstrip("/")
    return None


def _ice_servers(value) -> list[dict]:
    """Keeps only well-formed RTCIceServer dicts with string fields."""
    servers = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        urls = item.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            continue
        server = {"urls": urls}
        for key in ("username", "credential"):
            if isinstance(item.get(key), str):
                server[key] = item[key]
        servers.append(server)
    return servers[:8]
