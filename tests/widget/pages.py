"""Host pages and in-page probes shared by the widget tests."""

from __future__ import annotations

import base64
import hashlib
import json

# Test-only instrumentation, injected before any page script: records the widget's
# window events and keeps handles on peer connections and mic streams for getStats.
INSTRUMENT = """
(() => {
  const probe = { events: [], pcs: [], streams: [], console: [] };
  Object.defineProperty(window, '__probe', { value: probe, enumerable: false });
  const names = ['state', 'call-start', 'call-end', 'error', 'chat-start', 'message', 'chat-end',
    'transcript'];
  for (const n of names) {
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


def pinned(path) -> str:
    """The integrity the loader pins a lazily loaded file with (SHA-256 of its bytes)."""
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def new_page(context):
    """A page with the probe installed, recording console lines and requested URLs."""
    context.add_init_script(INSTRUMENT)
    page = context.new_page()
    page.console_lines = []
    page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    return page


STATE = "document.querySelector('retell-widget')?.dataset.state"
SHADOW = "document.querySelector('retell-widget').shadowRoot"


def seed_page(page_server, widget_origin, endpoint, head="", **options):
    """The seed's snippet, unchanged in shape."""
    opts = {"agentId": "agent_a", "proxyEndpoint": endpoint, **options}
    return page_server.add(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width">
<link rel="stylesheet" href="{widget_origin}/v1/retell-widget.css">{head}</head>
<body><h1>Client Website</h1><p>This site now has an AI assistant widget!</p>
<script src="{widget_origin}/v1/retell-widget.js"></script>
<script>window.widget = new RetellWidget({json.dumps(opts)});</script>
</body></html>"""
    )


def open_widget(page, url):
    page.goto(url)
    page.wait_for_function(f"{STATE} === 'idle'")
    page.locator("retell-widget .launch").wait_for(state="visible")


def events(page, kind=None):
    evs = page.evaluate("window.__probe.events")
    return [e for e in evs if kind is None or e["type"] == kind]


def states(page):
    return [e["state"] for e in events(page, "state")]


def text(page, cls):
    return page.locator(f"retell-widget .{cls}").inner_text()


def assert_error(page, code, message, hint):
    page.wait_for_function(f"{STATE} === 'error'", timeout=25000)
    assert text(page, "msg") == message
    assert hint in text(page, "hint")
    err = events(page, "error")[-1]
    assert err["code"] == code and err["message"]
    # The status region announces the failure for screen readers.
    assert message in page.locator("retell-widget .sr").inner_text()
    # The mic is released on every failure after it was granted.
    assert page.evaluate(
        "window.__probe.streams.every(s => s.getTracks().every(t => t.readyState === 'ended'))"
    )


def audio_stats(page):
    """Bytes and energy for the call's audio, from the browser's own getStats."""
    return page.evaluate(
        """async () => {
      const pc = window.__probe.pcs.at(-1);
      const out = { sent: 0, received: 0, energy: 0 };
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'audio') out.sent = s.bytesSent;
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.received = s.bytesReceived;
          out.energy = s.totalAudioEnergy;
        }
      });
      return out;
    }"""
    )


def go_live(page):
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)


def attr_page(page_server, widget_origin, endpoint, **data):
    """The zero-JS snippet: one async script tag with data attributes, in <head>."""
    attrs = {"proxy-endpoint": endpoint, "agent-id": "agent_a", **data}
    rendered = " ".join(f'data-{k}="{v}"' for k, v in attrs.items())
    return page_server.add(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<script src="{widget_origin}/v1/retell-widget.js" {rendered} async></script></head>
<body><h1>Zero-JS</h1><a href="#top">a host link</a></body></html>"""
    )


def shadow_focus(page):
    """Class of the focused element inside the widget, or None."""
    return page.evaluate(
        "document.activeElement?.tagName === 'RETELL-WIDGET'"
        " ? document.activeElement.shadowRoot.activeElement?.className : null"
    )


def start_result(page):
    """Start via the API; returns 'live' or the rejection's code."""
    return page.evaluate("widget.start().then(() => 'live', (e) => e.code)")


# Page-clock timestamps of the gateway engine's signalling POSTs (for tests on a fake clock).
RECORD_POSTS = """
(() => {
  const f = window.fetch;
  window.__posts = [];
  window.fetch = (url, opts) => {
    if (opts?.method === 'POST' && /webrtc\\/sessions$/.test(url)) window.__posts.push(Date.now());
    return f(url, opts);
  };
})();
"""


def run_clock_until(page, state: str, step_ms: int = 50, limit_ms: int = 40_000) -> int:
    """With page.clock installed, advance it in small steps until the widget reaches state.

    Real I/O (fetch, WebRTC) runs between steps, so backoff and timeouts play out as on a
    real clock, without waiting for them. Returns the page-clock ms it took.
    """
    elapsed = 0
    while page.evaluate(STATE) != state:
        assert elapsed < limit_ms, f"still {page.evaluate(STATE)!r} after {elapsed} ms"
        page.clock.run_for(step_ms)
        elapsed += step_ms
    return elapsed


# Chat (issue 14): the panel, its status (data-chat) and its events.
CHAT = "document.querySelector('retell-widget')?.dataset.chat"


def chat_page(page_server, widget_origin, chat_gateway, head="", lang="en", **options):
    """The seed's snippet with a chat agent: hybrid unless options say otherwise."""
    opts = {
        "agentId": "agent_a",
        "chatAgentId": "agent_chat_echo",
        "proxyEndpoint": chat_gateway.proxy_endpoint,
        **options,
    }
    return page_server.add(
        f"""<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width">{head}</head>
<body><h1>Client Website</h1><p>This site now has an AI assistant widget!</p>
<a href="#top">a host link</a>
<script src="{widget_origin}/v1/retell-widget.js"></script>
<script>window.widget = new RetellWidget({json.dumps(opts)});</script>
</body></html>"""
    )


def chat_events(page, kind=None):
    return [e for e in events(page) if e["type"] in ("chat-start", "message", "chat-end", "error")
            and (kind is None or e["type"] == kind)]  # fmt: skip


def wait_chat(page, status, timeout=10000):
    page.wait_for_function(f"{CHAT} === '{status}'", timeout=timeout)


def entries(page):
    """The chat log's final entries, as (role, text) pairs."""
    return page.evaluate(
        f"""[...{SHADOW}.querySelectorAll('.chat [role=log] > .entry')]
        .map((e) => [e.dataset.role, e.querySelector('.text').textContent])"""
    )


def type_and_send(page, text):
    box = page.locator("retell-widget .chat textarea")
    box.fill(text)
    box.press("Enter")


def wait_entries(page, count, timeout=10000):
    """Until the chat log has `count` final entries (the typing line is not one)."""
    page.wait_for_function(
        f"{SHADOW}.querySelectorAll('.chat [role=log] > .entry').length === {count}",
        timeout=timeout,
    )


# Live transcript (issue 15): the call panel's transcript log and the token answer.
TRANSCRIPT_LOG = f"{SHADOW}.querySelector('.t-wrap [role=log]')"


def lines(page) -> list[list[str]]:
    """The transcript's final lines, (role, text), in order."""
    return page.evaluate(
        f"[...({TRANSCRIPT_LOG}?.querySelectorAll(':scope > .entry') ?? [])]"
        ".map((e) => [e.dataset.role, e.querySelector('.text').textContent])"
    )


def growing(page) -> list[list[str]]:
    return page.evaluate(
        f"[...({TRANSCRIPT_LOG}?.querySelectorAll('.grow > .entry') ?? [])]"
        ".map((e) => [e.dataset.role, e.querySelector('.text').textContent])"
    )


def on_token(page, endpoint: str, change):
    """Calls change(answer) with create-web-call's answer before the page gets it (it may edit
    it or script the fake monitor for that call id)."""

    def handle(route):
        if route.request.method != "POST":
            return route.continue_()
        response = route.fetch()
        answer = response.json()
        change(answer)
        return route.fulfill(response=response, body=json.dumps(answer))

    page.route(endpoint, handle)
