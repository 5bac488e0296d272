"""Redis Cluster, for real: three primaries with a replica each on loopback
(tests/redis_nodes.py), REDIS_CLUSTER=1 with the prefix {widget}:, so every key of ours is
in one slot. Calls, chats, webhooks, the live transcript, the CLI, then a primary killed.

The tests share one cluster and run in file order: the failover is last."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from app import create_app
from app.transcript import relay as relay_module
from tests.conftest import ServedApp, app_config
from tests.helpers import (
    AGENT,
    AGENT_BODY,
    CHAT_AGENT,
    ORIGIN,
    feedback,
    post,
    post_http,
    send,
    start_chat,
)
from tests.redis_nodes import Cluster, seconds_since
from tests.test_transcript import lines_of, listen
from tests.test_webhooks import deliver

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "{widget}:"
NODE_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def cluster():
    nodes = Cluster(NODE_TIMEOUT_MS).start()
    yield nodes
    nodes.stop()


@pytest.fixture
def owner(cluster):
    """The primary serving the {widget} slot, every primary emptied first."""
    for node in cluster.nodes:
        if node.alive and node.info("replication")["role"] == "master":
            with node.client() as client:
                client.flushall()
                client.script_flush()
    with cluster.owner(PREFIX + "origins").client() as client:
        yield client


@pytest.fixture
def cluster_app(cluster, fake_retell):
    made = []

    def make(**overrides):
        config = app_config(SimpleNamespace(url=cluster.url), fake_retell, **overrides)
        config.update(REDIS_CLUSTER="1", REDIS_KEY_PREFIX=PREFIX)
        made.append(create_app(config))
        return made[-1]

    yield make
    for app in made:
        app.extensions["redis"].client.close()


def cli(runner, *args) -> str:
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_calls_chats_webhooks_and_the_cli_on_one_slot(cluster, owner, cluster_app, fake_retell):
    app = cluster_app()
    runner, client = app.test_cli_runner(), app.test_client()
    cli(runner, "origins", "add", ORIGIN, "https://client-b.com")
    cli(runner, "agents", "grant", ORIGIN, AGENT)
    cli(runner, "agents", "grant", "--chat", ORIGIN, CHAT_AGENT)
    cli(runner, "limits", "set", ORIGIN, "per_day=50", "max_concurrent=5")
    checked = runner.invoke(args=["origins", "check"])
    assert checked.exit_code == 1 and "https://client-b.com has no agents" in checked.output

    call = post(client)
    assert call.status_code == 201, call.json
    chat = start_chat(client, {"agent_id": CHAT_AGENT})
    assert chat.status_code == 201, chat.json
    token = chat.json["chat_token"]
    assert send(client, token).status_code == 200
    ended = client.post("/api/chat/end", json={"chat_token": token}, headers={"Origin": ORIGIN})
    assert ended.status_code == 204
    settled = {"call_id": call.json["call_id"], "duration_ms": 61_000}
    assert deliver(client, fake_retell.api_key, "call_ended", settled).status_code == 204
    assert feedback(client, call.json["call_id"], "up", comment="Great").status_code == 201
    assert feedback(client, call.json["call_id"], "down").status_code == 409
    assert client.get("/api/health/ready").status_code == 200

    listed = cli(runner, "origins", "list")
    assert f"{ORIGIN}\t{AGENT}\t50\t" in listed and CHAT_AGENT in listed
    assert "created" in cli(runner, "usage", "tail")
    assert "total" in cli(runner, "usage", "report", "--by", "outcome")
    assert "100%" in cli(runner, "usage", "report")  # the one feedback was up
    exported = cli(runner, "usage", "export", "--group", "warehouse")
    assert exported.strip().endswith("5 exported")  # the call, the chat, its end, 2 feedback
    cli(runner, "calls", "reconcile")
    cli(runner, "chats", "sweep")
    cli(runner, "origins", "remove", "https://client-b.com")
    assert "https://client-b.com" not in cli(runner, "origins", "list")

    # Every key is in the {widget} slot, on its primary: the other primaries hold nothing.
    slot = owner.execute_command("CLUSTER KEYSLOT", PREFIX)
    keys = owner.keys("*")
    assert keys and all(k.startswith(PREFIX) for k in keys)
    assert owner.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == len(keys) == owner.dbsize()
    home = cluster.owner(PREFIX)
    for node in cluster.nodes:
        if node is not home and node.info("replication")["role"] == "master":
            assert node.info("keyspace") == {}


def test_one_round_trip_to_decide_and_one_to_record(owner, cluster_app, round_trips):
    owner.sadd(PREFIX + "origins", ORIGIN)
    owner.sadd(f"{PREFIX}agents:{ORIGIN}", AGENT)
    client = cluster_app(REDIS_WAIT_REPLICAS="1").test_client()
    assert post(client).status_code == 201  # connections made, scripts loaded
    with round_trips() as count:
        assert post(client).status_code == 201
    assert count() == 2  # WAIT rides with the record, on the slot's primary
    with round_trips() as count:
        assert post(client, origin="https://stranger.example").status_code == 403
    assert count() == 1
    rated = post(client).json["call_id"]
    assert feedback(client, rated).status_code == 201  # the feedback script loaded
    with round_trips() as count:
        assert feedback(client, rated).status_code == 409
    assert count() == 1  # decided and recorded on the slot's primary


def test_the_live_transcript_on_a_cluster(owner, cluster_app, fake_monitor, monkeypatch):
    monkeypatch.setattr(relay_module, "HEARTBEAT_S", 1.0)
    monkeypatch.setattr(relay_module, "LEAVE_GRACE_S", 1.0)
    served = ServedApp(cluster_app(RETELL_MONITOR_BASE=fake_monitor.url))
    try:
        call = "call_on_cluster"
        fake_monitor.say(call, "agent", "Hello from one slot.", word_delay=0)
        stream = listen(served, call)
        assert stream.status == 200

        def script():
            fake_monitor.wait_open(call, 1)
            fake_monitor.say(call, "user", "Nice.", word_delay=0)
            fake_monitor.end(call)

        threading.Thread(target=script, daemon=True).start()
        events = stream.until_end()
        stream.close()
    finally:
        served.stop()
    assert lines_of(events) == [("agent", "Hello from one slot."), ("user", "Nice.")]
    assert owner.exists(f"{PREFIX}transcript:{call}", f"{PREFIX}transcript:{call}:items") == 2


def test_the_flask_cli_reads_the_cluster_settings(cluster, owner):
    owner.sadd(PREFIX + "origins", ORIGIN)
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": cluster.url, "REDIS_CLUSTER": "1",
           "REDIS_KEY_PREFIX": PREFIX, "USAGE_IP_HASH_KEY": "x"}  # fmt: skip
    listed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "origins", "list"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(ORIGIN)


def test_a_primary_dies_and_its_replica_takes_over(cluster, owner, cluster_app):
    """The {widget} slot's primary is killed (SIGKILL, by its PID) while a bounded loop asks
    for calls: 503 `unavailable` until its replica is promoted, then 201 again without a
    restart; the allowlist and the counters are the replica's, in step."""
    owner.sadd(PREFIX + "origins", ORIGIN)
    owner.sadd(f"{PREFIX}agents:{ORIGIN}", AGENT)
    assert owner.wait(1, 2000) == 1
    served = ServedApp(cluster_app(RATE_LIMIT_PER_ORIGIN_DAY="1000"))
    dead = cluster.owner(PREFIX + "origins")
    heir = cluster.replica_of(dead)
    seen: list[tuple[float, int, str]] = []
    admitted = 0
    killed_at = back_at = None
    start = time.monotonic()
    try:
        while time.monotonic() - start < 30 and not (back_at and admitted >= 10):
            answer = post_http(served.url, AGENT_BODY)
            code = answer.json().get("error", "") if answer.status_code != 201 else ""
            seen.append((seconds_since(start), answer.status_code, code))
            if answer.status_code == 201:
                admitted += 1
                if killed_at and back_at is None:
                    back_at, back_index = time.monotonic(), len(seen) - 1
            if admitted == 5 and killed_at is None:
                dead.kill()
                killed_at, kill_index = time.monotonic(), len(seen)
            time.sleep(0.02)
        listed = served.app.test_cli_runner().invoke(args=["origins", "list"])
    finally:
        served.stop()
    assert killed_at and back_at, seen
    print(f"\nCluster failover: create-web-call back {back_at - killed_at:.2f} s after the kill "
          f"(cluster-node-timeout {NODE_TIMEOUT_MS} ms; "
          f"{sum(1 for _, s, _ in seen if s == 503)} answers 503 in between)")  # fmt: skip
    assert {(s, c) for _, s, c in seen} <= {(201, ""), (503, "unavailable")}
    assert {status for _, status, _ in seen[kill_index:back_index]} == {503}
    assert heir.info("replication")["role"] == "master"
    with heir.client() as client:
        created = [f for _, f in client.xrange(PREFIX + "usage") if f["outcome"] == "created"]
        day = int(time.time() // 86400)
        assert int(client.get(f"{PREFIX}rl:origin:{ORIGIN}:day:{day}")) == admitted == len(created)
    assert listed.exit_code == 0 and f"\n{ORIGIN}\t{AGENT}\t" in listed.output
