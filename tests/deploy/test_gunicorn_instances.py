"""Several gateways: two gunicorn masters with deploy/gunicorn.conf.py on one host share
nothing on disk; two behind one nginx (Scale-out, one nginx in front of several gunicorn
hosts) keep the limits exact and lose no host's requests but those it was answering.

gunicorn 25.1+ opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl or
$HOME/.gunicorn/gunicorn.ctl by default; a second master unlinks the first one's and
binds its own there, and whichever stops first removes the other's. The config turns it
off (control_socket_disable).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools.ports import free_port, wait_until
from tests.deploy.conftest import stack_env
from tests.deploy.helpers import fetch, run_nginx, stop_process

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


# -- one nginx in front of several gunicorn hosts (deploy/README.md, Scale-out) ----------

ORIGIN = "https://client.example"
AGENT = "agent_scale"
GRACE_S = 1.0  # for nginx to see the dead host's kept-alive connections close


def start_gateway(tmp_path: Path, name: str, redis_url: str, retell, **env):
    """A gunicorn instance on its own loopback port, as another host would run it."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    settings = stack_env(
        redis_url, retell, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1",
        GUNICORN_PROC_NAME=f"widget-gateway-{name}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / f"metrics-{name}"), **env,
    )  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [GUNICORN, "-c", ROOT / "deploy" / "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=settings, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    assert wait_until(lambda: health(port) or proc.poll() is not None, 30), log.read_text()
    assert proc.poll() is None, log.read_text()
    return proc, port, log


@contextlib.contextmanager
def two_gateways_behind_one_nginx(tmp_path, redis_url, retell, dist_dir, **env):
    gateways = []
    try:
        for name in ("a", "b"):
            gateways.append(start_gateway(tmp_path, name, redis_url, retell, **env))
        upstreams = tuple(f"127.0.0.1:{port}" for _, port, _ in gateways)
        # The flood guard is per nginx and per address; these tests send floods on purpose.
        flood = {"limit_rate": "10000r/s", "limit_burst": 10000}
        with run_nginx(
            tmp_path / "nginx", upstream=upstreams, dist_root=dist_dir, next_upstream="error",
            **flood,
        ) as nginx:  # fmt: skip
            yield nginx, gateways
    finally:
        for proc, _, _ in gateways:
            stop_process(proc, timeout=30)


def create(port: int, source: str, origin: str = ORIGIN, n: int | None = None) -> int:
    body = {"agent_id": AGENT, **({"metadata": {"n": str(n)}} if n is not None else {})}
    try:
        headers = {"Origin": origin, "Content-Type": "application/json"}
        reply = fetch(port, "/api/create-web-call", method="POST", source=source,
                      body=json.dumps(body), headers=headers)  # fmt: skip
        return reply.status
    except OSError:
        return 0


def served(log: Path) -> int:
    """create-web-call requests this instance answered (its JSON access lines)."""
    return sum('"path":"/api/create-web-call"' in line for line in log.read_text().splitlines())


def creates(retell) -> list[dict]:
    return [r for r in retell.requests if r["path"].endswith("/create-web-call")]


def at_once(count: int, one) -> list:
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait(10)
        return one(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_limits_stay_exact_across_two_instances_behind_one_nginx(
    tmp_path, redis, redis_server, fake_retell, dist_dir, need_nginx
):
    redis.sadd("widget:origins", ORIGIN, "https://other.example")
    redis.sadd(f"widget:agents:{ORIGIN}", AGENT)
    redis.sadd("widget:agents:https://other.example", AGENT)
    redis.hset("widget:limits:https://other.example", "per_day", 11)
    fake_retell.set_behaviour(delay=0.05)  # the admitted overlap on their way to Retell
    with two_gateways_behind_one_nginx(
        tmp_path, redis_server.url, fake_retell, dist_dir, RATE_LIMIT_PER_IP="7 per minute"
    ) as (nginx, gateways):
        # 100 at once from one address: exactly its per-IP limit is admitted.
        statuses = at_once(100, lambda i: create(nginx.port, "127.0.0.9"))
        assert (statuses.count(201), statuses.count(429)) == (7, 93), statuses
        # 100 at once from 100 addresses to an origin allowed 11 a day: exactly 11.
        statuses = at_once(
            100, lambda i: create(nginx.port, f"127.0.1.{i + 1}", "https://other.example")
        )
        assert (statuses.count(201), statuses.count(429)) == (11, 89), statuses
        assert len(creates(fake_retell)) == 18  # what was admitted, and only that, was minted
        (_, _, a_log), (_, _, b_log) = gateways
        assert served(a_log) > 0 and served(b_log) > 0  # both hosts took part
        assert served(a_log) + served(b_log) == 200


def test_a_killed_instance_moves_new_requests_to_the_other_and_no_post_goes_twice(
    tmp_path, redis, redis_server, fake_retell, dist_dir, need_nginx
):
    redis.sadd("widget:origins", ORIGIN)
    redis.sadd(f"widget:agents:{ORIGIN}", AGENT)
    fake_retell.set_behaviour(delay=0.2)  # some requests are at Retell when a host dies
    with two_gateways_behind_one_nginx(
        tmp_path, redis_server.url, fake_retell, dist_dir, RATE_LIMIT_PER_IP="10000 per minute"
    ) as (nginx, gateways):
        (a, _, a_log), (_, _, b_log) = gateways
        results: dict[int, tuple[float, int, float]] = {}  # n -> (sent, status, answered)
        numbers = iter(range(120))
        lock = threading.Lock()
        killed_at: list[float] = []

        def sender(thread: int):
            while True:
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                sent = time.monotonic()
                status = create(nginx.port, f"127.0.2.{thread + 1}", n=n)
                results[n] = (sent, status, time.monotonic())
                if len(results) == 30 and not killed_at:  # mid-run: host "a" dies
                    victims = [a.pid, *children(a.pid)]
                    for pid in victims:  # by PID, the master and its worker at once
                        os.kill(pid, signal.SIGKILL)
                    killed_at.append(time.monotonic())

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert killed_at and a.wait(10) == -signal.SIGKILL
        assert len(results) == 120

        minted: dict[str, int] = {}
        for request in creates(fake_retell):
            if not isinstance(request["body"], dict):
                continue  # cut off mid-body by the kill: no call (Retell answers 400)
            n = request["body"]["metadata"]["n"]
            minted[n] = minted.get(n, 0) + 1
        assert max(minted.values()) == 1, minted  # no POST reached Retell twice
        ok = {n for n, (_, status, _) in results.items() if status == 201}
        assert all(str(n) in minted for n in ok)  # every 201 is one call at Retell
        # What failed was in flight on "a" when it died, or sent on one of nginx's kept-alive
        # connections to it before nginx saw them close: a POST already written is never
        # resent (a 503 instead); only one that found no connection moves on to "b".
        failed = {n: r for n, r in results.items() if r[1] != 201}
        assert all(sent < killed_at[0] + GRACE_S for sent, _, _ in failed.values()), failed
        assert all(status == 503 for _, status, _ in failed.values()), failed
        assert len(minted) - len(ok) <= len(failed) <= 12
        # Everything sent after that was answered, by "b".
        after = [r for r in results.values() if r[0] > killed_at[0] + GRACE_S]
        assert len(after) > 30 and all(status == 201 for _, status, _ in after)
        assert served(b_log) >= len(after) and served(a_log) > 0  # both served, then "b"
        assert "Traceback" not in b_log.read_text()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []
