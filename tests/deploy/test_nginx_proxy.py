"""What nginx forwards to gunicorn, and what it answers itself, against a recording stub."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import fetch, run_nginx
from tests.deploy.test_nginx_static import assert_security_headers

pytestmark = pytest.mark.nginx


def test_forwarded_for_is_set_to_the_peer_never_appended(static_nginx, upstream):
    reply = fetch(
        static_nginx.port,
        "/api/create-web-call",
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Forwarded-For": "203.0.113.9, 198.51.100.1",
            "X-Forwarded-Host": "evil.example",
            "X-Real-IP": "203.0.113.9",
            "Forwarded": "for=203.0.113.9",
        },
        body="{}",
        source="127.0.0.21",
    )
    assert reply.status == 200
    seen = upstream.requests[-1]
    assert seen["forwarded_for"] == ["127.0.0.21"]
    assert seen["headers"]["x-forwarded-proto"] == "http"
    for name in ("x-forwarded-host", "x-real-ip", "forwarded"):
        assert name not in seen["headers"]
    # HTTP/1.1 keepalive to the upstream: nginx must not send "Connection: close".
    assert seen["headers"].get("connection", "") == ""
    assert seen["body"] == b"{}"


def test_cors_headers_pass_through_untouched(static_nginx):
    own = fetch(static_nginx.port, "/api/cors-check", headers={"Origin": "https://x.example"})
    assert own.header_all("Access-Control-Allow-Origin") == ["https://client.example"]
    assert own.header_all("Vary") == ["Origin"]
    none = fetch(static_nginx.port, "/api/health", headers={"Origin": "https://x.example"})
    assert none.header("Access-Control-Allow-Origin") is None
    assert_security_headers(none)


def test_oversized_body_is_413_json_and_not_proxied(static_nginx, upstream):
    before = len(upstream.requests)
    reply = fetch(
        static_nginx.port,
        "/api/create-web-call",
        method="POST",
        headers={"Content-Type": "application/json"},
        body="x" * 40_000,
    )
    assert reply.status == 413
    assert reply.json()["error"] == "payload_too_large"
    assert reply.header("Content-Type") == "application/json"
    assert_security_headers(reply)
    assert len(upstream.requests) == before


@pytest.mark.parametrize("path", ["/api/create-web-call", "/api/chat", "/api/feedback"])
def test_limit_req_answers_429_json_per_client_address(tmp_path, dist_dir, upstream, path):
    with run_nginx(
        tmp_path,
        upstream=f"127.0.0.1:{upstream.port}",
        dist_root=dist_dir,
        limit_rate="1r/m",
        limit_burst=2,
    ) as nginx:
        before = len(upstream.requests)
        statuses = []
        for _ in range(6):
            reply = fetch(nginx.port, path, method="POST", body="{}", source="127.0.0.31")
            statuses.append(reply.status)
        # 1 + burst pass; the rest are refused at the edge and never reach gunicorn.
        assert statuses == [200, 200, 200, 429, 429, 429]
        assert len(upstream.requests) - before == 3
        assert reply.json()["error"] == "rate_limited"
        assert reply.json()["retry_after"] >= 1
        assert reply.header("Content-Type") == "application/json"
        assert reply.header("Retry-After") == "1"
        assert_security_headers(reply)
        # Another client address has its own bucket, and other routes are not limited.
        other = fetch(nginx.port, path, method="POST", body="{}", source="127.0.0.32")
        assert other.status == 200
        assert fetch(nginx.port, "/api/health", source="127.0.0.31").status == 200
        chat = fetch(nginx.port, "/api/chat/end", method="POST", body="{}", source="127.0.0.31")
        assert chat.status == 200  # only starts are guarded here; the app limits the rest


def test_chat_messages_may_carry_2000_characters_of_any_script(tmp_path, dist_dir, upstream):
    with run_nginx(tmp_path, upstream=f"127.0.0.1:{upstream.port}", dist_root=dist_dir) as nginx:
        # 2,000 emoji as JSON escapes: 24 KB, over the server-wide 16k, under the app's 32 KiB.
        big = '{"content":"' + "\\ud83d\\ude00" * 2000 + '"}'
        assert 16 * 1024 < len(big) < 32 * 1024
        assert fetch(nginx.port, "/api/chat/messages", method="POST", body=big).status == 200
        assert fetch(nginx.port, "/api/chat", method="POST", body=big).status == 413


def test_feedback_may_carry_1000_characters_of_any_script(static_nginx, upstream):
    # 1,000 emoji as JSON escapes: 12 KB, within the app's 16 KiB; more is nginx's 413.
    big = '{"call_id":"call_1","rating":"up","comment":"' + "\\ud83d\\ude00" * 1000 + '"}'
    assert 12_000 < len(big) < 16 * 1024
    assert fetch(static_nginx.port, "/api/feedback", method="POST", body=big).status == 200
    assert upstream.requests[-1]["body"] == big.encode()
    huge = fetch(static_nginx.port, "/api/feedback", method="POST", body="x" * 17_000)
    assert huge.status == 413 and huge.json()["error"] == "payload_too_large"


def test_upstream_down_is_503_json(tmp_path, dist_dir):
    from devtools.ports import free_port

    with run_nginx(tmp_path, upstream=f"127.0.0.1:{free_port()}", dist_root=dist_dir) as nginx:
        reply = fetch(nginx.port, "/api/create-web-call", method="POST", body="{}")
        assert reply.status == 503
        assert reply.json()["error"] == "unavailable"
        assert reply.header("Retry-After") == "5"
        assert_security_headers(reply)
