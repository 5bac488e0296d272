"""Every state and error state, the zero-JS snippet, keyboard use and cleanup."""

from __future__ import annotations

import pytest

from tests.widget.pages import (
    RECORD_POSTS,
    STATE,
    assert_error,
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
        # The hint counts down (on screen only), so it may already be a second or two less.
        assert 0 <= events(page, "error")[-1]["retryAfter"] - seconds <= 2
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
