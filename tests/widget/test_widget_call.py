"""The widget in real Chromium against the token gateway and the aiortc fake Retell gateway."""

from __future__ import annotations

import time

import pytest

from tests.widget.pages import (
    SHADOW,
    STATE,
    audio_stats,
    events,
    go_live,
    open_widget,
    seed_page,
    states,
    text,
)

pytestmark = pytest.mark.browser


def test_seed_snippet_full_call(
    page, page_server, widget_origin, token_gateway, fake_gateway, fake_retell, shoot, wait_for
):
    # Retell's documented v3 answer: no `url`, and ice_servers[].urls as a plain string.
    fake_retell.ice_urls = "string"
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    assert text(page, "launch") == "Talk to our AI agent"
    assert not [u for u in page.requested if "engine-" in u], "engine must load lazily"
    shoot(page, "idle", docs=True)
    # The seed links our CSS into the page itself: it must style nothing there.
    leak = page.evaluate(
        """(() => {
      document.body.insertAdjacentHTML('beforeend',
        '<button id="a">x</button><button id="b" class="launch panel w mute hang">x</button>');
      const css = (id) => { const c = getComputedStyle(document.getElementById(id));
        return [c.backgroundColor, c.display, c.position, c.borderRadius, c.minHeight].join(); };
      const same = css('a') === css('b');
      document.getElementById('a').remove(); document.getElementById('b').remove();
      return same; })()"""
    )
    assert leak is True

    go_live(page)
    assert states(page)[:4] == ["idle", "requesting-mic", "connecting", "live"]
    assert events(page, "call-start")[0]["callId"].startswith("call_")
    assert text(page, "msg") == "Connected"
    assert "Connected" in page.locator("retell-widget .sr").inner_text()  # announced
    # ICE servers come from the token response: Retell's string form reaches the browser
    # as the list RTCPeerConnection is given.
    answer = fake_retell.answers[-1]
    assert "url" not in answer and answer["ice_servers"] == [{"urls": "stun:127.0.0.1:3478"}]
    ice = page.evaluate("window.__probe.pcs.at(-1).getConfiguration().iceServers")
    assert [s["urls"] for s in ice] == [["stun:127.0.0.1:3478"]]

    # Signalling followed the interface: POST offer with identity, trickle, bearer token,
    # at RETELL_GATEWAY_BASE/<call_id> since the answer had no url.
    post = fake_gateway.requests_for("POST")[-1]
    call_id = post["body"]["call_id"]
    assert call_id == answer["call_id"]
    assert post["path"] == f"/webrtc-proxy/{call_id}/v1/webrtc/sessions"
    assert post["body"]["identity"] == f"web-{call_id}"
    assert post["body"]["sdp"].startswith("v=0")
    session = fake_gateway.last_session()
    wait_for(lambda: session.candidates)

    # Audio flows both ways: the page receives the gateway's tone and sends the fake mic.
    first = wait_for(
        lambda: (lambda s: s if s["received"] and s["sent"] else None)(audio_stats(page))
    )
    time.sleep(1.2)
    second = audio_stats(page)
    assert second["received"] > first["received"] > 0
    assert second["energy"] > first["energy"]
    assert second["sent"] > first["sent"] > 0
    t0 = time.monotonic()
    wait_for(lambda: session.uplink_frames_since(t0) > 20)
    assert session.uplink_peak_since(t0 - 1) > 100
    level = wait_for(
        lambda: (
            float(
                page.evaluate(
                    f"{SHADOW}.querySelector('.meter').style.getPropertyValue('--l') || 0"
                )
            )
            or None
        )
    )
    assert level > 0.05
    shoot(page, "live", docs=True)

    # Mute stops the voice on the uplink; unmute brings it back.
    page.locator("retell-widget .mute").click()
    assert page.locator("retell-widget .mute").get_attribute("aria-pressed") == "true"
    time.sleep(0.3)
    t_mute = time.monotonic()
    time.sleep(1.2)
    assert session.uplink_frames_since(t_mute) > 20
    assert session.uplink_peak_since(t_mute) == 0
    shoot(page, "live-muted")
    page.locator("retell-widget .mute").click()
    assert page.locator("retell-widget .mute").get_attribute("aria-pressed") == "false"
    time.sleep(0.3)
    t_unmute = time.monotonic()
    time.sleep(1.2)
    assert session.uplink_peak_since(t_unmute) > 100

    # Hang-up: DELETE reaches the gateway, the mic is released, the call-end event fires.
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")
    wait_for(lambda: session.deleted)
    assert fake_gateway.requests_for("DELETE")[-1]["path"].endswith(session.session_id)
    assert page.evaluate(
        "window.__probe.streams.every(s => s.getTracks().every(t => t.readyState === 'ended'))"
    )
    end = events(page, "call-end")[-1]
    assert end["reason"] == "hangup" and end["durationMs"] >= 3000
    assert text(page, "msg") == "Call ended"
    shoot(page, "ended")
    # Only the page, the widget files, the token gateway and the call's signalling.
    allowed = {
        page_server.origin,
        widget_origin,
        token_gateway.endpoint.split("/api/")[0],
        fake_gateway.url,
    }
    assert {"/".join(u.split("/")[:3]) for u in page.requested} <= allowed
    # No cookies, no storage.
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0


def test_upstream_url_wins_over_gateway_base(
    page, page_server, widget_origin, token_gateway, fake_gateway, fake_retell
):
    """Some backends add `url` to the v3 answer: the widget then signals there."""
    fake_retell.gateway_url = f"{fake_gateway.url}/edge"
    fake_retell.ice_urls = "list"
    token_gateway.set_mode("ok", RETELL_GATEWAY_BASE="http://127.0.0.1:9/unused")
    open_widget(page, seed_page(page_server, widget_origin, token_gateway.endpoint))
    go_live(page)
    answer = fake_retell.answers[-1]
    assert answer["url"] == f"{fake_gateway.url}/edge/{answer['call_id']}"
    assert answer["ice_servers"] == [{"urls": ["stun:127.0.0.1:3478"]}]
    post = fake_gateway.requests_for("POST")[-1]
    assert post["path"] == f"/edge/{answer['call_id']}/v1/webrtc/sessions"
    assert not [u for u in page.requested if u.startswith("http://127.0.0.1:9/")]
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")
