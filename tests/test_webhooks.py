"""POST /api/retell-webhook: signatures as Retell's SDKs check them, idempotent settling,
against a real redis-server. Signatures here are computed from the documented formula
directly (hashlib), not with the app's own helper, so a wrong implementation fails."""

import hashlib
import hmac
import json
import time

import pytest

from tests.helpers import AGENT, ORIGIN, post

HOOK = "/api/retell-webhook"


def sign(raw: bytes, key: str, ts: int | None = None, upper=False) -> str:
    ts = int(time.time() * 1000) if ts is None else ts
    digest = hmac.new(key.encode(), raw + str(ts).encode(), hashlib.sha256).hexdigest()
    return f"v={ts},d={digest.upper() if upper else digest}"


def deliver(client, key, event, call, *, signature=None, raw=None, spelling=("event", "call")):
    raw = raw if raw is not None else json.dumps({spelling[0]: event, spelling[1]: call}).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not False:
        headers["X-Retell-Signature"] = signature or sign(raw, key)
    return client.post(HOOK, data=raw, headers=headers)


@pytest.fixture
def minted(client, allow_origin, fake_retell):
    """A call minted through the gateway: its call id."""
    allow_origin(ORIGIN, AGENT)
    response = post(client)
    assert response.status_code == 201
    return response.json["call_id"]


def events(redis):
    return [fields for _, fields in redis.xrange("widget:call-events")]


def test_a_signed_call_ended_is_recorded_once(client, redis, fake_retell, minted):
    call = {"call_id": minted, "duration_ms": 93_000, "disconnection_reason": "user_hangup"}
    for _ in range(3):  # Retell retries until it gets a 2xx: the repeats change nothing
        assert deliver(client, fake_retell.api_key, "call_ended", call).status_code == 204
    [entry] = events(redis)
    assert (entry["event"], entry["call_id"], entry["duration_ms"]) == (
        "call_ended",
        minted,
        "93000",
    )
    assert (entry["entry"], entry["origin"], entry["agent_id"]) == (ORIGIN, ORIGIN, AGENT)
    assert entry["disconnection_reason"] == "user_hangup"
    record = redis.hgetall(f"widget:call:{minted}")
    assert (record["settled"], record["duration_ms"]) == ("1", "93000")
    assert redis.zscore("widget:calls:open", minted) is None
    assert redis.get("widget:webhooks:last")


def test_cost_comes_from_the_latest_event(client, redis, fake_retell, minted):
    key = fake_retell.api_key
    deliver(client, key, "call_analyzed", {"call_id": minted, "call_cost": {"combined_cost": 7}})
    deliver(client, key, "transfer_ended", {"call_id": minted, "call_cost": {"combined_cost": 9.5}})
    assert [e["cost_cents"] for e in events(redis)] == ["7", "9.5000"]
    assert redis.hget(f"widget:call:{minted}", "cost_cents") == "9.5000"


def test_older_spelling_is_read(client, redis, fake_retell, minted):
    response = deliver(
        client, fake_retell.api_key, "call_started", {"call_id": minted},
        spelling=("event_type", "data"),
    )  # fmt: skip
    assert response.status_code == 204
    assert [e["event"] for e in events(redis)] == ["call_started"]


def test_non_ascii_bodies_verify_over_the_raw_bytes(client, redis, fake_retell, minted):
    body = {"event": "call_ended", "call": {"call_id": minted, "duration_ms": 1000,
            "transcript": "Agent: ¿Cómo está? — 你好 ☎"}}  # fmt: skip
    raw = json.dumps(body, ensure_ascii=False).encode()  # not what json.dumps would redo
    assert deliver(client, fake_retell.api_key, None, None, raw=raw).status_code == 204
    assert len(events(redis)) == 1


@pytest.mark.parametrize(
    "case", ["tampered_body", "tampered_digest", "upper_hex", "stale", "future", "missing",
             "garbage", "other_key"],
)  # fmt: skip
def test_bad_signatures_are_401_and_record_nothing(client, redis, fake_retell, minted, case):
    key = fake_retell.api_key
    raw = json.dumps({"event": "call_ended", "call": {"call_id": minted, "duration_ms": 5}})
    raw = raw.encode()
    now = int(time.time() * 1000)
    signature = {
        "tampered_body": sign(raw.replace(b"5", b"6"), key),
        "tampered_digest": sign(raw, key)[:-1] + ("0" if sign(raw, key)[-1] != "0" else "1"),
        "upper_hex": sign(raw, key, upper=True),
        "stale": sign(raw, key, now - 6 * 60_000),
        "future": sign(raw, key, now + 6 * 60_000),
        "missing": False,
        "garbage": "sha256=abc",
        "other_key": sign(raw, "key_someone_else"),
    }[case]
    response = deliver(client, key, None, None, raw=raw, signature=signature)
    assert response.status_code == 401 and response.json["error"] == "invalid_signature"
    assert events(redis) == []
    assert redis.hget(f"widget:call:{minted}", "settled") == "0"
    assert redis.get("widget:webhooks:last") is None


def test_within_five_minutes_either_way_verifies(client, redis, fake_retell, minted):
    now = int(time.time() * 1000)
    for offset, event in ((-4 * 60_000, "call_started"), (4 * 60_000, "call_analyzed")):
        raw = json.dumps({"event": event, "call": {"call_id": minted}}).encode()
        signature = sign(raw, fake_retell.api_key, now + offset)
        response = deliver(client, fake_retell.api_key, None, None, raw=raw, signature=signature)
        assert response.status_code == 204
    assert len(events(redis)) == 2


def test_a_call_we_did_not_mint_is_acknowledged_and_ignored(client, redis, fake_retell):
    call = {"call_id": "call_phone_0001", "duration_ms": 60_000}
    assert deliver(client, fake_retell.api_key, "call_ended", call).status_code == 204
    assert events(redis) == []
    assert redis.keys("widget:call:*") == []


def test_other_events_are_acknowledged_and_ignored(client, redis, fake_retell, minted):
    call = {"call_id": minted}
    assert deliver(client, fake_retell.api_key, "transcript_updated", call).status_code == 204
    assert events(redis) == []


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"{nope", "invalid_json"), (b"[1]", "invalid_request"),
     (b'{"event": "call_ended"}', "invalid_request"),
     (b'{"event": "call_ended", "call": {"call_id": "../x"}}', "invalid_request"),
     (b"[" * 5000 + b"]" * 5000, "invalid_request")],
)  # fmt: skip
def test_signed_nonsense_is_400(client, fake_retell, raw, code):
    response = deliver(client, fake_retell.api_key, None, None, raw=raw)
    assert response.status_code == 400 and response.json["error"] == code


def test_large_transcripts_are_accepted_up_to_1_mib(client, redis, fake_retell, minted):
    call = {"call_id": minted, "transcript": "x" * 500_000}
    assert deliver(client, fake_retell.api_key, "call_analyzed", call).status_code == 204
    call["transcript"] = "x" * 1_100_000
    response = deliver(client, fake_retell.api_key, "call_analyzed", call)
    assert response.status_code == 413 and response.json["error"] == "payload_too_large"


def test_redis_down_is_503_so_retell_retries(client, redis_server, fake_retell, minted):
    redis_server.stop()
    try:
        call = {"call_id": minted, "duration_ms": 1}
        response = deliver(client, fake_retell.api_key, "call_ended", call)
        assert response.status_code == 503 and response.json["error"] == "unavailable"
    finally:
        redis_server.start()


def test_the_api_key_never_appears_in_answers_or_logs(client, fake_retell, minted, capsys):
    call = {"call_id": minted, "duration_ms": 1}
    good = deliver(client, fake_retell.api_key, "call_ended", call)
    bad = deliver(client, fake_retell.api_key, "call_ended", call, signature="v=1,d=00")
    logs = capsys.readouterr().err
    for text in (good.get_data(as_text=True), bad.get_data(as_text=True), logs):
        assert fake_retell.api_key not in text


def test_ready_says_when_a_webhook_last_arrived(make_app, client, fake_retell, minted):
    spend_limited = make_app(CONCURRENT_CALLS_TOTAL=20).test_client()
    assert spend_limited.get("/api/health/ready").json["components"]["webhooks"] == {
        "status": "ok", "last_received": None,
    }  # fmt: skip
    assert "webhooks" not in client.get("/api/health/ready").json["components"]
    deliver(client, fake_retell.api_key, "call_started", {"call_id": minted})
    last = client.get("/api/health/ready").json["components"]["webhooks"]["last_received"]
    assert last.endswith("Z") and last[:10] == time.strftime("%Y-%m-%d", time.gmtime())
