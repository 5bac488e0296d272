"""The chat across pages and origins (issue 14): the token in sessionStorage, history from
the gateway, a token that no longer works, another origin's token, switching to a call,
verification, the API (openChat, send, endChat, destroy) and the hostile host page."""

from __future__ import annotations

import json

import pytest

from tests.widget.captchas import fake_captcha
from tests.widget.pages import (
    CHAT,
    SHADOW,
    STATE,
    chat_events,
    chat_page,
    entries,
    new_page,
    open_widget,
    shadow_focus,
    type_and_send,
    wait_chat,
    wait_entries,
)

pytestmark = pytest.mark.browser
STORED = "Object.entries(sessionStorage).filter(([k]) => k.startsWith('retell-widget:chat:'))"


def stored(page) -> dict | None:
    found = page.evaluate(STORED)
    return json.loads(found[0][1]) if found else None


def test_chat_survives_navigation_without_duplicates(
    page, page_server, widget_origin, chat_gateway
):
    opts = {"chatAgentId": "agent_chat_opening"}
    first = chat_page(page_server, widget_origin, chat_gateway, **opts)
    second = chat_page(page_server, widget_origin, chat_gateway, **opts)
    open_widget(page, first)
    page.locator("retell-widget .type").click()
    wait_entries(page, 1)  # the opening message
    type_and_send(page, "Where are you?")
    wait_entries(page, 3)
    saved = stored(page)
    assert saved["open"] is True and saved["token"]
    before = entries(page)

    page.goto(second)
    wait_chat(page, "ready")
    assert page.evaluate(STATE) == "chat"  # re-opened by itself, with the history
    assert entries(page) == before
    # No message is told twice: the new page hears only that the chat is back.
    assert chat_events(page) == [
        {"type": "chat-start", "chatId": chat_gateway.created()[0]["chat_id"], "resumed": True}
    ]
    assert shadow_focus(page) is None  # a page load never steals focus
    history = [r for r in page.requested if r.endswith("/api/chat/history")]
    assert len(history) == 1
    type_and_send(page, "Still here")
    wait_entries(page, 5)
    assert len(chat_gateway.created()) == 1  # one chat, across both pages

    # Minimised, it stays minimised on the next page, and comes back with its history.
    page.keyboard.press("Escape")
    page.wait_for_function(f"{STATE} === 'idle'")
    assert shadow_focus(page) == "type"
    assert stored(page)["open"] is False
    page.requested.clear()
    page.goto(first)
    page.wait_for_function(f"{STATE} === 'idle'")
    page.wait_for_timeout(300)
    assert page.evaluate(STATE) == "idle"
    assert not [u for u in page.requested if "/chat" in u]  # chat.js is not even fetched
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    assert [e[1] for e in entries(page)][-2:] == ["Still here", "You said: Still here"]
    assert len(entries(page)) == 5


def test_a_dead_token_is_dropped_silently(page, page_server, widget_origin, chat_gateway):
    url = chat_page(page_server, widget_origin, chat_gateway)
    open_widget(page, url)
    page.evaluate("widget.openChat()")
    token = stored(page)["token"]
    key = page.evaluate(STORED)[0][0]
    page.evaluate("widget.endChat()")
    assert stored(page) is None
    ends = [e for e in chat_gateway.fake.log if e["endpoint"] == "end-chat"]
    assert len(ends) == 1
    for bad in (token, token[:-4] + "AAAA", "garbage"):  # ended, altered, not a token at all
        saved = json.dumps({"token": bad, "open": True})
        page.evaluate("([k, v]) => sessionStorage.setItem(k, v)", [key, saved])
        page.reload()
        page.wait_for_function(f"{STATE} === 'idle'")
        page.wait_for_function(f"!({STORED}).length")
        assert page.evaluate(STATE) == "idle"
        assert page.locator("retell-widget .launch").is_visible()
        assert not chat_events(page)  # no error, no chat: the launcher, as on a first visit


def test_a_token_from_another_origin_is_refused(browser, page_server, widget_origin, chat_gateway):
    """sessionStorage is per origin, so a token moved by hand (or by script) is the only way
    another origin gets one: the gateway refuses it (403 chat_token_invalid)."""
    other = page_server.origin.replace("localhost", "127.0.0.1")
    chat_gateway.grant(other)  # allowlisted too: the refusal is readable there
    url = chat_page(page_server, widget_origin, chat_gateway)
    context = browser.new_context()
    try:
        page = new_page(context)
        open_widget(page, url)
        page.evaluate("widget.openChat()")
        key, value = page.evaluate(STORED)[0]
        token = json.loads(value)["token"]

        there = new_page(context)
        there.goto(url.replace(page_server.origin, other))
        there.wait_for_function(f"{STATE} === 'idle'")
        answers = []
        there.on("response", lambda r: "/api/chat/" in r.url and answers.append(
            (r.url.rsplit("/", 1)[-1], r.status)))  # fmt: skip
        there.evaluate("([k, v]) => sessionStorage.setItem(k, v)", [key, value])
        there.reload()
        there.wait_for_function(f"!({STORED}).length")
        assert there.evaluate(STATE) == "idle"
        assert ("history", 403) in answers
        refused = there.evaluate(
            """async ([base, token]) => {
          const r = await fetch(base + '/messages', { method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ chat_token: token, content: 'hi' }) });
          return [r.status, (await r.json()).error];
        }""",
            [chat_gateway.endpoint, token],
        )
        assert refused == [403, "chat_token_invalid"]
        assert chat_gateway.turns() == []
    finally:
        context.close()


def test_call_from_a_live_chat_and_back(
    page, page_server, widget_origin, chat_gateway, fake_gateway
):
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    type_and_send(page, "Can I call?")
    wait_entries(page, 2)
    page.locator("retell-widget .c-voice").click()
    page.wait_for_function(f"{STATE} === 'live'", timeout=15000)
    assert page.locator("retell-widget .chat").is_hidden()
    assert stored(page)["open"] is False  # a navigation during the call does not pop it up
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")
    page.locator("retell-widget .close").click()
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    assert [e[1] for e in entries(page)] == ["Can I call?", "You said: Can I call?"]
    assert len(chat_gateway.created()) == 1
    # And opening the chat during a call ends the call first: one panel at a time.
    page.evaluate("widget.start()")
    page.evaluate("widget.openChat()")
    assert page.evaluate(STATE) == "chat"
    assert page.evaluate("__probe.events.filter((e) => e.type === 'call-end').length") == 2


def test_api_events_and_callbacks(page, page_server, widget_origin, chat_gateway):
    url = page_server.add(
        f"""<!doctype html><html><body><script src="{widget_origin}/v1/retell-widget.js"></script>
<script>window.calls = [];
window.widget = new RetellWidget({{
  proxyEndpoint: '{chat_gateway.proxy_endpoint}', chatAgentId: 'agent_chat_echo', mode: 'chat',
  metadata: {{ page: 'pricing' }}, dynamicVariables: {{ customer_name: 'Ada' }},
  onChatStart: (d) => {{ calls.push(['start', d.chatId]); throw new Error('host bug'); }},
  onMessage: (d) => calls.push(['message', d.role, d.content]),
  onChatEnd: (d) => calls.push(['end', d.reason]),
  onError: (e) => calls.push(['error', e.code]) }});</script></body></html>"""
    )
    open_widget(page, url)
    started = page.evaluate("widget.openChat()")
    assert started["chatId"].startswith("chat_")
    assert page.evaluate("widget.openChat()") == started  # already open: the same chat
    assert page.evaluate("widget.send('  ').catch((e) => e.code)") == "empty"
    assert page.evaluate("widget.send('x'.repeat(2001)).catch((e) => e.code)") == "too_long"
    assert page.evaluate("widget.send('hi')") == [{"role": "agent", "content": "You said: hi"}]
    page.evaluate("widget.endChat()")
    assert page.evaluate("widget.send('again')") == [
        {"role": "agent", "content": "You said: again"}
    ]  # sending after the end starts a new chat
    assert any("onChatStart threw" in line for line in page.console_lines)
    calls = page.evaluate("calls")
    assert calls[0] == ["start", started["chatId"]]
    assert calls[1:4] == [["message", "user", "hi"], ["message", "agent", "You said: hi"],
                          ["end", "ended"]]  # fmt: skip
    assert [c[0] for c in calls[4:]] == ["start", "message", "message"]
    created = chat_gateway.created()
    assert len(created) == 2
    chat = chat_gateway.fake.get_chat(created[0]["chat_id"])
    assert chat["metadata"]["page"] == "pricing"
    assert chat["retell_llm_dynamic_variables"] == {"customer_name": "Ada"}
    assert chat["chat_status"] == "ended"

    # destroy(): every node goes, the chat is kept for a widget that comes next in this tab.
    page.evaluate("widget.destroy()")
    assert page.evaluate("document.querySelectorAll('retell-widget').length") == 0
    assert stored(page) is not None
    page.evaluate(
        f"window.widget = new RetellWidget({{proxyEndpoint: '{chat_gateway.proxy_endpoint}',"
        " chatAgentId: 'agent_chat_echo', mode: 'chat'})"
    )
    wait_chat(page, "ready")
    assert [e[1] for e in entries(page)] == ["again", "You said: again"]


def test_data_attributes(page, page_server, widget_origin, chat_gateway):
    url = page_server.add(
        f"""<!doctype html><html lang="en"><head>
<script src="{widget_origin}/v1/retell-widget.js" async
  data-chat-endpoint="{chat_gateway.endpoint}" data-chat-agent-id="agent_chat_opening"
  data-mode="chat" data-theme="dark" data-position="top-left"></script></head>
<body><h1>Zero-JS chat</h1></body></html>"""
    )
    open_widget(page, url)
    assert page.locator("retell-widget").get_attribute("data-mode") == "chat"
    page.locator("retell-widget .launch").click()
    wait_chat(page, "ready")
    box = page.locator("retell-widget .chat").bounding_box()
    assert box["x"] < 40 and box["y"] < 40
    assert chat_gateway.created()[-1]["agent_id"] == "agent_chat_opening"


def test_start_refusals(page, page_server, widget_origin, chat_gateway, redis):
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_not_granted")
    open_widget(page, url)
    code = page.evaluate("widget.openChat().then(() => 'ok', (e) => e.code)")
    assert code == "not_allowed"
    assert page.evaluate(CHAT) == "error"
    msg = page.locator("retell-widget .c-msg").inner_text()
    assert msg == "Chat is not enabled for this page."
    type_and_send(page, "hello?")  # Enter tries to start again, and gives the text back
    page.wait_for_function("__probe.events.filter((e) => e.type === 'error').length === 2")
    assert page.locator("retell-widget .chat textarea").input_value() == "hello?"
    chat_gateway.grant(chat_gateway.calls.page_origin, "agent_not_granted")
    page.locator("retell-widget .c-again").click()  # retry, now granted
    wait_chat(page, "ready")

    redis.delete("widget:origins")  # not allowlisted: no CORS, the browser sees nothing
    page = new_page(page.context)
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    assert page.evaluate("widget.openChat().catch((e) => e.code)") == "unreachable"
    assert (
        page.locator("retell-widget .c-msg")
        .inner_text()
        .startswith("This site is not set up for chat")
    )


def test_verification_before_a_chat(page, page_server, widget_origin, verifying, chat_gateway):
    gateway = verifying("pow")
    chat_gateway.grant(gateway.page_origin)
    page.chat_posts = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/api/chat")
            and page.chat_posts.append(r.post_data_json))  # fmt: skip
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    assert [u for u in page.requested if u.endswith("/v1/verify.js")]
    assert "verification" not in page.chat_posts[0]
    assert page.chat_posts[-1]["verification"]  # the solved proof of work
    assert len(chat_gateway.created()) == 1
    type_and_send(page, "verified")
    wait_entries(page, 2)


def test_a_captcha_before_a_chat_sits_in_the_chat_panel(
    page, page_server, widget_origin, verifying, siteverify, chat_gateway
):
    gateway = verifying("turnstile")
    chat_gateway.grant(gateway.page_origin)
    fake_captcha(page, "turnstile", [siteverify.issue("turnstile", hostname="localhost")], "click")
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.locator("retell-widget .type").click()
    challenge = page.locator("retell-widget > [slot=verify] button")
    challenge.wait_for()
    assert page.evaluate(CHAT) == "verifying"
    assert page.evaluate(
        "document.querySelector('retell-widget > [slot=verify]').assignedSlot.closest('.chat')"
        " !== null"
    )
    challenge.click()
    wait_chat(page, "ready")
    assert page.locator("retell-widget > [slot=verify]").count() == 0  # cleaned up
    assert page.evaluate(f"{SHADOW}.querySelectorAll('slot').length") == 0
    assert len(chat_gateway.created()) == 1


def test_hostile_host_stylesheet(page, page_server, widget_origin, chat_gateway, shoot):
    hostile = """<style>
* { all: unset !important; }
html { font-size: 64px !important; }
body * { display: none !important; color: red !important; font-size: 80px !important; }
button, div, span, p, textarea, section, form { background: lime !important;
  letter-spacing: 9px !important; }
retell-widget { position: absolute !important; opacity: .1 !important; }
</style>"""
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway, head=hostile))
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    type_and_send(page, "Styled?")
    wait_entries(page, 2)
    style = page.evaluate(
        f"""(() => {{ const r = {SHADOW}; const css = (s) => getComputedStyle(r.querySelector(s));
        return [css('textarea').fontSize, css('textarea').letterSpacing,
                css('.entry[data-role=user]').backgroundColor, css('.chat').backgroundColor,
                getComputedStyle(document.querySelector('retell-widget')).opacity]; }})()"""
    )
    assert style == ["15px", "normal", "rgb(124, 58, 237)", "rgb(255, 255, 255)", "1"]
    box = page.locator("retell-widget .chat").bounding_box()
    vp = page.viewport_size
    assert box["x"] + box["width"] <= vp["width"] and box["y"] + box["height"] <= vp["height"]
    shoot(page, "chat-hostile-page")
