"""Fixtures for the deployment tests: real nginx (and gunicorn) on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    Nginx,
    recording_upstream,
    run_nginx,
    stop_process,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]

SECRET = "TOP-SECRET-NEXT-TO-DIST"


def _need_nginx():
    from deploy.nginx.render import NGINX_BINARY

    if not shutil.which(NGINX_BINARY):
        pytest.skip("nginx is not installed (deploy/install-system-packages.sh test)")


@pytest.fixture(scope="session")
def dist_dir(tmp_path_factory):
    """A sample static/dist, with a secret file beside it that must never be served."""
    base = tmp_path_factory.mktemp("site")
    dist = base / "dist"
    (dist / "v1").mkdir(parents=True)
    (dist / "v1" / "retell-widget.js").write_text(
        "/* widget */\n" + "window.RetellWidget = function () { return 42; };\n" * 40
    )
    (dist / "v1" / "retell-widget.css").write_text(".retell-widget { color: red; }\n" * 30)
    (dist / "v1" / "engine-gateway.js").write_text("console.log('engine');\n" * 20)
    (dist / "manifest.json").write_text(json.dumps({"version": "1.0.0", "files": {}}))
    (base / "secret.txt").write_text(SECRET)
    (dist / "v1" / "sub").mkdir()
    return dist


@pytest.fixture(scope="session")
def upstream():
    """A recording stand-in for gunicorn."""
    with recording_upstream() as record:
        yield record


@pytest.fixture(scope="session")
def static_nginx(tmp_path_factory, dist_dir, upstream):
    _need_nginx()
    prefix = tmp_path_factory.mktemp("nginx-static")
    with run_nginx(prefix, upstream=f"127.0.0.1:{upstream.port}", dist_root=dist_dir) as nginx:
        yield nginx


@pytest.fixture
def need_nginx():
    _need_nginx()


GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@dataclass
class Stack:
    """gunicorn (deploy config, unix socket) behind nginx (local rendering)."""

    nginx: Nginx
    gunicorn: subprocess.Popen
    socket: Path
    log: Path

    @property
    def port(self) -> int:
        return self.nginx.port


def stack_env(redis_url: str, retell, **overrides) -> dict:
    """The production settings: production limits and TRUSTED_PROXY_COUNT=1."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("RATE_LIMIT_", "GUNICORN_")) or name == "TRUSTED_PROXY_COUNT":
            del env[name]
    env.update(
        APP_ENV="production",
        REDIS_URL=redis_url,
        RETELL_API_BASE=retell.url,
        RETELL_API_KEY=retell.api_key,
        USAGE_IP_HASH_KEY="deploy-test-hash-key",
        GUNICORN_WORKERS="2",
        GUNICORN_ACCESS_LOG="-",  # off by default; the JSON access-log test turns it on
        # Shorter than production (3 + 10 < 20 <= 25 s), same order: after a HUP, old
        # gevent workers keep idle keep-alive connections from nginx until
        # graceful_timeout, and the reload test waits for them to go.
        UPSTREAM_CONNECT_TIMEOUT="1",
        UPSTREAM_READ_TIMEOUT="4",
        GUNICORN_TIMEOUT="6",
        GUNICORN_GRACEFUL_TIMEOUT="8",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory, dist_dir, redis_server, _fake_retell_server):
    _need_nginx()
    base = tmp_path_factory.mktemp("stack")
    sock = base / "gunicorn.sock"
    log = base / "gunicorn.log"
    env = stack_env(redis_server.url, _fake_retell_server, GUNICORN_BIND=f"unix:{sock}")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [GUNICORN, "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_until(lambda: sock.exists() or proc.poll() is not None, 20), log.read_text()
        assert proc.poll() is None, log.read_text()
        with run_nginx(base / "nginx", upstream=f"unix:{sock}", dist_root=dist_dir) as nginx:
            yield Stack(nginx=nginx, gunicorn=proc, socket=sock, log=log)
    finally:
        stop_process(proc, timeout=30)
