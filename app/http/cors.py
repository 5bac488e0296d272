"""CORS in one place. Each route declares its policy with a decorator:

- @public: read-only routes anyone may read (`Access-Control-Allow-Origin: *`);
- @exact: create-web-call and the chat routes, whose answer names the one origin the
  allowlist allowed (`allow(origin)` during the request), never credentials, `Vary: Origin`
  always.
"""

from __future__ import annotations

from flask import current_app, g, request

# Exposed so the widget (a cross-origin caller) can read them.
EXPOSED_HEADERS = (
    "Retry-After, X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
)
PREFLIGHT_HEADERS = "Content-Type, X-Request-ID"
# The chat routes also take the chat token as `Authorization: Bearer` (kept out of URLs).
CHAT_PREFLIGHT_HEADERS = "Authorization, Content-Type, X-Request-ID"


def public(view):
    view.cors_policy = "public"
    return view


def exact(view):
    view.cors_policy = "exact"
    return view


def allow(origin: str) -> None:
    """This response may be read by `origin` (exactly as the browser sent it)."""
    g.cors_origin = origin


def preflight_response(methods: str, max_age: int, headers: str | None = None):
    response = current_app.response_class(status=204, content_type=None)
    response.headers.pop("Content-Type", None)
    response.headers["Access-Control-Allow-Methods"] = methods
    response.headers["Access-Control-Allow-Headers"] = headers or PREFLIGHT_HEADERS
    response.headers["Access-Control-Max-Age"] = str(max_age)
    return response


def _apply(response):
    view = current_app.view_functions.get(request.endpoint)
    policy = getattr(view, "cors_policy", None)
    if policy == "exact":
        response.vary.add("Origin")
        if g.get("cors_origin"):
            response.headers["Access-Control-Allow-Origin"] = g.cors_origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    elif policy == "public":
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-ID"
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = PREFLIGHT_HEADERS
    return response


def init_app(app) -> None:
    app.after_request(_apply)
