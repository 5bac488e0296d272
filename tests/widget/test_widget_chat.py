"""Text chat (issue 14) in real Chromium against the real app, a real Redis and the fake
Retell's chat agents: the launchers, the panel, sending, the log, errors and retries."""

from __future__ import annotations

import pytest

from devtools.fakes.retell_chat import MARKUP, OPENING
from tests.widget.pages import (
    SHADOW,
    STATE,
    assert_error,
    chat_events,
    chat_page,
    entries,
    open_widget,
    text,
    type_and_send,
    wait_chat,
    wait_entries,
)

pytestmark = pytest.mark.browser
TEXTAREA = "retell-widget .chat textarea"
FOCUSED_TAG = (
    "document.activeElement?.shadowRoot?.activeElement?.tagName ?? document.activeElement.tagName"
)


def test_chat_from_the_hybrid_launcher(page, page_server, widget_origin, chat_gateway, shoot):
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    assert text(page, "launch") == "Talk to our AI agent"
    assert text(page, "type") == "Type instead"
    assert not [u for u in page.requested if "/chat" in u]  # nothing fetched before the click
    shoot(page, "chat-hybrid-launcher", docs=True)
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    assert page.evaluate(STATE) == "chat"
    assert page.evaluate(FOCUSED_TAG) == "TEXTAREA"
    assert page.locator("retell-widget .panel").is_hidden()
    assert not page.locator("retell-widget .launch").is_visible()
    # chat.js and chat.css came from beside the loader; no other engine was fetched.
    assert [u for u in page.requested if u.startswith(widget_origin) and "/chat" in u] == [
        f"{widget_origin}/v1/chat.js",
        f"{widget_origin}/v1/chat.css",
    ]
    assert not [u for u in page.requested if "engine-" in u]
    type_and_send(page, "Hello there")
    wait_entries(page, 2)
    assert entries(page) == [["user", "Hello there"], ["agent", "You said: Hello there"]]
    assert chat_gateway.turns() == ["Hello there"]
    assert page.locator(TEXTAREA).input_value() == ""
    kinds = [(e["type"], e.get("role")) for e in chat_events(page)]
    assert kinds == [("chat-start", None), ("message", "user"), ("message", "agent")]
    body = chat_gateway.created()[-1]
    assert body["agent_id"] == "agent_chat_echo"
    shoot(page, "chat-panel")


def test_chat_only_mode_has_one_launcher_and_no_call(
    page, page_server, widget_origin, chat_gateway, fake_gateway
):
    url = chat_page(page_server, widget_origin, chat_gateway, mode="chat",
                    chatAgentId="agent_chat_opening")  # fmt: skip
    open_widget(page, url)
    assert text(page, "launch") == "Chat with our AI agent"
    assert not page.locator("retell-widget .type").is_visible()
    page.locator("retell-widget .launch").hover()  # prefetches the chat, not a call engine
    page.locator("retell-widget .launch").click()
    wait_chat(page, "ready")
    assert entries(page) == [["agent", OPENING]]  # the opening message, from POST /api/chat
    assert chat_events(page, "message") == [
        {"type": "message", "role": "agent", "content": OPENING}
    ]
    assert not page.locator("retell-widget .c-voice").is_visible()
    assert not [u for u in page.requested if "engine-" in u]
    assert not fake_gateway.requests_for("POST")


def test_type_instead_after_the_microphone_is_blocked(
    denying_browser, page_server, widget_origin, chat_gateway, shoot
):
    url = chat_page(page_server, widget_origin, chat_gateway)
    context = denying_browser.new_context()
    try:
        from tests.widget.pages import new_page

        page = new_page(context)
        open_widget(page, url)
        page.locator("retell-widget .launch").click()
        assert_error(page, "mic_denied", "Microphone access was blocked.", "Allow the microphone")
        alt = page.locator("retell-widget .alt")
        assert alt.is_visible() and alt.inner_text() == "Type instead"
        shoot(page, "chat-mic-denied-type-instead", docs=True)
        alt.click()
        wait_chat(page, "ready")
        type_and_send(page, "No microphone here")
        wait_entries(page, 2)
        assert entries(page)[-1] == ["agent", "You said: No microphone here"]
    finally:
        context.close()


def test_no_microphone_offers_typing_and_a_voice_only_widget_does_not(
    context, page_server, widget_origin, chat_gateway
):
    from tests.widget.pages import new_page, seed_page

    context.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));"
    )
    page = new_page(context)
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'error'")
    assert page.locator("retell-widget .alt").is_visible()
    page.locator("retell-widget .alt").click()
    wait_chat(page, "ready")

    page = new_page(context)  # the seed's snippet: voice only, exactly as before
    open_widget(page, seed_page(page_server, widget_origin, chat_gateway.proxy_endpoint))
    assert not page.locator("retell-widget .type").is_visible()
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"{STATE} === 'error'")
    assert not page.locator("retell-widget .alt").is_visible()


def test_agent_markup_stays_text(page, page_server, widget_origin, chat_gateway):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_chat_markup")
    open_widget(page, url)
    page.evaluate("widget.openChat()")
    wait_chat(page, "ready")
    replies = page.evaluate("widget.send('<b>mine</b> too')")
    assert replies == [{"role": "agent", "content": MARKUP}]
    assert entries(page) == [["user", "<b>mine</b> too"], ["agent", MARKUP]]
    made = page.evaluate(f"[...{SHADOW}.querySelectorAll('.chat .entry *')].map((e) => e.tagName)")
    assert set(made) == {"SPAN"}  # the speaker's name and the text: nothing else
    assert page.evaluate("document.querySelectorAll('img, script[src=x], a[href*=x]').length") == 0
    page.wait_for_timeout(200)
    assert dialogs == []


def test_tool_calls_never_reach_the_page(page, page_server, widget_origin, chat_gateway):
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_chat_tools")
    open_widget(page, url)
    page.evaluate("widget.openChat()")
    assert page.evaluate("widget.send('find it')") == [
        {"role": "agent", "content": "You said: find it"}
    ]
    assert entries(page) == [["user", "find it"], ["agent", "You said: find it"]]


def test_typing_indicator_and_a_slow_agent(page, page_server, widget_origin, chat_gateway, shoot):
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_chat_slow")
    open_widget(page, url)
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    type_and_send(page, "Take your time")
    wait_chat(page, "sending")
    typing = page.locator("retell-widget .chat .entry.typing")
    assert typing.is_visible() and typing.locator(".text").inner_text() == "Agent is typing…"
    # The typing line is outside the live part of the log: it is never read out.
    assert (
        page.evaluate(
            f"{SHADOW}.querySelector('.entry.typing').parentElement.getAttribute('aria-live')"
        )
        == "off"
    )
    assert page.locator("retell-widget .c-send").is_disabled()
    shoot(page, "chat-typing", docs=True)
    # The visitor may type the next message meanwhile; Enter does not send it yet.
    type_and_send(page, "and another")
    assert page.locator(TEXTAREA).input_value() == "and another"
    wait_chat(page, "ready", timeout=10000)
    assert not typing.count()
    assert entries(page) == [["user", "Take your time"], ["agent", "You said: Take your time"]]
    page.locator(TEXTAREA).press("Enter")
    wait_entries(page, 4)
    assert chat_gateway.turns() == ["Take your time", "and another"]


def test_failed_send_keeps_the_text_and_retry_sends_it(
    page, page_server, widget_origin, chat_gateway
):
    chat_gateway.grant(chat_gateway.calls.page_origin, "agent_chat_flaky")
    chat_gateway.fake.set_agent("agent_chat_flaky", fail="error", status=500, on="completion")
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_chat_flaky")
    open_widget(page, url)
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    type_and_send(page, "Please answer")
    wait_chat(page, "failed")
    assert entries(page) == [["user", "Please answer"]]
    failed = page.locator("retell-widget .chat .entry[data-failed]")
    assert failed.get_attribute("data-failed") == "Not sent"
    assert text(page, "c-msg") == "Your message was not sent."
    assert "Your message was not sent." in text(page, "sr")
    err = chat_events(page, "error")[-1]
    assert err["code"] == "send_failed" and err["chat"] is True
    # Then the network drops the next try outright: still kept, still retryable.
    chat_gateway.fake.set_agent("agent_chat_flaky")
    page.route("**/api/chat/messages", lambda route: route.abort(), times=1)
    page.locator("retell-widget .c-again").click()
    page.wait_for_function("__probe.events.filter((e) => e.type === 'error').length === 2")
    wait_chat(page, "failed")
    assert failed.count() == 1 and entries(page) == [["user", "Please answer"]]
    page.locator("retell-widget .c-again").click()
    wait_entries(page, 2)
    assert entries(page) == [["user", "Please answer"], ["agent", "You said: Please answer"]]
    assert not failed.count() and page.locator("retell-widget .c-note").is_hidden()
    assert chat_gateway.turns() == ["Please answer", "Please answer"]  # the 500 one, then this


def test_a_slow_upstream_times_out_and_retry_works(page, page_server, widget_origin, chat_gateway):
    chat_gateway.set_mode("ok", CHAT_READ_TIMEOUT="1")
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_chat_slow")
    open_widget(page, url)
    page.evaluate("widget.openChat()")
    code = page.evaluate("widget.send('hello?').then(() => 'ok', (e) => e.code)")
    assert code == "timeout"
    assert text(page, "c-msg") == "The agent took too long to answer."
    chat_gateway.fake.set_agent("agent_chat_slow")  # now answers at once
    page.locator("retell-widget .c-again").click()
    wait_entries(page, 2)
    assert entries(page)[-1] == ["agent", "You said: hello?"]


def test_message_rate_limit_waits_for_retry_after(page, page_server, widget_origin, chat_gateway):
    chat_gateway.set_mode("ok", CHAT_MESSAGES_PER_MINUTE="1")
    page.clock.install()
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.evaluate("widget.openChat()")
    page.evaluate("widget.send('one')")
    code = page.evaluate("widget.send('two').then(() => 'ok', (e) => [e.code, e.retryAfter])")
    assert code[0] == "rate_limited" and 1 <= code[1] <= 60
    assert text(page, "c-msg") == "Too many messages right now."
    assert f"Please try again in {code[1]} seconds." in text(page, "chat .hint")
    again = page.locator("retell-widget .c-again")
    assert again.is_disabled()
    page.clock.run_for(code[1] * 1000 + 100)
    assert again.is_enabled()
    assert text(page, "sr") == "You can try again now."


def test_message_cap_ends_the_chat_and_keeps_the_text(
    page, page_server, widget_origin, chat_gateway
):
    chat_gateway.set_mode("ok", CHAT_MAX_MESSAGES="1")
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    type_and_send(page, "first")
    wait_entries(page, 2)
    type_and_send(page, "second")
    wait_chat(page, "ended")
    assert text(page, "c-msg") == "This chat has reached its message limit."
    assert page.locator(TEXTAREA).input_value() == "second"  # kept for a new chat
    end = chat_events(page, "chat-end")[-1]
    assert end["reason"] == "limit" and end["chatId"].startswith("chat_")
    assert page.evaluate("sessionStorage.length") == 0
    page.locator("retell-widget .c-again").click()  # New chat
    wait_chat(page, "ready")
    assert entries(page) == []
    page.locator(TEXTAREA).press("Enter")
    wait_entries(page, 2)
    assert entries(page) == [["user", "second"], ["agent", "You said: second"]]
    assert len(chat_gateway.created()) == 2


def test_a_chat_that_cannot_go_on(page, page_server, widget_origin, chat_gateway, redis):
    """Its token expired mid-chat (403 chat_token_expired), or the site's chat agent was
    revoked (403 agent_not_allowed): the chat ends, what the visitor typed is kept."""
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    expired = '{"error": "chat_token_expired", "message": "This chat has expired."}'
    cors = {"Access-Control-Allow-Origin": chat_gateway.calls.page_origin}
    answer = {"status": 403, "body": expired, "content_type": "application/json", "headers": cors}
    page.route("**/api/chat/messages", lambda route: route.fulfill(**answer), times=1)
    type_and_send(page, "Are you there?")
    wait_chat(page, "ended")
    assert text(page, "c-msg") == "This chat has expired."
    assert page.locator(TEXTAREA).input_value() == "Are you there?"
    assert chat_events(page, "chat-end")[-1]["reason"] == "expired"
    page.locator("retell-widget .c-again").click()
    wait_chat(page, "ready")

    redis.srem(f"widget:chat-agents:{chat_gateway.calls.page_origin}", "agent_chat_echo")
    page.locator(TEXTAREA).press("Enter")
    wait_chat(page, "ended")
    assert text(page, "c-msg") == "Chat is not enabled for this page."
    assert chat_events(page, "chat-end")[-1]["reason"] == "not_allowed"
