"""Browser fixtures: one Chromium per session, three origins (page, widget files, gateways)."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.fakes` is imported as a package from the repo root
    sys.path.insert(0, str(ROOT))

from tests.fakes.gateway import FakeGateway  # noqa: E402

DIST = ROOT / "static" / "dist"
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOC_SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    # Nothing but loopback resolves: the LiveKit engine must never reach the internet.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]

# Test-only instrumentation, injected before any page script: records the widget's
# window events and keeps handles on peer connections and mic streams for getStats.
INSTRUMENT = """
(() => {
  const probe = { events: [], pcs: [], streams: [], console: [] };
  Object.defineProperty(window, '__probe', { value: probe, enumerable: false });
  for (const n of ['state', 'call-start', 'call-end', 'error']) {
    addEventListener('retell-widget:' + n, (e) => probe.events.push({ type: n, ...e.detail }));
  }
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new PC(...args);
    probe.pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = PC.prototype;
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {
    const s = await gum(c);
    probe.streams.push(s);
    return s;
  };
})();
"""


class _Quiet:
    def log_message(self, format, *args):  # noqa: A002
        pass


class WidgetFiles(_Quiet, SimpleHTTPRequestHandler):
    """Serves static/dist without CORS headers: classic scripts and CSS need none."""

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def _serve(handler, host: str) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{'localhost' if host == '127.0.0.1' else host}:{server.server_port}"


@pytest.fixture(scope="session")
def widget_origin():
    if not (DIST / "manifest.json").exists():
        pytest.fail("static/dist is missing: run `make build` first")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(WidgetFiles, directory=str(DIST)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class PageServer:
    """Host pages on http://localhost:<port> (a secure context for getUserMedia)."""

    def __init__(self):
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(_Quiet, BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server, self.origin = _serve(Handler, "127.0.0.1")

    def add(self, html: str) -> str:
        path = f"/p{len(self.pages)}.html"
        self.pages[path] = html
        return self.origin + path


@pytest.fixture(scope="session")
def page_server():
    server = PageServer()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="session")
def fake_gateway():
    gateway = FakeGateway().start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def denying_browser(playwright):
    """A Chromium that refuses the microphone prompt, as a visitor clicking "Block" does."""
    args = [a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"]
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*args, "--deny-permission-prompts"]
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 900, "height": 640})
    ctx.add_init_script(INSTRUMENT)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    page.console_lines = []
    page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    return page


@pytest.fixture(autouse=True)
def _reset_gateway(fake_gateway):
    fake_gateway.reset()
    yield


@pytest.fixture
def shoot():
    return _shoot


def _shoot(page, name: str, docs: bool = False) -> Path:
    """Screenshot of the widget's corner; optionally also the committed docs copy."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    box = page.locator("retell-widget .w").bounding_box()
    vp = page.viewport_size
    pad = 16
    x = max(0, box["x"] - pad)
    y = max(0, box["y"] - pad)
    clip = {
        "x": x,
        "y": y,
        "width": min(vp["width"] - x, box["width"] + 2 * pad),
        "height": min(vp["height"] - y, box["height"] + 2 * pad),
    }
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), clip=clip, animations="disabled")
    if docs:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SHOTS / f"{name}.png")
    return path


@pytest.fixture
def wait_for():
    return _wait_for


def _wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class StubTokenGateway:
    """Temporary stand-in for the real app until tests/conftest.py lands."""

    def __init__(self, fake_gateway: FakeGateway, page_origin: str):
        self.mode = "ok"
        self.requests: list[dict] = []
        stub = self

        class Handler(_Quiet, BaseHTTPRequestHandler):
            def _cors(self, ok=True):
                if ok and self.headers.get("Origin") == page_origin:
                    self.send_header("Access-Control-Allow-Origin", page_origin)

            def do_OPTIONS(self):  # noqa: N802
                self.send_response(204)
                self._cors()
                self.send_header("Access-Control-Allow-Methods", "POST")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, X-Request-ID")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                mode = stub.mode
                n = len(stub.requests)
                status, reply, cors = {
                    "ok": (201, None, True),
                    "livekit": (201, None, True),
                    "busy": (429, {"error": "rate_limited", "retry_after": 7}, True),
                    "down": (503, {"error": "unavailable", "message": "x"}, True),
                    "agent": (403, {"error": "agent_not_allowed", "message": "x"}, True),
                    "origin": (403, {"error": "origin_not_allowed", "message": "x"}, False),
                }[mode]
                if reply is None:
                    token = f"tok-{n}"
                    fake_gateway.tokens = (fake_gateway.tokens or set()) | {token}
                    reply = {
                        "access_token": token,
                        "call_id": f"call_{n}",
                        "transport": "livekit" if mode == "livekit" else "gateway",
                        "gateway_url": f"{fake_gateway.url}/call_{n}",
                        "ice_servers": [],
                    }
                data = json.dumps(reply).encode()
                self.send_response(status)
                self._cors(cors)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server, _ = _serve(Handler, "127.0.0.1")
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}/api/create-web-call"

    def set_mode(self, mode: str) -> None:
        self.mode = mode


@pytest.fixture(scope="session")
def _stub_token_gateway(fake_gateway, page_server):
    stub = StubTokenGateway(fake_gateway, page_server.origin)
    yield stub
    stub.server.shutdown()


@pytest.fixture
def token_gateway(_stub_token_gateway):
    _stub_token_gateway.mode = "ok"
    _stub_token_gateway.requests.clear()
    return _stub_token_gateway
