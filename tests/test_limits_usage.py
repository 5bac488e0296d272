"""Rate limits and the usage stream, against a real redis-server and real HTTP."""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helpers import AGENT, ORIGIN
from tests.helpers import post_http as post
from tests.test_verification import solve
from tests.test_webhooks import deliver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def allowed(allow_origin):
    allow_origin(ORIGIN, AGENT)


def test_exact_under_concurrency(serve_app, allowed, fake_retell):
    fake_retell.set_behaviour(delay=0.05)
    served = serve_app(RATE_LIMIT_PER_IP="5 per minute")
    barrier = threading.Barrier(100)

    def one(_):
        barrier.wait()
        return post(served.url).status_code

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(one, range(100)))
    assert statuses.count(201) == 5
    assert statuses.count(429) == 95
    assert len(fake_retell.requests) == 5


def test_per_ip_windows_roll_so_a_boundary_gives_no_double_budget(client_factory, allowed):
    client = client_factory(RATE_LIMIT_PER_IP="2 per 2 seconds")
    while not 1.75 < time.time() % 2 < 1.85:  # just before an epoch-aligned 2 s boundary
        time.sleep(0.01)
    first = [client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN}) for _ in "ab"]
    assert [r.status_code for r in first] == [201, 201]
    time.sleep(0.4)  # a fixed window would have reset by now
    third = client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})
    assert third.status_code == 429
    assert 1 <= third.json["retry_after"] <= 2
    time.sleep(1.7)  # the first two have left the rolling window
    assert (
        client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN}).status_code == 201
    )


def test_created_call_costs_two_round_trips(client_factory, allowed, round_trips):
    client = client_factory()
    client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})  # loads the script
    with round_trips() as count:
        response = client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})
    assert response.status_code == 201
    assert count() == 2  # admission script, then the usage entry


@pytest.fixture
def client_factory(make_app):
    return lambda **overrides: make_app(**overrides).test_client()


def test_429_shape_and_headers(client_factory, allowed, fake_retell):
    client = client_factory(RATE_LIMIT_PER_IP="2 per minute;100 per day")
    ok = [client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN}) for _ in "ab"]
    assert [r.status_code for r in ok] == [201, 201]
    assert ok[0].headers["X-RateLimit-Limit"] == "2"
    assert ok[0].headers["X-RateLimit-Remaining"] == "1"
    assert ok[1].headers["X-RateLimit-Remaining"] == "0"
    limited = client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})
    assert limited.status_code == 429
    assert limited.json["error"] == "rate_limited"
    assert 1 <= limited.json["retry_after"] <= 60
    assert limited.headers["Retry-After"] == str(limited.json["retry_after"])
    assert limited.headers["X-RateLimit-Limit"] == "2"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) > time.time()
    assert limited.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in limited.headers["Access-Control-Expose-Headers"]
    assert len(fake_retell.requests) == 2


def test_refusals_and_preflights_spend_no_budget(client_factory, allowed, fake_retell):
    client = client_factory(RATE_LIMIT_PER_IP="2 per minute")
    for _ in range(5):
        client.post("/api/create-web-call", json={}, headers={"Origin": "https://evil.com"})
        client.post("/api/create-web-call", json={"agent_id": "x"}, headers={"Origin": ORIGIN})
        client.options(
            "/api/create-web-call",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        client.get("/api/health")
        client.get("/api/widget-version")
    statuses = [
        client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN}).status_code
        for _ in range(3)
    ]
    assert statuses == [201, 201, 429]


def test_spoofed_forwarded_for_does_not_change_the_bucket(serve_app, allowed):
    direct = serve_app(RATE_LIMIT_PER_IP="2 per minute", TRUSTED_PROXY_COUNT=0)
    statuses = [
        post(direct.url, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(4)
    ]
    assert statuses == [201, 201, 429, 429]


def test_one_trusted_proxy_uses_the_address_it_appended(serve_app, allowed):
    behind_proxy = serve_app(RATE_LIMIT_PER_IP="2 per minute", TRUSTED_PROXY_COUNT=1)
    # What a client can forge comes first; the proxy's own addition comes last.
    spoofed = [
        post(behind_proxy.url, headers={"X-Forwarded-For": f"10.0.0.{i}, 203.0.113.9"})
        for i in range(3)
    ]
    assert [r.status_code for r in spoofed] == [201, 201, 429]
    other = post(behind_proxy.url, headers={"X-Forwarded-For": "203.0.113.10"})
    assert other.status_code == 201


def test_per_origin_daily_cap_with_redis_override(client_factory, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    allow_origin("https://other.com", AGENT)
    client = client_factory(RATE_LIMIT_PER_ORIGIN_DAY=3)
    redis.hset(f"widget:limits:{ORIGIN}", "per_day", 1)

    def statuses(origin, n):
        return [
            client.post("/api/create-web-call", json={}, headers={"Origin": origin}).status_code
            for _ in range(n)
        ]

    assert statuses(ORIGIN, 2) == [201, 429]
    assert statuses("https://other.com", 4) == [201, 201, 201, 429]
    redis.hset("widget:limits:https://other.com", "per_day", -1)  # no cap for this origin
    assert statuses("https://other.com", 2) == [201, 201]


def test_per_agent_daily_cap(client_factory, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    allow_origin("https://other.com", AGENT)
    client = client_factory()
    redis.hset(f"widget:limits:agent:{AGENT}", "per_day", 2)
    statuses = [
        client.post("/api/create-web-call", json={}, headers={"Origin": o}).status_code
        for o in (ORIGIN, "https://other.com", ORIGIN)
    ]
    assert statuses == [201, 201, 429]


def test_one_entry_per_attempt_for_every_outcome(
    client_factory, allow_origin, fake_retell, usage_entries
):
    allow_origin(ORIGIN, AGENT)
    client = client_factory(RATE_LIMIT_PER_IP="3 per minute")
    expected = []

    def attempt(outcome, origin=ORIGIN, **kwargs):
        kwargs.setdefault("json", {})
        client.post("/api/create-web-call", headers={"Origin": origin}, **kwargs)
        expected.append(outcome)

    attempt("created")
    attempt("origin_denied", origin="https://evil.com")
    attempt("origin_denied", origin="null")
    attempt("agent_denied", json={"agent_id": "agent_other"})
    attempt("invalid", json={"agent_id": AGENT, "x": 1})
    attempt("invalid", data="{", content_type="application/json", json=None)
    fake_retell.set_behaviour("error", status=500)
    attempt("upstream_error")
    fake_retell.set_behaviour()
    attempt("created")
    attempt("rate_limited")
    client.options(
        "/api/create-web-call", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )  # a preflight is not an attempt
    entries = usage_entries()
    assert [e["outcome"] for e in entries] == expected
    for entry in entries:
        assert set(entry) >= {"ts", "outcome", "status", "origin", "agent_id", "request_id", "ip"}
        assert entry["ua"].startswith("Werkzeug")
    created = [e for e in entries if e["outcome"] == "created"]
    assert all(e["call_id"].startswith("call_") and int(e["upstream_ms"]) >= 0 for e in created)
    assert entries[0]["ip"] != "127.0.0.1" and len(entries[0]["ip"]) == 32  # HMAC by default


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("hash", lambda v: len(v) == 32 and "127" not in v), ("truncate", "127.0.0.0/24".__eq__),
     ("full", "127.0.0.1".__eq__), ("none", "".__eq__)],
)  # fmt: skip
def test_ip_modes(client_factory, allowed, usage_entries, mode, expected):
    client = client_factory(USAGE_IP_MODE=mode)
    client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})
    assert expected(usage_entries()[-1]["ip"])


def test_ip_hash_is_stable_for_one_key_and_differs_across_keys(client_factory, allowed, redis):
    for key in ("k1", "k1", "k2"):
        client_factory(USAGE_IP_HASH_KEY=key).post(
            "/api/create-web-call", json={}, headers={"Origin": ORIGIN}
        )
    hashes = [f["ip"] for _, f in redis.xrange("widget:usage")]
    assert hashes[0] == hashes[1] != hashes[2]


def test_maxlen_trims_the_stream(client_factory, redis):
    client = client_factory(USAGE_STREAM_MAXLEN=50)
    for _ in range(400):
        client.post("/api/create-web-call", json={}, headers={"Origin": "https://evil.com"})
    assert 50 <= redis.xlen("widget:usage") < 400


EXPORT_CRASH = """
import os, signal, sys
from app import create_app
from app.usage import reports
from app.extensions import redis_store
app = create_app({"REDIS_URL": sys.argv[1], "USAGE_IP_HASH_KEY": "x"})
def write(line):
    sys.stdout.write(line)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # dies after writing, before acking
with app.app_context():
    reports.export(redis_store.client, "widget:usage", "warehouse", "doomed", write, 60_000)
"""


def test_export_is_at_least_once_when_a_consumer_dies_before_ack(redis_server, redis):
    for i in range(7):
        redis.xadd("widget:usage", {"outcome": "created", "n": str(i)})
    crashed = subprocess.run(
        [sys.executable, "-c", EXPORT_CRASH, redis_server.url],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert crashed.returncode == -9
    first = [json.loads(line) for line in crashed.stdout.splitlines()]
    assert len(first) == 1
    assert redis.xpending("widget:usage", "warehouse")["pending"] == 7

    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "USAGE_IP_HASH_KEY": "x"}
    rescue = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "usage", "export", "--group", "warehouse",
         "--consumer", "rescuer", "--claim-idle", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert rescue.returncode == 0, rescue.stderr
    second = [json.loads(line) for line in rescue.stdout.splitlines()]
    assert sorted(int(e["n"]) for e in second) == list(range(7))  # nothing lost
    assert first[0]["id"] in {e["id"] for e in second}  # the unacked one came again
    assert redis.xpending("widget:usage", "warehouse")["pending"] == 0
    again = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "usage", "export", "--group", "warehouse",
         "--consumer", "rescuer"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert again.stdout == ""


def test_tail_and_report(runner, redis, allowed, client):
    for origin in (ORIGIN, ORIGIN, "https://evil.com"):
        client.post("/api/create-web-call", json={}, headers={"Origin": origin})
    tail = runner.invoke(args=["usage", "tail", "-n", "2"]).output.splitlines()
    assert len(tail) == 2 and "created" in tail[0] and "origin_denied" in tail[1]
    report = runner.invoke(args=["usage", "report", "--since", "1h", "--by", "origin"]).output
    lines = report.splitlines()
    assert lines[1].split()[:3] == [ORIGIN, "2", "2"]
    assert lines[2].split()[:3] == ["https://evil.com", "1", "0"]
    assert lines[-1].split()[:3] == ["total", "3", "2"]
    by_outcome = runner.invoke(args=["usage", "report", "--by", "outcome"]).output
    assert "origin_denied" in by_outcome


def test_redis_down_mid_run_is_503_fast_and_recovers(serve_app, allowed, redis_server):
    served = serve_app()
    assert post(served.url).status_code == 201
    redis_server.stop()
    try:
        for _ in range(5):
            started = time.monotonic()
            response = post(served.url)
            assert time.monotonic() - started < 0.5
            assert response.status_code == 503 and response.json()["error"] == "unavailable"
        assert requests.get(f"{served.url}/api/health/ready", timeout=5).status_code == 503
        assert requests.get(f"{served.url}/api/health", timeout=5).status_code == 200
    finally:
        redis_server.start()
    client = redis_server.client()
    client.sadd("widget:origins", ORIGIN)
    client.sadd(f"widget:agents:{ORIGIN}", AGENT)
    assert post(served.url).status_code == 201
    assert requests.get(f"{served.url}/api/health/ready", timeout=5).status_code == 200


def test_every_key_written_is_in_the_readme_key_table(client_factory, allow_origin, redis):
    import re

    allow_origin(ORIGIN, AGENT)
    redis.hset(f"widget:limits:{ORIGIN}", "per_day", 100)
    redis.hset(f"widget:limits:agent:{AGENT}", "per_day", 100)
    allow_origin("https://pow.example", AGENT)
    redis.hset("widget:limits:https://pow.example", "verify", "pow")
    client = client_factory(
        RATE_LIMIT_PER_AGENT_DAY=50, MINUTES_PER_ORIGIN_DAY=600, CONCURRENT_CALLS_TOTAL=9
    )
    for origin in (ORIGIN, "https://evil.com"):
        client.post("/api/create-web-call", json={}, headers={"Origin": origin})
    pow_site = {"Origin": "https://pow.example"}
    asked = client.post("/api/create-web-call", json={}, headers=pow_site).json
    token = solve(asked["verify"]["challenge"])
    created = client.post("/api/create-web-call", json={"verification": token}, headers=pow_site)
    call = {"call_id": created.json["call_id"], "duration_ms": 1000}
    deliver(client, client.application.config["SETTINGS"].retell_api_key.reveal(),
            "call_ended", call)  # fmt: skip
    redis.sadd(f"widget:chat-agents:{ORIGIN}", "agent_chat_echo")
    redis.hset("widget:limits:agent:agent_chat_echo", "chats_per_day", 100)
    chat = client.post("/api/chat", json={}, headers={"Origin": ORIGIN}).json
    body = {"chat_token": chat["chat_token"], "content": "hi"}
    assert (
        client.post("/api/chat/messages", json=body, headers={"Origin": ORIGIN}).status_code == 200
    )
    rated = {"call_id": created.json["call_id"], "rating": "up", "comment": "ok"}
    assert client.post("/api/feedback", json=rated, headers=pow_site).status_code == 201
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Redis keys") : readme.index("### The same with the CLI")]
    patterns = [  # <placeholder> stands for any text; the rest is literal
        re.compile(
            "^"
            + "".join(
                ".+" if part.startswith("<") else re.escape(part)
                for part in re.split(r"(<[^>]+>)", name)
            )
            + "$"
        )
        for name in re.findall(r"`(widget:[^`]+)`", table)
    ]
    keys = redis.keys("widget:*")
    assert {k.split(":")[1] for k in keys} >= {
        "origins", "agents", "limits", "rl", "usage", "minutes", "live", "call", "calls",
        "webhook", "webhooks", "call-events", "verify", "chat-agents", "chat", "chats",
    }  # fmt: skip
    assert {k for k in keys if k.startswith("widget:rl:chat:")} >= {
        "widget:rl:chat:ip:127.0.0.1:60", f"widget:rl:chat:messages:{chat['chat_id']}",
    }  # fmt: skip
    assert "widget:rl:feedback:ip:127.0.0.1:60" in keys
    for key in keys:
        assert any(p.match(key) for p in patterns), key
