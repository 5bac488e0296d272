"""Redis Sentinel, for real: one primary, one replica and three redis-sentinel processes on
loopback (tests/redis_nodes.py), the app over real HTTP, the primary killed mid-run.

The tests share one set and run in file order: the primary is killed last."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from app import create_app
from app.policy.admission import Decision
from app.usage import replicas
from app.usage.entry import UsageEntry
from tests.conftest import ServedApp, app_config
from tests.helpers import AGENT, AGENT_BODY, CHAT_AGENT, ORIGIN, post, post_http, start_chat
from tests.redis_nodes import MASTER, SENTINEL, SentinelSet, seconds_since

pytestmark = pytest.mark.skipif(
    not Path(SENTINEL).exists(), reason="redis-sentinel is not installed (make sysdeps-test)"
)
DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS = 500, 2000


@pytest.fixture(scope="module")
def sentinels():
    group = SentinelSet(DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS).start()
    yield group
    group.stop()


@pytest.fixture
def primary(sentinels):
    """The current primary, emptied, with the allowlist of one origin (replicated)."""
    client = sentinels.node(sentinels.primary_port()).client()
    client.flushall()
    client.script_flush()
    client.sadd("widget:origins", ORIGIN)
    client.sadd(f"widget:agents:{ORIGIN}", AGENT)
    client.sadd(f"widget:chat-agents:{ORIGIN}", CHAT_AGENT)
    assert client.wait(1, 2000) == 1
    yield client
    client.close()


@pytest.fixture
def sentinel_app(sentinels, fake_retell):
    """sentinel_app(**overrides): the app on REDIS_SENTINELS (no REDIS_URL)."""
    made = []

    def make(**overrides):
        config = app_config(SimpleNamespace(url=""), fake_retell, **overrides)
        del config["REDIS_URL"]
        config.update(REDIS_SENTINELS=sentinels.addresses, REDIS_SENTINEL_MASTER=MASTER)
        made.append(create_app(config))
        return made[-1]

    yield make
    for app in made:
        app.extensions["redis"].client.close()


def test_calls_chats_health_and_the_cli_through_sentinel(primary, sentinel_app):
    app = sentinel_app()
    client = app.test_client()
    assert post(client).status_code == 201
    assert start_chat(client, {"agent_id": CHAT_AGENT}).status_code == 201
    ready = client.get("/api/health/ready")
    assert ready.status_code == 200, ready.json
    runner = app.test_cli_runner()
    assert runner.invoke(args=["origins", "add", "https://client-b.com"]).exit_code == 0
    listed = runner.invoke(args=["origins", "list"])
    assert listed.exit_code == 0 and "https://client-b.com" in listed.output
    assert primary.sismember("widget:origins", "https://client-b.com")
    kinds = [f["outcome"] for _, f in primary.xrange("widget:usage")]
    assert kinds == ["created", "created"]


def test_passwords_for_the_nodes_and_for_the_sentinels(fake_retell):
    """requirepass on both Redis nodes and on the sentinels: REDIS_PASSWORD for the first,
    REDIS_SENTINEL_PASSWORD for the second; without them, 503 (fail closed)."""
    group = SentinelSet(password="node-pw", sentinel_password="sentinel-pw").start()
    try:
        with group.node(group.primary_port()).client() as redis:
            redis.sadd("widget:origins", ORIGIN)
            redis.sadd(f"widget:agents:{ORIGIN}", AGENT)
        config = app_config(SimpleNamespace(url=""), fake_retell, REDIS_SENTINELS=group.addresses)
        del config["REDIS_URL"]
        for given, status in (
            ({}, 503),
            ({"REDIS_SENTINEL_PASSWORD": "sentinel-pw"}, 503),  # the node refuses us
            ({"REDIS_PASSWORD": "node-pw"}, 503),  # the sentinels refuse us
            ({"REDIS_PASSWORD": "node-pw", "REDIS_SENTINEL_PASSWORD": "sentinel-pw"}, 201),
        ):
            app = create_app({**config, **given})
            assert post(app.test_client()).status_code == status, given
            app.extensions["redis"].client.close()
    finally:
        group.stop()


def test_tls_to_the_sentinels_and_the_nodes(fake_retell):
    """Every node and sentinel speaks TLS only: REDIS_TLS=1 with REDIS_TLS_CA_FILE."""
    group = SentinelSet(tls=True).start()
    try:
        with group.node(group.primary_port()).client() as redis:
            redis.sadd("widget:origins", ORIGIN)
            redis.sadd(f"widget:agents:{ORIGIN}", AGENT)
        config = app_config(SimpleNamespace(url=""), fake_retell, REDIS_SENTINELS=group.addresses)
        del config["REDIS_URL"]
        for given, status in (
            ({}, 503),  # plain TCP to a TLS port: fails closed
            ({"REDIS_TLS": "1", "REDIS_TLS_CA_FILE": str(group.tls / "ca.crt")}, 201),
        ):
            app = create_app({**config, **given})
            assert post(app.test_client()).status_code == status, given
            app.extensions["redis"].client.close()
    finally:
        group.stop()


def test_a_demoted_node_is_unavailable_and_the_pool_recovers(
    sentinels, primary, sentinel_app, caplog
):
    """Sentinel named a node that is a replica now: READONLY, from a write of the admission
    (admitted) or of the refusal's usage entry (refused), fails closed as 503, and the pool
    then finds the primary by itself."""
    app = sentinel_app()
    client = app.test_client()
    pool = app.extensions["redis"].client.connection_pool
    manager = pool.sentinel_manager
    replica = next(n for n in sentinels.servers if n.port != sentinels.primary_port())
    found = manager.discover_master
    manager.discover_master = lambda name: ("127.0.0.1", replica.port)
    pool.disconnect()  # the connection made at start-up: new ones go where Sentinel says
    try:
        for origin in (ORIGIN, "https://stranger.example"):
            answer = post(client, origin=origin)
            assert answer.status_code == 503 and answer.json["error"] == "unavailable"
    finally:
        manager.discover_master = found
    failures = [r.getMessage() for r in caplog.records if "redis unavailable" in r.getMessage()]
    # redis-py drops the connection (ConnectionError); the refusal's problems say READONLY.
    assert failures == ["redis unavailable: ConnectionError", "redis unavailable: ReadOnlyError"]
    assert post(client).status_code == 201
    assert post(client, origin="https://stranger.example").status_code == 403


def test_wait_confirms_the_record_in_the_same_round_trip(
    sentinels, primary, sentinel_app, round_trips, caplog
):
    app = sentinel_app(REDIS_WAIT_REPLICAS="1", REDIS_WAIT_TIMEOUT_MS="150")
    client = app.test_client()
    assert post(client).status_code == 201  # connections made, scripts loaded
    before = replicas.shortfalls.count
    with round_trips() as count:
        assert post(client).status_code == 201
    assert count() == 2  # one to decide, one to record (and WAIT)
    assert replicas.shortfalls.count == before

    replica = next(n for n in sentinels.servers if n.port != sentinels.primary_port())
    replica.process.send_signal(signal.SIGSTOP)  # it cannot acknowledge: WAIT times out
    try:
        with caplog.at_level(logging.WARNING, logger="app.usage.replicas"):
            started = time.monotonic()
            answer = post(client)
            waited = time.monotonic() - started
    finally:
        replica.process.send_signal(signal.SIGCONT)
    assert answer.status_code == 201  # the call exists at Retell: it stands
    assert 0.15 <= waited < 0.5
    assert replicas.shortfalls.count == before + 1
    assert "confirmed on 0 of 1 replicas within 150 ms" in caplog.text
    ready = client.get("/api/health/ready").json
    assert ready["components"]["redis"]["wait_shortfalls"] == replicas.shortfalls.count
    # A chat's record is confirmed the same way.
    assert start_chat(client, {"agent_id": CHAT_AGENT}).status_code == 201
    assert replicas.shortfalls.count == before + 1


def test_the_cost_of_wait(primary, sentinel_app):
    """What REDIS_WAIT_REPLICAS=1 adds to the record round trip, on loopback (printed)."""
    timings = {}
    for wait in ("0", "1"):
        app = sentinel_app(REDIS_WAIT_REPLICAS=wait)
        ledger = app.extensions["ledger"]
        decision = Decision(outcome="admitted", entry=ORIGIN, agent_id=AGENT, minted_ms=1,
                            reserved_ms=60_000, pending="pending:1")  # fmt: skip
        entry = UsageEntry.start(origin=ORIGIN, ip="ip", user_agent="ua", request_id="r")
        ledger.created(decision, "call_warm", ORIGIN, entry.decided("created", 201))
        started = time.perf_counter()
        for i in range(300):
            ledger.created(decision, f"call_{wait}_{i}", ORIGIN, entry.decided("created", 201))
        timings[wait] = (time.perf_counter() - started) / 300 * 1000
    print(f"\nrecord round trip: {timings['0']:.3f} ms without WAIT, "
          f"{timings['1']:.3f} ms with REDIS_WAIT_REPLICAS=1")  # fmt: skip
    assert timings["1"] < timings["0"] + 5


def test_failover_fails_closed_then_serves_from_the_new_primary(
    sentinels, primary, sentinel_app, fake_retell
):
    """The primary is killed (SIGKILL, by its PID) halfway through a daily cap of N calls,
    while a bounded loop keeps asking: 503 `unavailable` until the replica is promoted, 201
    again within 2 s of that, without a restart, and exactly N calls in all.

    The kill lands between two requests, and REDIS_WAIT_REPLICAS=1 had every 201 confirmed
    on the replica, so nothing the loop was answered for is lost (a kill in the middle of a
    request can spend one call's budget without a call: fail closed, never twice)."""
    cap = 20
    served = ServedApp(sentinel_app(RATE_LIMIT_PER_ORIGIN_DAY=str(cap), REDIS_WAIT_REPLICAS="1"))
    old = sentinels.node(sentinels.primary_port())
    seen: list[tuple[float, int, str]] = []
    admitted = refused_after = 0
    killed_at = promoted_at = back_at = None
    start = time.monotonic()
    try:
        while time.monotonic() - start < 25 and refused_after < 3:
            answer = post_http(served.url, AGENT_BODY)
            code = answer.json().get("error", "") if answer.status_code != 201 else ""
            seen.append((seconds_since(start), answer.status_code, code))
            if answer.status_code == 201:
                admitted += 1
                if killed_at and back_at is None:
                    back_at, back_index = time.monotonic(), len(seen) - 1
            if admitted == cap // 2 and killed_at is None:
                old.kill()
                killed_at, kill_index = time.monotonic(), len(seen)
            if killed_at and promoted_at is None and sentinels.primary_port() != old.port:
                promoted_at = time.monotonic()
            refused_after += code == "rate_limited"
            time.sleep(0.02)
    finally:
        served.stop()
    assert killed_at and promoted_at and back_at, seen
    outage = back_at - killed_at
    print(f"\nSentinel failover: promoted {promoted_at - killed_at:.2f} s after the kill, "
          f"create-web-call back after {outage:.2f} s "
          f"({sum(1 for _, s, _ in seen if s == 503)} answers 503 in between)")  # fmt: skip
    assert back_at - promoted_at <= 2.0
    assert {(s, c) for _, s, c in seen} <= {(201, ""), (503, "unavailable"), (429, "rate_limited")}
    outage_answers = [status for _, status, _ in seen[kill_index:back_index]]
    assert outage_answers and set(outage_answers) == {503}  # from the kill to the first 201
    assert admitted == cap  # no budget handed out twice, none lost
    new = sentinels.node(sentinels.primary_port()).client()
    created = [f for _, f in new.xrange("widget:usage") if f["outcome"] == "created"]
    assert len(created) == cap
    assert len(fake_retell.calls) == cap  # every call Retell made was answered 201
