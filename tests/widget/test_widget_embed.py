"""Embedding: host-page isolation, one global, lazy engines, SRI, v2 transport, options,
languages, small screens and reduced motion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.widget.pages import (
    STATE,
    assert_error,
    go_live,
    new_page,
    open_widget,
    pinned,
    seed_page,
    start_result,
    text,
)

pytestmark = pytest.mark.browser
DIST = Path(__file__).resolve().parents[2] / "static" / "dist"


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
    assert link == pinned(DIST / "v1/retell-widget.css")
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
    # Only this page's language was fetched, from beside the loader.
    assert [u for u in page.requested if "i18n-" in u] == [f"{widget_origin}/v1/i18n-{lang}.js"]


def test_english_fetches_no_strings_and_a_lost_strings_file_still_reveals(
    context, page_server, widget_origin, token_gateway, tamper
):
    page = new_page(context)
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint, lang="en"))
    assert text(page, "launch") == "Talk to our AI agent"
    assert not [u for u in page.requested if "i18n-" in u]

    # German pinned with SRI: the strings file is pinned too, and a modified one is refused:
    # the widget still appears, in English, rather than never.
    files = json.loads((DIST / "manifest.json").read_text())["files"]
    url = page_server.add(
        f"""<!doctype html><html lang="de"><body>
<script src="{widget_origin}/v1/retell-widget.js" crossorigin="anonymous"
        integrity="{files["v1/retell-widget.js"]["integrity"]}"></script>
<script>window.widget = new RetellWidget({{proxyEndpoint: '{token_gateway.endpoint}'}});
</script></body></html>"""
    )
    page = new_page(context)
    open_widget(page, url)
    assert text(page, "launch") == "Mit unserem KI-Agenten sprechen"
    tamper.add("i18n-de.js")
    page = new_page(context)
    open_widget(page, url)
    assert text(page, "launch") == "Talk to our AI agent"
    assert any("integrity" in line for line in page.console_lines)


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
