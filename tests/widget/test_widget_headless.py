"""Headless mode (ui: false, data-ui="none"): no launcher and no panel; the page drives the
call through the API and the events. docs/examples/headless.html is the page under test."""

from __future__ import annotations

import pytest

from tests.widget.conftest import ROOT
from tests.widget.pages import STATE, attr_page, events, new_page, states

pytestmark = pytest.mark.browser

EXAMPLE = ROOT / "docs" / "examples" / "headless.html"


def example(page_server, widget_origin, endpoint):
    html = EXAMPLE.read_text()
    html = html.replace("https://gateway.example.com/widget/v1/", f"{widget_origin}/v1/")
    html = html.replace("https://gateway.example.com/api/create-web-call", endpoint)
    html = html.replace("agent_abc", "agent_a")
    return page_server.add(html)


def nothing_drawn(page):
    """The widget element shows nothing and its stylesheet was never fetched."""
    box = page.evaluate("document.querySelector('retell-widget').getBoundingClientRect().height")
    hidden = page.evaluate(
        "document.querySelector('retell-widget').shadowRoot.querySelector('.w').hidden"
    )
    css = [u for u in page.requested if "retell-widget.css" in u]
    assert (box, hidden, css) == (0, True, [])
    return True


def test_example_page_drives_a_call_with_its_own_button(
    page, page_server, widget_origin, token_gateway, shoot, wait_for
):
    page.goto(example(page_server, widget_origin, token_gateway.endpoint))
    page.wait_for_function(f"{STATE} === 'idle'")
    assert nothing_drawn(page)
    assert not [u for u in page.requested if "engine-" in u]
    shoot(page, "headless-idle", docs=True, target="main")

    page.get_by_role("button", name="Call us").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert states(page)[:4] == ["idle", "requesting-mic", "connecting", "live"]
    assert page.locator("#status").inner_text() == "Connected"
    page.evaluate(
        "window.mutes = []; widget.host.addEventListener('retell-widget:mute',"
        " (e) => mutes.push(e.detail.muted))"
    )
    mute = page.get_by_role("button", name="Mute")
    mute.click()
    assert page.evaluate("widget.muted") is True
    assert page.evaluate("mutes") == [True]
    assert mute.get_attribute("aria-pressed") == "true"
    shoot(page, "headless-live", docs=True, target="main")
    # The microphone really is muted: the engine's track is disabled.
    assert page.evaluate("window.__probe.streams.at(-1).getAudioTracks().every((t) => !t.enabled)")

    page.get_by_role("button", name="Hang up").click()
    page.wait_for_function(f"{STATE} === 'ended'")
    assert page.locator("#status").inner_text() == "Thanks for calling."
    assert events(page, "call-end")[-1]["reason"] == "hangup"
    assert page.evaluate(
        "window.__probe.streams.every(s => s.getTracks().every(t => t.readyState === 'ended'))"
    )
    assert nothing_drawn(page)  # not after a call either


def test_data_ui_none_and_errors_reach_the_page(page, page_server, widget_origin, token_gateway):
    """The zero-JS embed, headless: the element carries its widget; events come to the page."""
    token_gateway.set_mode("agent")  # this page's entry may not use agent_a: a 403
    page.goto(attr_page(page_server, widget_origin, token_gateway.endpoint, ui="none"))
    page.wait_for_function(f"{STATE} === 'idle'")
    assert nothing_drawn(page)
    assert not [u for u in page.requested if "i18n-" in u]  # a headless page has its own words
    got = page.evaluate(
        """() => new Promise((done) => {
          const el = document.querySelector('retell-widget');
          el.addEventListener('retell-widget:error', (e) => done([e.detail.code, e.target === el]));
          el.widget.start().catch(() => {});
        })"""
    )
    assert got == ["not_allowed", True]
    assert page.evaluate(STATE) == "error"
    assert nothing_drawn(page)


def test_headless_consent_is_the_pages(page, page_server, widget_origin, token_gateway):
    """With consent asked for and no UI, start() refuses until the page records agreement."""
    page_url = page_server.add(
        f"""<!doctype html><html lang="en"><body>
<script src="{widget_origin}/v1/retell-widget.js"></script>
<script>window.widget = new RetellWidget({{proxyEndpoint: '{token_gateway.endpoint}',
  agentId: 'agent_a', ui: false, consent: {{text: 'Calls are recorded.', version: 'v7'}}}});
</script></body></html>"""
    )
    page.goto(page_url)
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate("widget.start().then(() => 'live', (e) => e.code)") == "consent_required"
    assert not token_gateway.requests  # nothing was asked of the gateway
    page.evaluate("widget.agree()")
    assert page.evaluate("widget.start().then(() => 'live', (e) => e.code)") == "live"
    assert token_gateway.requests[-1]["metadata"]["consent_version"] == "v7"
    page.evaluate("widget.stop()")
    # Remembered for this site and version: a new page with the same version just calls.
    other = new_page(page.context)
    other.goto(page_url)
    other.wait_for_function(f"{STATE} === 'idle'")
    assert other.evaluate("widget.start().then(() => 'live', (e) => e.code)") == "live"
    other.evaluate("widget.stop()")
    # A version the gateway would refuse fails at once, where the developer sees it.
    thrown = other.evaluate(
        """() => { try { new RetellWidget({proxyEndpoint: '/x', ui: false,
                     consent: {text: 'Recorded.', version: 'summer 2026'}}); }
                   catch (e) { return [e.name, e.message]; } }"""
    )
    assert thrown[0] == "TypeError" and "consent.version" in thrown[1]
