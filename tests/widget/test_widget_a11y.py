"""axe-core over every widget state, inside its (open) Shadow DOM, in real Chromium.

axe comes from static/node_modules (a devDependency) and is injected into the test page
only; it is never part of dist/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.widget.captchas import fake_captcha
from tests.widget.pages import (
    STATE,
    go_live,
    new_page,
    open_widget,
    run_clock_until,
    seed_page,
)

pytestmark = pytest.mark.browser
AXE = Path(__file__).resolve().parents[2] / "static" / "node_modules" / "axe-core" / "axe.min.js"
FAILING = {"serious", "critical"}
# Best-practice findings fixed once; they must not come back either.
FIXED = {"region", "label-content-name-mismatch"}
FOUND: dict[str, set[str]] = {}  # rule -> states it fired in, for the report below


def axe(page, state: str) -> list[dict]:
    """axe findings (violations, and "needs review") on nodes inside <retell-widget>.

    Runs over the whole document: page-level rules such as `region` only run there.
    Nodes inside the open shadow root come back as ["retell-widget", ".panel"].
    """
    if not AXE.exists():
        pytest.fail("axe-core is missing: run `npm ci` in static/ (make build does)")
    page.wait_for_function(f"{STATE} === '{state}'")
    if not page.evaluate("!!window.axe"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => {
      // An experimental rule, off by default; it catches a visible "×" named "Close".
      const rules = { 'label-content-name-mismatch': { enabled: true } };
      const r = await axe.run(document, { rules });
      const ours = (n) => [n.target[0]].flat()[0] === 'retell-widget';
      return [['violation', r.violations], ['review', r.incomplete]].flatMap(([kind, list]) =>
        list.map((v) => ({ kind, id: v.id, impact: v.impact,
          nodes: v.nodes.filter(ours).map((n) => [n.target[0]].flat().join(' >>> ')) }))
        ).filter((v) => v.nodes.length);
    }"""
    )
    for v in found:
        FOUND.setdefault(f"{v['id']} ({v['impact']}, {v['kind']})", set()).add(state)
    return found


def check(page, state: str) -> None:
    bad = [v for v in axe(page, state) if v["impact"] in FAILING or v["id"] in FIXED]
    assert not bad, f"{state}: {bad}"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for rule, where in sorted(FOUND.items()):
        print(f"\naxe: {rule} in {', '.join(sorted(where))}")


def test_axe_idle_live_muted_ended(page, page_server, widget_origin, token_gateway):
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    check(page, "idle")
    go_live(page)
    check(page, "live")
    page.locator("retell-widget .mute").click()
    assert page.locator("retell-widget .mute").get_attribute("aria-pressed") == "true"
    check(page, "live")
    page.locator("retell-widget .hang").click()
    check(page, "ended")


@pytest.mark.parametrize("theme", ["blue", "green", "dark", "light"])
def test_axe_themes(page, page_server, widget_origin, token_gateway, theme):
    url = seed_page(page_server, widget_origin, token_gateway.endpoint, theme=theme)
    open_widget(page, url)
    check(page, "idle")
    go_live(page)
    page.locator("retell-widget .mute").click()
    check(page, "live")
    page.evaluate("widget.stop()")
    check(page, "ended")


def test_axe_requesting_mic_and_connecting(
    context, page_server, widget_origin, token_gateway, fake_gateway
):
    # Hold the permission prompt open, then hold the call in "connecting".
    context.add_init_script(
        "{ const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);"
        " navigator.mediaDevices.getUserMedia = (c) =>"
        " new Promise((r) => setTimeout(r, 1500)).then(() => gum(c)); }"
    )
    fake_gateway.not_ready = 1000
    page = new_page(context)
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    check(page, "requesting-mic")
    check(page, "connecting")
    page.evaluate("widget.stop()")
    page.wait_for_function(f"{STATE} === 'idle'")


@pytest.mark.parametrize("mode", ["busy", "down", "agent", "origin"])
def test_axe_token_errors(page, page_server, widget_origin, token_gateway, mode):
    token_gateway.set_mode(mode)
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    check(page, "error")


@pytest.mark.parametrize(
    ("mode", "retry_after"), [("full", 30), ("budget", 300), ("budget", 8 * 3600)]
)
def test_axe_limit_errors(page, page_server, widget_origin, token_gateway, mode, retry_after):
    """busy and budget_exhausted: while the retry waits (or is absent), and once it is offered."""
    token_gateway.set_mode(mode, retry_after=retry_after)
    page.clock.install()
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    run_clock_until(page, "error")
    check(page, "error")
    page.clock.run_for(retry_after * 1000)
    retry = page.locator("retell-widget .retry")
    assert retry.is_visible() == (retry_after <= 300)
    assert not retry.is_visible() or retry.is_enabled()
    check(page, "error")


def test_axe_mic_errors(denying_browser, context, page_server, widget_origin, token_gateway):
    url = seed_page(page_server, widget_origin, token_gateway.endpoint)
    denied = denying_browser.new_context()
    try:
        page = new_page(denied)
        open_widget(page, url)
        page.locator("retell-widget .launch").click()
        check(page, "error")  # mic_denied
    finally:
        denied.close()
    context.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));"
    )
    page = new_page(context)
    open_widget(page, url)
    page.locator("retell-widget .launch").click()
    check(page, "error")  # no_mic


def test_axe_call_errors(page, page_server, widget_origin, token_gateway, fake_gateway):
    fake_gateway.refuse_status = 500
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    check(page, "error")  # connect_failed
    fake_gateway.refuse_status = None
    page.locator("retell-widget .retry").click()
    check(page, "live")
    fake_gateway.drop("close")
    page.wait_for_function(f"{STATE} === 'error'")
    assert page.evaluate("window.__probe.events.at(-1).code") == "call_dropped"
    check(page, "error")


def test_axe_verification_states(page, page_server, widget_origin, verifying, siteverify):
    """Checking (a proof of work, then an interactive captcha in the panel), then the
    verification errors."""
    gateway = verifying("pow", POW_DIFFICULTY="10000000")  # slow enough to look at
    url = seed_page(page_server, widget_origin, gateway.endpoint)
    open_widget(page, url)
    page.locator("retell-widget .launch").click()
    check(page, "verifying")
    page.evaluate("widget.stop()")

    gateway = verifying("turnstile")
    page = new_page(page.context)
    fake_captcha(page, "turnstile", ["turnstile-bad-1", "turnstile-bad-2"], "click")
    open_widget(page, seed_page(page_server, widget_origin, gateway.endpoint))
    page.locator("retell-widget .launch").click()
    page.locator("retell-widget > [slot=verify] button").wait_for()
    check(page, "verifying")  # with the provider's widget slotted into the panel
    page.locator("retell-widget > [slot=verify] button").click()
    page.wait_for_function(f"__captcha.renders.length === 2 && {STATE} === 'verifying'")
    page.locator("retell-widget > [slot=verify] button").click()
    check(page, "error")  # verification_failed
    assert page.evaluate("window.__probe.events.at(-1).code") == "verification_failed"

    siteverify.set_behaviour("turnstile", "error")
    page.evaluate("(t) => { window.__tokens = [t]; }", siteverify.issue("turnstile", hostname="x"))
    page.locator("retell-widget .retry").click()
    page.locator("retell-widget > [slot=verify] button").click()
    page.wait_for_function(f"{STATE} === 'error'")
    assert page.evaluate("window.__probe.events.at(-1).code") == "verification_unavailable"
    check(page, "error")
