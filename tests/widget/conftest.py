"""Browser fixtures: one Chromium per session, three origins (page, widget files, gateways)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devtools.chromium import CHROMIUM, CHROMIUM_ARGS
from devtools.fakes.gateway import FakeGateway
from devtools.fakes.siteverify import SECRETS
from devtools.ports import wait_until
from tests.widget.pages import new_page

ROOT = Path(__file__).resolve().parents[2]

DIST = ROOT / "static" / "dist"
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOC_SHOTS = ROOT / "docs" / "screenshots"


class _Quiet:
    def log_message(self, format, *args):  # noqa: A002
        pass


TAMPERED: set[str] = set()  # file names served with one byte changed


class WidgetFiles(_Quiet, SimpleHTTPRequestHandler):
    """Serves static/dist like a CDN: CORS for everyone (SRI needs it), no caching."""

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        if name not in TAMPERED:
            return super().do_GET()
        data = (DIST / "v1" / name).read_bytes() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return None


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
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    return new_page(context)


@pytest.fixture(autouse=True)
def _reset_gateway(fake_gateway):
    fake_gateway.reset()
    yield


@pytest.fixture
def tamper():
    """tamper.add('engine-gateway.js'): the widget host serves a modified copy."""
    yield TAMPERED
    TAMPERED.clear()


@pytest.fixture
def shoot():
    return _shoot


def _shoot(page, name: str, docs: bool = False, target: str = "retell-widget .w") -> Path:
    """Screenshot of the widget's corner (or of `target`). With WIDGET_DOC_SCREENSHOTS=1,
    `docs` shots also refresh the committed copies in docs/screenshots (off by default: tests
    keep the tree clean)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    box = page.locator(target).bounding_box()
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
    if docs and os.environ.get("WIDGET_DOC_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SHOTS / f"{name}.png")
    return path


@pytest.fixture
def wait_for():
    return _wait_for


def _wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    value = wait_until(predicate, timeout, interval)
    assert value, f"condition not met within {timeout}s"
    return value


# Refusals the app gives once a site's minute budget or its concurrency cap is reached
# (issue 12), as (error, message). Served canned, in the app's shape: these tests check
# what the widget does with them; the app's own tests check when it refuses.
REFUSALS = {
    "budget": ("budget_exhausted", "Calls are paused on this site."),
    "full": ("busy", "All lines are busy; try again in a minute."),
}


class CannedApi:
    """POST /api/create-web-call answered with one canned refusal, with the app's exact CORS
    (the one allowed origin, Vary: Origin, Retry-After exposed) and its preflight."""

    EXPOSED = (
        "Retry-After, X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
    )

    def __init__(self):
        self.origin = ""  # the allowed origin
        self.status, self.body, self.headers = 429, {}, {}
        self.posts = 0
        api = self

        class Handler(_Quiet, BaseHTTPRequestHandler):
            def _cors(self):
                self.send_header("Vary", "Origin")
                if self.headers.get("Origin") == api.origin:
                    self.send_header("Access-Control-Allow-Origin", api.origin)
                    self.send_header("Access-Control-Expose-Headers", api.EXPOSED)

            def do_OPTIONS(self):  # noqa: N802
                self.send_response(204)
                self._cors()
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, X-Request-ID")
                self.send_header("Access-Control-Max-Age", "600")
                self.end_headers()

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                api.posts += 1
                data = json.dumps(api.body).encode()
                self.send_response(api.status)
                self._cors()
                for name, value in api.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server, self.url = _serve(Handler, "127.0.0.1")

    def refuse(self, origin: str, error: str, message: str, retry_after: int) -> str:
        self.origin, self.posts = origin, 0
        self.body = {"error": error, "message": message, "retry_after": retry_after}
        self.headers = {"Retry-After": str(retry_after)}
        return self.url + "/api/create-web-call"


@pytest.fixture(scope="session")
def canned_api():
    api = CannedApi()
    yield api
    api.server.shutdown()
    api.server.server_close()


class TokenGateway:
    """The real app (real Redis, fake Retell) handing out our fake WebRTC gateway.

    set_mode() re-serves the app for one scenario; the page must be built after it.
    """

    AGENT = "agent_a"

    def __init__(
        self, serve_app, allow_origin, redis, fake_retell, fake_gateway, page_origin, canned
    ):
        self._canned = canned
        self._serve = serve_app
        self._redis = redis
        self._allow = allow_origin
        self.fake_retell = fake_retell
        # Laid out like Retell's own fallback (https://api.retellai.com/webrtc-proxy): the
        # fake Retell sends no `url` by default, so the app builds RETELL_GATEWAY_BASE/<call_id>.
        self.gateway_base = f"{fake_gateway.url}/webrtc-proxy"
        fake_gateway.tokens = fake_retell.tokens  # only tokens Retell really issued
        self.page_origin = page_origin
        self.set_mode("ok")

    def set_mode(self, mode: str, retry_after: int = 30, **settings: str) -> None:
        """ok | livekit | busy | down | agent | origin; settings override the app's config.

        budget | full: 429 budget_exhausted / busy (the concurrency cap) with `retry_after`,
        canned (see REFUSALS). `busy` is the per-IP rate limit (429 rate_limited), for real.
        """
        if mode in REFUSALS:
            self.endpoint = self._canned.refuse(self.page_origin, *REFUSALS[mode], retry_after)
            return
        config = {
            # Production rules: loopback origins are not implicitly allowed.
            "APP_ENV": "production",
            "ALLOW_INSECURE_ORIGINS": "1",
            "RETELL_GATEWAY_BASE": self.gateway_base,
            **settings,
        }
        if mode == "livekit":
            config["RETELL_API_VERSION"] = "v2"
        if mode == "busy":
            config["RATE_LIMIT_PER_IP"] = "1 per minute"
        if mode == "down":
            self.fake_retell.set_behaviour("error", status=500)
        self._redis.delete("widget:origins", f"widget:agents:{self.page_origin}")
        if mode != "origin":
            self._allow(self.page_origin, "agent_b" if mode == "agent" else self.AGENT)
        self.endpoint = self._serve(**config).url + "/api/create-web-call"
        if mode == "busy":  # another visitor from the same address used the allowance
            request = urllib.request.Request(
                self.endpoint,
                data=json.dumps({"agent_id": self.AGENT}).encode(),
                headers={"Origin": self.page_origin, "Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=10).close()
            self.fake_retell.requests.clear()

    @property
    def requests(self) -> list[dict]:
        """Bodies of the create-web-call requests that reached (fake) Retell."""
        return [r["body"] for r in self.fake_retell.requests]


@pytest.fixture
def token_gateway(
    serve_app, allow_origin, redis, fake_retell, fake_gateway, page_server, canned_api
):
    return TokenGateway(
        serve_app, allow_origin, redis, fake_retell, fake_gateway, page_server.origin, canned_api
    )


POW_KEY = "widget-test-pow-key"


@pytest.fixture
def verifying(token_gateway, siteverify, redis):
    """verifying(provider, **settings): the real app, every provider configured against the
    fake siteverify, and the page's allowlist entry asking for `provider` (Redis, read live)."""

    def configure(provider: str, **settings) -> TokenGateway:
        config = {"POW_HMAC_KEY": POW_KEY, "POW_DIFFICULTY": "5000", "VERIFY_TIMEOUT": "2"}
        for name, secret in SECRETS.items():
            config[f"{name.upper()}_SITE_KEY"] = f"site-key-{name}"
            config[f"{name.upper()}_SECRET_KEY"] = secret
            config[f"{name.upper()}_VERIFY_URL"] = siteverify.url_for(name)
        token_gateway.set_mode("ok", **{**config, **settings})
        redis.hset(f"widget:limits:{token_gateway.page_origin}", "verify", provider)
        return token_gateway

    return configure


class ChatGateway:
    """The real app's chat routes (real Redis, the fake Retell's chat agents) for the page.

    The page's allowlist entry gets the chat agents (widget:chat-agents:<entry>, issue 14) and
    the voice agent, so a hybrid widget can both call and type.
    """

    AGENTS = ("agent_chat_echo", "agent_chat_opening", "agent_chat_slow", "agent_chat_markup",
              "agent_chat_tools")  # fmt: skip

    def __init__(self, token_gateway: TokenGateway, redis):
        self.calls = token_gateway
        self._redis = redis
        self.fake = token_gateway.fake_retell.chat
        self.set_mode()

    def set_mode(self, mode: str = "ok", **settings: str) -> None:
        """ok, or any TokenGateway mode; settings override the app's config."""
        self.calls.set_mode(mode, **settings)
        self.grant(self.calls.page_origin)

    def grant(self, origin: str, *agents: str) -> None:
        self._redis.sadd("widget:origins", origin)
        self._redis.sadd(f"widget:agents:{origin}", TokenGateway.AGENT)
        self._redis.sadd(f"widget:chat-agents:{origin}", *(agents or self.AGENTS))

    @property
    def proxy_endpoint(self) -> str:
        return self.calls.endpoint

    @property
    def endpoint(self) -> str:
        return self.calls.endpoint.replace("/api/create-web-call", "/api/chat")

    def turns(self) -> list[str]:
        """The visitor messages that reached the fake Retell, in order."""
        return [e["content"] for e in self.fake.log if e["endpoint"] == "create-chat-completion"]

    def created(self) -> list[dict]:
        """The chats the fake Retell created, oldest first (as get-chat answers them)."""
        with self.fake.lock:
            ids = list(self.fake.chats)
        return [self.fake.get_chat(chat_id) for chat_id in ids]


@pytest.fixture
def chat_gateway(token_gateway, redis):
    return ChatGateway(token_gateway, redis)


@pytest.fixture
def transcript_on(token_gateway, fake_monitor, redis):
    """The real app relaying the fake monitor, with the transcript on for the page's site."""
    token_gateway.set_mode("ok", RETELL_MONITOR_BASE=fake_monitor.url)
    redis.hset(f"widget:limits:{token_gateway.page_origin}", "transcript", 1)
    return token_gateway
