"""The fakes answer in Retell's documented shapes, and `make run` uses them that way."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from devtools import run_local
from devtools.fakes.gateway import FakeGateway
from devtools.fakes.retell import DEFAULT_KEY
from devtools.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
V3_KEYS = {"access_token", "call_id", "expires_at", "ice_servers", "transport"}


def create(port: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v3/create-web-call",
        data=json.dumps({"agent_id": "agent_a"}).encode(),
        headers={"Authorization": f"Bearer {DEFAULT_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def answers_from_cli(*args: str, count: int = 2) -> list[dict]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.fakes.retell", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=10)
        return [create(port) for _ in range(count)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_answers_the_documented_v3_shape_by_default():
    first, second = answers_from_cli()
    assert set(first) == set(second) == V3_KEYS  # no `url`
    # The SDK allows urls as a string or a list: by default the fake alternates.
    assert [first["ice_servers"][0]["urls"], second["ice_servers"][0]["urls"]] == [
        ["stun:127.0.0.1:3478"],
        "stun:127.0.0.1:3478",
    ]


def test_cli_url_is_an_explicit_switch():
    (answer,) = answers_from_cli("--with-url", "http://127.0.0.1:1/edge/", count=1)
    assert set(answer) == V3_KEYS | {"url"}
    assert answer["url"] == f"http://127.0.0.1:1/edge/{answer['call_id']}"


def test_make_run_relies_on_the_gateway_base_fallback(monkeypatch, tmp_path):
    monkeypatch.setattr(run_local.shutil, "which", lambda name: f"/usr/bin/{name}")
    args = SimpleNamespace(port=8000, demo_port=8001, agent_id="agent_x", dist_root=tmp_path)
    processes, env, _ = run_local.plan(args, {}, tmp_path)
    procs = dict(processes)
    assert "--with-url" not in procs["retell"] and "--gateway-url" not in procs["retell"]
    gateway_port = procs["gateway"].split("--port ")[1].split()[0]
    assert env["RETELL_GATEWAY_BASE"] == f"http://127.0.0.1:{gateway_port}"


def test_gateway_checks_the_call_in_its_path():
    gateway = FakeGateway()  # handle() refuses before any WebRTC: no need to start it
    offer = {"call_id": "call_a", "identity": "web-call_a", "sdp": "v=0"}
    status, body = gateway.handle("POST", "/webrtc-proxy/call_b/v1/webrtc/sessions", "t", offer)
    assert (status, body) == (400, {"error": "call_id does not match the URL"})
