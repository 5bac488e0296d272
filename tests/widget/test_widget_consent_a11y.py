"""The consent step and the feedback form for everyone (issue 17): axe-core (the same check as
test_widget_a11y.py: no serious or critical finding, no rule fixed once) over the consent
state and the feedback form, its error and its thanks, in the five themes and on a phone's
width; the screenshots in docs/screenshots."""

from __future__ import annotations

import pytest

from tests.widget.pages import SHADOW, STATE, go_live, new_page, open_widget, seed_page
from tests.widget.test_widget_a11y import check

pytestmark = pytest.mark.browser
THEMES = ["purple", "blue", "green", "dark", "light"]
CONSENT = {
    "text": "This call is recorded and transcribed to improve our service. "
    "Please do not share payment details.",
    "url": "https://example.com/privacy",
    "version": "2024-05",
}


def ask(page):
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'consent'")
    page.locator("retell-widget .cs-agree").wait_for(state="visible")


@pytest.mark.parametrize("theme", THEMES)
def test_axe_consent(page, page_server, widget_origin, token_gateway, shoot, theme):
    url = seed_page(
        page_server, widget_origin, token_gateway.endpoint, consent=CONSENT, theme=theme
    )
    open_widget(page, url)
    ask(page)
    check(page, "consent")
    if theme in ("light", "dark"):
        shoot(page, f"consent-{theme}", docs=True)
    # Long legal text scrolls, and is reachable by keyboard to scroll.
    long = {**CONSENT, "text": "\n".join([CONSENT["text"]] * 10), "version": "long"}
    other = new_page(page.context)
    url = seed_page(page_server, widget_origin, token_gateway.endpoint, consent=long, theme=theme)
    open_widget(other, url)
    ask(other)
    check(other, "consent")


def test_axe_consent_on_a_phone(browser, page_server, widget_origin, token_gateway):
    context = browser.new_context(viewport={"width": 320, "height": 560})
    try:
        page = new_page(context)
        url = seed_page(
            page_server, widget_origin, token_gateway.endpoint, consent=CONSENT, lang="de"
        )
        open_widget(page, url)
        ask(page)
        check(page, "consent")
        for cls in ("panel", "cs-agree", "hang"):
            box = page.locator(f"retell-widget .{cls}").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 320, cls
            assert box["height"] >= 44 or cls == "panel"
    finally:
        context.close()


@pytest.mark.parametrize("theme", THEMES)
def test_axe_feedback_form_error_and_thanks(
    page, page_server, widget_origin, token_gateway, shoot, theme
):
    url = seed_page(page_server, widget_origin, token_gateway.endpoint, feedback=True, theme=theme)
    open_widget(page, url)
    go_live(page)
    page.locator("retell-widget .hang").click()
    page.locator("retell-widget .feedback textarea").wait_for(state="visible")
    check(page, "ended")  # the form
    page.get_by_role("button", name="Good").click()
    check(page, "ended")  # a thumb pressed
    dropped = []
    page.route(
        "**/api/feedback",
        lambda route: (dropped.append(1), route.abort()) if not dropped else route.fallback(),
    )
    page.get_by_role("button", name="Send").click()
    page.locator("retell-widget .feedback").get_by_text("Your feedback was not sent.").wait_for()
    check(page, "ended")  # the error, the form still there
    page.get_by_role("button", name="Send").click()
    page.locator("retell-widget .feedback").get_by_text("Thanks for your feedback!").wait_for()
    check(page, "ended")  # the thanks
    assert page.evaluate(f"{SHADOW}.querySelectorAll('.feedback button').length") == 0
    if theme == "dark":
        shoot(page, "feedback-thanks-dark")
