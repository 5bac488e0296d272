"""The chat panel for everyone (issue 14): keyboard only, four languages, the themes, and
axe-core over every chat state (the same check as test_widget_a11y.py: no serious or
critical finding, no "needs review", no rule fixed once)."""

from __future__ import annotations

import pytest

from tests.widget.pages import (
    CHAT,
    SHADOW,
    STATE,
    chat_page,
    entries,
    new_page,
    open_widget,
    shadow_focus,
    text,
    type_and_send,
    wait_chat,
    wait_entries,
)
from tests.widget.test_widget_a11y import check

pytestmark = pytest.mark.browser
FOCUSED = (
    "(() => { const a = document.activeElement?.shadowRoot?.activeElement;"
    " return a ? (a.className || a.tagName) : null; })()"
)


def focused(page):
    return page.evaluate(FOCUSED)


def test_keyboard_only(page, page_server, widget_origin, chat_gateway):
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    for _ in range(4):  # past the host page's link
        page.keyboard.press("Tab")
        if shadow_focus(page) == "launch":
            break
    page.keyboard.press("Tab")
    assert focused(page) == "type"
    page.keyboard.press("Enter")
    wait_chat(page, "ready")
    assert focused(page) == "TEXTAREA"
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    page.keyboard.press("Enter")
    wait_entries(page, 2)
    assert entries(page)[0] == ["user", "line one\nline two"]
    assert focused(page) == "TEXTAREA"
    # Tab order: the input, send, end chat, call; back: the log (it scrolls), minimise.
    order = []
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(focused(page))
    assert order == ["c-send", "c-end", "c-voice"]
    for _ in range(3):
        page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "log"
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "c-min"
    # Escape minimises to the launcher the visitor came from; Enter brings the chat back.
    page.keyboard.press("Escape")
    page.wait_for_function(f"{STATE} === 'idle'")
    assert focused(page) == "type"
    page.keyboard.press("Enter")
    page.wait_for_function(f"{STATE} === 'chat'")
    assert focused(page) == "TEXTAREA" and len(entries(page)) == 2
    # End the chat from the keyboard, then start a new one.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert focused(page) == "c-end"
    page.keyboard.press("Enter")
    wait_chat(page, "ended")
    assert focused(page) == "c-again" and text(page, "c-again") == "New chat"
    assert text(page, "c-msg") == "The chat has ended."
    page.keyboard.press("Enter")
    wait_chat(page, "ready")
    assert focused(page) == "TEXTAREA" and entries(page) == []


STRINGS = {
    "es": ("Prefiero escribir", "Agente de chat IA", "Escribe un mensaje…", "Enviar",
           "Terminar chat", "El chat no está activado en esta página."),
    "fr": ("Écrire plutôt", "Agent de chat IA", "Écrivez un message…", "Envoyer",
           "Terminer le chat", "Le chat n’est pas activé sur cette page."),
    "de": ("Lieber schreiben", "KI-Chat-Agent", "Nachricht schreiben…", "Senden",
           "Chat beenden", "Der Chat ist auf dieser Seite nicht aktiviert."),
}  # fmt: skip


@pytest.mark.parametrize("lang", ["es", "fr", "de"])
def test_languages(page, page_server, widget_origin, chat_gateway, lang):
    type_label, title, placeholder, send, end, not_allowed = STRINGS[lang]
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway, lang=lang))
    assert text(page, "type") == type_label
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    assert text(page, "c-title") == title
    assert page.locator("retell-widget .chat").get_attribute("aria-label") == title
    box = page.locator("retell-widget .chat textarea")
    assert box.get_attribute("placeholder") == placeholder
    assert page.locator("retell-widget .c-send").get_attribute("aria-label") == send
    assert text(page, "c-end") == end
    page = new_page(page.context)
    url = chat_page(page_server, widget_origin, chat_gateway, lang=lang, chatAgentId="agent_x")
    open_widget(page, url)
    page.evaluate("widget.openChat().catch(() => {})")
    wait_chat(page, "error")
    assert text(page, "c-msg") == not_allowed


def test_labels_override_chat_strings(page, page_server, widget_origin, chat_gateway):
    labels = {"type": "Write to us", "chat_title": "Acme support", "send": "Go"}
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway, labels=labels))
    assert text(page, "type") == "Write to us"
    page.locator("retell-widget .type").click()
    wait_chat(page, "ready")
    assert text(page, "c-title") == "Acme support"
    assert page.locator("retell-widget .c-send").get_attribute("aria-label") == "Go"


# -- axe over every chat state --------------------------------------------------------------


def test_axe_chat_states(page, page_server, widget_origin, chat_gateway):
    chat_gateway.grant(chat_gateway.calls.page_origin, "agent_chat_flaky")
    chat_gateway.fake.set_agent("agent_chat_flaky", delay=1.5)
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_chat_flaky")
    release = []
    page.route("**/api/chat", lambda route: release.append(route))  # hold the start
    open_widget(page, url)
    check(page, "idle")  # the hybrid launcher
    page.locator("retell-widget .type").click()
    wait_chat(page, "starting")
    check(page, "chat")
    while not release:
        page.wait_for_timeout(20)
    release[0].continue_()
    wait_chat(page, "ready")
    check(page, "chat")
    type_and_send(page, "First")
    wait_chat(page, "sending")
    check(page, "chat")  # the typing indicator
    wait_entries(page, 2)
    chat_gateway.fake.set_agent("agent_chat_flaky", fail="error", status=500, on="completion")
    type_and_send(page, "Second")
    wait_chat(page, "failed")
    check(page, "chat")  # a message marked "Not sent", the notice and its retry
    page.keyboard.press("Escape")
    check(page, "idle")  # minimised, the chat still going
    page.locator("retell-widget .type").click()
    page.locator("retell-widget .c-end").click()
    wait_chat(page, "ended")
    check(page, "chat")


def test_axe_chat_errors_and_waits(page, page_server, widget_origin, chat_gateway):
    chat_gateway.set_mode("ok", CHAT_MESSAGES_PER_MINUTE="1")
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.evaluate("widget.openChat()")
    page.evaluate("widget.send('one')")
    page.evaluate("widget.send('two').catch(() => {})")
    assert page.locator("retell-widget .c-again").is_disabled()
    check(page, "chat")  # rate limited: the retry waits
    page = new_page(page.context)
    url = chat_page(page_server, widget_origin, chat_gateway, chatAgentId="agent_x")
    open_widget(page, url)
    page.evaluate("widget.openChat().catch(() => {})")
    wait_chat(page, "error")
    check(page, "chat")  # not allowed


def test_axe_chat_verifying(page, page_server, widget_origin, verifying, chat_gateway):
    gateway = verifying("pow", POW_DIFFICULTY="10000000")  # slow enough to look at
    chat_gateway.grant(gateway.page_origin)
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
    page.locator("retell-widget .type").click()
    wait_chat(page, "verifying", timeout=15000)
    assert text(page, "c-msg") == "Checking your browser…"
    check(page, "chat")
    page.keyboard.press("Escape")  # cancels the check
    page.wait_for_function(f"{STATE} === 'idle'")
    assert page.evaluate(CHAT) == "idle"


@pytest.mark.parametrize("theme", ["purple", "blue", "green", "dark", "light"])
def test_axe_chat_themes(page, page_server, widget_origin, chat_gateway, shoot, theme):
    open_widget(page, chat_page(page_server, widget_origin, chat_gateway, theme=theme,
                                chatAgentId="agent_chat_opening"))  # fmt: skip
    check(page, "idle")
    page.locator("retell-widget .type").click()
    wait_entries(page, 1)
    type_and_send(page, "Do you open on Saturdays?\nAnd Sundays?")
    wait_entries(page, 3)
    page.locator("retell-widget .chat textarea").blur()  # the shot without a focus ring
    check(page, "chat")
    shoot(page, f"chat-{theme}", docs=theme in ("purple", "dark"))


def test_axe_chat_only_launcher_and_small_screen(browser, page_server, widget_origin, chat_gateway):
    context = browser.new_context(viewport={"width": 320, "height": 560})
    try:
        page = new_page(context)
        open_widget(page, chat_page(page_server, widget_origin, chat_gateway, mode="chat"))
        check(page, "idle")
        page.locator("retell-widget .launch").click()
        wait_chat(page, "ready")
        check(page, "chat")
        panel = page.locator("retell-widget .chat").bounding_box()
        assert panel["x"] >= 0 and panel["x"] + panel["width"] <= 320
        assert panel["y"] >= 0
        for cls in ("c-min", "c-send", "c-end"):
            b = page.locator(f"retell-widget .{cls}").bounding_box()
            assert b["height"] >= 44 and b["width"] >= 44
        assert page.evaluate(f"{SHADOW}.querySelector('.log').clientHeight") >= 120
    finally:
        context.close()


def test_axe_mic_denied_with_type_instead(
    denying_browser, page_server, widget_origin, chat_gateway
):
    context = denying_browser.new_context()
    try:
        page = new_page(context)
        open_widget(page, chat_page(page_server, widget_origin, chat_gateway))
        page.locator("retell-widget .launch").click()
        page.wait_for_function(f"{STATE} === 'error'")
        assert page.locator("retell-widget .alt").is_visible()
        check(page, "error")
    finally:
        context.close()
