"""Shared fixtures: a real redis-server, the fake Retell, the app (test client, CLI runner,
and a real threaded WSGI server), and allowlist helpers. Everything listens on loopback."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading

import pytest
import redis as redis_lib
from werkzeug.serving import WSGIRequestHandler, make_server

from app import create_app
from devtools.fakes.monitor import FakeMonitor
from devtools.fakes.retell import FakeRetell
from devtools.fakes.siteverify import FakeSiteverify
from devtools.ports import free_port, wait_for_port

REDIS_BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"
PREFIX = "widget:"


class RedisServer:
    """A real redis-server on a free loopback port, in its own temp dir; never 6379."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="test-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [REDIS_BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", f"{self.dir}/redis.log"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis(redis_server):
    """A clean database for each test (restarting the server if a test stopped it)."""
    if redis_server.process.poll() is not None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.script_flush()
    yield client
    client.close()


@pytest.fixture(scope="session")
def _fake_retell_server():
    fake = FakeRetell().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def _siteverify():
    fake = FakeSiteverify().start()
    yield fake
    fake.stop()


@pytest.fixture
def siteverify(_siteverify):
    """The fake captcha siteverify server (devtools/fakes/siteverify.py), reset per test."""
    _siteverify.reset()
    yield _siteverify
    _siteverify.reset()


@pytest.fixture(scope="session")
def _fake_monitor_server(_fake_retell_server):
    fake = FakeMonitor(api_key=_fake_retell_server.api_key).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_monitor(_fake_monitor_server):
    """The fake Retell monitor socket (devtools/fakes/monitor.py), reset per test; pass
    RETELL_MONITOR_BASE=fake_monitor.url to make_app / serve_app."""
    _fake_monitor_server.reset()
    yield _fake_monitor_server
    _fake_monitor_server.reset()


@pytest.fixture
def fake_retell(_fake_retell_server):
    _fake_retell_server.reset()
    _fake_retell_server.gateway_url = None
    yield _fake_retell_server
    _fake_retell_server.reset()


def app_config(redis_server, fake_retell, **overrides) -> dict:
    config = {
        "APP_ENV": "development",
        "REDIS_URL": redis_server.url,
        "RETELL_API_BASE": fake_retell.url,
        "RETELL_API_KEY": fake_retell.api_key,
        "RETELL_GATEWAY_BASE": "https://gateway.example/webrtc-proxy",
        "USAGE_IP_HASH_KEY": "test-hash-key",
        "TRUSTED_PROXY_COUNT": "0",
        "RATE_LIMIT_PER_IP": "1000 per minute",
        "LOG_LEVEL": "INFO",
    }
    config.update({k: str(v) if isinstance(v, int | float) else v for k, v in overrides.items()})
    return config


@pytest.fixture
def make_app(redis, redis_server, fake_retell):
    """make_app(**overrides) -> a Flask app wired to the test Redis and fake Retell."""

    def factory(**overrides):
        return create_app(app_config(redis_server, fake_retell, **overrides))

    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class QuietHandler(WSGIRequestHandler):
    """No request lines: werkzeug's would print the query, and a transcript URL carries its
    token there (the app's own log line has the path only, as gunicorn behind nginx does)."""

    def log_request(self, code="-", size="-") -> None:
        pass


class ServedApp:
    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve_app(make_app):
    """serve_app(**overrides) -> the app behind a real threaded WSGI server (.url)."""
    served: list[ServedApp] = []

    def factory(**overrides):
        served.append(ServedApp(make_app(**overrides)))
        return served[-1]

    yield factory
    for item in served:
        item.stop()


@pytest.fixture
def allow_origin(redis):
    """allow_origin(origin, *agent_ids): the redis-cli commands the README documents."""

    def allow(origin: str, *agent_ids: str) -> None:
        redis.sadd(f"{PREFIX}origins", origin)
        if agent_ids:
            redis.sadd(f"{PREFIX}agents:{origin}", *agent_ids)

    return allow


@pytest.fixture
def usage_entries(redis):
    """usage_entries() -> the usage stream's entries as dicts, oldest first."""

    def read() -> list[dict]:
        return [fields for _, fields in redis.xrange(f"{PREFIX}usage")]

    return read


@pytest.fixture
def round_trips(monkeypatch):
    """with round_trips() as count: ... -> count() is the Redis round trips made inside.

    Counts packed sends from redis-py: one per command, one per pipeline or script call.
    """
    import contextlib

    from redis.connection import AbstractConnection

    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)

    @contextlib.contextmanager
    def measure():
        start = sent[0]
        yield lambda: sent[0] - start

    return measure
