"""`kill -HUP` of the gunicorn master (a deploy's reload) drops no request."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.deploy.helpers import fetch, wait_until

pytestmark = pytest.mark.nginx

ORIGIN = "https://client-reload.example"
AGENT = "agent_reload"
UPSTREAM_DELAY = 1.5


def worker_pids(master_pid: int) -> set[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    return {int(pid) for pid in children.split()}


def create_call(port: int, source: str):
    return fetch(
        port,
        "/api/create-web-call",
        method="POST",
        headers={"Content-Type": "application/json", "Origin": ORIGIN},
        body=json.dumps({"agent_id": AGENT}),
        source=source,
        timeout=30,
    ).status


def test_hup_during_in_flight_requests_drops_none(stack, allow_origin, fake_retell):
    allow_origin(ORIGIN, AGENT)
    fake_retell.set_behaviour(delay=UPSTREAM_DELAY)
    master = stack.gunicorn.pid
    assert wait_until(lambda: len(worker_pids(master)) == 2, 15)  # both workers booted
    old_workers = worker_pids(master)

    sources = [f"127.0.0.{70 + i % 4}" for i in range(12)]  # 3 each: under the per-IP limit
    with ThreadPoolExecutor(max_workers=24) as pool:
        in_flight = [pool.submit(create_call, stack.port, s) for s in sources]
        # Reload only once every request is waiting on Retell inside an old worker.
        assert wait_until(lambda: len(fake_retell.requests) == len(in_flight), 10)
        os.kill(master, signal.SIGHUP)
        # And keep traffic coming while old and new workers swap.
        during = []
        deadline = time.monotonic() + UPSTREAM_DELAY + 1
        while time.monotonic() < deadline and len(during) < 60:
            during.append(pool.submit(fetch, stack.port, "/api/health"))
            time.sleep(0.05)
        statuses = [f.result(timeout=30) for f in in_flight]
        during_statuses = [f.result(timeout=30).status for f in during]

    assert statuses == [201] * len(in_flight)
    assert during_statuses == [200] * len(during)
    assert len(fake_retell.requests) == len(in_flight)  # nothing was retried upstream

    # The reload really happened: same master, all-new workers.
    assert stack.gunicorn.poll() is None
    assert wait_until(lambda: not (worker_pids(master) & old_workers), 15)
    assert len(worker_pids(master)) == 2
    fake_retell.set_behaviour(delay=0)
    assert create_call(stack.port, "127.0.0.79") == 201
