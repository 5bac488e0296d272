"""Long-lived /api/ locations through real nginx: live transcripts (SSE, unbuffered, logged
without the token) on a stub and on real gunicorn with gevent; chat messages' read timeout."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.policy.tokens import TokenSigner
from deploy.nginx.render import CHAT_MARGIN_S, SiteSettings, main, render_files
from tests.deploy.conftest import GUNICORN, ROOT, stack_env
from tests.deploy.helpers import fetch, run_nginx, stop_process, wait_until
from tests.test_transcript import Sse, lines_of

pytestmark = pytest.mark.nginx

ORIGIN = "https://client-a.example"
SIGNING_KEY = "deploy-test-token-signing-key"
GAP_S = 1.5  # the stub's pause between two events


def _location(site: str, head: str) -> str:
    return site.split(f"location {head} {{", 1)[1].split("\n    }", 1)[0]


def test_the_rendered_locations():
    files = render_files(SiteSettings(conf_dir="/c"))
    transcript = _location(files["site.conf"], "^~ /api/calls/")
    assert "proxy_buffering off;" in transcript
    assert "access_log /var/log/nginx/widget-gateway.access.log widget_json_path;" in transcript
    assert "include /c/proxy-common.conf;" in transcript
    assert "gzip off;" in files["proxy-common.conf"]
    assert "\nproxy_read_timeout" not in files["proxy-common.conf"]  # each location's own
    path_format = files["site.conf"].split("log_format widget_json_path", 1)[1].split(";", 1)[0]
    assert '"uri":"$uri"' in path_format and "request_uri" not in path_format
    chat = _location(files["site.conf"], "= /api/chat/messages")
    # CHAT_READ_TIMEOUT is at most 300 s: the default fits any setting, with room to spare.
    assert f"proxy_read_timeout {300 + CHAT_MARGIN_S}s;" in chat
    tuned = render_files(SiteSettings(conf_dir="/c", chat_read_timeout=60.5))["site.conf"]
    assert f"proxy_read_timeout {61 + CHAT_MARGIN_S}s;" in _location(tuned, "= /api/chat/messages")


def test_the_render_cli_takes_the_chat_read_timeout(tmp_path):
    assert main(["local", "--out-dir", str(tmp_path), "--chat-read-timeout", "90"]) == 0
    site = (tmp_path / "site.conf").read_text()
    assert f"proxy_read_timeout {90 + CHAT_MARGIN_S}s;" in _location(site, "= /api/chat/messages")


class _SlowUpstream(BaseHTTPRequestHandler):
    """Transcripts: two events GAP_S apart, then the end. Anything else: answers after
    `delay` seconds (the chat's long wait)."""

    protocol_version = "HTTP/1.1"
    delay = 0.0

    def do_GET(self):  # noqa: N802
        if "/transcript" not in self.path:
            return self._slow()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, event in enumerate(("transcript", "transcript", "end")):
            if index:
                time.sleep(GAP_S)
            item = {"id": str(index), "role": "agent", "content": "x" * 10, "final": False}
            data = json.dumps(item) if event == "transcript" else '{"reason":"x"}'
            self._chunk(f"id: 1-{index}\nevent: {event}\ndata: {data}\n\n".encode())
        self._chunk(b"")

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._slow()

    def _slow(self):
        time.sleep(self.server.delay)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowUpstream)
    server.daemon_threads = True
    server.delay = 0.0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_events_pass_through_nginx_as_written(tmp_path, dist_dir, slow_upstream):
    with run_nginx(
        tmp_path, upstream=f"127.0.0.1:{slow_upstream.server_port}", dist_root=dist_dir
    ) as nginx:
        started = time.monotonic()
        stream = Sse(
            f"http://127.0.0.1:{nginx.port}/api/calls/call_1/transcript?token=SECRET-TOKEN",
            {"Origin": ORIGIN, "Accept-Encoding": "gzip"},
        )
        assert stream.headers.get("Content-Encoding") is None
        events = stream.until_end()
        stream.close()
        assert [e["event"] for e in events] == ["transcript", "transcript", "end"]
        # Each arrived as the upstream wrote it, not once it had finished.
        assert events[0]["at"] - started < GAP_S * 0.8
        assert events[1]["at"] - events[0]["at"] > GAP_S * 0.6
        log = wait_until(lambda: "/api/calls/call_1/transcript" in _nginx_log(nginx), 5)
        assert log
        assert "SECRET-TOKEN" not in _nginx_log(nginx)
        # Other locations keep the query string in their log line.
        fetch(nginx.port, "/api/health?probe=kept")
        assert wait_until(lambda: "probe=kept" in _nginx_log(nginx), 5)


def _nginx_log(nginx) -> str:
    return (nginx.prefix / "stdout.log").read_text()


def test_chat_messages_outwait_the_default_read_timeout(tmp_path, dist_dir, slow_upstream):
    slow_upstream.delay = 2.5
    with run_nginx(
        tmp_path,
        upstream=f"127.0.0.1:{slow_upstream.server_port}",
        dist_root=dist_dir,
        proxy_read_timeout=1,
        chat_read_timeout=2,
    ) as nginx:
        chat = fetch(nginx.port, "/api/chat/messages", method="POST", body="{}", timeout=20)
        assert (chat.status, chat.json()) == (200, {"ok": True})
        other = fetch(nginx.port, "/api/chat", method="POST", body="{}", timeout=20)
        assert other.status == 503 and other.json()["error"] == "unavailable"  # 1 s: 504


# -- real gunicorn (deploy config) behind nginx: gevent (the default) and gthread --------


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def transcript_stack(request, tmp_path_factory, dist_dir, redis_server, _fake_retell_server,
                     _fake_monitor_server):  # fmt: skip
    from tests.deploy.conftest import _need_nginx

    _need_nginx()
    base = tmp_path_factory.mktemp("transcript-stack")
    sock, log = base / "gunicorn.sock", base / "gunicorn.log"
    env = stack_env(
        redis_server.url,
        _fake_retell_server,
        GUNICORN_BIND=f"unix:{sock}",
        GUNICORN_WORKER_CLASS=request.param,
        RETELL_MONITOR_BASE=_fake_monitor_server.url,
        TOKEN_SIGNING_KEY=SIGNING_KEY,
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [GUNICORN, "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "wsgi:app"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert wait_until(lambda: sock.exists() or proc.poll() is not None, 20), log.read_text()
        assert proc.poll() is None, log.read_text()
        assert f"Using worker: {request.param}" in log.read_text()
        with run_nginx(base / "nginx", upstream=f"unix:{sock}", dist_root=dist_dir) as nginx:
            yield nginx, log
    finally:
        stop_process(proc, timeout=30)


def _listen(nginx, call_id: str, token: str | None = None) -> Sse:
    token = token or TokenSigner(SIGNING_KEY.encode()).sign(
        "transcript", {"c": call_id, "e": ORIGIN, "o": ORIGIN}, int(time.time()) + 600
    )
    url = f"http://127.0.0.1:{nginx.port}/api/calls/{call_id}/transcript?token={token}"
    return Sse(url, {"Origin": ORIGIN})


def test_listeners_share_one_upstream_and_hear_it_live(transcript_stack, fake_monitor, redis):
    nginx, log = transcript_stack
    call = "call_stack"
    streams = [_listen(nginx, call), _listen(nginx, call)]
    assert [s.status for s in streams] == [200, 200]
    assert fake_monitor.wait_open(call, 1)
    fake_monitor.say(call, "agent", "Heard while the call goes on.", word_delay=0.02)
    heard = [next(e for e in s.events() if e["data"].get("final") is False) for s in streams]
    assert all(e["data"]["role"] == "agent" for e in heard)  # before the call ended
    fake_monitor.say(call, "user", "Second line.", word_delay=0.02)
    fake_monitor.end(call)
    expected = [("agent", "Heard while the call goes on."), ("user", "Second line.")]
    for first, stream in zip(heard, streams, strict=True):
        events = [first, *stream.until_end()]
        assert lines_of(events) == expected
        assert events[-1]["data"] == {"reason": "user_hangup"}
        stream.close()
    assert fake_monitor.call(call).connections == 1
    assert fake_monitor.call(call).max_open == 1
    base = f"widget:transcript:{call}"
    assert wait_until(lambda: not redis.exists(f"{base}:relay", f"{base}:listeners"), 5)


def test_a_listener_leaving_through_nginx_closes_the_upstream(
    transcript_stack, fake_monitor, redis
):
    nginx, log = transcript_stack
    call = "call_stack_leave"
    stream = _listen(nginx, call)
    assert stream.status == 200
    assert fake_monitor.wait_open(call, 1)
    stream.close()
    # Noticed at the next heartbeat write (5 s), then LEAVE_GRACE_S and a tick.
    assert fake_monitor.wait_open(call, 0, timeout=20)
    assert wait_until(lambda: not redis.exists(f"widget:transcript:{call}:relay"), 5)


def test_stream_leaks_neither_token_nor_key(transcript_stack, fake_monitor):
    nginx, log = transcript_stack
    call = "call_stack_logs"
    token = TokenSigner(SIGNING_KEY.encode()).sign(
        "transcript", {"c": call, "e": ORIGIN, "o": ORIGIN}, int(time.time()) + 600
    )
    refused = _listen(nginx, call, token=token[:-3] + "AAA")
    assert refused.status == 403 and refused.json()["error"] == "transcript_token_invalid"
    refused.close()
    stream = _listen(nginx, call, token=token)
    fake_monitor.say(call, "agent", "Logged carefully.", word_delay=0)
    fake_monitor.end(call)
    assert lines_of(stream.until_end()) == [("agent", "Logged carefully.")]
    stream.close()
    assert wait_until(lambda: f"/api/calls/{call}/transcript" in _nginx_log(nginx), 5)
    key = fake_monitor.api_key
    for text in (_nginx_log(nginx), log.read_text()):
        assert token not in text and token[:40] not in text
        assert key not in text
    assert "Traceback" not in log.read_text()


def test_the_key_reaches_retell_only(transcript_stack, fake_monitor):
    nginx, _ = transcript_stack
    call = "call_stack_key"
    stream = _listen(nginx, call)
    fake_monitor.end(call)
    stream.until_end()
    stream.close()
    assert fake_monitor.keys_seen == [fake_monitor.api_key]
