"""retell-widget/vue in real Chromium (the sample app static/samples/vue, built against the
packed package) against the real gateway; and a server render under Node."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.widget.frameworks import COUNT, MIC_LIVE, built, node, open_app
from tests.widget.pages import STATE


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    return built(tmp_path_factory)


def log(page) -> list[str]:
    return page.locator("#log li").all_inner_texts()


@pytest.mark.browser
def test_component_shows_the_launcher_and_a_call_goes_live_and_ends(
    root, page, page_server, token_gateway, wait_for
):
    open_app(page, page_server, root, "vue", "launcher", token_gateway.endpoint)
    page.wait_for_function(f"{STATE} === 'idle'")
    launch = page.locator("retell-widget .launch")
    launch.wait_for(state="visible")
    assert launch.inner_text() == "Talk to our AI agent"
    assert page.evaluate(COUNT) == 1
    assert page.locator("retell-widget").get_attribute("data-theme") == "green"

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
    warnings = [x for x in page.console_lines if x.startswith(("error", "warning"))]
    assert not warnings, warnings  # Vue's development build warns of misuse here


@pytest.mark.browser
def test_composable_drives_a_headless_custom_button(
    root, page, page_server, token_gateway, fake_gateway, wait_for
):
    open_app(page, page_server, root, "vue", "custom", token_gateway.endpoint)
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


@pytest.mark.browser
def test_composable_shows_a_refusal(root, page, page_server, token_gateway):
    token_gateway.set_mode("agent")  # this site may not call agent_a
    open_app(page, page_server, root, "vue", "custom", token_gateway.endpoint)
    page.wait_for_function(f"{STATE} === 'idle'")
    page.locator("#call").click()
    expect(page.locator("#error")).to_have_text("not_allowed", timeout=15000)
    expect(page.locator("#state")).to_have_text("error")
    assert not page.evaluate(MIC_LIVE)


@pytest.mark.browser
def test_changed_prop_replaces_the_widget_and_unmount_releases_the_microphone(
    root, page, page_server, token_gateway, fake_gateway, wait_for
):
    open_app(page, page_server, root, "vue", "toggle", token_gateway.endpoint)
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate("window.__hosts.length") == 1
    assert page.locator("retell-widget .launch").inner_text() == "Ask us"
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    expect(page.locator("#heard")).to_have_text("theme purple")
    first = fake_gateway.last_session()

    page.locator("#theme").click()  # a reactive prop: the widget is made anew
    page.wait_for_function("window.__hosts.length === 2")
    assert page.evaluate(COUNT) == 1
    assert page.locator("retell-widget").get_attribute("data-theme") == "dark"
    assert page.evaluate(STATE) == "idle"
    wait_for(lambda: first.deleted)
    assert not page.evaluate(MIC_LIVE)

    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    second = fake_gateway.last_session()
    page.locator("#toggle").click()  # v-if: unmounted mid-call
    expect(page.locator("#toggle")).to_have_text("Add the widget")
    assert page.evaluate(COUNT) == 0
    assert not page.evaluate(MIC_LIVE)
    wait_for(lambda: second.deleted)
    page.locator("#toggle").click()  # and back: one widget again
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate(COUNT) == 1
    states = page.evaluate("window.__hosts.map((h) => h.widget.state)")
    assert states == ["destroyed", "destroyed", "idle"]


SSR = """
import { createSSRApp, defineComponent, h } from 'vue';
import { renderToString } from 'vue/server-renderer';
const before = new Set(Object.getOwnPropertyNames(globalThis));
const { RetellWidget, useRetellWidget } = await import('retell-widget/vue');
// Importing it adds nothing global (rendering is the framework's business).
const added = Object.getOwnPropertyNames(globalThis).filter((k) => !before.has(k));
const Custom = defineComponent({
  setup() {
    const { state, widget } = useRetellWidget({ proxyEndpoint: '/x', ui: false });
    return () => h('button', null, `${state.value} ${widget.value}`);
  },
});
const tree = () => [h(RetellWidget, { proxyEndpoint: '/x' }), h(Custom)];
const app = createSSRApp({ render: () => h('div', tree()) });
const html = await renderToString(app);
console.log(JSON.stringify({ html, added }));
"""


def test_server_render_touches_nothing(root):
    result = node(root, "vue", SSR)
    assert result == {"html": "<div><!----><button>idle null</button></div>", "added": []}
