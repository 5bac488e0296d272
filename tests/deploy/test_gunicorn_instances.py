"""Several gateways on one host: two gunicorn masters with deploy/gunicorn.conf.py, the
same user and $HOME, share nothing on disk.

gunicorn 25.1+ opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl or
$HOME/.gunicorn/gunicorn.ctl by default; a second master unlinks the first one's and
binds its own there, and whichever stops first removes the other's. The config turns it
off (control_socket_disable).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from devtools.ports import free_port, wait_until
from tests.deploy.helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")


def health(port: int):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as resp:
            return resp.status == 200 and json.loads(resp.read())["status"] == "ok"
    except OSError:
        return False


def test_two_instances_side_by_side_share_no_control_socket(tmp_path, redis_server):
    home = tmp_path / "home"
    home.mkdir()
    instances = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp_path / f"{name}.log"
            env = {  # no XDG_RUNTIME_DIR, as under systemd for a system service
                "PATH": f"{GUNICORN.parent}:/usr/bin:/bin",
                "HOME": str(home),
                "APP_ENV": "production",
                "RETELL_API_KEY": "key_side_by_side",
                "REDIS_URL": redis_server.url,
                "REDIS_KEY_PREFIX": f"{name}:",
                "USAGE_IP_HASH_KEY": "side-by-side",
                "GUNICORN_BIND": f"127.0.0.1:{port}",
                "GUNICORN_WORKERS": "1",
                "GUNICORN_PROC_NAME": f"widget-gateway-{name}",
                "GUNICORN_LOG_LEVEL": "debug",
            }
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [GUNICORN, "-c", ROOT / "deploy" / "gunicorn.conf.py", "wsgi:app"],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            instances.append((proc, port, log))
            assert wait_until(lambda: health(port) or proc.poll() is not None, 30)  # noqa: B023
            assert proc.poll() is None, log.read_text()

        (a, a_port, a_log), (b, b_port, b_log) = instances
        assert health(a_port) and health(b_port)
        assert list(home.rglob("*")) == []  # no ~/.gunicorn/gunicorn.ctl to fight over
        for _, _, log in instances:
            text = log.read_text()
            assert "Control socket listening" not in text
            assert "Control socket disabled" in text

        # Stopping one leaves the other untouched.
        stop_process(a, timeout=30)
        assert a.returncode == 0, a_log.read_text()
        assert health(b_port)
        assert "Traceback" not in b_log.read_text()
    finally:
        for proc, _, _ in instances:
            stop_process(proc, timeout=30)
