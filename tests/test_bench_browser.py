"""Smoke test of the browser bench's own parts (no browser, no Lighthouse, no timing): the
delay proxy forwards and logs, the phase arithmetic adds up, the pages and reports render."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.click_timing import call_result, critical_requests, injected, summarize
from bench.pagecost import async_snippet, without_widget
from bench.report_browser import browser_markdown, browser_targets
from devtools.ports import free_port, wait_until
from devtools.run_local import render_demo


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_delay_proxy_forwards_and_logs_each_request(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "bench.delay_proxy", "--route",
             f"api:{port}:{server.server_port}:0"],
            stdout=out,
        )  # fmt: skip
    try:
        assert wait_until(lambda: '"listen"' in log.read_text(), 10)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for body in (b"one", b"two" * 1000):
            conn.request("POST", "/api/create-web-call?call=1", body=body)
            assert conn.getresponse().read() == body
        conn.close()
        assert wait_until(lambda: log.read_text().count('"resp"') == 2, 10)
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.shutdown()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["ev"] for e in events][:3] == ["listen", "accept", "req"]
    chain = critical_requests(events, "api", "/api/create-web-call")
    assert [r["line"] for r in chain] == ["POST /api/create-web-call?call=1 HTTP/1.1"]
    assert chain[0]["answer"]["ev"] == "resp"


def synthetic_call() -> tuple[dict, list[dict]]:
    """A call as the page and the proxy would record it (seconds on the proxy's clock)."""
    marks = {"click": 0, "hover": -300, "mic:end": 20, "pc:new": 30, "ice:connected": 470,
             "pc:connected": 480, "dc:open": 490, "state:live": 495, "remote:end": 460,
             "audio": 510}  # fmt: skip
    resources = [
        {"name": "http://x/v1/engine-gateway.js", "start": -299, "end": -200},
        {"name": "http://x/api/create-web-call?call=1", "start": 21, "end": 300},
        {"name": "http://s/webrtc-proxy/c/v1/webrtc/sessions", "start": 310, "end": 450},
    ]
    data = {"marks": marks, "states": ["idle", "live"], "peak": 0.2, "resources": resources}
    ev = []

    def req(route, conn, t, line, server_s):
        ev.append({"route": route, "ev": "req", "conn": conn, "t": t, "fwd": t + 0.02,
                   "line": line})  # fmt: skip
        ev.append({"route": route, "ev": "resp", "conn": conn, "t": t + 0.02 + server_s})

    ev.append({"route": "api-0", "ev": "accept", "conn": 1, "t": 99.0})  # preconnected early
    req("api-0", 1, 100.0, "OPTIONS /api/create-web-call?call=1 HTTP/1.1", 0.001)
    req("api-0", 1, 100.1, "POST /api/create-web-call?call=1 HTTP/1.1", 0.160)
    ev.append({"route": "sig", "ev": "accept", "conn": 2, "t": 100.3})  # opened by the request
    req("sig", 2, 100.3, "OPTIONS /webrtc-proxy/c/v1/webrtc/sessions HTTP/1.1", 0.001)
    req("sig", 2, 100.4, "POST /webrtc-proxy/c/v1/webrtc/sessions HTTP/1.1", 0.020)
    req("sig", 2, 100.5, "PATCH /webrtc-proxy/c/v1/webrtc/sessions/s1 HTTP/1.1", 0.001)
    return data, ev


def test_call_result_adds_up():
    data, events = synthetic_call()
    routes = {"api": ("api-0", 40), "sig": ("sig", 40)}
    call = call_result(data, events, routes, 150)
    assert sum(call["phases"].values()) == call["click_to_live_ms"] == 495
    assert call["token_chain"]["handshake_ms"] == 0  # preconnected a second before
    assert call["signalling_chain"]["handshake_ms"] == 40  # paid in full
    assert call["signalling_chain"]["round_trips"] == 2  # the PATCH is not on the path
    assert call["injected_minimum_ms"] == 150 + 2 * 40 + 2 * 40 + 40
    assert call["first_audio_ms"] == 15 and call["hover_to_click_ms"] == 300
    assert injected([], 40)["injected_ms"] == 0
    summary = summarize([call, {"failed": "states ['idle', 'error']"}])
    assert summary["failed"] == 1 and summary["click_to_live_ms"]["p50"] == 495


def demo_page() -> str:
    with tempfile.TemporaryDirectory() as scratch:
        out = render_demo(Path(scratch), widget_base="http://w/v1", api_url="http://w/api/x",
                          agent_id="agent_demo")  # fmt: skip
        return (out / "index.html").read_text()


def test_pages_with_and_without_the_widget():
    page = demo_page()
    bare = without_widget(page)
    assert "retell-widget" in page and "retell-widget" not in bare and "</main>" in bare
    with_async = async_snippet("http://w/v1", "http://w/api/x")(page)
    assert with_async.count("retell-widget.js") == 1 and " async " in with_async


def test_reports_render():
    data, events = synthetic_call()
    call = call_result(data, events, {"api": ("api-0", 40), "sig": ("sig", 40)}, 150)
    page = {"score": 1.0, "tbt_ms": 0, "cls": 0, "fcp_ms": 600, "lcp_ms": 700, "bytes": 9000,
            "requests": 4, "main_thread_ms": 300, "widget_main_thread_ms": 12,
            "loader_main_thread_ms": 10, "loader_js_observed_ms": 2.5,
            "loader_js_observed_min_ms": 2.0, "widget_js_observed_ms": 2.5, "cpu_multiplier": 4,
            "widget_requests": ["retell-widget.js"], "errored_audits": ["layout-shifts"],
            "delta": {"score": 0}, "runs": 5}  # fmt: skip
    machine = {"loadavg_start": [1, 1, 1], "loadavg_end": [1, 1, 1], "busy_cores": 0.2}
    report = {
        "click_to_live": {
            "settings": {
                "calls": 1,
                "rtt_ms": {"files": 40, "gateway": 40, "signalling": 40},
                "create_delay_ms": 150,
                "hover_ms": 300,
                "chromium": "x",
            },
            "machine": {**machine, "seconds": 1},
            "builds": [{"label": "b", "rev": "HEAD", "loader_gzip": 1, "engine_gzip": 1}],
            "runs": [
                {"build": "b", "scenario": "hover", "summary": summarize([call]), "calls": [call]}
            ],
        },
        "page_cost": {
            "lighthouse": "12.2.3",
            "user_agent": "x",
            "machine": machine,
            "settings": {"formFactor": "mobile", "runs_per_page": 5},
            "pages": {
                "without widget": {"summary": {**page, "loader_js_observed_ms": 0}},
                "async snippet": {"summary": page},
            },
        },
    }
    text = "\n".join(browser_markdown(report))
    assert "## 6. Click to live" in text and "## 7. Cost to the host page" in text
    assert "| b | hover | 495 / 495 |" in text
    targets = {t["target"]: t["met"] for t in browser_targets(report)}
    assert targets["loader main-thread work < 5 ms (async snippet)"] is True
