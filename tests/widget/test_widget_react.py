"""retell-widget/react in real Chromium, React 19 and React 18 (two builds of one sample app,
static/samples/react), against the real gateway; and a server render under Node."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.widget.frameworks import COUNT, MIC_LIVE, built, node, open_app
from tests.widget.pages import STATE

REACTS = ["react19", "react18"]


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    return built(tmp_path_factory)


def log(page) -> list[str]:
    return page.locator("#log li").all_inner_texts()


@pytest.mark.browser
@pytest.mark.parametrize("app", REACTS)
def test_component_shows_the_launcher_and_a_call_goes_live_and_ends(
    app, root, page, page_server, token_gateway, wait_for
):
    open_app(page, page_server, root, app, "launcher", token_gateway.endpoint)
    page.wait_for_function(f"{STATE} === 'idle'")
    launch = page.locator("retell-widget .launch")
    launch.wait_for(state="visible")
    assert launch.inner_text() == "Talk to our AI agent"
    assert page.evaluate(COUNT) == 1
    assert page.locator("retell-widget").get_attribute("data-theme") == "blue"

    launch.click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    wait_for(lambda: [x for x in log(page) if x.startswith("call-start call_")])
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")
    wait_for(lambda: "call-end hangup" in log(page))
    assert [x for x in log(page) if x.startswith("state ")] == [
        "state requesting-mic", "state connecting", "state live", "state ended",
    ]  # fmt: skip
    assert not page.evaluate(MIC_LIVE)
    errors = [x for x in page.console_lines if x.startswith(("error", "warning"))]
    assert not errors, errors  # React's development build warns of misuse here


@pytest.mark.browser
@pytest.mark.parametrize("app", REACTS)
def test_hook_drives_a_headless_custom_button(
    app, root, page, page_server, token_gateway, fake_gateway, wait_for
):
    open_app(page, page_server, root, app, "custom", token_gateway.endpoint, strict=True)
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate(COUNT) == 1
    assert page.locator("retell-widget .w").is_hidden()  # ui: false draws nothing
    state, button, mute = page.locator("#state"), page.locator("#call"), page.locator("#mute")
    expect(state).to_have_text("idle")
    assert mute.is_disabled()

    button.click()
    expect(state).to_have_text("live", timeout=15000)
    expect(button).to_have_text("Hang up")
    assert page.locator("#call-id").inner_text() == fake_gateway.last_session().call_id
    track = "window.__probe.streams.at(-1).getAudioTracks()[0]"
    mute.click()
    expect(mute).to_have_text("Unmute")
    assert mute.get_attribute("aria-pressed") == "true"
    assert page.evaluate(f"{track}.enabled") is False  # the uplink sends silence
    mute.click()
    expect(mute).to_have_text("Mute")
    assert page.evaluate(f"{track}.enabled") is True

    button.click()
    expect(state).to_have_text("ended")
    expect(button).to_have_text("Call us")
    wait_for(lambda: fake_gateway.last_session().deleted)
    assert not page.evaluate(MIC_LIVE)
    assert page.evaluate(COUNT) == 1


@pytest.mark.browser
@pytest.mark.parametrize("app", REACTS)
def test_hook_shows_a_refusal(app, root, page, page_server, token_gateway):
    token_gateway.set_mode("agent")  # this site may not call agent_a
    open_app(page, page_server, root, app, "custom", token_gateway.endpoint)
    page.wait_for_function(f"{STATE} === 'idle'")
    page.locator("#call").click()
    expect(page.locator("#error")).to_have_text("not_allowed", timeout=15000)
    expect(page.locator("#state")).to_have_text("error")
    expect(page.locator("#call")).to_have_text("Call us")
    assert not page.evaluate(MIC_LIVE)


@pytest.mark.browser
@pytest.mark.parametrize("app", REACTS)
def test_strict_mode_leaves_one_widget_and_unmount_releases_the_microphone(
    app, root, page, page_server, token_gateway, fake_gateway, wait_for
):
    open_app(page, page_server, root, app, "toggle", token_gateway.endpoint, strict=True)
    page.wait_for_function(f"{STATE} === 'idle'")
    # StrictMode mounted, unmounted and mounted again: the first widget is gone for good.
    made = page.evaluate("window.__hosts.map((h) => [h.isConnected, h.widget.state])")
    assert made == [[False, "destroyed"], [True, "idle"]]
    assert page.evaluate(COUNT) == 1
    assert page.locator("retell-widget .launch").inner_text() == "Ask us"

    # New inline callbacks and an equal new labels object on each render: the same widget.
    page.locator("#rerender").click()
    page.locator("#rerender").click()
    expect(page.locator("#rerender")).to_have_text("Re-render (2)")
    assert page.evaluate("window.__hosts.length") == 2
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    expect(page.locator("#heard")).to_have_text("render 2")  # the latest callback heard it
    first = fake_gateway.last_session()

    # A changed option replaces the widget: the call ends, its microphone is released.
    page.locator("#theme").click()
    page.wait_for_function("window.__hosts.length === 3")
    assert page.evaluate(COUNT) == 1
    assert page.locator("retell-widget").get_attribute("data-theme") == "dark"
    assert page.evaluate(STATE) == "idle"
    wait_for(lambda: first.deleted)
    assert not page.evaluate(MIC_LIVE)

    # Live again, then unmounted mid-call: no element, no live microphone track.
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert page.evaluate(MIC_LIVE)
    second = fake_gateway.last_session()
    page.locator("#toggle").click()
    expect(page.locator("#toggle")).to_have_text("Add the widget")
    assert page.evaluate(COUNT) == 0
    assert not page.evaluate(MIC_LIVE)
    wait_for(lambda: second.deleted)
    assert page.evaluate("window.__hosts.every((h) => h.widget.state === 'destroyed')")


SSR = """
import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
const before = new Set(Object.getOwnPropertyNames(globalThis));
const { RetellWidget, useRetellWidget } = await import('retell-widget/react');
// Importing it adds nothing global (rendering is the framework's business).
const added = Object.getOwnPropertyNames(globalThis).filter((k) => !before.has(k));
let seen;
function Custom() {
  const { state, widget, start } = useRetellWidget({ proxyEndpoint: '/x', ui: false });
  seen = { state, widget, start: typeof start };
  return createElement('button', null, state);
}
const tree = [createElement(RetellWidget, { proxyEndpoint: '/x' }), createElement(Custom)];
const html = renderToString(createElement('div', null, ...tree));
const { version } = await import('react');
console.log(JSON.stringify({ html, seen, added, version }));
"""


@pytest.mark.parametrize("app", REACTS)
def test_server_render_touches_nothing(app, root):
    """And the module is marked for React Server Components: one may render <RetellWidget>."""
    shipped = root / "node_modules" / "retell-widget" / "dist" / "esm" / "react.js"
    assert shipped.read_text().startswith('"use client";')
    result = node(root, app, SSR)
    assert result["version"].startswith(app.removeprefix("react") + ".")
    assert result == {
        "html": "<div><button>idle</button></div>",
        "seen": {"state": "idle", "widget": None, "start": "function"},
        "added": [],
        "version": result["version"],
    }
