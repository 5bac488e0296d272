"""The consent step (issue 17): consent.js + consent.css in real Chromium against the real
gateway (real Redis, fake Retell): shown before the microphone and the token request,
Cancel, Agree with consent_version on the call, remembered per version, the site's text
as text only, http(s) links only, the zero-JS embed, languages, keyboard, headless."""

from __future__ import annotations

import pytest

from tests.widget.pages import (
    SHADOW,
    STATE,
    attr_page,
    new_page,
    open_widget,
    seed_page,
    shadow_focus,
    start_result,
    states,
    text,
)

pytestmark = pytest.mark.browser

TEXT = "This call is recorded and transcribed to improve our service."
CONSENT = {"text": TEXT, "url": "https://example.com/privacy", "version": "2024-05"}
KEY = "retell-widget:consent:2024-05"


def consent_page(page_server, widget_origin, gateway, consent=CONSENT, **options):
    return seed_page(page_server, widget_origin, gateway.endpoint, consent=consent, **options)


def ask(page):
    """Click the launcher; the consent step shows (its part and stylesheet loaded)."""
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'consent'")
    page.locator("retell-widget .cs-agree").wait_for(state="visible")


def token_asks(page) -> list[str]:
    return [u for u in page.requested if u.endswith("/api/create-web-call")]


def errors(page) -> list[str]:
    """Errors on the console, but the browser's own resource lines (a missing favicon)."""
    return [
        line
        for line in page.console_lines
        if line.startswith("error") and "Failed to load resource" not in line
    ]


def stored(page, key=KEY):
    return page.evaluate(f"localStorage.getItem({key!r})")


def test_consent_comes_before_the_microphone_and_the_token(
    page, page_server, widget_origin, token_gateway, usage_entries
):
    open_widget(page, consent_page(page_server, widget_origin, token_gateway))
    ask(page)
    # Nothing asked of the microphone or the gateway yet.
    assert page.evaluate("window.__probe.streams.length") == 0
    assert token_asks(page) == [] and token_gateway.requests == []
    assert states(page) == ["idle", "consent"]
    assert text(page, "cs-text") == TEXT
    link = page.locator("retell-widget .cs-link")
    assert link.get_attribute("href") == CONSENT["url"]
    assert link.get_attribute("target") == "_blank"
    assert set(link.get_attribute("rel").split()) >= {"noopener"}
    assert page.get_by_role("link", name="Privacy policy (opens in a new tab)").count() == 1
    agree = page.get_by_role("button", name="Agree and call")
    assert agree.get_attribute("aria-describedby") == "cs-text"
    assert text(page, "hang") == "Cancel"
    assert TEXT in page.locator("retell-widget .sr").inner_text()  # announced
    # Agree sits before Cancel, both 44px targets.
    order = page.evaluate(
        f"[...{SHADOW}.querySelector('.act').children].filter((b) => b.offsetParent)"
        ".map((b) => b.className)"
    )
    assert order == ["cs-agree", "hang"]
    for cls in ("cs-agree", "hang", "cs-link"):
        assert page.locator(f"retell-widget .{cls}").bounding_box()["height"] >= 44

    # Cancel: back to the launcher, nothing asked, nothing stored.
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate(f"{SHADOW}.querySelector('.consent, .cs-agree')") is None
    assert token_asks(page) == [] and token_gateway.requests == []
    assert page.evaluate("window.__probe.streams.length") == 0
    assert stored(page) is None

    # Asked again; Agree goes on to the microphone and the call, with the version.
    ask(page)
    page.get_by_role("button", name="Agree and call").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert states(page)[-4:] == ["consent", "requesting-mic", "connecting", "live"]
    assert page.evaluate(f"{SHADOW}.querySelector('.consent, .cs-agree')") is None
    assert stored(page)
    [sent] = token_gateway.requests
    assert sent["metadata"]["consent_version"] == "2024-05"
    [call] = [e for e in usage_entries() if e["kind"] == "call"]
    assert (call["outcome"], call["consent_version"]) == ("created", "2024-05")
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")

    # The next call does not ask again (nor does another page of the site).
    page.locator("retell-widget .retry").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert states(page).count("consent") == 2
    assert [r["metadata"]["consent_version"] for r in token_gateway.requests] == ["2024-05"] * 2
    page.evaluate("widget.stop()")
    other = new_page(page.context)
    open_widget(other, consent_page(page_server, widget_origin, token_gateway))
    other.locator("retell-widget .launch").click()
    other.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert "consent" not in states(other)
    other.evaluate("widget.stop()")

    # A new version of the text asks again.
    newer = {**CONSENT, "version": "2024-06"}
    third = new_page(page.context)
    open_widget(third, consent_page(page_server, widget_origin, token_gateway, newer))
    ask(third)
    third.get_by_role("button", name="Agree and call").click()
    third.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert token_gateway.requests[-1]["metadata"]["consent_version"] == "2024-06"
    assert stored(third, "retell-widget:consent:2024-06")
    third.evaluate("widget.stop()")
    for p in (page, other, third):
        assert not errors(p), p.console_lines


def test_the_sites_text_is_text_and_only_http_links(
    page, page_server, widget_origin, token_gateway
):
    markup = "<img src=x onerror=window.pwned=1><b>bold</b>\nSecond line."
    consent = {"text": markup, "url": "javascript:window.pwned=2", "version": 1}
    open_widget(page, consent_page(page_server, widget_origin, token_gateway, consent))
    ask(page)
    assert page.evaluate(f"{SHADOW}.querySelector('.cs-text').textContent") == markup
    assert page.evaluate(f"{SHADOW}.querySelectorAll('.cs-text *').length") == 0  # no elements
    assert page.evaluate(f"{SHADOW}.querySelector('.cs-link')") is None
    assert "Second line." in text(page, "cs-text").splitlines()  # line breaks kept
    assert page.evaluate("window.pwned") is None
    page.evaluate("widget.stop()")
    # Other schemes give no link either; a relative URL is the site's own page.
    for url, href in (
        ("data:text/html,hi", None),
        ("ftp://example.com/terms", None),
        ("/privacy", f"{page_server.origin}/privacy"),
        ("http://example.com/terms", "http://example.com/terms"),
    ):
        again = new_page(page.context)
        consent = {"text": "Recorded.", "url": url, "version": url}
        open_widget(again, consent_page(page_server, widget_origin, token_gateway, consent))
        ask(again)
        got = again.evaluate(f"{SHADOW}.querySelector('.cs-link')?.getAttribute('href') ?? null")
        assert got == href, url
        again.close()


def test_data_attribute_embed(page, page_server, widget_origin, token_gateway):
    url = attr_page(
        page_server,
        widget_origin,
        token_gateway.endpoint,
        **{
            "consent-text": "Calls are recorded.",
            "consent-url": "https://example.com/p",
            "consent-version": "v3",
        },
    )
    open_widget(page, url)
    ask(page)
    assert text(page, "cs-text") == "Calls are recorded."
    assert page.locator("retell-widget .cs-link").get_attribute("href") == "https://example.com/p"
    page.locator("retell-widget .cs-agree").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert token_gateway.requests[-1]["metadata"]["consent_version"] == "v3"
    page.evaluate("document.querySelector('retell-widget').widget?.stop()")


@pytest.mark.parametrize(
    ("lang", "agree", "link", "cancel"),
    [
        ("es", "Aceptar y llamar", "Política de privacidad", "Cancelar"),
        ("fr", "Accepter et appeler", "Politique de confidentialité", "Annuler"),
        ("de", "Zustimmen und anrufen", "Datenschutzerklärung", "Abbrechen"),
    ],
)
def test_translated(page, page_server, widget_origin, token_gateway, lang, agree, link, cancel):
    open_widget(page, consent_page(page_server, widget_origin, token_gateway, lang=lang))
    ask(page)
    assert text(page, "cs-agree") == agree
    assert page.locator("retell-widget .cs-link").inner_text().startswith(link)
    assert text(page, "hang") == cancel


def test_labels_override_the_strings(page, page_server, widget_origin, token_gateway):
    labels = {"consent_agree": "Yes, call", "consent_link": "Terms", "cancel": "No thanks"}
    open_widget(page, consent_page(page_server, widget_origin, token_gateway, labels=labels))
    ask(page)
    assert text(page, "cs-agree") == "Yes, call"
    assert page.get_by_role("link", name="Terms (opens in a new tab)").count() == 1
    assert text(page, "hang") == "No thanks"


def test_keyboard_only(page, page_server, widget_origin, token_gateway):
    open_widget(page, consent_page(page_server, widget_origin, token_gateway))
    page.locator("retell-widget .launch").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"{STATE} === 'consent'")
    page.wait_for_function(f"{SHADOW}.activeElement?.className === 'cs-agree'")
    # Tab order: the link, Agree, Cancel.
    page.keyboard.press("Shift+Tab")
    assert shadow_focus(page) == "cs-link"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert shadow_focus(page) == "hang"
    # Escape cancels, and focus goes back to the launcher.
    page.keyboard.press("Escape")
    page.wait_for_function(f"{STATE} === 'idle'")
    assert shadow_focus(page) == "launch"
    assert token_gateway.requests == []
    page.keyboard.press("Enter")
    page.wait_for_function(f"{SHADOW}.activeElement?.className === 'cs-agree'")
    page.keyboard.press("Enter")
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert shadow_focus(page) == "mute"  # focus stayed in the widget throughout
    page.keyboard.press("Escape")
    page.wait_for_function(f"{STATE} === 'ended'")


def test_started_from_the_page_keeps_focus_on_the_page(
    page, page_server, widget_origin, token_gateway
):
    """widget.start() from a page button: the step shows, and focus stays where it was."""
    open_widget(page, consent_page(page_server, widget_origin, token_gateway))
    page.evaluate("void (window.started = widget.start().then(() => 'live', (e) => e.code))")
    page.wait_for_function(f"{STATE} === 'consent'")
    page.locator("retell-widget .cs-agree").wait_for(state="visible")
    assert shadow_focus(page) is None
    page.evaluate("widget.stop()")
    assert page.evaluate("window.started") == "cancelled"
    # Destroyed during the step: nothing is left and nothing was asked.
    page.evaluate("void (window.started = widget.start().catch((e) => e.code))")
    page.locator("retell-widget .cs-agree").wait_for(state="visible")
    page.evaluate("widget.destroy()")
    assert page.evaluate("window.started") == "cancelled"
    assert page.evaluate("document.querySelector('retell-widget')") is None
    assert token_gateway.requests == []
    assert not errors(page), page.console_lines


@pytest.mark.parametrize("position", ["bottom-right", "bottom-left", "top-right", "top-left"])
def test_every_position_fits(page, page_server, widget_origin, token_gateway, shoot, position):
    long = {**CONSENT, "text": " ".join([TEXT] * 12)}
    url = consent_page(page_server, widget_origin, token_gateway, long, position=position)
    open_widget(page, url)
    ask(page)
    view = page.viewport_size
    for cls in ("panel", "cs-agree", "hang", "cs-link"):
        box = page.locator(f"retell-widget .{cls}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"], cls
        assert box["y"] >= 0 and box["y"] + box["height"] <= view["height"], cls
    # Long text scrolls inside the panel, and the keyboard can reach it to scroll.
    scrolls = page.evaluate(
        f"(() => {{ const p = {SHADOW}.querySelector('.cs-text');"
        " return [p.scrollHeight > p.clientHeight, p.tabIndex]; })()"
    )
    assert scrolls == [True, 0]
    shoot(page, f"consent-long-{position}")


def test_headless_start_needs_the_pages_agreement(page, page_server, widget_origin, token_gateway):
    url = consent_page(page_server, widget_origin, token_gateway, ui=False)
    page.goto(url)
    page.wait_for_function(f"{STATE} === 'idle'")
    assert start_result(page) == "consent_required"
    assert start_result(page) == "consent_required"  # until the page records agreement
    assert token_gateway.requests == [] and page.evaluate("window.__probe.streams.length") == 0
    page.evaluate("widget.agree()")
    assert stored(page)
    assert start_result(page) == "live"
    assert token_gateway.requests[-1]["metadata"]["consent_version"] == "2024-05"
    page.evaluate("widget.stop()")
    # The part and its stylesheet are never fetched: the page has its own consent step.
    assert not [u for u in page.requested if "/consent." in u]
