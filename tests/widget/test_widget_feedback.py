"""Feedback after a call (issue 17): feedback.js + feedback.css in real Chromium, posting
through the real gateway (POST /api/feedback, real Redis, fake Retell): the form in the ended
panel, thumbs and comment posted once, stored on the call and on the usage stream, refusals
in the page's language, retry, headless widget.feedback(), no form unless asked for, and the
form gone with the state."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.widget.pages import SHADOW, STATE, go_live, open_widget, seed_page, text

pytestmark = pytest.mark.browser

FORM = f"{SHADOW}.querySelector('.feedback')"


def feedback_page(page_server, widget_origin, gateway, **options):
    return seed_page(page_server, widget_origin, gateway.endpoint, feedback=True, **options)


def end_call(page):
    """A live call, hung up: the ended panel with the form in it."""
    go_live(page)
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")
    return page.evaluate("widget.callId")


def form_shown(page):
    page.locator("retell-widget .feedback textarea").wait_for(state="visible")


def pressed(page):
    return page.evaluate(
        f"[...{FORM}.querySelectorAll('[aria-pressed]')].map((b) => b.getAttribute('aria-pressed'))"
    )


def feedback_entries(usage_entries) -> list[dict]:
    return [e for e in usage_entries() if e["kind"] == "feedback"]


def post_directly(gateway, call_id, rating="up"):
    """Feedback for the call from elsewhere (another tab, say), through the same gateway."""
    url = gateway.endpoint.replace("/create-web-call", "/feedback")
    body = json.dumps({"call_id": call_id, "rating": rating}).encode()
    headers = {"Origin": gateway.page_origin, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_thumbs_and_comment_post_once_and_thank(
    page, page_server, widget_origin, token_gateway, redis, usage_entries, shoot
):
    open_widget(page, feedback_page(page_server, widget_origin, token_gateway))
    assert not [u for u in page.requested if "/feedback." in u]  # nothing before a call ends
    call_id = end_call(page)
    form_shown(page)
    assert text(page, "msg") == "Call ended"
    assert page.locator("retell-widget .feedback p").first.inner_text() == "How was this call?"
    up = page.get_by_role("button", name="Good")
    down = page.get_by_role("button", name="Bad")
    send = page.get_by_role("button", name="Send")
    comment = page.get_by_label("Comment (optional)")
    assert comment.get_attribute("maxlength") == "1000"
    assert pressed(page) == ["false", "false"] and send.is_disabled()
    assert "How was this call?" in page.locator("retell-widget .sr").inner_text()
    # Toggles: one at a time, and a second press takes it back.
    up.click()
    assert pressed(page) == ["true", "false"] and send.is_enabled()
    down.click()
    assert pressed(page) == ["false", "true"]
    down.click()
    assert pressed(page) == ["false", "false"] and send.is_disabled()
    down.click()
    comment.fill("The agent could not find my order.   ")  # sent trimmed
    shoot(page, "feedback-form", docs=True)
    send.click()
    page.locator("retell-widget .feedback").get_by_text("Thanks for your feedback!").wait_for()
    assert page.evaluate(f"{FORM}.querySelectorAll('button, textarea').length") == 0
    assert "Thanks for your feedback!" in page.locator("retell-widget .sr").inner_text()
    shoot(page, "feedback-thanks", docs=True)

    # Stored on the call, once, and on the usage stream.
    record = redis.hgetall(f"widget:call:{call_id}")
    assert (record["feedback"], record["feedback_comment"]) == (
        "down",
        "The agent could not find my order.",
    )
    [entry] = feedback_entries(usage_entries)
    assert (entry["outcome"], entry["status"], entry["call_id"]) == ("accepted", "201", call_id)
    assert (entry["rating"], entry["origin"]) == ("down", token_gateway.page_origin)

    # A second send (the page's own, say) is refused: the call has its feedback.
    got = page.evaluate("widget.feedback('up').then(() => 'sent', (e) => [e.code, e.message])")
    assert got[0] == "feedback_exists" and got[1]
    assert redis.hget(f"widget:call:{call_id}", "feedback") == "down"
    assert len(feedback_entries(usage_entries)) == 2  # that attempt was recorded, and refused
    # The thanks stays; no error on the console but the browser's own for the 409 (and a
    # missing favicon).
    assert text(page, "feedback") == "Thanks for your feedback!"
    errors = [line for line in page.console_lines if line.startswith("error")]
    assert all("Failed to load resource" in line for line in errors), errors


def test_feedback_given_elsewhere_is_refused_in_the_pages_language(
    page, page_server, widget_origin, token_gateway, redis
):
    open_widget(page, feedback_page(page_server, widget_origin, token_gateway, lang="de"))
    call_id = end_call(page)
    form_shown(page)
    assert page.locator("retell-widget .feedback p").first.inner_text() == "Wie war dieser Anruf?"
    assert post_directly(token_gateway, call_id, "up") == 201
    page.get_by_role("button", name="Schlecht").click()
    page.get_by_role("button", name="Senden").focus()
    page.keyboard.press("Enter")
    refused = "Dieser Anruf hat schon Feedback."
    page.locator("retell-widget .feedback").get_by_text(refused).wait_for()
    # Nothing left to send: the form goes, focus moves on to "Call again".
    assert page.evaluate(f"{FORM}.querySelectorAll('button, textarea').length") == 0
    assert page.evaluate(f"{SHADOW}.activeElement?.className") == "retry"
    assert refused in page.locator("retell-widget .sr").inner_text()
    assert redis.hget(f"widget:call:{call_id}", "feedback") == "up"


def test_a_failed_send_can_be_tried_again(
    page, page_server, widget_origin, token_gateway, redis, shoot
):
    open_widget(page, feedback_page(page_server, widget_origin, token_gateway, theme="dark"))
    call_id = end_call(page)
    form_shown(page)
    # The first attempt does not reach the gateway (the network drops it).
    seen = []

    def drop_once(route):
        seen.append(route.request.post_data_json)
        return route.abort() if len(seen) == 1 else route.fallback()

    page.route("**/api/feedback", drop_once)
    page.get_by_role("button", name="Good").click()
    page.get_by_label("Comment (optional)").fill("Great")
    page.get_by_role("button", name="Send").click()
    failed = "Your feedback was not sent."
    page.locator("retell-widget .feedback").get_by_text(failed).wait_for()
    assert failed in page.locator("retell-widget .sr").inner_text()
    shoot(page, "feedback-error")
    send = page.get_by_role("button", name="Send")
    assert send.is_enabled() and pressed(page) == ["true", "false"]
    send.click()
    page.locator("retell-widget .feedback").get_by_text("Thanks for your feedback!").wait_for()
    assert seen == [{"call_id": call_id, "rating": "up", "comment": "Great"}] * 2
    assert redis.hget(f"widget:call:{call_id}", "feedback") == "up"


def test_rate_limited_keeps_the_form(page, page_server, widget_origin, token_gateway, redis):
    token_gateway.set_mode("ok", RATE_LIMIT_FEEDBACK_PER_IP="1 per minute")
    open_widget(page, feedback_page(page_server, widget_origin, token_gateway, lang="fr"))
    call_id = end_call(page)
    form_shown(page)
    assert post_directly(token_gateway, "call_someone_else") == 404  # spends the allowance
    got = page.evaluate("widget.feedback('up').then(() => 'sent', (e) => [e.code, e.retryAfter])")
    assert got[0] == "rate_limited" and got[1] >= 1
    page.locator("retell-widget .feedback").get_by_text("Votre avis n’a pas été envoyé.").wait_for()
    assert page.get_by_role("button", name="Envoyer").count() == 1  # may be tried again later
    assert redis.hget(f"widget:call:{call_id}", "feedback") is None


def test_headless_page_sends_its_own_feedback(
    page, page_server, widget_origin, token_gateway, redis, usage_entries
):
    url = seed_page(page_server, widget_origin, token_gateway.endpoint, ui=False)
    page.goto(url)
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate("widget.start().then(() => 'live')") == "live"
    page.evaluate("widget.stop()")
    page.wait_for_function(f"{STATE} === 'ended'")
    call_id = page.evaluate("widget.callId")
    assert page.evaluate("widget.feedback('up', 'Quick and clear').then(() => 'sent')") == "sent"
    record = redis.hgetall(f"widget:call:{call_id}")
    assert (record["feedback"], record["feedback_comment"]) == ("up", "Quick and clear")
    assert feedback_entries(usage_entries)[-1]["outcome"] == "accepted"
    # A refusal comes back as {code, message}.
    again = page.evaluate("widget.feedback('down').catch((e) => [e.code, typeof e.message])")
    assert again == ["feedback_exists", "string"]
    # Nothing drawn, no stylesheet fetched.
    assert page.evaluate(f"{FORM}") is None
    assert not [u for u in page.requested if "/feedback.css" in u]


def test_a_bad_rating_is_the_gateways_400(page, page_server, widget_origin, token_gateway):
    url = seed_page(page_server, widget_origin, token_gateway.endpoint, ui=False)
    page.goto(url)
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate("widget.start().then(() => 'live')") == "live"
    page.evaluate("widget.stop()")
    got = page.evaluate("widget.feedback('sideways').catch((e) => [e.code, e.message])")
    assert got == ["invalid", "rating must be up or down"]


def test_no_form_unless_the_site_asks(page, page_server, widget_origin, token_gateway):
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    go_live(page)
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")
    page.wait_for_timeout(500)
    assert page.evaluate(f"{FORM}") is None
    assert not [u for u in page.requested if "/feedback." in u]


def test_the_form_goes_with_the_state(page, page_server, widget_origin, token_gateway, redis):
    open_widget(page, feedback_page(page_server, widget_origin, token_gateway))
    end_call(page)
    form_shown(page)
    page.get_by_role("button", name="Good").click()
    page.locator("retell-widget .close").click()  # closed unanswered
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate(f"{FORM}") is None
    # A new call: its own form, once, with nothing carried over from the last one.
    second = end_call(page)
    form_shown(page)
    assert page.evaluate(f"{SHADOW}.querySelectorAll('.feedback').length") == 1
    assert pressed(page) == ["false", "false"]
    page.locator("retell-widget .retry").click()  # "Call again" takes it away at once
    assert page.evaluate(f"{FORM}") is None
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    page.evaluate("widget.stop()")
    third = page.evaluate("widget.callId")
    form_shown(page)
    page.get_by_role("button", name="Good").click()
    page.get_by_role("button", name="Send").click()
    page.locator("retell-widget .feedback").get_by_text("Thanks for your feedback!").wait_for()
    assert redis.hget(f"widget:call:{third}", "feedback") == "up"
    assert redis.hget(f"widget:call:{second}", "feedback") is None
