"""The gateway's issue-12 refusals: `busy` (concurrency cap) and `budget_exhausted` (minute
budget spent), both 429 with Retry-After. Time runs on the page clock."""

from __future__ import annotations

import json

import pytest

from tests.widget.pages import (
    STATE,
    assert_error,
    events,
    new_page,
    open_widget,
    run_clock_until,
    seed_page,
    shadow_focus,
    text,
)

pytestmark = pytest.mark.browser
HOURS_8 = 8 * 3600

# Counts what the status region announces (each text change), from the error on.
COUNT_ANNOUNCEMENTS = """() => {
  const sr = document.querySelector('retell-widget').shadowRoot.querySelector('.sr');
  window.__said = [];
  new MutationObserver(() => window.__said.push(sr.textContent))
    .observe(sr, { childList: true, characterData: true, subtree: true });
}"""


def refused(page, page_server, widget_origin, token_gateway, mode, retry_after, **options):
    """Clock installed, widget opened, launcher clicked, until the error state."""
    token_gateway.set_mode(mode, retry_after=retry_after)
    page.clock.install()
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint, **options))
    page.locator("retell-widget .launch").click()
    run_clock_until(page, "error")
    page.evaluate(COUNT_ANNOUNCEMENTS)


@pytest.mark.parametrize(
    ("lang", "message", "hint", "retry", "ready"),
    [
        (
            "en",
            "All lines are busy.",
            "Please try again in a minute.",
            "Try again",
            "You can try again now.",
        ),
        (
            "de",
            "Alle Leitungen sind belegt.",
            "Bitte versuchen Sie es in einer Minute erneut.",
            "Erneut versuchen",
            "Sie können es jetzt erneut versuchen.",
        ),
    ],
)
def test_busy_retry_is_disabled_until_retry_after(
    page,
    page_server,
    widget_origin,
    token_gateway,
    canned_api,
    shoot,
    lang,
    message,
    hint,
    retry,
    ready,
):
    refused(page, page_server, widget_origin, token_gateway, "full", 30, lang=lang)
    assert_error(page, "busy", message, hint)
    assert events(page, "error")[-1]["retryAfter"] == 30
    assert page.locator("retell-widget .sr").inner_text() == f"{message} {hint}"
    button = page.locator("retell-widget .retry")
    assert button.is_visible() and button.is_disabled()
    assert button.inner_text() == f"{retry} (0:30)"
    assert shadow_focus(page) == "close"  # focus was in the widget: not on a dead button
    if lang == "en":
        shoot(page, "error-busy", docs=True)

    page.clock.run_for(10_000)
    assert button.is_disabled() and button.inner_text() == f"{retry} (0:20)"
    page.clock.run_for(19_000)
    assert button.is_disabled() and button.inner_text() == f"{retry} (0:01)"
    assert page.evaluate("window.__said") == []  # the countdown is not read out each second
    page.clock.run_for(1_000)
    assert button.is_enabled() and button.inner_text() == retry
    assert page.evaluate("window.__said") == [ready]  # said once, when it becomes possible
    assert page.locator("retell-widget .sr").inner_text() == ready

    # Keyboard: the enabled retry is reachable from the close button and asks again.
    page.keyboard.press("Tab")
    assert shadow_focus(page) == "retry"
    page.keyboard.press("Enter")
    run_clock_until(page, "error")
    assert canned_api.posts == 2
    assert button.is_disabled()
    assert token_gateway.requests == []  # nothing reached Retell


@pytest.mark.parametrize(
    ("lang", "message", "hint", "close"),
    [
        ("en", "Calls are paused on this site for now.", "Please try again later.", "Close"),
        (
            "fr",
            "Les appels sont suspendus sur ce site pour le moment.",
            "Réessayez plus tard.",
            "Fermer",
        ),
    ],
)
def test_long_budget_pause_offers_no_retry(
    page, page_server, widget_origin, token_gateway, canned_api, shoot, lang, message, hint, close
):
    refused(page, page_server, widget_origin, token_gateway, "budget", HOURS_8, lang=lang)
    assert_error(page, "budget_exhausted", message, hint)
    err = events(page, "error")[-1]
    assert err["retryAfter"] == HOURS_8
    assert err["message"] == "Calls are paused on this site for now."  # English, like the rest
    assert page.locator("retell-widget .sr").inner_text() == f"{message} {hint}"
    assert not page.locator("retell-widget .retry").is_visible()
    assert shadow_focus(page) == "close"
    assert page.locator("retell-widget .close").get_attribute("aria-label") == close
    if lang == "en":
        shoot(page, "error-budget-exhausted", docs=True)
    # Still nothing to retry ten minutes later, and nothing was said meanwhile.
    page.clock.run_for(600_000)
    assert not page.locator("retell-widget .retry").is_visible()
    assert page.evaluate("window.__said") == []
    assert canned_api.posts == 1
    # The panel closes; the launcher can ask again (the visitor's choice, not ours).
    page.keyboard.press("Enter")
    page.wait_for_function(f"{STATE} === 'idle'")
    assert shadow_focus(page) == "launch"


def test_short_budget_pause_offers_retry_after_it(
    page, page_server, widget_origin, token_gateway, canned_api
):
    refused(page, page_server, widget_origin, token_gateway, "budget", 300)
    assert_error(
        page, "budget_exhausted", "Calls are paused on this site for now.", "try again later"
    )
    button = page.locator("retell-widget .retry")
    assert button.is_visible() and button.is_disabled()
    assert button.inner_text() == "Try again (5:00)"
    page.clock.run_for(299_000)
    assert button.is_disabled() and button.inner_text() == "Try again (0:01)"
    page.clock.run_for(1_000)
    assert button.is_enabled() and button.inner_text() == "Try again"
    button.click()
    run_clock_until(page, "error")
    assert canned_api.posts == 2


def test_just_over_five_minutes_is_long(page, page_server, widget_origin, token_gateway):
    refused(page, page_server, widget_origin, token_gateway, "budget", 301)
    assert not page.locator("retell-widget .retry").is_visible()
    assert text(page, "hint") == "Please try again later."


def test_callbacks_and_promise_carry_the_code(context, page_server, widget_origin, token_gateway):
    token_gateway.set_mode("full", retry_after=30)
    opts = {"agentId": "agent_a", "proxyEndpoint": token_gateway.endpoint}
    url = page_server.add(
        f"""<!doctype html><html lang="es"><head><meta charset="utf-8"></head><body>
<script src="{widget_origin}/v1/retell-widget.js"></script>
<script>window.errors = [];
window.widget = new RetellWidget({{...{json.dumps(opts)}, onError: (e) => errors.push(e)}});
</script></body></html>"""
    )
    page = new_page(context)
    open_widget(page, url)
    rejected = page.evaluate("widget.start().then(() => 'live', (e) => e)")
    expected = {"code": "busy", "message": "All lines are busy.", "retryAfter": 30}
    assert rejected == expected
    assert page.evaluate("errors") == [expected]
    assert {k: v for k, v in events(page, "error")[-1].items() if k != "type"} == expected
    # Spanish page, Spanish text; the API's own message is never shown.
    assert text(page, "msg") == "Todas las líneas están ocupadas."
    assert text(page, "hint") == "Vuelve a intentarlo en un minuto."
    assert page.locator("retell-widget .retry").inner_text() == "Reintentar (0:30)"


def test_the_real_gateways_refusals_reach_the_widget(
    page, page_server, widget_origin, token_gateway, redis
):
    """No canned answers: the app's own budget and cap refusals, as the widget sees them."""
    token_gateway.set_mode("ok")
    limits = f"widget:limits:{token_gateway.page_origin}"
    redis.hset(limits, "minutes_per_day", 0)  # paused for today
    page.clock.install()
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    page.locator("retell-widget .launch").click()
    run_clock_until(page, "error")
    assert_error(
        page, "budget_exhausted", "Calls are paused on this site for now.", "try again later"
    )
    assert events(page, "error")[-1]["retryAfter"] > 300  # until midnight UTC: no retry
    assert not page.locator("retell-widget .retry").is_visible()

    redis.hdel(limits, "minutes_per_day")
    redis.hset(limits, "max_concurrent", 0)  # no line free
    page.keyboard.press("Enter")  # close
    page.wait_for_function(f"{STATE} === 'idle'")
    page.locator("retell-widget .launch").click()
    run_clock_until(page, "error")
    assert_error(page, "busy", "All lines are busy.", "try again in a minute")
    assert events(page, "error")[-1]["retryAfter"] == 30
    assert token_gateway.requests == []  # neither refusal reached Retell
