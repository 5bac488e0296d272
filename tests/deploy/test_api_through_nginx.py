"""The real app under gunicorn (deploy config) behind nginx, production settings."""

from __future__ import annotations

import json
import time

import pytest

from tests.deploy.helpers import fetch, wait_until
from tests.deploy.test_nginx_static import assert_security_headers

pytestmark = pytest.mark.nginx

ORIGIN = "https://client-a.example"
AGENT = "agent_deploy"


def create_call(stack, *, origin=ORIGIN, source="127.0.0.1", headers=None, agent=AGENT):
    return fetch(
        stack.port,
        "/api/create-web-call",
        method="POST",
        headers={"Content-Type": "application/json", "Origin": origin, **(headers or {})},
        body=json.dumps({"agent_id": agent}),
        source=source,
    )


def test_allowed_origin_gets_a_token_with_exact_cors(stack, allow_origin, fake_retell):
    allow_origin(ORIGIN, AGENT)
    reply = create_call(stack, source="127.0.0.51")
    assert reply.status == 201, reply.body
    assert reply.json()["access_token"]
    assert reply.header_all("Access-Control-Allow-Origin") == [ORIGIN]
    assert "Origin" in reply.header("Vary")
    assert reply.header("X-Request-ID")
    assert_security_headers(reply)
    assert len(fake_retell.requests) == 1


def test_feedback_next_to_create_web_call_through_nginx(stack, allow_origin, fake_retell):
    """The widget posts to new URL('feedback', proxyEndpoint): /api/feedback."""
    allow_origin(ORIGIN, AGENT)
    call = create_call(stack, source="127.0.0.53")
    assert call.status == 201, call.body
    asked = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    preflight = fetch(stack.port, "/api/feedback", method="OPTIONS", headers=asked)
    assert preflight.status == 204
    assert preflight.header_all("Access-Control-Allow-Origin") == [ORIGIN]
    comment = "\U0001f44d" * 1000  # the longest comment, every character escaped: 12 KB
    body = json.dumps({"call_id": call.json()["call_id"], "rating": "up", "comment": comment})
    headers = {"Content-Type": "application/json", "Origin": ORIGIN}
    rated = fetch(stack.port, "/api/feedback", method="POST", headers=headers, body=body,
                  source="127.0.0.53")  # fmt: skip
    assert rated.status == 201, rated.body
    assert rated.json() == {"call_id": call.json()["call_id"], "rating": "up"}
    assert rated.header_all("Access-Control-Allow-Origin") == [ORIGIN]
    assert_security_headers(rated)
    again = fetch(stack.port, "/api/feedback", method="POST", headers=headers, body=body,
                  source="127.0.0.53")  # fmt: skip
    assert again.status == 409 and again.json()["error"] == "feedback_exists"


def test_preflight_passes_through_untouched(stack, allow_origin, fake_retell):
    allow_origin(ORIGIN, AGENT)
    reply = fetch(
        stack.port,
        "/api/create-web-call",
        method="OPTIONS",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert reply.status in (200, 204)
    assert reply.header_all("Access-Control-Allow-Origin") == [ORIGIN]
    assert "POST" in reply.header("Access-Control-Allow-Methods")
    assert fake_retell.requests == []


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "https://client-a.example.evil.example", "null"]
)
def test_refused_origin_gets_403_without_cors(stack, allow_origin, fake_retell, origin):
    allow_origin(ORIGIN, AGENT)
    reply = create_call(stack, origin=origin, source="127.0.0.52")
    assert reply.status == 403
    assert reply.json()["error"] == "origin_not_allowed"
    assert reply.header("Access-Control-Allow-Origin") is None
    assert fake_retell.requests == []


def test_spoofed_forwarded_for_does_not_escape_the_per_ip_limit(stack, allow_origin, fake_retell):
    """Production default: 10 per minute per client address (RATE_LIMIT_PER_IP)."""
    allow_origin(ORIGIN, AGENT)
    # The app's windows are fixed and epoch-aligned: don't straddle a minute boundary.
    if time.time() % 60 > 50:
        time.sleep(60 - time.time() % 60 + 0.1)
    statuses = [
        create_call(
            stack, source="127.0.0.61", headers={"X-Forwarded-For": f"198.51.100.{i}"}
        ).status
        for i in range(11)
    ]
    assert statuses == [201] * 10 + [429]
    refused = create_call(stack, source="127.0.0.61", headers={"X-Forwarded-For": "10.9.9.9"})
    assert refused.status == 429
    body = refused.json()
    assert body["error"] == "rate_limited" and body["retry_after"] > 1
    # The app's own 429 (not nginx's flood guard): it names its limit, and lets the
    # widget read it.
    assert refused.header("X-RateLimit-Limit")
    assert refused.header_all("Access-Control-Allow-Origin") == [ORIGIN]
    assert len(fake_retell.requests) == 10

    # A different client address has its own bucket.
    assert create_call(stack, source="127.0.0.62").status == 201
    assert len(fake_retell.requests) == 11


def test_health_and_widget_version_are_json_through_nginx(stack):
    health = fetch(stack.port, "/api/health/ready")
    assert health.status == 200, health.body
    assert health.header("Content-Type").startswith("application/json")
    version = fetch(stack.port, "/api/widget-version?v=1.0.0")
    assert version.status == 200
    assert "latest" in version.json()
    missing = fetch(stack.port, "/api/nope")
    assert missing.status == 404
    assert missing.json()["error"]


def test_gunicorn_access_log_is_json(stack):
    agent = 'probe "quoted" \\ agent'
    fetch(stack.port, "/api/health?probe=1", headers={"User-Agent": agent})

    def access_lines():
        lines = stack.log.read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return [r for r in records if r.get("log") == "access"]

    assert wait_until(lambda: any(r["user_agent"] == agent for r in access_lines()), 5)
    record = next(r for r in access_lines() if r["user_agent"] == agent)
    assert record["log"] == "access" and record["status"] == 200
    assert record["path"] == "/api/health" and record["method"] == "GET"
    assert record["forwarded_for"] == "127.0.0.1"
    assert record["duration_ms"] >= 0


def allowed(reply) -> set[str]:
    return {m.strip() for m in (reply.header("Allow") or "").split(",") if m.strip()}


@pytest.mark.parametrize(
    "path",
    ["/api/create-web-call", "/api/health", "/api/widget-version", "/api/chat",
     "/api/chat/messages", "/api/chat/end", "/api/chat/history", "/api/feedback"],
)  # fmt: skip
def test_trace_is_a_json_405_with_the_apps_allow(stack, path):
    """nginx refuses TRACE itself, before any location: in the app's shape all the same."""
    # DELETE reaches the app, whose 405 is the reference for this path.
    reference = fetch(stack.port, path, method="DELETE")
    assert reference.status == 405 and reference.json()["error"] == "method_not_allowed"
    for method in ("TRACE", "FOO"):
        reply = fetch(stack.port, path, method=method)
        assert reply.status == 405, (method, reply.body)
        assert reply.header("Content-Type").startswith("application/json")
        body = reply.json()
        assert body["error"] == "method_not_allowed" and body["message"], body
        assert allowed(reply) == allowed(reference), method
        assert_security_headers(reply)


def test_unknown_method_on_widget_files_is_a_json_405(stack):
    reply = fetch(stack.port, "/v1/retell-widget.js", method="FOO")
    assert reply.status == 405
    assert reply.json()["error"] == "method_not_allowed"
    assert allowed(reply) == {"GET", "HEAD"}
    assert reply.header_all("Access-Control-Allow-Origin") == ["*"]
    assert_security_headers(reply)
    trace = fetch(stack.port, "/v1/retell-widget.js", method="TRACE")
    assert trace.status == 405 and trace.json()["error"] == "method_not_allowed"
