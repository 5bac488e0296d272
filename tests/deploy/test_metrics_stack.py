"""GET /metrics under deploy/gunicorn.conf.py behind the nginx site: every worker counted
with no setting of ours (the config prepares prometheus-client's multiprocess directory),
a dead worker's live gauges dropped, and only listed addresses served, by nginx and by
the app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import GUNICORN, ROOT, stack_env
from tests.deploy.helpers import fetch, run_nginx, stop_process, wait_until

ORIGIN = "https://client.example"
AGENT = "agent_metrics"
SHM = Path("/dev/shm")  # noqa: S108 -- where the config puts the directory


@pytest.fixture(scope="module")
def metered(tmp_path_factory, dist_dir, redis_server, _fake_retell_server):
    """gunicorn (2 workers, unix socket, no PROMETHEUS_MULTIPROC_DIR) behind nginx, which
    lets 127.0.0.1, 127.0.0.3 and 127.0.0.4 through; the app lists 127.0.0.1 and .3."""
    from tests.deploy.conftest import _need_nginx

    _need_nginx()
    base = tmp_path_factory.mktemp("metered")
    sock, log = base / "gunicorn.sock", base / "gunicorn.log"
    env = stack_env(redis_server.url, _fake_retell_server, GUNICORN_BIND=f"unix:{sock}",
                    METRICS_ALLOW_FROM="127.0.0.1,127.0.0.3")  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([GUNICORN, "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                                 "wsgi:app"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert wait_until(lambda: sock.exists() or proc.poll() is not None, 20), log.read_text()
        assert proc.poll() is None, log.read_text()
        allow = ("127.0.0.1", "::1", "127.0.0.3", "127.0.0.4")
        with run_nginx(base / "nginx", upstream=f"unix:{sock}", dist_root=dist_dir,
                       metrics_allow=allow) as nginx:  # fmt: skip
            yield nginx, proc, log
    finally:
        stop_process(proc, timeout=30)


def scrape(port: int, source: str = "127.0.0.1") -> dict[tuple, float]:
    reply = fetch(port, "/metrics", source=source)
    assert reply.status == 200, reply.body
    assert reply.header("Content-Type").startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def created(found) -> float:
    return found.get(("widget_create_attempts_total", (("outcome", "created"),)), 0.0)


def access_lines(log: Path) -> list[dict]:
    lines = []
    for line in log.read_text().splitlines():
        if '"log":"access"' in line:
            lines.append(json.loads(line[line.index("{") :]))
    return lines


def workers(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def test_only_listed_addresses_read_metrics_through_nginx(metered):
    nginx, _, log = metered
    assert scrape(nginx.port)  # this host
    assert scrape(nginx.port, "127.0.0.3")  # listed in both
    refused = fetch(nginx.port, "/metrics", source="127.0.0.2")  # not listed: nginx says no
    assert (refused.status, refused.body) == (403, b"forbidden\n")
    assert refused.header("X-Content-Type-Options") == "nosniff"
    app_refused = fetch(nginx.port, "/metrics", source="127.0.0.4")  # nginx yes, the app no
    assert (app_refused.status, app_refused.body) == (403, b"forbidden\n")

    def seen():
        return {(a["forwarded_for"], a["status"]) for a in access_lines(log)
                if a["path"] == "/metrics"}  # fmt: skip

    assert wait_until(lambda: ("127.0.0.4", 403) in seen(), 5), seen()
    assert not any(ip == "127.0.0.2" for ip, _ in seen())  # never reached the app


def test_every_worker_is_counted_and_a_dead_ones_gauges_go(metered, redis, fake_retell):
    nginx, master, log = metered
    redis.sadd("widget:origins", ORIGIN)
    redis.sadd(f"widget:agents:{ORIGIN}", AGENT)
    fake_retell.set_behaviour(delay=0.1)  # overlapping, so both workers take some
    before = created(scrape(nginx.port))
    barrier = threading.Barrier(40)

    def one(i):
        barrier.wait(10)
        body = json.dumps({"agent_id": AGENT})
        headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
        return fetch(nginx.port, "/api/create-web-call", method="POST", body=body,
                     headers=headers, source=f"127.0.3.{i + 1}").status  # fmt: skip

    # The kernel may hand one burst's connections all to one worker: bursts until both took
    # some (at most three).
    sent = 0
    for _ in range(3):
        barrier.reset()
        with ThreadPoolExecutor(max_workers=40) as pool:
            assert list(pool.map(one, range(40))) == [201] * 40
        sent += 40
        pids = {a["pid"] for a in access_lines(log) if a["path"] == "/api/create-web-call"}
        if len(pids) == 2:
            break
    assert len(pids) == 2, pids  # both workers answered creates
    for _ in range(6):  # whichever worker answers the scrape, it adds up both
        found = scrape(nginx.port)
        assert created(found) - before == sent
    key = ("widget_upstream_seconds_count", (("api", "create-web-call"), ("status", "201")))
    assert found[key] >= sent

    [directory] = SHM.glob(f"widget-gateway-metrics-{master.pid}-*")  # made by the config
    victim = workers(master.pid)[0]
    assert (directory / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    assert wait_until(
        lambda: victim not in workers(master.pid) and len(workers(master.pid)) == 2, 20
    )
    assert wait_until(lambda: not (directory / f"gauge_livesum_{victim}.db").exists(), 10)
    assert (directory / f"counter_{victim}.db").exists()  # its totals stay counted
    assert created(scrape(nginx.port)) - before == sent


def test_the_metrics_directory_is_removed_at_exit(tmp_path, redis_server, _fake_retell_server):
    port_file = tmp_path / "gunicorn.sock"
    env = stack_env(redis_server.url, _fake_retell_server, GUNICORN_BIND=f"unix:{port_file}",
                    GUNICORN_WORKERS="1")  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([GUNICORN, "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                                 "wsgi:app"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert wait_until(lambda: list(SHM.glob(f"widget-gateway-metrics-{proc.pid}-*")), 20)
    finally:
        stop_process(proc, timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert not list(SHM.glob(f"widget-gateway-metrics-{proc.pid}-*"))
