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
from devtools.ports import free_port, wait_for_port, wait_until

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
    args = SimpleNamespace(
        port=8000,
        demo_port=8001,
        agent_id="agent_x",
        chat_agent_id="agent_chat_x",
        dist_root=tmp_path,
    )
    processes, env, _ = run_local.plan(args, {}, tmp_path)
    procs = dict(processes)
    assert "--with-url" not in procs["retell"] and "--gateway-url" not in procs["retell"]
    gateway_port = procs["gateway"].split("--port ")[1].split()[0]
    assert env["RETELL_GATEWAY_BASE"] == f"http://127.0.0.1:{gateway_port}"


def test_make_run_closes_the_webhook_loop(monkeypatch, tmp_path):
    """The gateway tells the fake API about hang-ups; its webhooks go through nginx."""
    monkeypatch.setattr(run_local.shutil, "which", lambda name: f"/usr/bin/{name}")
    args = SimpleNamespace(
        port=8123,
        demo_port=8001,
        agent_id="agent_x",
        chat_agent_id="agent_chat_x",
        dist_root=tmp_path,
    )
    processes, env, notes = run_local.plan(args, {}, tmp_path)
    procs = dict(processes)
    webhook = "http://localhost:8123/api/retell-webhook"
    assert f"--webhook-url {webhook}" in procs["retell"]
    assert f"--api-key {env['RETELL_API_KEY']}" in procs["retell"]  # signs with the app's key
    assert f"--retell-url {env['RETELL_API_BASE']}" in procs["gateway"]
    retell_port = procs["retell"].split("--port ")[1].split()[0]
    assert env["RETELL_API_BASE"] == f"http://127.0.0.1:{retell_port}"
    assert sum(f"fake Retell sends signed webhooks to {webhook}" in n for n in notes) == 1


def test_gateway_checks_the_call_in_its_path():
    gateway = FakeGateway()  # handle() refuses before any WebRTC: no need to start it
    offer = {"call_id": "call_a", "identity": "web-call_a", "sdp": "v=0"}
    status, body = gateway.handle("POST", "/webrtc-proxy/call_b/v1/webrtc/sessions", "t", offer)
    assert (status, body) == (400, {"error": "call_id does not match the URL"})


async def _join(gateway_url: str, call_id: str):
    """A Python WebRTC client (aiortc, a control channel only) joined to the fake gateway."""
    import asyncio

    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection()
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    body = {"call_id": call_id, "identity": f"web-{call_id}", "sdp": pc.localDescription.sdp}
    answer = await asyncio.to_thread(
        _http, f"{gateway_url}/v1/webrtc/sessions", "POST", "tok_x", body
    )
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    for _ in range(100):
        if pc.connectionState == "connected":
            break
        await asyncio.sleep(0.05)
    assert pc.connectionState == "connected"
    return pc, answer["session_id"]


def _http(url: str, method: str, token: str, body: dict | None = None):
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _mint(fake) -> str:
    request = urllib.request.Request(
        f"{fake.url}/v3/create-web-call",
        data=json.dumps({"agent_id": "agent_a"}).encode(),
        headers={"Authorization": f"Bearer {fake.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["call_id"]


def test_gateway_reports_start_and_hang_up_to_the_fake_retell(fake_retell):
    import asyncio

    gateway = FakeGateway().start()
    gateway.retell_url = fake_retell.url
    try:
        call_id = _mint(fake_retell)

        async def call_then_hang_up():
            pc, session_id = await _join(gateway.url, call_id)
            await asyncio.sleep(0.6)
            await asyncio.to_thread(
                _http, f"{gateway.url}/v1/webrtc/sessions/{session_id}", "DELETE", "tok_x"
            )
            await pc.close()

        asyncio.run(call_then_hang_up())
        assert wait_until(lambda: fake_retell.calls[call_id]["call_status"] == "ended", 10)
        ended = fake_retell.calls[call_id]
        assert 500 <= ended["duration_ms"] < 5000, ended
        assert ended["disconnection_reason"] == "user_hangup" and "start_timestamp" in ended
        # Once per session: the DELETE, then the closing peer connection, report one end.
        assert [r["action"] for r in gateway.reports] == ["start", "end"]
        assert wait_until(lambda: all(r["status"] == 202 for r in gateway.reports), 5)
    finally:
        gateway.stop()


def test_gateway_reports_drop_once_and_nothing_without_retell_url(fake_retell):
    import asyncio

    async def joined_then_dropped(call_id: str, mode: str):
        # The client's loop keeps running while the gateway drops it (SCTP must open).
        pc, _ = await _join(gateway.url, call_id)
        await asyncio.to_thread(gateway.drop, mode)
        await asyncio.sleep(0.3)
        await pc.close()

    gateway = FakeGateway().start()
    try:
        first = _mint(fake_retell)
        asyncio.run(joined_then_dropped(first, "close"))
        assert gateway.reports == []  # retell_url is None by default

        gateway.retell_url = fake_retell.url
        second = _mint(fake_retell)
        asyncio.run(joined_then_dropped(second, "both"))
        assert wait_until(lambda: fake_retell.calls[second]["call_status"] == "ended", 10)
        assert [r["action"] for r in gateway.reports] == ["start", "end"]
        assert fake_retell.calls[first]["call_status"] == "registered"
    finally:
        gateway.stop()


def test_gateway_cli_takes_retell_url():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.fakes.gateway", "--port", str(port),
         "--retell-url", "http://127.0.0.1:1"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # ends early if it exits
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert lines[0].startswith(f"fake Retell gateway on http://127.0.0.1:{port}")
    assert lines[1] == "fake Retell gateway reports call ends to http://127.0.0.1:1\n"
