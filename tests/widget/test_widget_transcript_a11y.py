"""The live transcript for everyone (issue 15): axe-core over a live call with its transcript
(expanded and collapsed, in the five themes, after the call, on a phone's width; the same check
as test_widget_a11y.py), the keyboard, four languages and `labels`."""

from __future__ import annotations

import pytest

from tests.widget.pages import (
    SHADOW,
    STATE,
    TRANSCRIPT_LOG,
    go_live,
    growing,
    lines,
    new_page,
    on_token,
    open_widget,
    seed_page,
    shadow_focus,
)
from tests.widget.test_widget_a11y import check

pytestmark = pytest.mark.browser
THEMES = ["purple", "blue", "green", "dark", "light"]
TOGGLE = "retell-widget .t-toggle"


def live_with_transcript(page, page_server, widget_origin, gateway, monitor, wait_for, **options):
    """A live call whose transcript has two final lines and a growing one; returns its id."""
    calls = []
    on_token(page, gateway.endpoint, lambda answer: calls.append(answer["call_id"]))
    open_widget(page, seed_page(page_server, widget_origin, gateway.endpoint, transcript=True,
                                **options))  # fmt: skip
    go_live(page)
    call = calls[0]
    assert monitor.wait_open(call, 1)
    monitor.say(call, "agent", "Hello! Thanks for calling. How can I help you today?", 0)
    monitor.say(call, "user", "I would like to know your opening hours.", 0)
    monitor.say(call, "agent", "We are open every day from nine to six.", 0)
    wait_for(lambda: len(lines(page)) == 2 and growing(page))
    return call


def test_axe_live_with_transcript_every_theme_expanded_and_collapsed(
    page, page_server, widget_origin, transcript_on, fake_monitor, wait_for, shoot
):
    call = live_with_transcript(page, page_server, widget_origin, transcript_on, fake_monitor,
                                wait_for)  # fmt: skip
    page.wait_for_function(f"{SHADOW}.querySelector('.timer').textContent !== '0:00'")
    toggle = page.locator(TOGGLE)
    for theme in THEMES:
        page.evaluate(f"document.querySelector('retell-widget').dataset.theme = '{theme}'")
        check(page, "live")
        if theme in ("purple", "dark"):
            shoot(page, "live-transcript" + ("-dark" if theme == "dark" else ""), docs=True)
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "false"
        check(page, "live")
        toggle.click()
    fake_monitor.end(call)
    wait_for(lambda: len(lines(page)) == 3)
    page.locator("retell-widget .hang").click()
    check(page, "ended")  # the transcript stays to be read, until the next call
    assert page.locator("retell-widget .t-wrap").is_visible()
    page.locator("retell-widget .retry").click()  # "Call again": a new call, a new transcript
    page.wait_for_function(f"{STATE} === 'live'")
    assert not page.locator("retell-widget .t-wrap").is_visible()
    assert lines(page) == [] and growing(page) == []


def test_axe_collapsed_on_a_phone(browser, page_server, widget_origin, transcript_on,
                                  fake_monitor, wait_for):  # fmt: skip
    context = browser.new_context(viewport={"width": 320, "height": 568})
    try:
        page = new_page(context)
        live_with_transcript(page, page_server, widget_origin, transcript_on, fake_monitor,
                             wait_for, theme="dark")  # fmt: skip
        assert page.locator(TOGGLE).get_attribute("aria-expanded") == "false"
        check(page, "live")
        page.locator(TOGGLE).click()
        check(page, "live")
        box = page.locator("retell-widget .panel").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 320 and box["y"] >= 0
    finally:
        context.close()


def test_keyboard(page, page_server, widget_origin, transcript_on, fake_monitor, wait_for):
    live_with_transcript(page, page_server, widget_origin, transcript_on, fake_monitor, wait_for)
    assert shadow_focus(page) == "mute"  # focus is left where the call put it
    page.keyboard.press("Shift+Tab")
    assert shadow_focus(page) == "log"  # it scrolls, so it takes focus
    page.keyboard.press("Shift+Tab")
    assert shadow_focus(page) == "t-toggle"
    page.keyboard.press("Enter")
    assert page.locator(TOGGLE).get_attribute("aria-expanded") == "false"
    page.keyboard.press("Tab")
    assert shadow_focus(page) == "mute"  # the collapsed log is out of the way
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Space")
    assert page.locator(TOGGLE).get_attribute("aria-expanded") == "true"
    page.keyboard.press("Escape")  # still ends the call, from anywhere in the widget
    page.wait_for_function(f"{STATE} === 'ended'")


@pytest.mark.parametrize(
    ("options", "toggle", "you"),
    [
        ({"lang": "es"}, "Transcripción", "Tú: "),
        ({"lang": "fr"}, "Transcription", "Vous: "),
        ({"lang": "de"}, "Transkript", "Sie: "),
        ({"labels": {"transcript": "Live captions", "you": "Me"}}, "Live captions", "Me: "),
    ],
)
def test_languages_and_labels(page, page_server, widget_origin, transcript_on, fake_monitor,
                              wait_for, options, toggle, you):  # fmt: skip
    live_with_transcript(page, page_server, widget_origin, transcript_on, fake_monitor,
                         wait_for, **options)  # fmt: skip
    assert page.locator(TOGGLE).inner_text() == toggle
    assert page.evaluate(f"{TRANSCRIPT_LOG}.getAttribute('aria-label')") == toggle
    who = page.evaluate(f"{TRANSCRIPT_LOG}.querySelector('[data-role=user] .who').textContent")
    assert who == you
