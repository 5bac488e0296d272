"""The live transcript (issue 15) in real Chromium: the real app relaying the fake Retell monitor
socket (devtools/fakes/monitor.py) over SSE to the widget, through its real gateway engine."""

from __future__ import annotations

import json

import pytest

from tests.widget.conftest import DIST
from tests.widget.pages import (
    SHADOW,
    STATE,
    TRANSCRIPT_LOG,
    events,
    go_live,
    growing,
    lines,
    new_page,
    on_token,
    open_widget,
    pinned,
    seed_page,
)

pytestmark = pytest.mark.browser

# Everything added to the transcript log (final lines, the live region) or to its growing
# holder (aria-live="off"), in order: what a screen reader is given, and what it is not.
WATCH = f"""(() => {{
  window.__finals = []; window.__growing = [];
  new MutationObserver((records) => {{
    for (const r of records) for (const n of r.addedNodes) {{
      if (!n.classList?.contains('entry')) continue;
      const text = n.querySelector('.text').textContent;
      if (r.target.getAttribute('role') === 'log') window.__finals.push([n.dataset.role, text]);
      else if (r.target.classList.contains('grow')) window.__growing.push([n.dataset.role, text]);
    }}
  }}).observe({SHADOW}, {{ childList: true, subtree: true }});
}})()"""


def test_v3_lines_in_order_without_duplicates(
    page, page_server, widget_origin, transcript_on, fake_monitor, wait_for
):
    calls = []

    def snapshot(answer):  # said before anyone listens: the monitor's first snapshot has it
        calls.append(answer["call_id"])
        assert answer["transcript_url"] == f"/api/calls/{answer['call_id']}/transcript"
        fake_monitor.say(answer["call_id"], "agent", "Hello! How can I help you today?", 0)

    on_token(page, transcript_on.endpoint, snapshot)
    url = seed_page(page_server, widget_origin, transcript_on.endpoint, transcript=True)
    open_widget(page, url)
    page.evaluate(WATCH)
    go_live(page)
    call = calls[0]
    assert fake_monitor.wait_open(call, 1)
    wait_for(lambda: growing(page) == [["agent", "Hello! How can I help you today?"]])

    user = fake_monitor.say(call, "user", "I want to by a ticket", word_delay=0.15, wait=False)
    # The growing line is one element, its text updated in place as words come.
    holder = f"{TRANSCRIPT_LOG}.querySelector('.grow')"
    wait_for(lambda: (growing(page) or [[""]])[0][0] == "user")
    page.evaluate(f"{holder}.firstChild.__first = true")
    wait_for(lambda: growing(page) == [["user", "I want to by a ticket"]])
    assert page.evaluate(f"{holder}.firstChild.__first") is True
    fake_monitor.replace(call, user, "I want to buy a ticket.")
    first = fake_monitor.say(call, "agent", "Sure, for which day?", word_delay=0.05)
    wait_for(lambda: growing(page) == [["agent", "Sure, for which day?"]])
    expected = [
        ["agent", "Hello! How can I help you today?"],
        ["user", "I want to buy a ticket."],
    ]
    assert lines(page) == expected
    fake_monitor.replace(call, first, "Sure: for which day?")  # while it grows
    fake_monitor.end(call, "user_hangup")
    expected.append(["agent", "Sure: for which day?"])
    wait_for(lambda: lines(page) == expected)
    assert growing(page) == []
    # Read out: each final line once, never a partial one; partials only in the quiet holder.
    assert page.evaluate("window.__finals") == expected
    # One growing entry per line, updated word by word in place (never one per word).
    assert [role for role, _ in page.evaluate("window.__growing")] == ["agent", "user", "agent"]
    assert page.evaluate(f"{holder}.getAttribute('aria-live')") == "off"
    assert page.evaluate(f"{TRANSCRIPT_LOG}.getAttribute('aria-relevant')") == "additions"
    # The transcript ended (its stream's `end`), the call did not.
    page.wait_for_timeout(500)
    assert page.evaluate(STATE) == "live"
    items = events(page, "transcript")
    assert items and all(set(i) == {"type", "id", "role", "content", "final"} for i in items)
    assert items[-1]["final"] is True and items[-1]["content"] == "Sure: for which day?"
    assert fake_monitor.call(call).connections == 1
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")
    assert lines(page) == expected  # still there to read after the call


def test_two_tabs_on_one_call_share_one_upstream_socket(
    context, page, page_server, widget_origin, transcript_on, fake_monitor, redis, wait_for
):
    answers = []
    on_token(page, transcript_on.endpoint, answers.append)
    url = seed_page(page_server, widget_origin, transcript_on.endpoint, transcript=True)
    open_widget(page, url)
    go_live(page)
    # A second tab on the same call: it gets the first tab's answer (same call, same token).
    two = new_page(context)
    on_token(two, transcript_on.endpoint, lambda answer: answer.update(answers[0]))
    open_widget(two, url)
    go_live(two)
    call = answers[0]["call_id"]
    assert events(two, "call-start")[0]["callId"] == call
    wait_for(lambda: redis.zcard(f"widget:transcript:{call}:listeners") == 2)
    fake_monitor.say(call, "agent", "Both tabs read this.", word_delay=0.02)
    fake_monitor.say(call, "user", "Good.", word_delay=0)
    fake_monitor.end(call)
    expected = [["agent", "Both tabs read this."], ["user", "Good."]]
    for tab in (page, two):
        wait_for(lambda tab=tab: lines(tab) == expected)
    assert fake_monitor.call(call).connections == 1
    assert fake_monitor.call(call).max_open == 1


def test_a_token_for_another_call_is_refused_and_the_call_goes_on(
    page, page_server, widget_origin, transcript_on, fake_monitor, wait_for
):
    calls = []

    def elsewhere(answer):
        calls.append(answer["call_id"])
        answer["transcript_url"] = "/api/calls/call_someone_else/transcript"

    on_token(page, transcript_on.endpoint, elsewhere)
    statuses = []
    page.on("response", lambda r: "/api/calls/" in r.url and statuses.append(r.status))
    url = seed_page(page_server, widget_origin, transcript_on.endpoint, transcript=True)
    open_widget(page, url)
    go_live(page)
    fake_monitor.say(calls[0], "agent", "Not for that token.", word_delay=0)
    stopped = lambda: any("live transcript stopped" in x for x in page.console_lines)  # noqa: E731
    wait_for(lambda: page.evaluate("1") and stopped())
    assert statuses == [403]
    page.wait_for_timeout(3500)  # longer than the stream's retry: 3000; no retry after a 403
    assert statuses == [403]
    assert page.evaluate(STATE) == "live"
    assert page.evaluate("window.__probe.pcs.at(-1).connectionState") == "connected"
    # Nothing on screen: no empty transcript box, no error for the visitor.
    assert not page.locator("retell-widget .t-wrap").is_visible()
    assert not [x for x in page.console_lines if x.startswith("error: [retell-widget]")]
    assert fake_monitor.call(calls[0]).connections == 0
    assert fake_monitor.call("call_someone_else").connections == 0


@pytest.mark.parametrize("off", ["widget", "site"])
def test_off_by_default_nothing_requested_nothing_loaded(
    page, page_server, widget_origin, transcript_on, fake_monitor, redis, off
):
    answers = []
    on_token(page, transcript_on.endpoint, answers.append)
    if off == "site":  # the widget asks, the site has it off: the answer offers none
        redis.hdel(f"widget:limits:{transcript_on.page_origin}", "transcript")
    options = {"transcript": True} if off == "site" else {}
    open_widget(page, seed_page(page_server, widget_origin, transcript_on.endpoint, **options))
    go_live(page)
    call = answers[0]["call_id"]
    assert ("transcript_url" in answers[0]) is (off == "widget")
    fake_monitor.say(call, "agent", "Nobody reads this.", word_delay=0)
    page.wait_for_timeout(1000)
    assert not [u for u in page.requested if "transcript" in u]
    assert fake_monitor.call(call).connections == 0
    assert page.evaluate(f"{SHADOW}.querySelector('.t-wrap')") is None
    assert events(page, "transcript") == []


def test_collapsed_on_a_narrow_screen(
    browser, page_server, widget_origin, transcript_on, fake_monitor, wait_for
):
    context = browser.new_context(viewport={"width": 360, "height": 640})
    try:
        page = new_page(context)
        calls = []
        on_token(page, transcript_on.endpoint, lambda a: calls.append(a["call_id"]))
        url = seed_page(page_server, widget_origin, transcript_on.endpoint, transcript=True)
        open_widget(page, url)
        go_live(page)
        fake_monitor.say(calls[0], "agent", "Hello from a phone.", word_delay=0)
        toggle = page.locator("retell-widget .t-toggle")
        toggle.wait_for(state="visible")
        assert toggle.get_attribute("aria-expanded") == "false"
        assert toggle.get_attribute("aria-controls") == "t-log"
        assert not page.locator("retell-widget .t-wrap [role=log]").is_visible()
        wait_for(lambda: growing(page) == [["agent", "Hello from a phone."]])  # kept, hidden
        box = page.locator("retell-widget .panel").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        assert page.locator("retell-widget .t-wrap .entry").is_visible()
        toggle.press("Enter")  # the keyboard too
        assert toggle.get_attribute("aria-expanded") == "false"
    finally:
        context.close()


def test_data_attribute_events_and_callback(
    page, page_server, widget_origin, transcript_on, fake_monitor, wait_for
):
    calls = []
    on_token(page, transcript_on.endpoint, lambda a: calls.append(a["call_id"]))
    # transcript: 'events' tells the host only; a throwing callback breaks nothing.
    url = page_server.add(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"></head><body>
<script src="{widget_origin}/v1/retell-widget.js"></script>
<script>window.seen = []; window.widget = new RetellWidget({{agentId: 'agent_a',
  proxyEndpoint: {json.dumps(transcript_on.endpoint)}, transcript: 'events',
  onTranscript: (item) => {{ window.seen.push(item); throw new Error('host bug'); }}}});</script>
</body></html>"""
    )
    open_widget(page, url)
    go_live(page)
    assert fake_monitor.wait_open(calls[0], 1)
    fake_monitor.say(calls[0], "agent", "Only for the host.", word_delay=0)
    wait_for(lambda: page.evaluate("window.seen.length"))
    fake_monitor.say(calls[0], "user", "Right.", word_delay=0)
    wait_for(lambda: page.evaluate("window.seen.some((i) => i.role === 'user')"))
    seen = page.evaluate("window.seen")
    assert set(seen[0]) == {"id", "role", "content", "final"}
    assert seen[0]["role"] == "agent" and seen[0]["final"] is False
    assert "Only for the host.".startswith(seen[0]["content"])  # as it grows
    assert [(i["id"], i["content"]) for i in seen if i["final"]] == [
        (seen[0]["id"], "Only for the host.")
    ]
    assert [{k: v for k, v in e.items() if k != "type"} for e in events(page, "transcript")] == seen
    assert not [u for u in page.requested if u.endswith(("transcript.js", "transcript.css"))]
    assert page.evaluate(STATE) == "live"
    assert any("onTranscript threw" in line for line in page.console_lines)

    # The zero-JS snippet: a bare data-transcript turns the panel on.
    from tests.widget.pages import attr_page

    calls.clear()
    page.goto(attr_page(page_server, widget_origin, transcript_on.endpoint, transcript=""))
    page.wait_for_function(f"{STATE} === 'idle'")
    go_live(page)
    fake_monitor.say(calls[0], "agent", "From the attribute.", word_delay=0)
    wait_for(lambda: growing(page) == [["agent", "From the attribute."]])
    integrity = page.evaluate(
        "performance.getEntriesByType('resource').map((e) => e.name)"
        ".filter((n) => /transcript\\.(js|css)$/.test(n))"
    )
    assert sorted(integrity) == [f"{widget_origin}/v1/transcript.css",
                                 f"{widget_origin}/v1/transcript.js"]  # fmt: skip


SOURCES = """(() => {
  const ES = window.EventSource;
  window.__sources = [];
  window.EventSource = function (url, init) {
    const s = new ES(url, init);
    window.__sources.push(s);
    return s;
  };
  window.EventSource.prototype = ES.prototype;
  window.EventSource.CLOSED = ES.CLOSED;
})();"""


@pytest.mark.parametrize("how", ["hang_up", "agent_ended", "destroy"])
def test_the_stream_closes_with_the_call(
    context, page_server, widget_origin, transcript_on, fake_monitor, fake_gateway, wait_for, how
):
    context.add_init_script(SOURCES)
    page = new_page(context)
    calls = []
    on_token(page, transcript_on.endpoint, lambda a: calls.append(a["call_id"]))
    url = seed_page(page_server, widget_origin, transcript_on.endpoint, transcript=True)
    open_widget(page, url)
    go_live(page)
    assert fake_monitor.wait_open(calls[0], 1)
    wait_for(lambda: page.evaluate("window.__sources.map((s) => s.readyState)") == [1])  # OPEN
    assert "token=" in page.evaluate("window.__sources[0].url")
    assert page.evaluate("window.__sources[0].withCredentials") is False
    if how == "hang_up":
        page.locator("retell-widget .hang").click()
    elif how == "agent_ended":
        fake_gateway.drop("control")
        page.wait_for_function(f"{STATE} === 'ended'")
    else:
        page.evaluate("widget.destroy()")
    wait_for(lambda: page.evaluate("window.__sources.map((s) => s.readyState)") == [2])


@pytest.mark.parametrize("tampered", [False, True])
def test_sri_pins_transcript_files_and_a_bad_one_breaks_nothing(
    page, page_server, widget_origin, transcript_on, fake_monitor, tamper, wait_for, tampered
):
    files = json.loads((DIST / "manifest.json").read_text())["files"]
    calls = []
    on_token(page, transcript_on.endpoint, lambda a: calls.append(a["call_id"]))
    url = page_server.add(
        f"""<!doctype html><html><body>
<script src="{widget_origin}/v1/retell-widget.js" crossorigin="anonymous"
        integrity="{files["v1/retell-widget.js"]["integrity"]}"></script>
<script>window.widget = new RetellWidget({{proxyEndpoint: '{transcript_on.endpoint}',
  agentId: 'agent_a', transcript: true}});</script></body></html>"""
    )
    if tampered:
        tamper.add("transcript.js")
    open_widget(page, url)
    go_live(page)
    assert fake_monitor.wait_open(calls[0], 1)
    fake_monitor.say(calls[0], "agent", "Pinned words.", word_delay=0)
    if tampered:  # refused by the browser: no panel, the call and the events go on
        wait_for(lambda: events(page, "transcript"))
        assert any("integrity" in line for line in page.console_lines)
        page.wait_for_timeout(300)
        assert page.evaluate(f"{SHADOW}.querySelector('.t-wrap')") is None
        assert page.evaluate(STATE) == "live"
        return
    wait_for(lambda: growing(page) == [["agent", "Pinned words."]])
    link = page.evaluate(
        f"[...{SHADOW}.querySelectorAll('link')].find((l) => /transcript/.test(l.href)).integrity"
    )
    assert link == pinned(DIST / "v1/transcript.css")
