"""JSON log lines, a request id on every request, and one access line per request."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, g, request

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # fullmatch
access_log = logging.getLogger("app.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; any occurrence of a secret is replaced before writing."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        line = json.dumps(data, default=str)
        for secret in self.secrets:
            line = line.replace(secret, "[redacted]")
        return line


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (so test capture and reopened streams work)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(level: str, secrets: tuple[str, ...]) -> None:
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_retell_widget", False)]:
        root.removeHandler(old)
    handler._retell_widget = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def init_request_logging(app: Flask) -> None:
    @app.before_request
    def start_request():
        g.started = time.perf_counter()
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def finish_request(response):
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        duration = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        access_log.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(duration, 1),
                    "request_id": request_id,
                    "origin": request.headers.get("Origin", "")[:300],
                    "ip": request.remote_addr,
                }
            },
        )
        return response
