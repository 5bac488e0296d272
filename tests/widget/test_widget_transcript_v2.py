"""v2 (LiveKit) calls' transcript, in real Chromium against the built engine-livekit.js.

LiveKit itself cannot be reached here, so its WebSocket is held open and silent; the SDK's own
client (retell-client-js-sdk 2.0.8, caught as it is constructed) is then made to emit what it
emits in a real call: call_started, `update` {transcript: the last 5 utterances, the last one
growing word by word}, call_ended. The engine's merge (src/engines/v2-transcript.js) must
turn that window into the whole call, each line once, in order.
"""

from __future__ import annotations

import json

import pytest

from tests.widget.pages import SHADOW, STATE, events, open_widget, seed_page

pytestmark = pytest.mark.browser

# The SDK's RetellWebClient is an EventEmitter (eventemitter3): its constructor sets _events.
CATCH_CLIENT = """(() => {
  window.__clients = [];
  Object.defineProperty(Object.prototype, '_events', {
    configurable: true,
    set(value) {
      Object.defineProperty(this, '_events', { value, writable: true, configurable: true });
      if (typeof this.startCall === 'function') window.__clients.push(this);
    },
  });
})();"""
CLIENT = "window.__clients[0]"
LOG = f"{SHADOW}.querySelector('.t-wrap [role=log]')"

SCRIPT = [
    ("agent", "Hello! How can I help you today?"),
    ("user", "Yes."),
    ("agent", "Okay."),
    ("user", "Yes."),
    ("agent", "Okay."),
    ("user", "I want to buy a ticket for Friday."),
    ("agent", "Sure, for which time on Friday?"),
    ("user", "Yes."),
]


def windows(script, fix_up=True) -> tuple[list[list[dict]], list[tuple[str, str]]]:
    """The SDK's updates for a call (each word of each utterance, as the last 5 utterances),
    and the call's lines as they end up. fix_up: with a misheard word, overlapping growth and
    a repeated window."""
    updates: list[list[dict]] = []
    done: list[dict] = []
    for index, (role, text) in enumerate(script):
        words = text.split()
        for count in range(1, len(words) + 1):
            now = " ".join(words[:count])
            if fix_up and index == 5 and count == 4:
                now = "I want to by"  # misheard, corrected by the next word
            updates.append([*done[-4:], {"role": role, "content": now}])
            if fix_up and index == 6 and count == 1:
                # The visitor's last word comes in after the agent began: overlapping growth.
                done[-1]["content"] = "I want to buy a ticket for Friday. Please."
                updates.append([*done[-4:], {"role": role, "content": now}])
        done.append({"role": role, "content": text})
        if fix_up and index == 1:
            updates.append([*done[-5:]])  # the same window again: changes nothing
    return updates, [(line["role"], line["content"]) for line in done]


@pytest.fixture
def v2_call(page, page_server, widget_origin, token_gateway):
    """A widget whose v2 call the test drives: returns feed(updates) -> None."""
    page.context.add_init_script(CATCH_CLIENT)
    page.route_web_socket(lambda url: "livekit" in url, lambda ws: None)  # open, silent
    token_gateway.set_mode("livekit")
    url = seed_page(page_server, widget_origin, token_gateway.endpoint, transcript=True)
    open_widget(page, url)
    page.locator("retell-widget .launch").click()
    page.wait_for_function(f"window.__clients?.length === 1 && {STATE} === 'connecting'")
    page.evaluate(f"{CLIENT}.emit('call_started')")
    page.wait_for_function(f"{STATE} === 'live'")
    return page


def feed(page, updates):
    page.evaluate(
        f"(all) => all.forEach((transcript) => {CLIENT}.emit('update', "
        "{ event_type: 'update', transcript }))",
        list(updates),
    )


def shown(page):
    """Final lines, then the growing one, as (role, text)."""
    return page.evaluate(
        f"""[...({LOG}?.querySelectorAll('.entry') ?? [])].map((e) =>
        [e.dataset.role, e.querySelector('.text').textContent, !!e.closest('.grow')])"""
    )


def test_window_of_five_merged_into_the_whole_call(v2_call, wait_for):
    page = v2_call
    updates, script = windows(SCRIPT)
    assert script[5] == ("user", "I want to buy a ticket for Friday. Please.")
    feed(page, updates[:3])  # "Hello! How can"
    wait_for(lambda: shown(page) == [["agent", "Hello! How can", True]])  # transcript.js is in
    feed(page, updates[3:])
    expected = [[role, text, False] for role, text in script]
    expected[-1][2] = True  # the visitor's last "Yes." still grows
    wait_for(lambda: shown(page) == expected)
    page.evaluate(f"{CLIENT}.emit('call_ended')")  # the agent hung up: the last line is final
    page.wait_for_function(f"{STATE} === 'ended'")
    assert shown(page) == [[role, text, False] for role, text in script]

    items = events(page, "transcript")
    ids = [f"v2-{n}" for n in range(len(script))]
    assert sorted({i["id"] for i in items}, key=lambda i: int(i[3:])) == ids
    last = {}
    for item in items:  # one id per utterance, from first word to final, never reused
        last[item["id"]] = item
    assert [(last[i]["role"], last[i]["content"], last[i]["final"]) for i in ids] == [
        (role, text, True) for role, text in script
    ]
    finals = [i["id"] for i in items if i["final"] and i["content"] == last[i["id"]]["content"]]
    assert sorted(set(finals)) == sorted(ids)


def test_jumps_corrections_and_garbage_never_duplicate(v2_call, wait_for):
    page = v2_call
    updates, script = windows(SCRIPT, fix_up=False)
    # Several words (and lines) at once, as when updates are coalesced: every third one only.
    feed(page, updates[::3] + [updates[-1]])
    feed(page, [None, "nope", [{"role": "system", "content": 1}], []])  # ignored
    page.evaluate(f"{CLIENT}.emit('update', null)")
    # A correction of an earlier line still in the window, and a window shorter than 5 that
    # is not the whole call (the SDK trims it): both line up with what is shown.
    window = [{"role": r, "content": t} for r, t in script[-5:]]
    window[2]["content"] = "I want to buy a ticket for Friday, please."
    feed(page, [window, window[-2:]])
    expected = [list(line) for line in script]
    expected[5][1] = "I want to buy a ticket for Friday, please."
    wait_for(lambda: [[r, t] for r, t, _ in shown(page)] == expected)
    assert page.evaluate(STATE) == "live"
    assert json.dumps(events(page, "transcript"))  # all plain data
