"""The fake Retell's calls and webhooks follow docs/retell.md ("Webhooks"): get-call shapes,
signatures checked here from the documented formula (not with app/ code), retries,
calls nobody joined, the loopback end hook, reset()."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from devtools.fakes.retell import CENTS_PER_MINUTE, TRANSCRIPT
from devtools.ports import free_port, wait_for_port, wait_until

ROOT = Path(__file__).resolve().parents[1]

SIGNATURE = re.compile(r"v=([0-9]+),d=([0-9a-f]{64})")


class Receiver:
    """A webhook endpoint on loopback: records each delivery, answers from a script."""

    def __init__(self):
        self.deliveries: list[dict] = []
        self.script: list[int] = []  # statuses to answer first; then `status`
        self.status = 204
        self.delays: list[float] = []  # seconds to wait before answering, per delivery
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                record = {"raw": raw, "headers": dict(self.headers), "at": time.time()}
                receiver.deliveries.append(record)
                if receiver.delays:
                    time.sleep(receiver.delays.pop(0))
                record["answered"] = time.time()
                status = receiver.script.pop(0) if receiver.script else receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/retell-webhook"

    def events(self) -> list[str]:
        return [json.loads(d["raw"])["event"] for d in self.deliveries]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def fake(fake_retell, receiver):
    fake_retell.webhook_url = receiver.url
    fake_retell.webhook_retry_delay = 0.01
    return fake_retell


def call(fake, path, body=None, *, method=None, key=None, version="v3"):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{fake.url}{path}",
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        headers={
            "Authorization": f"Bearer {key or fake.api_key}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def mint(fake, **body) -> str:
    status, answer = call(fake, "/v3/create-web-call", {"agent_id": "agent_a", **body})
    assert status == 201, answer
    return answer["call_id"]


def verify(delivery, key, now_ms=None) -> dict:
    """The documented check, written out: HMAC-SHA256(key, raw body + str(ms)), 5 min."""
    match = SIGNATURE.fullmatch(delivery["headers"]["X-Retell-Signature"])
    assert match, delivery["headers"]
    timestamp, digest = int(match[1]), match[2]
    expected = hmac.new(key.encode(), delivery["raw"] + match[1].encode(), hashlib.sha256)
    assert hmac.compare_digest(expected.hexdigest(), digest)
    now_ms = now_ms or time.time() * 1000
    assert abs(now_ms - timestamp) < 5 * 60 * 1000
    assert delivery["headers"]["Content-Type"] == "application/json"
    return json.loads(delivery["raw"])


def test_get_call_follows_the_call_from_registered_to_ended(fake_retell):
    fake = fake_retell
    call_id = mint(fake, metadata={"origin": "https://a.example"})
    status, registered = call(fake, f"/v2/get-call/{call_id}")
    assert status == 200
    assert registered == {
        "call_id": call_id,
        "agent_id": "agent_a",
        "call_type": "web_call",
        "call_status": "registered",
        "metadata": {"origin": "https://a.example"},
    }
    assert fake.calls[call_id] == registered

    fake.start_call(call_id)
    _, ongoing = call(fake, f"/v2/get-call/{call_id}")
    assert ongoing["call_status"] == "ongoing" and ongoing["start_timestamp"] > 0
    assert "end_timestamp" not in ongoing and "call_cost" not in ongoing

    assert fake.end_call(call_id, duration_ms=61_000) == []  # no webhook_url: nothing sent
    _, ended = call(fake, f"/v2/get-call/{call_id}")
    assert ended["call_status"] == "ended"
    assert ended["end_timestamp"] - ended["start_timestamp"] == ended["duration_ms"] == 61_000
    assert ended["disconnection_reason"] == "user_hangup"
    assert ended["call_cost"]["combined_cost"] == 2 * CENTS_PER_MINUTE  # 2 started minutes
    assert ended["call_cost"]["total_duration_seconds"] == 61
    assert ended["transcript"] == TRANSCRIPT
    # A second end changes nothing.
    assert fake.end_call(call_id, duration_ms=5) == [] and fake.calls[call_id] == ended


def test_get_call_auth_and_unknown_ids(fake_retell):
    call_id = mint(fake_retell)
    assert call(fake_retell, f"/v2/get-call/{call_id}", key="wrong")[0] == 401
    assert call(fake_retell, "/v2/get-call/call_nope") == (
        404,
        {"status": "error", "message": "Not found"},
    )
    fake_retell.get_call_status = 500
    assert call(fake_retell, f"/v2/get-call/{call_id}")[0] == 500


def test_create_records_the_duration_cap(fake_retell):
    call_id = mint(fake_retell, agent_override={"agent": {"max_call_duration_ms": 60_000}})
    assert fake_retell.calls[call_id]["max_call_duration_ms"] == 60_000
    assert "metadata" not in fake_retell.calls[call_id]  # none sent: omitted, like Retell
    fake_retell.end_call(call_id, duration_ms=90_000)
    ended = fake_retell.calls[call_id]
    assert ended["duration_ms"] == 60_000
    assert ended["disconnection_reason"] == "max_duration_reached"
    assert ended["call_cost"]["combined_cost"] == CENTS_PER_MINUTE


def test_v2_calls_are_recorded_too(fake_retell):
    status, answer = call(fake_retell, "/v2/create-web-call", {"agent_id": "agent_b"})
    assert status == 201
    assert fake_retell.calls[answer["call_id"]]["agent_id"] == "agent_b"


def test_end_call_sends_three_signed_webhooks_in_order(fake, receiver):
    call_id = mint(fake, metadata={"origin": "https://a.example"})
    deliveries = fake.end_call(call_id, duration_ms=30_000, cost_cents=7)
    assert deliveries == [
        {"event": e, "call_id": call_id, "status": 204, "attempts": 1}
        for e in ("call_started", "call_ended", "call_analyzed")
    ]
    assert fake.webhooks == deliveries
    assert receiver.events() == ["call_started", "call_ended", "call_analyzed"]
    started, ended, analyzed = (verify(d, fake.api_key) for d in receiver.deliveries)
    assert started["call"]["call_status"] == "ongoing"
    assert "end_timestamp" not in started["call"] and "call_cost" not in started["call"]
    assert ended["call"]["call_status"] == "ended" and ended["call"]["duration_ms"] == 30_000
    assert ended["call"]["metadata"] == {"origin": "https://a.example"}
    assert "call_analysis" not in ended["call"]
    assert analyzed["call"]["call_cost"]["combined_cost"] == 7
    assert "call_analysis" in analyzed["call"]
    assert analyzed["call"] == fake.calls[call_id]
    # Raw UTF-8, not \u escapes: verifying re-serialised JSON would not match.
    assert "Grüße".encode() in receiver.deliveries[1]["raw"]


def test_the_signature_uses_the_api_key_and_catches_tampering(fake, receiver):
    fake.end_call(mint(fake))
    delivery = receiver.deliveries[1]
    with pytest.raises(AssertionError):
        verify(delivery, "another-key")
    with pytest.raises(AssertionError):
        verify({**delivery, "raw": delivery["raw"].replace(b"ended", b"ENDED")}, fake.api_key)


def test_started_call_sends_call_started_once(fake, receiver):
    call_id = mint(fake)
    assert [d["event"] for d in fake.start_call(call_id)] == ["call_started"]
    assert [d["event"] for d in fake.end_call(call_id)] == ["call_ended", "call_analyzed"]
    assert receiver.events() == ["call_started", "call_ended", "call_analyzed"]


def test_a_call_nobody_joined_gets_no_call_started(fake, receiver):
    call_id = mint(fake)
    deliveries = fake.end_call(call_id, duration_ms=45_000, joined=False)
    assert [d["event"] for d in deliveries] == ["call_ended", "call_analyzed"]
    ended = verify(receiver.deliveries[0], fake.api_key)["call"]
    assert ended["call_status"] == "ended"
    assert "start_timestamp" not in ended and ended["duration_ms"] == 0
    assert ended["disconnection_reason"] == "error_user_not_joined"
    analyzed = verify(receiver.deliveries[1], fake.api_key)["call"]
    assert analyzed["call_cost"]["combined_cost"] == 0


def test_failed_deliveries_are_retried(fake, receiver):
    receiver.script = [500, 500]
    deliveries = fake.end_call(mint(fake))
    assert [(d["status"], d["attempts"]) for d in deliveries] == [(204, 3), (204, 1), (204, 1)]
    assert receiver.events() == ["call_started"] * 3 + ["call_ended", "call_analyzed"]
    for delivery in receiver.deliveries:  # each try is signed
        verify(delivery, fake.api_key)


def test_retries_stop_after_three_more_tries(fake, receiver):
    receiver.status = 503
    deliveries = fake.end_call(mint(fake), joined=False)
    assert [(d["status"], d["attempts"]) for d in deliveries] == [(503, 4), (503, 4)]
    assert len(receiver.deliveries) == 8


def test_no_answer_in_time_is_retried(fake, receiver):
    fake.webhook_timeout = 0.2  # Retell's is 10 s
    receiver.delays = [0.5]  # the first try is answered, but too late
    (started,) = fake.start_call(mint(fake))
    assert (started["status"], started["attempts"]) == (204, 2)
    assert len(receiver.deliveries) == 2


def test_refused_connection_is_status_none(fake):
    fake.webhook_url = f"http://127.0.0.1:{free_port()}/api/retell-webhook"
    deliveries = fake.end_call(mint(fake), joined=False)
    assert [(d["status"], d["attempts"]) for d in deliveries] == [(None, 4), (None, 4)]


def test_send_webhook_for_odd_deliveries(fake, receiver):
    call_id = mint(fake)
    assert fake.send_webhook("call_ended", call_id) == 204
    assert verify(receiver.deliveries[-1], fake.api_key)["call"]["call_status"] == "registered"
    assert fake.send_webhook("call_ended", call_id, signature_override="v=1,d=00") == 204
    assert receiver.deliveries[-1]["headers"]["X-Retell-Signature"] == "v=1,d=00"
    stale = int(time.time() * 1000) - 6 * 60 * 1000
    fake.send_webhook("call_ended", call_id, timestamp_ms=stale)
    verify(receiver.deliveries[-1], fake.api_key, now_ms=stale)  # right digest, old time
    raw = b'{"event":"call_ended","call":{"call_id":"call_phone"}}'
    receiver.status = 400
    assert fake.send_webhook("call_ended", "call_phone", body_override=raw) == 400
    assert receiver.deliveries[-1]["raw"] == raw
    assert len(fake.webhooks) == 4 and fake.webhooks[-1]["attempts"] == 1


def test_http_end_hook_ends_in_the_background(fake, receiver):
    call_id = mint(fake)
    body = {"duration_ms": 125_000, "disconnection_reason": "agent_hangup"}
    request = urllib.request.Request(
        f"{fake.url}/_fake/calls/{call_id}/end",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},  # no auth: a loopback test hook
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202
    assert wait_until(lambda: len(fake.webhooks) == 3, 5)
    assert receiver.events() == ["call_started", "call_ended", "call_analyzed"]
    ended = fake.calls[call_id]
    assert ended["duration_ms"] == 125_000 and ended["disconnection_reason"] == "agent_hangup"
    assert ended["call_cost"]["combined_cost"] == 3 * CENTS_PER_MINUTE
    # The hooks are not API traffic: create is the only request recorded.
    assert [r["path"] for r in fake.requests] == ["/v3/create-web-call"]
    assert call(fake, f"/_fake/calls/{call_id}/end", {})[0] == 409
    assert call(fake, "/_fake/calls/call_nope/end", {})[0] == 404
    assert call(fake, f"/_fake/calls/{mint(fake)}/end", {"joined": "no"})[0] == 400


def test_http_start_and_not_joined_end(fake, receiver):
    call_id = mint(fake)
    assert call(fake, f"/_fake/calls/{call_id}/start", {})[0] == 202
    assert wait_until(lambda: fake.calls[call_id]["call_status"] == "ongoing", 5)
    other = mint(fake)
    assert call(fake, f"/_fake/calls/{other}/end", {"joined": False})[0] == 202
    assert wait_until(lambda: fake.calls[other].get("call_cost"), 5)
    assert fake.calls[other]["disconnection_reason"] == "error_user_not_joined"


def test_reset_clears_calls_webhooks_and_switches(fake, receiver):
    fake.end_call(mint(fake))
    fake.get_call_status = 500
    fake.reset()
    assert fake.calls == {} and fake.webhooks == [] and fake.requests == []
    assert fake.webhook_url is None and fake.webhook_retry_delay == 1.0
    assert fake.get_call_status is None


def test_cli_webhook_url(receiver):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.fakes.retell", "--port", str(port),
         "--api-key", "key_cli", "--webhook-url", receiver.url],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=10)
        cli = SimpleNamespace(url=f"http://127.0.0.1:{port}", api_key="key_cli")
        call_id = mint(cli)
        assert call(cli, f"/_fake/calls/{call_id}/end", {"duration_ms": 1000})[0] == 202
        assert wait_until(lambda: len(receiver.deliveries) == 3, 10)
        for delivery in receiver.deliveries:
            verify(delivery, "key_cli")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"fake Retell sends signed webhooks to {receiver.url}" in out


def test_start_and_end_from_two_threads_arrive_in_order(fake, receiver):
    receiver.delays = [0.3]  # call_started is slow to be answered
    call_id = mint(fake)
    starter = threading.Thread(target=fake.start_call, args=(call_id,))
    starter.start()
    assert wait_until(lambda: receiver.deliveries, 5)
    fake.end_call(call_id)  # waits for call_started to be delivered
    starter.join(5)
    assert receiver.events() == ["call_started", "call_ended", "call_analyzed"]
    started, ended, _ = receiver.deliveries
    assert ended["at"] >= started["answered"]
