"""One JSON error shape for the whole API: {"error": "<stable_code>", "message": "..."}."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Werkzeug's status -> our stable code, for errors raised by the framework itself.
HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ApiError(Exception):
    """Raised anywhere below a route; rendered by the handler as one JSON error."""

    def __init__(self, status: int, code: str, message: str, headers=None, **extra):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})
        self.extra = extra


# Upstream failure kind (app/retell/upstream.py) -> our status, code and message: the one
# place, for calls and chats alike (the codes are stable; the words fit both).
UPSTREAM_ERRORS = {
    "timeout": (504, "upstream_timeout", "The agent service did not answer in time."),
    "unreachable": (502, "upstream_error", "The agent service could not be reached."),
    "oversized": (502, "upstream_error", "The agent service sent an oversized answer."),
    "unusable": (502, "upstream_error", "The agent service sent an unusable answer."),
    "unauthorized": (502, "upstream_unauthorized", "The agent service refused our credentials."),
    "payment_required": (503, "upstream_payment_required", "The agent service is unavailable."),
    "no_agent": (404, "agent_not_found", "This agent does not exist."),
    "rate_limited": (503, "upstream_rate_limited", "The agent service is busy; try again shortly."),
    "failed": (502, "upstream_error", "The agent service could not do what was asked."),
}


def upstream_error(kind: str, retry_after: int | None = None, headers=None) -> ApiError:
    status, code, message = UPSTREAM_ERRORS.get(kind, UPSTREAM_ERRORS["failed"])
    headers = dict(headers or {})
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    return ApiError(status, code, message, headers)


def error_response(status: int, code: str, message: str, headers=None, **extra):
    g.error_code = code  # what the answer says, for app/metrics.py (no body to parse)
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        if not request.path.startswith("/api"):
            return exc
        status = exc.code or 500
        code = HTTP_CODES.get(status, "error" if status < 500 else "internal_error")
        headers = {"Allow": exc.valid_methods} if getattr(exc, "valid_methods", None) else {}
        if headers:
            headers["Allow"] = ", ".join(headers["Allow"])
        return error_response(status, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Something went wrong on our side.")
