"""`make run` (python -m devtools.run_local): starts the whole stack, serves the demo site
and the API, and leaves nothing behind after Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis as redis_lib

from devtools import run_local
from devtools.ports import free_port, wait_for_port
from tests.deploy.helpers import fetch, pid_alive, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


@contextmanager
def run_local_stack(tmp_path, dist_root):
    """python -m devtools.run_local on free ports, with the fakes (no key, no REDIS_URL)."""
    port, demo_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "RETELL_API_KEY", "APP_ENV", "RATE_LIMIT_PER_IP")
    }
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.run_local", "--port", str(port),
             "--demo-port", str(demo_port), "--dist-root", str(dist_root)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        ready = wait_until(lambda: b"Press Ctrl-C" in log_path.read_bytes(), 45, 0.2)
        assert ready, log_path.read_text()
        yield SimpleNamespace(proc=proc, port=port, demo_port=demo_port, log=log_path)
    finally:
        # honcho puts each service in its own process group: stop the stack the way a
        # user does (Ctrl-C), and kill by PID whatever is left, so no test leaks a stack.
        children = descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pid in children:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def assert_webhooks_reach_the_app(run, call_id: str) -> None:
    """A hang-up reported to the fake Retell comes back as three signed webhooks that
    nginx passes to the app (its JSON access lines, in run.log, show each answer)."""
    output = run.log.read_text()
    assert (
        f"fake Retell sends signed webhooks to http://localhost:{run.port}/api/retell-webhook"
        in output
    )
    retell_port = int(re.search(r"FAKE Retell API on 127\.0\.0\.1:(\d+)", output)[1])
    hook = fetch(
        retell_port,
        f"/_fake/calls/{call_id}/end",
        method="POST",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"duration_ms": 42_000}),
    )
    assert hook.status == 202, hook.body

    def webhook_statuses():
        lines = [line.split("| ", 1)[-1] for line in run.log.read_text().splitlines()]
        records = [json.loads(line) for line in lines if line.startswith('{"ts"')]
        return [r["status"] for r in records if r.get("uri") == "/api/retell-webhook"]

    assert wait_until(lambda: len(webhook_statuses()) >= 3, 15), run.log.read_text()[-3000:]
    if (ROOT / "app" / "http" / "webhooks.py").exists():
        assert webhook_statuses() == [204, 204, 204]


@pytest.mark.nginx
def test_make_run_serves_demo_and_api_then_stops_cleanly(tmp_path, dist_dir, need_nginx):
    with run_local_stack(tmp_path, dist_dir) as run:
        proc, port, demo_port = run.proc, run.port, run.demo_port
        output = run.log.read_text()
        assert "FAKE Retell" in output and "Redis: started redis-server" in output
        assert f"http://localhost:{demo_port}/" in output

        page = fetch(demo_port, "/")
        assert page.status == 200
        assert page.header("Content-Type").startswith("text/html")
        assert f"http://localhost:{port}/v1/retell-widget.js".encode() in page.body
        assert f"http://localhost:{port}/api/create-web-call".encode() in page.body
        assert fetch(port, "/v1/retell-widget.js").status == 200

        body = json.dumps({"agent_id": run_local.DEFAULT_DEMO_AGENT})
        headers = {"Content-Type": "application/json", "Origin": f"http://localhost:{demo_port}"}
        created = fetch(port, "/api/create-web-call", method="POST", headers=headers, body=body)
        assert created.status == 201, created.body
        assert created.json()["transport"] == "gateway"
        assert created.header("Access-Control-Allow-Origin") == headers["Origin"]
        # The demo site has the live transcript on, and a chat agent for "Type instead".
        assert created.json()["transcript_url"].endswith("/transcript")
        chat = fetch(port, "/api/chat", method="POST", headers=headers, body="{}")
        assert chat.status == 201, chat.body
        said = json.dumps({"chat_token": chat.json()["chat_token"], "content": "Hello"})
        reply = fetch(port, "/api/chat/messages", method="POST", headers=headers, body=said)
        assert reply.status == 200 and reply.json()["messages"][0]["content"] == "You said: Hello"
        # Production rules: another localhost origin is not allowed just for being local.
        headers["Origin"] = f"http://localhost:{free_port()}"
        refused = fetch(port, "/api/create-web-call", method="POST", headers=headers, body=body)
        assert refused.status == 403
        assert_webhooks_reach_the_app(run, created.json()["call_id"])

        children = descendants(proc.pid)
        assert len(children) >= 6  # redis, retell, gateway, gunicorn (+workers), nginx, ready
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert wait_until(lambda: not any(pid_alive(p) for p in children), 10), [
            p for p in children if pid_alive(p)
        ]
        for p in (port, demo_port):
            with pytest.raises(OSError):
                wait_for_port(p, timeout=0.3)


def test_fakeredis_fallback_is_a_working_tcp_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.run_local", "fakeredis", str(port)], cwd=ROOT
    )
    try:
        wait_for_port(port, process=proc)
        client = redis_lib.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        assert client.sadd("widget:origins", "https://a.example") == 1
        assert client.smembers("widget:origins") == {b"https://a.example"}
        client.close()
    finally:
        stop_process(proc)
        assert proc.returncode is not None


def _plan(monkeypatch, tmp_path, environ, *, redis_binary=True):
    monkeypatch.setattr(
        run_local.shutil, "which", lambda name: f"/usr/bin/{name}" if redis_binary else None
    )
    args = SimpleNamespace(
        port=8000,
        demo_port=8001,
        agent_id="agent_x",
        chat_agent_id="agent_chat_x",
        dist_root=tmp_path,
    )
    processes, env, notes = run_local.plan(args, environ, tmp_path)
    return dict(processes), env, notes


def test_plan_says_which_redis_and_retell_it_uses(monkeypatch, tmp_path):
    procs, env, notes = _plan(monkeypatch, tmp_path / "a", {}, redis_binary=False)
    assert "fakeredis" in procs["redis"] and "fakeredis" in notes[0]
    assert {"retell", "gateway", "web", "nginx", "ready"} <= set(procs)
    assert sum("FAKE Retell" in n for n in notes) == 1
    # Production defaults for limits and proxy settings.
    assert env["APP_ENV"] == "production" and env["TRUSTED_PROXY_COUNT"] == "1"
    assert "RATE_LIMIT_PER_IP" not in env
    assert env["GUNICORN_BIND"].startswith("127.0.0.1:")
    assert env["USAGE_SPOOL_DIR"].startswith(str(tmp_path))

    given = {"REDIS_URL": "redis://127.0.0.1:1/0", "RETELL_API_KEY": "key_real"}
    procs, env, notes = _plan(monkeypatch, tmp_path / "b", given)
    assert "redis" not in procs and "retell" not in procs and "gateway" not in procs
    assert env["REDIS_URL"] == given["REDIS_URL"] and env["RETELL_API_KEY"] == "key_real"
    assert not any("FAKE" in n for n in notes)


def test_busy_port_is_refused_with_a_clear_message(tmp_path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        code = run_local.main(["--port", str(busy), "--demo-port", str(free_port())])
    assert code == 2
    assert f"port {busy} is in use" in capsys.readouterr().err
