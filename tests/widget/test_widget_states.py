"""Every state and error state, the zero-JS snippet, keyboard use, isolation and cleanup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.widget.pages import (
    RECORD_POSTS,
    STATE,
    attr_page,
    events,
    go_live,
    new_page,
    open_widget,
    run_clock_until,
    seed_page,
    shadow_focus,
    start_result,
    states,
    text,
)

pytestmark = pytest.mark.browser
DIST = Path(__file__).resolve().parents[2] / "static" / "dist"


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


def test_data_attribute_snippet_keyboard_only(
    page, page_server, widget_origin, token_gateway, fake_gateway, wait_for, shoot
):
    page.goto(
        attr_page(
            page_server, widget_origin, token_gateway.endpoint, position="bottom-left", theme="dark"
        )
    )
    page.wait_for_function(f"{STATE} === 'idle'")
    page.locator("retell-widget .launch").wait_for(state="visible")
    host = page.locator("retell-widget")
    assert host.get_attribute("data-theme") == "dark"
    assert page.locator("retell-widget .launch").bounding_box()["x"] < 40  # bottom-left

    # Tab past the host page's link to the launcher; focus is visible.
    for _ in range(4):
        page.keyboard.press("Tab")
        if shadow_focus(page) == "launch":
            break
    assert shadow_focus(page) == "launch"
    outline = page.evaluate(
        "getComputedStyle(document.querySelector('retell-widget').shadowRoot"
        ".querySelector('.launch')).outlineStyle"
    )
    assert outline == "solid"

    page.keyboard.press("Enter")
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert shadow_focus(page) == "mute"
    bg = page.evaluate(
        "getComputedStyle(document.querySelector('retell-widget').shadowRoot"
        ".querySelector('.panel')).backgroundColor"
    )
    assert bg == "rgb(17, 24, 39)"  # dark theme
    page.keyboard.press("Space")
    assert page.locator("retell-widget .mute").get_attribute("aria-pressed") == "true"
    page.keyboard.press("Escape")
    page.wait_for_function(f"{STATE} === 'ended'")
    wait_for(lambda: fake_gateway.last_session().deleted)
    assert shadow_focus(page) == "retry"
    assert events(page, "call-end")[-1]["reason"] == "hangup"

    # Call again, then end it with the keyboard via the hang-up button.
    page.keyboard.press("Enter")
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    page.keyboard.press("Tab")
    assert shadow_focus(page) == "hang"
    page.keyboard.press("Enter")
    page.wait_for_function(f"{STATE} === 'ended'")
    assert len(events(page, "call-start")) == 2


def test_microphone_denied_never_mints_a_token(
    denying_browser, page_server, widget_origin, token_gateway, shoot
):
    url = seed_page(page_server, widget_origin, token_gateway.endpoint)
    context = denying_browser.new_context()
    try:
        page = new_page(context)
        open_widget(page, url)
        assert start_result(page) == "mic_denied"
        assert_error(
            page,
            "mic_denied",
            "Microphone access was blocked.",
            "Allow the microphone in your browser’s address bar",
        )
        assert token_gateway.requests == []
        assert token_gateway.endpoint not in page.requested
        assert states(page)[-2:] == ["requesting-mic", "error"]
        shoot(page, "error-mic-denied", docs=True)
    finally:
        context.close()


def test_no_microphone(context, page_server, widget_origin, token_gateway, shoot):
    page = new_page(context)
    # Chromium's fake device always exists; a machine without one rejects like this
    # (after a moment, so the requesting-mic state can be seen).
    context.add_init_script(
        "navigator.mediaDevices.getUserMedia = () => new Promise((_, reject) => setTimeout("
        "() => reject(new DOMException('Requested device not found', 'NotFoundError')), 1500));"
    )
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'requesting-mic'")
    assert text(page, "msg") == "Please allow microphone access…"
    shoot(page, "requesting-mic")
    assert_error(page, "no_mic", "No working microphone was found.", "Connect a microphone")
    assert token_gateway.requests == []
    shoot(page, "error-no-mic")


def test_cancel_while_mic_prompt_is_open(context, page_server, widget_origin, token_gateway):
    page = new_page(context)
    # Hold the permission prompt open for a second, as a hesitating visitor does.
    context.add_init_script(
        "{ const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);"
        " navigator.mediaDevices.getUserMedia = (c) =>"
        " new Promise((r) => setTimeout(r, 1000)).then(() => gum(c)); }"
    )
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.evaluate("void (window.started = widget.start().then(() => 'live', (e) => e.code))")
    page.wait_for_function(f"{STATE} === 'requesting-mic'")
    page.locator("retell-widget .hang").click()  # "Cancel"
    assert page.evaluate("started") == "cancelled"
    assert page.evaluate(STATE) == "idle"
    # The stream granted after the cancel is stopped at once; no token is minted.
    page.wait_for_function("window.__probe.streams.length === 1")
    page.wait_for_function(
        "window.__probe.streams[0].getTracks().every(t => t.readyState === 'ended')"
    )
    page.wait_for_timeout(300)
    assert token_gateway.requests == []
    assert token_gateway.endpoint not in page.requested


@pytest.mark.parametrize(
    ("mode", "code", "message", "hint"),
    [
        ("busy", "rate_limited", "All lines are busy right now.", "Please try again in "),
        ("down", "unavailable", "The call service is temporarily unavailable.", "few minutes"),
        ("agent", "not_allowed", "Calls are not enabled for this page.", "site owner"),
        (
            "origin",
            "unreachable",
            "This site is not set up for calls, or the call service is unreachable.",
            "Check your connection",
        ),
    ],
)
def test_token_errors(
    page, page_server, widget_origin, token_gateway, shoot, mode, code, message, hint
):
    token_gateway.set_mode(mode)
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    assert_error(page, code, message, hint)
    assert states(page)[-3:] == ["requesting-mic", "connecting", "error"]
    retry = page.locator("retell-widget .retry")
    assert retry.is_disabled() == (mode == "busy")
    if mode == "busy":
        seconds = int(text(page, "hint").split("try again in ")[1].split()[0])
        assert 1 <= seconds <= 60
        assert events(page, "error")[-1]["retryAfter"] == seconds
    if mode == "origin":
        # Only the console gets the detail; the visitor sees one honest message.
        assert any("token request" in line for line in page.console_lines)
    shoot(page, f"error-{code}")


def test_service_unreachable(page, page_server, widget_origin):
    # Nothing listens on port 9 of loopback: a plain network failure.
    open_widget(
        page, seed_page(page_server, widget_origin, "http://127.0.0.1:9/api/create-web-call")
    )
    page.locator("retell-widget .launch").click()
    assert_error(
        page,
        "unreachable",
        "This site is not set up for calls, or the call service is unreachable.",
        "Check your connection",
    )


def test_gateway_refuses_call(page, page_server, widget_origin, token_gateway, fake_gateway, shoot):
    fake_gateway.refuse_status = 500
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    assert start_result(page) == "connect_failed"
    assert_error(page, "connect_failed", "The call could not connect.", "Try again")
    assert fake_gateway.requests_for("POST")
    shoot(page, "error-connect-failed")
    # The way forward works: the next try connects.
    fake_gateway.refuse_status = None
    page.locator("retell-widget .retry").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)


def test_room_not_ready_then_accepts(page, page_server, widget_origin, token_gateway, fake_gateway):
    fake_gateway.not_ready = 3
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    assert start_result(page) == "live"
    posts = fake_gateway.requests_for("POST")
    assert len(posts) == 4
    # Backoff: the retries are spread out (150 + 300 + 600 ms), not hammered.
    assert posts[-1]["at"] - posts[0]["at"] > 0.9


def test_room_never_ready_gives_up_after_window(
    page, page_server, widget_origin, token_gateway, fake_gateway
):
    # The page's clock is driven, so the 15 s window takes well under a second here.
    page.clock.install()
    page.context.add_init_script(RECORD_POSTS)
    fake_gateway.not_ready = 1000
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.evaluate("void (window.started = widget.start().then(() => 'live', (e) => e.code))")
    run_clock_until(page, "error")
    assert page.evaluate("started") == "connect_failed"
    assert_error(page, "connect_failed", "The call could not connect.", "Try again")
    posts = page.evaluate("window.__posts")
    assert len(posts) == len(fake_gateway.requests_for("POST"))
    span = (posts[-1] - posts[0]) / 1000
    assert 13 <= span <= 16, span  # the 15 s window, not forever
    assert 14 <= len(posts) <= 22  # backoff capped at 1 s, not a tight loop


def test_ice_failure_is_connect_failed(
    page, page_server, widget_origin, token_gateway, fake_gateway, wait_for
):
    page.clock.install()
    fake_gateway.blackhole_ice = True
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'connecting'")
    wait_for(lambda: fake_gateway.last_session() and fake_gateway.last_session().candidates)
    elapsed = run_clock_until(page, "error", step_ms=250)
    assert 19_000 <= elapsed <= 21_000  # the 20 s connect timeout, on the page's clock
    assert_error(page, "connect_failed", "The call could not connect.", "Try again")
    assert "live" not in states(page)
    assert fake_gateway.last_session().candidates  # trickle still reached the gateway


def test_call_dropped(page, page_server, widget_origin, token_gateway, fake_gateway, shoot):
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    go_live(page)
    fake_gateway.drop("close")
    assert_error(page, "call_dropped", "The call was dropped.", "call again")
    assert events(page, "call-end")[-1]["reason"] == "call_dropped"
    shoot(page, "error-call-dropped")


def test_agent_ends_call(page, page_server, widget_origin, token_gateway, fake_gateway, wait_for):
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    go_live(page)
    fake_gateway.drop("control")
    page.wait_for_function(f"{STATE} === 'ended'")
    assert events(page, "call-end")[-1]["reason"] == "agent_ended"
    assert text(page, "msg") == "Call ended"
    # Back to the launcher with Close.
    page.locator("retell-widget .close").click()
    page.wait_for_function(f"{STATE} === 'idle'")


def test_destroy_leaves_nothing(
    page, page_server, widget_origin, token_gateway, fake_gateway, wait_for
):
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    cdp = page.context.new_cdp_session(page)

    def window_listeners():
        win = cdp.send("Runtime.evaluate", {"expression": "window"})["result"]["objectId"]
        found = cdp.send("DOMDebugger.getEventListeners", {"objectId": win})["listeners"]
        return sorted(entry["type"] for entry in found)

    before = window_listeners()
    go_live(page)
    page.evaluate("widget.destroy()")
    wait_for(lambda: fake_gateway.last_session().deleted)
    assert (
        page.evaluate("document.querySelectorAll('retell-widget, script[src*=engine]').length") == 0
    )
    assert page.evaluate(
        "window.__probe.streams.every(s => s.getTracks().every(t => t.readyState === 'ended'))"
    )
    assert page.evaluate("window.__probe.pcs.every(pc => pc.connectionState === 'closed')")
    assert window_listeners() == before
    n = len(events(page))
    page.wait_for_timeout(300)
    assert len(events(page)) == n  # nothing fires after destroy


def test_hostile_host_stylesheet(page, page_server, widget_origin, token_gateway, shoot):
    hostile = """<style>
* { all: unset !important; }
html { font-size: 64px !important; }
body * { display: none !important; color: red !important; font-size: 80px !important; }
button, div, span, p { background: lime !important; letter-spacing: 9px !important; }
retell-widget { position: absolute !important; opacity: .1 !important; }
</style>"""
    url = seed_page(page_server, widget_origin, token_gateway.endpoint, head=hostile)
    page.goto(url)
    page.wait_for_function(f"{STATE} === 'idle'")
    launch = page.locator("retell-widget .launch")
    launch.wait_for(state="visible")
    box = launch.bounding_box()
    vp = page.viewport_size
    assert 44 <= box["height"] <= 60 and box["width"] < 400
    assert box["x"] + box["width"] <= vp["width"] and box["y"] + box["height"] <= vp["height"]
    style = page.evaluate(
        """(() => { const host = document.querySelector('retell-widget');
        const b = host.shadowRoot.querySelector('.launch'); const cs = getComputedStyle(b);
        return { bg: cs.backgroundColor, font: cs.fontSize, spacing: cs.letterSpacing,
                 opacity: getComputedStyle(host).opacity }; })()"""
    )
    assert style == {"bg": "rgb(124, 58, 237)", "font": "15px", "spacing": "normal", "opacity": "1"}
    shoot(page, "hostile-page")
    go_live(page)
    assert page.locator("retell-widget .hang").is_visible()


def test_only_one_global_and_lazy_engine(page, page_server, widget_origin, token_gateway):
    url = page_server.add(
        f"""<!doctype html><html><body><script>window.__before = Object.keys(window);</script>
<script src="{widget_origin}/v1/retell-widget.js"></script></body></html>"""
    )
    page.goto(url)
    added = page.evaluate(
        "Object.keys(window).filter(k => !__before.includes(k) && k !== '__before')"
    )
    assert added == ["RetellWidget"]
    # A missing endpoint is a mistake to report at once, not a request to the page's origin.
    err = page.evaluate(
        "(() => { try { new RetellWidget({}); } catch (e) { return e.message; } })()"
    )
    assert "proxyEndpoint is required" in err
    assert page.evaluate("document.querySelectorAll('retell-widget').length") == 0
    page.evaluate(f"window.w = new RetellWidget({{proxyEndpoint: '{token_gateway.endpoint}'}})")
    page.locator("retell-widget .launch").wait_for(state="visible")
    assert not [u for u in page.requested if "engine-" in u]
    # Hover prefetches the v3 engine only, from beside the loader script.
    page.locator("retell-widget .launch").hover()
    page.wait_for_function(
        "performance.getEntriesByType('resource').some(e => /engine-gateway/.test(e.name))"
    )
    engines = [u for u in page.requested if "engine-" in u]
    assert engines == [f"{widget_origin}/v1/engine-gateway.js"]


def test_sri_pins_lazily_loaded_files(
    context, page_server, widget_origin, token_gateway, fake_gateway, tamper
):
    files = json.loads((DIST / "manifest.json").read_text())["files"]
    url = page_server.add(
        f"""<!doctype html><html><body>
<script src="{widget_origin}/v1/retell-widget.js" crossorigin="anonymous"
        integrity="{files["v1/retell-widget.js"]["integrity"]}"></script>
<script>window.widget = new RetellWidget({{proxyEndpoint: '{token_gateway.endpoint}',
  agentId: 'agent_a'}});</script></body></html>"""
    )
    page = new_page(context)
    open_widget(page, url)  # the pinned stylesheet loaded, or the widget would stay hidden
    link = page.evaluate(
        "document.querySelector('retell-widget').shadowRoot.querySelector('link').integrity"
    )
    assert link == files["v1/retell-widget.css"]["integrity"]
    assert start_result(page) == "live"
    page.evaluate("widget.stop()")

    # A modified engine on the widget host is refused by the browser.
    tamper.add("engine-gateway.js")
    page = new_page(context)
    open_widget(page, url)
    assert start_result(page) == "connect_failed"
    assert any("integrity" in line for line in page.console_lines)
    assert not fake_gateway.requests_for("POST")[1:]  # no second call was signalled


def test_livekit_transport_loads_v2_engine_lazily(page, page_server, widget_origin, token_gateway):
    # LiveKit cannot be reached here: intercept its WebSocket and refuse it.
    sockets = []

    def refuse(ws):
        sockets.append(ws.url)
        ws.close()

    page.route_web_socket(lambda url: "livekit" in url, refuse)
    token_gateway.set_mode("livekit")
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    assert start_result(page) == "connect_failed"
    assert_error(page, "connect_failed", "The call could not connect.", "Try again")
    engines = [u for u in page.requested if "engine-" in u]
    assert engines == [f"{widget_origin}/v1/engine-livekit.js"]
    assert sockets and all("retell-ai-4ihahnq7.livekit.cloud" in u for u in sockets)
    assert "access_token=tok_" in sockets[0]  # the v2 token from the gateway


@pytest.mark.parametrize(
    ("lang", "label"),
    [
        ("es", "Habla con nuestro agente de IA"),
        ("fr", "Parler à notre agent IA"),
        ("de", "Mit unserem KI-Agenten sprechen"),
    ],
)
def test_languages(page, page_server, widget_origin, token_gateway, lang, label):
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint, lang=lang))
    assert text(page, "launch") == label


def test_options_position_theme_colors_labels_callbacks(
    page, page_server, widget_origin, token_gateway
):
    url = page_server.add(
        f"""<!doctype html><html><body><script src="{widget_origin}/v1/retell-widget.js"></script>
<script>window.calls = [];
window.widget = new RetellWidget({{
  agentId: 'agent_a', proxyEndpoint: '{token_gateway.endpoint}', position: 'top-left',
  theme: 'green',
  colors: {{ primary: 'rgb(10, 20, 30)' }}, labels: {{ call: 'Ask us anything' }},
  metadata: {{ page: 'pricing' }}, dynamicVariables: {{ customer_name: 'Ada' }},
  onCallStart: (d) => {{ calls.push(['start', d.callId]); throw new Error('host bug'); }},
  onCallEnd: (d) => calls.push(['end', d.reason]),
  onError: (e) => calls.push(['error', e.code]) }});</script></body></html>"""
    )
    open_widget(page, url)
    launch = page.locator("retell-widget .launch")
    assert launch.inner_text() == "Ask us anything"
    box = launch.bounding_box()
    assert box["x"] < 40 and box["y"] < 40
    assert (
        page.evaluate(
            "getComputedStyle(document.querySelector('retell-widget').shadowRoot"
            ".querySelector('.launch')).backgroundColor"
        )
        == "rgb(10, 20, 30)"
    )
    assert start_result(page) == "live"
    page.evaluate("widget.mute()")
    assert page.locator("retell-widget .mute").get_attribute("aria-pressed") == "true"
    page.evaluate("widget.unmute()")
    page.evaluate("widget.stop()")
    page.wait_for_function(f"{STATE} === 'ended'")
    assert any("onCallStart threw" in line for line in page.console_lines)
    calls = page.evaluate("calls")
    assert [c[0] for c in calls] == ["start", "end"] and calls[1][1] == "hangup"
    body = token_gateway.requests[-1]
    assert body["agent_id"] == "agent_a"
    assert body["metadata"]["page"] == "pricing"
    assert body["retell_llm_dynamic_variables"] == {"customer_name": "Ada"}


def test_narrow_viewport_touch_targets_reduced_motion(
    browser, page_server, widget_origin, token_gateway
):
    context = browser.new_context(viewport={"width": 320, "height": 560}, reduced_motion="reduce")
    try:
        page = new_page(context)
        open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
        page.locator("retell-widget .launch").click()
        page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
        panel = page.locator("retell-widget .panel").bounding_box()
        assert panel["x"] >= 0 and panel["x"] + panel["width"] <= 320
        for cls in ("mute", "hang"):
            b = page.locator(f"retell-widget .{cls}").bounding_box()
            assert b["height"] >= 44 and b["width"] >= 44
            assert b["x"] + b["width"] <= 320
        page.evaluate("widget.stop()")
        page.wait_for_function(f"{STATE} === 'ended'")
        close = page.locator("retell-widget .close").bounding_box()
        assert close["height"] >= 44 and close["width"] >= 44
    finally:
        context.close()


@pytest.mark.parametrize(
    ("motion", "animation"), [("reduce", "none"), ("no-preference", "rw-pulse")]
)
def test_reduced_motion(
    browser, page_server, widget_origin, token_gateway, fake_gateway, shoot, motion, animation
):
    fake_gateway.not_ready = 1000  # hold the call in "connecting"
    context = browser.new_context(reduced_motion=motion)
    try:
        page = new_page(context)
        open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
        page.evaluate("void widget.start().catch(() => {})")
        page.wait_for_function(f"{STATE} === 'connecting'")
        name = page.evaluate(
            "getComputedStyle(document.querySelector('retell-widget').shadowRoot"
            ".querySelector('.msg'), '::before').animationName"
        )
        assert name == animation
        assert text(page, "msg") == "Connecting…"
        shoot(page, "connecting")
        page.evaluate("widget.stop()")
        page.wait_for_function(f"{STATE} === 'idle'")
    finally:
        context.close()
