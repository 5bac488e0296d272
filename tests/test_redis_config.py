"""Choosing a Redis: one node, Sentinel or Cluster (config.py, app/redis_clients.py), the
start-up errors, and what the app does when the chosen Redis does not answer. The real
failovers are in tests/test_sentinel.py and tests/test_cluster.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from app import create_app
from app.redis_clients import LazyCluster, SentinelBlockingPool, make_redis_client
from config import ConfigError, hash_tag, load_settings
from devtools import run_local
from devtools.ports import free_port
from tests.conftest import app_config
from tests.helpers import post

ROOT = Path(__file__).resolve().parents[1]


def test_sentinel_settings_are_read():
    s = load_settings({"REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26380,[fd00::3]:26379",
                       "REDIS_SENTINEL_PASSWORD": "s3cret", "REDIS_TLS": "1"})  # fmt: skip
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("fd00::3", 26379))
    assert s.redis_sentinel_master == "mymaster" and s.redis_tls
    assert "s3cret" not in repr(s) and "s3cret" in s.secrets
    assert (s.redis_wait_replicas, s.redis_wait_timeout_ms, s.redis_cluster) == (0, 100, False)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REDIS_URL": "redis://r:6379/0", "REDIS_SENTINELS": "s:26379"}, "not both"),
        ({"REDIS_CLUSTER": "1"}, "hash-tagged REDIS_KEY_PREFIX"),
        ({"REDIS_CLUSTER": "1", "REDIS_KEY_PREFIX": "{}widget:"}, "hash-tagged"),
        ({"REDIS_CLUSTER": "1", "REDIS_KEY_PREFIX": "{widget:"}, "hash-tagged"),
        ({"REDIS_CLUSTER": "1", "REDIS_KEY_PREFIX": "{w}:", "REDIS_SENTINELS": "s:1"}, "REDIS_URL"),
        (
            {"REDIS_CLUSTER": "1", "REDIS_KEY_PREFIX": "{w}:", "REDIS_URL": "unix:///r.sock"},
            "rediss://",
        ),
        ({"REDIS_TLS": "1", "REDIS_URL": "redis://r:6379/0"}, "rediss://"),
        ({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "500"}, "below REDIS_SOCKET"),
        ({"REDIS_SENTINELS": "no-port"}, "REDIS_SENTINELS is invalid"),
        ({"REDIS_SENTINELS": "s:99999"}, "REDIS_SENTINELS is invalid"),
        ({"REDIS_SENTINEL_MASTER": " "}, "REDIS_SENTINEL_MASTER is invalid"),
        ({"REDIS_WAIT_TIMEOUT_MS": "0"}, "REDIS_WAIT_TIMEOUT_MS is invalid"),
    ],
)
def test_settings_that_do_not_fit_together_refuse_to_start(env, says):
    with pytest.raises(ConfigError, match=says) as info:
        load_settings(env)
    assert "\n" not in str(info.value)


def test_hash_tag_is_what_redis_cluster_hashes():
    assert hash_tag("{widget}:") == "widget"
    assert hash_tag("app:{widget}:") == "widget"
    assert hash_tag("{a}{b}:") == "a"
    assert hash_tag("widget:") == hash_tag("{}x{y}:") == hash_tag("{widget:") == ""


def test_production_takes_sentinels_instead_of_redis_url():
    base = {"APP_ENV": "production", "RETELL_API_KEY": "key_x", "USAGE_IP_HASH_KEY": "h"}
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings(base)
    assert load_settings({**base, "REDIS_SENTINELS": "10.0.0.1:26379"}).production


def test_both_set_is_one_line_from_wsgi():
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0",
           "REDIS_SENTINELS": "127.0.0.1:2"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: set REDIS_URL (one node or a cluster node) or REDIS_SENTINELS, "
        "not both"
    ]


def test_each_mode_gets_its_own_client_with_no_retries():
    node = make_redis_client(load_settings({}))
    assert isinstance(node.connection_pool, redis.BlockingConnectionPool)
    sentinel = make_redis_client(load_settings({"REDIS_SENTINELS": "127.0.0.1:1"}))
    assert isinstance(sentinel.connection_pool, SentinelBlockingPool)
    assert isinstance(sentinel.connection_pool, redis.BlockingConnectionPool)
    assert sentinel.connection_pool.connection_kwargs["retry"].get_retries() == 0
    assert sentinel.connection_pool.sentinel_manager.sentinels[0].get_retry().get_retries() == 0
    secured = {"REDIS_SENTINELS": "127.0.0.1:1", "REDIS_TLS": "1", "REDIS_PASSWORD": "pw",
               "REDIS_TLS_CA_FILE": "/etc/ssl/ca.pem", "REDIS_SENTINEL_PASSWORD": "sp"}  # fmt: skip
    tls = make_redis_client(load_settings(secured))
    node_options = tls.connection_pool.connection_kwargs
    asked = tls.connection_pool.sentinel_manager.sentinel_kwargs
    assert node_options["ssl_ca_certs"] == asked["ssl_ca_certs"] == "/etc/ssl/ca.pem"
    assert (node_options["password"], asked["password"], asked["ssl"]) == ("pw", "sp", True)
    assert "SSL" in tls.connection_pool.connection_class.__name__
    cluster = make_redis_client(
        load_settings({"REDIS_CLUSTER": "1", "REDIS_KEY_PREFIX": "{widget}:"})
    )
    assert isinstance(cluster, LazyCluster) and cluster._client is None  # not connected yet


@pytest.mark.parametrize(
    "mode",
    [
        {"REDIS_SENTINELS": "127.0.0.1:{port},127.0.0.1:{port2}"},
        {
            "REDIS_URL": "redis://127.0.0.1:{port}/0",
            "REDIS_CLUSTER": "1",
            "REDIS_KEY_PREFIX": "{{widget}}:",
        },  # fmt: skip
    ],
    ids=["sentinel", "cluster"],
)
def test_nothing_answering_starts_and_fails_closed_fast(mode, fake_retell):
    """No sentinel (or no cluster node) up: the app still starts, and answers 503 at once."""
    ports = {"port": free_port(), "port2": free_port()}
    config = app_config(SimpleNamespace(url=""), fake_retell)
    del config["REDIS_URL"]
    config.update({k: v.format(**ports) for k, v in mode.items()})
    client = create_app(config).test_client()
    for _ in range(2):
        started = time.monotonic()
        answer = post(client)
        assert answer.status_code == 503 and answer.json["error"] == "unavailable"
        assert time.monotonic() - started < 1.0
    assert client.get("/api/health/ready").status_code == 503


def test_make_run_passes_sentinels_through_and_starts_no_redis(monkeypatch, tmp_path):
    monkeypatch.setattr(run_local.shutil, "which", lambda name: f"/usr/bin/{name}")
    args = SimpleNamespace(port=8000, demo_port=8001, agent_id="agent_x",
                           chat_agent_id="agent_chat_x", dist_root=tmp_path)  # fmt: skip
    given = {"REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2:26379", "REDIS_SENTINEL_MASTER": "m"}
    processes, env, notes = run_local.plan(args, given, tmp_path / "a")
    assert "redis" not in dict(processes) and "REDIS_URL" not in env
    assert (
        env["REDIS_SENTINELS"] == given["REDIS_SENTINELS"] and env["REDIS_SENTINEL_MASTER"] == "m"
    )
    assert any("REDIS_SENTINELS" in note for note in notes)
    cluster = {"REDIS_URL": "redis://:pw@10.0.0.1:7000/0", "REDIS_CLUSTER": "1"}
    processes, env, notes = run_local.plan(args, cluster, tmp_path / "b")
    assert "redis" not in dict(processes) and env["REDIS_CLUSTER"] == "1"
    assert not any("pw" in note for note in notes)
    with pytest.raises(SystemExit, match="needs REDIS_URL"):
        run_local.plan(args, {"REDIS_CLUSTER": "1"}, tmp_path / "c")
