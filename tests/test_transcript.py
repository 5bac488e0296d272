"""The live transcript relay: real redis-server, the fake monitor socket, a real threaded WSGI
server (gunicorn with gevent and nginx: tests/deploy/test_nginx_transcript.py)."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from app.http.transcript import transcript_grant
from app.retell import monitor as monitor_module
from app.transcript import relay as relay_module
from devtools.ports import wait_until

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "https://client-a.com"
PREFIX = "widget:"


class Sse:
    """One EventSource-like reader: events() yields {event, id, data, at} as they arrive."""

    def __init__(self, url: str, headers: dict | None = None, timeout: float = 20):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.comments = 0

    def json(self):
        return json.loads(self.response.read())

    def events(self):
        event: dict = {}
        while True:
            line = self.response.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if not line:
                if "data" in event:
                    event.setdefault("event", "message")
                    event["data"] = json.loads(event["data"])
                    event["at"] = time.monotonic()
                    yield event
                event = {}
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(":")
                event[name] = value[1:] if value.startswith(" ") else value

    def until_end(self, limit: int = 500) -> list[dict]:
        seen = []
        for event in self.events():
            seen.append(event)
            if event["event"] == "end" or len(seen) >= limit:
                break
        return seen

    def close(self):
        self.response.close()  # the socket stays open while the response holds it
        self.conn.close()


def lines_of(events: list[dict]) -> list[tuple[str, str]]:
    """What a widget shows: items replaced by id, in first-seen order."""
    shown: dict[str, dict] = {}
    for event in events:
        if event["event"] == "transcript":
            shown[event["data"]["id"]] = event["data"]
    return [(item["role"], item["content"]) for item in shown.values()]


def assert_no_duplicates(events: list[dict]) -> None:
    sent = [json.dumps(e["data"], sort_keys=True) for e in events if e["event"] == "transcript"]
    assert len(sent) == len(set(sent)), sent


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """Shorter waits, the same logic: 4004 retried after 0.2 s, a listener's idle wait 1 s."""
    monkeypatch.setattr(monitor_module, "NOT_LIVE_BACKOFF", (0.2, 0.2, 0.2))
    monkeypatch.setattr(monitor_module, "LOST_BACKOFF", (0.2,))
    monkeypatch.setattr(relay_module, "HEARTBEAT_S", 1.0)
    monkeypatch.setattr(relay_module, "LEAVE_GRACE_S", 1.0)


@pytest.fixture
def served(serve_app, fake_monitor):
    return serve_app(RETELL_MONITOR_BASE=fake_monitor.url)


def grant(app, call_id: str, origin: str = ORIGIN, reserved_ms: int = 600_000) -> dict:
    decision = SimpleNamespace(transcript=True, reserved_ms=reserved_ms, entry=origin)
    with app.test_request_context():
        return transcript_grant(decision, call_id, origin)


def listen(served, call_id: str, *, origin=ORIGIN, token=None, headers=None, **kw) -> Sse:
    token = token if token is not None else grant(served.app, call_id, origin)["transcript_token"]
    query = f"?token={token}" if token else ""
    url = f"{served.url}/api/calls/{call_id}/transcript{query}"
    return Sse(url, {"Origin": origin, **(headers or {})}, **kw)


def test_grant_only_when_the_entry_has_the_transcript_on(app):
    off = SimpleNamespace(transcript=False, reserved_ms=600_000, entry=ORIGIN)
    legacy = SimpleNamespace(reserved_ms=600_000, entry=ORIGIN)  # before Decision.transcript
    with app.test_request_context():
        assert transcript_grant(off, "call_1", ORIGIN) == {}
        assert transcript_grant(legacy, "call_1", ORIGIN) == {}
    answer = grant(app, "call_1", reserved_ms=600_000)
    assert answer["transcript_url"] == "/api/calls/call_1/transcript"
    claims = app.extensions["tokens"].verify("transcript", answer["transcript_token"])
    assert (claims["c"], claims["e"], claims["o"]) == ("call_1", ORIGIN, ORIGIN)
    assert 600 < claims["exp"] - time.time() <= 600 + 300 + 1  # the reservation, + joining
    capped = app.extensions["tokens"].verify(
        "transcript", grant(app, "call_1", reserved_ms=10**9)["transcript_token"]
    )
    assert claims["exp"] < capped["exp"] <= time.time() + 7500 + 1


def test_lines_in_order_without_duplicates_and_replacements_applied(served, fake_monitor):
    call = "call_order"
    first = fake_monitor.say(call, "agent", "Hello there, how can I help?", word_delay=0)
    stream = listen(served, call)
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in stream.headers["Vary"]

    def script():
        fake_monitor.wait_open(call, 1)
        user = fake_monitor.say(call, "user", "I want to by a ticket", word_delay=0.01)
        fake_monitor.replace(call, user, "I want to buy a ticket.")
        fake_monitor.say(call, "agent", "Sure, for which day?", word_delay=0.01)
        fake_monitor.end(call)

    threading.Thread(target=script, daemon=True).start()
    events = stream.until_end()
    stream.close()
    assert events[-1]["event"] == "end" and events[-1]["data"] == {"reason": "user_hangup"}
    assert lines_of(events) == [
        ("agent", "Hello there, how can I help?"),
        ("user", "I want to buy a ticket."),
        ("agent", "Sure, for which day?"),
    ]
    assert_no_duplicates(events)
    items = [e for e in events if e["event"] == "transcript"]
    assert {e["data"]["id"] for e in items} >= {first}
    assert set(items[0]["data"]) == {"id", "role", "content", "final"}
    # Growing word by word: the widget sees partial lines, each settled once as final.
    assert any(e["data"]["content"] == "I want" for e in items)
    finals = [e["data"]["id"] for e in items if e["data"]["final"]]
    assert sorted(finals) == sorted(set(finals)) and len(finals) == 3
    ids = [tuple(map(int, e["id"].split("-"))) for e in events if e.get("id")]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


def test_4004_until_the_call_is_live_then_it_relays(served, fake_monitor):
    call = "call_late"
    fake_monitor.not_live(call, 2)
    fake_monitor.say(call, "agent", "Finally live.", word_delay=0)
    stream = listen(served, call)
    seen = next(e for e in stream.events() if e["event"] == "transcript")
    assert seen["data"]["content"] == "Finally live."
    assert fake_monitor.call(call).connections == 3  # two 4004s, then the real one
    assert fake_monitor.keys_seen[-1] == served.app.config["SETTINGS"].retell_api_key.reveal()
    fake_monitor.end(call)
    assert stream.until_end()[-1]["data"] == {"reason": "user_hangup"}
    stream.close()


def test_never_live_ends_with_not_live(served, fake_monitor, redis):
    call = "call_never"
    fake_monitor.not_live(call, 100)
    stream = listen(served, call)
    assert stream.until_end()[-1]["data"] == {"reason": "not_live"}
    assert fake_monitor.call(call).connections == 4  # the first try and three retries
    assert not redis.exists(f"{PREFIX}transcript:{call}:relay")


def test_two_listeners_share_one_upstream_socket(served, fake_monitor):
    call = "call_shared"
    one = listen(served, call)
    two = listen(served, call)
    fake_monitor.say(call, "agent", "Same words for both tabs.", word_delay=0.01)
    fake_monitor.end(call)
    first, second = one.until_end(), two.until_end()
    assert lines_of(first) == lines_of(second) == [("agent", "Same words for both tabs.")]
    assert fake_monitor.call(call).connections == 1
    assert fake_monitor.call(call).max_open == 1


def test_a_late_listener_gets_the_transcript_so_far_then_the_rest(served, fake_monitor):
    call = "call_late_tab"
    one = listen(served, call)
    fake_monitor.say(call, "agent", "Said before the second tab.", word_delay=0)
    next(e for e in one.events() if e["data"].get("content") == "Said before the second tab.")
    two = listen(served, call)
    fake_monitor.say(call, "user", "And this after.", word_delay=0)
    fake_monitor.end(call)
    expected = [("agent", "Said before the second tab."), ("user", "And this after.")]
    events = two.until_end()
    assert lines_of(events) == expected
    assert_no_duplicates(events)
    assert lines_of(one.until_end()) == expected
    assert fake_monitor.call(call).connections == 1


def test_last_event_id_resumes_where_the_stream_left_off(served, fake_monitor):
    call = "call_resume"
    fake_monitor.say(call, "agent", "One.", word_delay=0)
    first = listen(served, call)
    seen = next(e for e in first.events() if e["event"] == "transcript")
    assert seen.get("id")  # the snapshot's last event carries the id to resume from
    first.close()
    fake_monitor.say(call, "user", "Two.", word_delay=0)
    again = listen(served, call, headers={"Last-Event-ID": seen["id"]})
    fake_monitor.end(call)
    events = again.until_end()
    contents = [e["data"]["content"] for e in events if e["event"] == "transcript"]
    assert "Two." in contents and contents.count("One.") <= 1  # "One." again only as final
    assert all(e["data"]["final"] for e in events if e["data"].get("content") == "One.")


def test_call_ended_cleans_up(served, fake_monitor, redis):
    call = "call_clean"
    stream = listen(served, call)
    fake_monitor.say(call, "agent", "Bye.", word_delay=0)
    fake_monitor.end(call, "agent_hangup")
    assert stream.until_end()[-1]["data"] == {"reason": "agent_hangup"}
    base = f"{PREFIX}transcript:{call}"
    assert wait_until(lambda: not redis.exists(f"{base}:relay", f"{base}:listeners"), 5)
    for key in (base, f"{base}:items"):
        assert 0 < redis.pttl(key) <= relay_module.END_TTL_MS
    # A listener after the end reads the whole transcript and the end, and opens nothing.
    late = listen(served, call).until_end()
    assert lines_of(late) == [("agent", "Bye.")] and late[-1]["event"] == "end"
    assert fake_monitor.call(call).connections == 1


def test_the_last_listener_leaving_closes_the_upstream_socket(served, fake_monitor, redis):
    call = "call_leave"
    one, two = listen(served, call), listen(served, call)
    assert fake_monitor.wait_open(call, 1)
    one.close()
    time.sleep(relay_module.LEAVE_GRACE_S + 2 * relay_module.HEARTBEAT_S)
    assert fake_monitor.call(call).open_now == 1  # one tab is still listening
    two.close()
    assert fake_monitor.wait_open(call, 0, timeout=10)
    base = f"{PREFIX}transcript:{call}"
    assert wait_until(lambda: not redis.exists(f"{base}:relay"), 5)
    assert redis.zcard(f"{base}:listeners") == 0
    assert fake_monitor.call(call).connections == 1


@pytest.mark.parametrize(
    "case, code",
    [
        ("other_call", "transcript_wrong_call"),
        ("other_origin", "origin_not_allowed"),
        ("no_origin", "origin_not_allowed"),
        ("expired", "transcript_token_expired"),
        ("altered", "transcript_token_invalid"),
        ("chat_token", "transcript_token_invalid"),
        ("missing", "transcript_token_invalid"),
    ],
)
def test_refused_with_403(served, fake_monitor, case, code):
    tokens = served.app.extensions["tokens"]
    token, origin = grant(served.app, "call_x")["transcript_token"], ORIGIN
    claims = {"c": "call_x", "e": ORIGIN, "o": ORIGIN}
    if case == "other_call":
        token = grant(served.app, "call_y")["transcript_token"]
    elif case == "other_origin":
        origin = "https://evil.example"
    elif case == "expired":
        token = tokens.sign("transcript", claims, int(time.time()) - 1)
    elif case == "altered":
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    elif case == "chat_token":
        token = tokens.sign("chat", claims, int(time.time()) + 600)
    elif case == "missing":
        token = ""
    headers = {} if case == "no_origin" else {"Origin": origin}
    query = f"?token={token}" if token else ""
    reply = Sse(f"{served.url}/api/calls/call_x/transcript{query}", headers)
    assert reply.status == 403
    assert reply.json()["error"] == code
    if case in ("other_origin", "no_origin", "altered", "missing"):
        assert "Access-Control-Allow-Origin" not in reply.headers
    assert fake_monitor.call("call_x").connections == 0


def test_head_opens_nothing(served, fake_monitor, redis):
    token = grant(served.app, "call_head")["transcript_token"]
    conn = http.client.HTTPConnection(urlsplit(served.url).hostname, urlsplit(served.url).port)
    conn.request("HEAD", f"/api/calls/call_head/transcript?token={token}",
                 headers={"Origin": ORIGIN})  # fmt: skip
    answer = conn.getresponse()
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/event-stream")
    conn.close()
    assert redis.keys(f"{PREFIX}transcript:*") == []
    assert fake_monitor.call("call_head").connections == 0


def test_bearer_header_works_and_preflight_is_exact(served, fake_monitor, allow_origin):
    call = "call_bearer"
    token = grant(served.app, call)["transcript_token"]
    fake_monitor.say(call, "agent", "Via the header.", word_delay=0)
    stream = listen(served, call, token="", headers={"Authorization": f"Bearer {token}"})
    assert stream.status == 200
    fake_monitor.end(call)
    assert lines_of(stream.until_end()) == [("agent", "Via the header.")]
    allow_origin(ORIGIN, "agent_a")
    conn = http.client.HTTPConnection(urlsplit(served.url).hostname, urlsplit(served.url).port)
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    conn.request("OPTIONS", f"/api/calls/{call}/transcript", headers=preflight)
    answer = conn.getresponse()
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in answer.headers["Access-Control-Allow-Headers"]
    conn.close()
    conn.request("OPTIONS", f"/api/calls/{call}/transcript",
                 headers={**preflight, "Origin": "https://evil.example"})  # fmt: skip
    refused = conn.getresponse()
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers


def test_neither_key_nor_token_reaches_logs_or_answers(served, fake_monitor, capfd):
    call = "call_secret"
    token = grant(served.app, call)["transcript_token"]
    fake_monitor.say(call, "agent", "Nothing secret here.", word_delay=0)
    stream = listen(served, call, token=token)
    fake_monitor.end(call)
    body = json.dumps(stream.until_end())
    key = served.app.config["SETTINGS"].retell_api_key.reveal()
    assert key not in body and key not in str(dict(stream.headers))
    # The app's request line has the path only. (Werkzeug's own dev-server line, not
    # used in production, is left out: it prints the request line as sent.)
    app_lines = [line for line in capfd.readouterr().err.splitlines() if '"logger": "app' in line]
    assert any(f"/api/calls/{call}/transcript" in line for line in app_lines)
    assert not any(token in line or key in line for line in app_lines)


def test_redis_down_is_a_clean_503(served, redis_server, capfd):
    token = grant(served.app, "call_down")["transcript_token"]
    redis_server.stop()
    try:
        reply = listen(served, "call_down", token=token)
        assert reply.status == 503 and reply.json()["error"] == "unavailable"
    finally:
        redis_server.start()
    assert "Traceback" not in capfd.readouterr().err


def test_every_transcript_key_is_in_the_readme_key_table(served, fake_monitor, redis):
    call = "call_keys"
    stream = listen(served, call)
    fake_monitor.say(call, "agent", "Keys.", word_delay=0)
    next(e for e in stream.events() if e["event"] == "transcript")
    keys = set(redis.keys(f"{PREFIX}transcript:*"))
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Redis keys") : readme.index("### The same with the CLI")]
    names = re.findall(r"`(widget:transcript[^`]*)`", table)
    parts = [re.split(r"(<[^>]+>)", name) for name in names]  # <placeholder>: any text
    patterns = [
        re.compile("^" + "".join(".+" if p.startswith("<") else re.escape(p) for p in ps) + "$")
        for ps in parts
    ]
    assert len(keys) == 4, keys  # stream, items, relay claim, listeners
    for key in keys:
        assert any(p.match(key) for p in patterns), key
    fake_monitor.end(call)
    stream.until_end()


def test_create_web_call_grants_the_transcript_only_where_it_is_on(
    served, fake_monitor, allow_origin, redis
):
    import requests

    allow_origin(ORIGIN, "agent_abc")
    body, headers = {"agent_id": "agent_abc"}, {"Origin": ORIGIN}
    url = f"{served.url}/api/create-web-call"
    off = requests.post(url, json=body, headers=headers, timeout=10).json()
    assert "transcript_url" not in off and "transcript_token" not in off

    redis.hset(f"{PREFIX}limits:{ORIGIN}", "transcript", "1")
    on = requests.post(url, json=body, headers=headers, timeout=10).json()
    assert on["transcript_url"] == f"/api/calls/{on['call_id']}/transcript"
    fake_monitor.say(on["call_id"], "agent", "Hi", word_delay=0)
    fake_monitor.end(on["call_id"], "user_hangup")
    stream = listen(served, on["call_id"], token=on["transcript_token"])
    assert stream.status == 200
    assert lines_of(stream.until_end()) == [("agent", "Hi")]
    stream.close()
    # The token is this call's only.
    other = listen(served, off["call_id"], token=on["transcript_token"])
    assert other.status == 403 and other.json()["error"] == "transcript_wrong_call"
    other.close()
