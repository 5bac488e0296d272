"""POST /api/retell-webhook through real nginx: 1 MiB bodies (a call carries its transcript),
no per-address flood guard (Retell sends from a few addresses; the signature is the
guard), and the real app behind it verifying the fake Retell's signed webhooks."""

from __future__ import annotations

import json
import time

import pytest

from tests.deploy.helpers import fetch, run_nginx
from tests.deploy.test_api_through_nginx import AGENT, ORIGIN, allowed, create_call
from tests.deploy.test_nginx_static import assert_security_headers

pytestmark = pytest.mark.nginx

PATH = "/api/retell-webhook"


def webhook(port, body: bytes, *, source="127.0.0.1", signature="v=1,d=" + "0" * 64):
    return fetch(
        port,
        PATH,
        method="POST",
        headers={"Content-Type": "application/json", "X-Retell-Signature": signature},
        body=body,
        source=source,
    )


def transcript_body(size: int) -> bytes:
    call = {"call_id": "call_" + "a" * 24, "transcript": "Grüße " * (size // 7)}
    return json.dumps({"event": "call_ended", "call": call}, ensure_ascii=False).encode()


def test_a_200_kb_webhook_reaches_the_upstream_intact(static_nginx, upstream):
    body = transcript_body(200_000)
    assert len(body) > 200_000
    reply = webhook(static_nginx.port, body, source="127.0.0.71")
    assert reply.status == 200, reply.body
    seen = upstream.requests[-1]
    assert seen["path"] == PATH and seen["method"] == "POST"
    assert seen["body"] == body  # byte for byte: the signature is over the raw body
    assert seen["headers"]["x-retell-signature"] == "v=1,d=" + "0" * 64
    assert seen["forwarded_for"] == ["127.0.0.71"]


def test_over_1_mib_is_413_json_and_not_proxied(static_nginx, upstream):
    before = len(upstream.requests)
    reply = webhook(static_nginx.port, transcript_body(1024 * 1024 + 10))
    assert reply.status == 413
    assert reply.json()["error"] == "payload_too_large"
    assert_security_headers(reply)
    assert len(upstream.requests) == before


def test_the_larger_limit_is_for_the_webhook_only(static_nginx, upstream):
    before = len(upstream.requests)
    for path in ("/api/create-web-call", "/api/retell-webhook/", "/api/retell-webhooks"):
        reply = fetch(static_nginx.port, path, method="POST", body=b"x" * 40_000)
        assert reply.status == 413, path
    assert len(upstream.requests) == before


def test_webhooks_are_not_under_the_flood_guard(tmp_path, dist_dir, upstream):
    with run_nginx(
        tmp_path,
        upstream=f"127.0.0.1:{upstream.port}",
        dist_root=dist_dir,
        limit_rate="1r/m",
        limit_burst=1,
    ) as nginx:
        statuses = [webhook(nginx.port, b"{}", source="127.0.0.72").status for _ in range(12)]
        assert statuses == [200] * 12
        creates = [
            fetch(nginx.port, "/api/create-web-call", method="POST", body="{}", source="127.0.0.72")
            for _ in range(3)
        ]
        assert [c.status for c in creates] == [200, 200, 429]


# --- the real app under gunicorn, signed by the fake Retell ------------------------


@pytest.fixture
def webhook_stack(stack, fake_retell):
    """The stack, with the fake Retell sending its webhooks to it through nginx."""
    probe = webhook(stack.port, b"{}")
    if probe.status == 404:
        pytest.skip("the app has no /api/retell-webhook route in this tree yet")
    fake_retell.webhook_url = f"http://127.0.0.1:{stack.port}{PATH}"
    fake_retell.webhook_retry_delay = 0.01
    return stack


def test_the_app_accepts_the_fake_retells_signed_webhooks(webhook_stack, allow_origin, fake_retell):
    allow_origin(ORIGIN, AGENT)
    created = create_call(webhook_stack, source="127.0.0.73")
    assert created.status == 201, created.body
    call_id = created.json()["call_id"]
    deliveries = fake_retell.end_call(call_id, duration_ms=95_000)
    assert deliveries == [
        {"event": e, "call_id": call_id, "status": 204, "attempts": 1}
        for e in ("call_started", "call_ended", "call_analyzed")
    ]
    # A call that never connected: no call_started, still settled.
    other = create_call(webhook_stack, source="127.0.0.73").json()["call_id"]
    assert [d["status"] for d in fake_retell.end_call(other, joined=False)] == [204, 204]


def test_the_app_refuses_bad_signatures_through_nginx(webhook_stack, allow_origin, fake_retell):
    allow_origin(ORIGIN, AGENT)
    call_id = create_call(webhook_stack, source="127.0.0.74").json()["call_id"]
    assert fake_retell.send_webhook("call_ended", call_id, signature_override="v=1,d=00") == 401
    reply = webhook(webhook_stack.port, b'{"event":"call_ended","call":{}}')
    assert reply.status == 401
    assert_security_headers(reply)
    # Signed, but six minutes old.
    stale = int(time.time() * 1000) - 6 * 60 * 1000
    assert fake_retell.send_webhook("call_ended", call_id, timestamp_ms=stale) == 401


def test_a_signed_200_kb_webhook_is_accepted(webhook_stack, fake_retell):
    call = json.loads(transcript_body(200_000))["call"]
    body = json.dumps({"event": "call_ended", "call": call}, ensure_ascii=False).encode()
    # A call this gateway never minted (e.g. a phone call): acknowledged, ignored.
    assert fake_retell.send_webhook("call_ended", call["call_id"], body_override=body) == 204


def test_trace_on_the_webhook_is_a_json_405_with_the_apps_allow(webhook_stack):
    reference = fetch(webhook_stack.port, PATH, method="DELETE")
    assert reference.status == 405 and reference.json()["error"] == "method_not_allowed"
    for method in ("TRACE", "FOO"):
        reply = fetch(webhook_stack.port, PATH, method=method)
        assert reply.status == 405, (method, reply.body)
        assert allowed(reply) == allowed(reference), method
