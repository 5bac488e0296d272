"""Retell's HTTP API as both clients (calls, chat) use it: one pool each, the Bearer key,
bounded answers, and what went wrong said in Retell's terms, never in ours.

Nothing here retries: Retell has no idempotency key, so a retry after the request may have
arrived could mint a second call or send a visitor's message twice.
"""

from __future__ import annotations

import json
import logging
import re
import time

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as UrllibTimeout

from app import metrics
from config import Settings

log = logging.getLogger(__name__)

MAX_UPSTREAM_BYTES = 64 * 1024
UPSTREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # a call or chat id (fullmatch)
DEFAULT_RETRY_AFTER = 5

# What went wrong upstream; app/errors.py maps each kind to our status, code and message.
TIMEOUT, UNREACHABLE, OVERSIZED, UNUSABLE = "timeout", "unreachable", "oversized", "unusable"
UNAUTHORIZED, PAYMENT_REQUIRED, AGENT_NOT_FOUND = "unauthorized", "payment_required", "no_agent"
RATE_LIMITED, FAILED = "rate_limited", "failed"


class UpstreamFailure(Exception):
    """Retell did not do what was asked; `kind` says why, in Retell's terms, not ours."""

    def __init__(self, kind: str, latency_ms: int, retry_after: int | None = None):
        super().__init__(kind)
        self.kind, self.latency_ms, self.retry_after = kind, latency_ms, retry_after


class RetellHttp:
    """The shared part of a Retell client; subclasses add the endpoints they speak."""

    extension = "retell"  # the app.extensions name

    def __init__(self, app=None):
        self.http: urllib3.PoolManager | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app) -> None:
        self.settings: Settings = app.config["SETTINGS"]
        # urllib3 directly: requests' layers cost ~0.4 ms CPU per call (bench/). retries=False:
        # no retry of any kind, no redirects followed. maxsize covers a gevent worker's burst.
        self.http = urllib3.PoolManager(num_pools=4, maxsize=256, block=False, retries=False)
        app.extensions[self.extension] = self

    def _call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        read_timeout: float | None = None,
        max_bytes: int = MAX_UPSTREAM_BYTES,
    ) -> tuple[object, int]:
        """One request, never retried; (parsed JSON, latency ms) or UpstreamFailure.

        A 2xx with an empty body is (None, latency)."""
        s = self.settings
        headers = {
            "Authorization": f"Bearer {s.retell_api_key.reveal()}",
            "Accept": "application/json",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        api, status = _api_name(path), ""  # status: Retell's, once it answered

        def failure(kind, retry_after=None):
            elapsed = time.perf_counter() - started
            if not status:  # no answer: why not is its status (an answer is observed below)
                metrics.upstream(api, kind, elapsed)
            return UpstreamFailure(kind, round(elapsed * 1000), retry_after)

        read = s.upstream_read_timeout if read_timeout is None else read_timeout
        try:
            response = self.http.request(
                method,
                f"{s.retell_api_base}{path}",
                body=None if body is None else json.dumps(body).encode(),
                headers=headers,
                timeout=urllib3.Timeout(connect=s.upstream_connect_timeout, read=read),
                preload_content=False,
                redirect=False,
            )
            raw = _read_bounded(response, max_bytes)
        except (HTTPError, OSError) as exc:
            cause = exc.reason if isinstance(exc, MaxRetryError) else exc
            # NewConnectionError (refused, unreachable) subclasses the timeout error.
            if isinstance(cause, UrllibTimeout) and not isinstance(cause, NewConnectionError):
                raise failure(TIMEOUT) from None
            log.warning("upstream request failed: %s", type(cause).__name__)
            raise failure(UNREACHABLE) from None
        elapsed = time.perf_counter() - started
        latency_ms = round(elapsed * 1000)
        status = str(response.status)
        metrics.upstream(api, status, elapsed)
        if raw is None:
            raise failure(OVERSIZED)
        if not 200 <= response.status < 300:
            raise _map_error(response, failure)
        if not raw.strip():
            return None, latency_ms
        try:
            return json.loads(raw), latency_ms
        except (ValueError, RecursionError):
            log.warning("upstream answered %s with an unusable body", response.status)
            raise failure(UNUSABLE) from None


def _api_name(path: str) -> str:
    """'/v3/create-web-call' -> 'create-web-call', '/get-chat/<id>' -> 'get-chat': a
    metric label with a few values, never an id."""
    parts = path.strip("/").split("/")
    if parts[0] in ("v2", "v3") and len(parts) > 1:
        parts = parts[1:]
    return parts[0]


def _read_bounded(response: urllib3.BaseHTTPResponse, max_bytes: int) -> bytes | None:
    """The body, or None when it is larger than max_bytes."""
    chunks, size = [], 0
    for chunk in response.stream(16384):
        size += len(chunk)
        if size > max_bytes:
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
