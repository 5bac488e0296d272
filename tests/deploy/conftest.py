"""Fixtures for the deployment tests: real nginx (and gunicorn) on free loopback ports."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.deploy.helpers import recording_upstream, run_nginx

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
