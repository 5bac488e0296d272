"""Chat limits, verification, the usage stream and the sweep, against a real redis-server,
the fake Retell and (for concurrency) real HTTP."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import AGENT, CHAT_AGENT, ORIGIN, assert_error, grant_chat, send, start_chat
from tests.test_verification import solve

OTHER = "https://other.example"


@pytest.fixture
def chatting(redis):
    grant_chat(redis, ORIGIN, CHAT_AGENT)


def at_once(n, one):
    """n requests released together by a barrier, over real HTTP."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return one(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def http_start(base_url, body=None, origin=ORIGIN):
    return requests.post(f"{base_url}/api/chat", json=body or {}, headers={"Origin": origin},
                         timeout=10)  # fmt: skip


def http_send(base_url, token, content="hi"):
    return requests.post(f"{base_url}/api/chat/messages",
                         json={"chat_token": token, "content": content},
                         headers={"Origin": ORIGIN}, timeout=10)  # fmt: skip


def completions(fake_retell):
    return [r for r in fake_retell.requests if r["path"] == "/create-chat-completion"]


def test_the_per_chat_rate_is_exact_under_100_simultaneous_messages(
    serve_app, chatting, fake_retell
):
    fake_retell.chat.set_agent(CHAT_AGENT, delay=0.05)
    served = serve_app(CHAT_MESSAGES_PER_MINUTE=7, CHAT_MAX_MESSAGES=0)
    token = http_start(served.url).json()["chat_token"]
    answers = at_once(100, lambda i: http_send(served.url, token, f"m{i}"))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 7 and statuses.count(429) == 93
    limited = [a for a in answers if a.status_code == 429]
    assert {a.json()["error"] for a in limited} == {"rate_limited"}
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in limited)
    assert all(a.headers["X-RateLimit-Limit"] == "7" for a in limited)
    assert len(completions(fake_retell)) == 7


def test_the_per_chat_cap_is_exact_under_100_simultaneous_messages(
    serve_app, chatting, fake_retell, redis, usage_entries
):
    served = serve_app(CHAT_MESSAGES_PER_MINUTE=0, CHAT_MAX_MESSAGES=5)
    token = http_start(served.url).json()["chat_token"]
    answers = at_once(100, lambda i: http_send(served.url, token))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 5 and statuses.count(429) == 95
    assert {a.json()["error"] for a in answers if a.status_code == 429} == {"chat_message_limit"}
    assert all("Retry-After" not in a.headers for a in answers if a.status_code == 429)
    assert len(completions(fake_retell)) == 5
    requests.post(f"{served.url}/api/chat/end", json={"chat_token": token},
                  headers={"Origin": ORIGIN}, timeout=10)  # fmt: skip
    assert usage_entries()[-1]["messages"] == "5"  # refused messages are not counted


def test_chat_starts_per_ip_are_exact_under_100_simultaneous_starts(
    serve_app, chatting, fake_retell, usage_entries
):
    served = serve_app(RATE_LIMIT_CHATS_PER_IP="5 per minute")
    statuses = [a.status_code for a in at_once(100, lambda i: http_start(served.url))]
    assert statuses.count(201) == 5 and statuses.count(429) == 95
    assert len([r for r in fake_retell.requests if r["path"] == "/create-chat"]) == 5
    entries = usage_entries()
    assert len(entries) == 100 and {e["kind"] for e in entries} == {"chat"}
    assert sorted(e["outcome"] for e in entries).count("rate_limited") == 95


def test_chat_and_call_limits_are_counted_apart(make_app, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    grant_chat(redis, ORIGIN, CHAT_AGENT)
    client = make_app(RATE_LIMIT_PER_IP="2 per minute", RATE_LIMIT_CHATS_PER_IP="3 per minute",
                      RATE_LIMIT_PER_ORIGIN_DAY=0).test_client()  # fmt: skip

    def call():
        return client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})

    assert [call().status_code for _ in range(3)] == [201, 201, 429]
    assert [start_chat(client).status_code for _ in range(4)] == [201, 201, 201, 429]
    limited = start_chat(client)
    assert limited.json["error"] == "rate_limited" and limited.headers["X-RateLimit-Limit"] == "3"
    assert "chats" in limited.json["message"]
    assert call().status_code == 429  # the chats spent none of the calls' window, nor back


def test_daily_chat_caps_with_their_own_overrides(make_app, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    grant_chat(redis, ORIGIN, CHAT_AGENT)
    grant_chat(redis, OTHER, CHAT_AGENT)
    client = make_app(RATE_LIMIT_CHATS_PER_ORIGIN_DAY=2, RATE_LIMIT_PER_ORIGIN_DAY=1,
                      RATE_LIMIT_CHATS_PER_IP="").test_client()  # fmt: skip
    assert [start_chat(client).status_code for _ in range(3)] == [201, 201, 429]
    # the per_day of calls does not touch chats, chats_per_day does
    redis.hset(f"widget:limits:{ORIGIN}", mapping={"per_day": 0, "chats_per_day": 3})
    assert [start_chat(client).status_code for _ in range(2)] == [201, 429]
    assert (
        client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN}).status_code == 429
    )
    redis.hset(f"widget:limits:{ORIGIN}", "chats_per_day", -1)  # none
    assert start_chat(client).status_code == 201
    redis.hset(f"widget:limits:agent:{CHAT_AGENT}", "chats_per_day", 1)  # across origins
    assert start_chat(client, origin=OTHER).status_code == 201
    assert_error(start_chat(client, origin=OTHER), 429, "rate_limited")
    assert_error(start_chat(client), 429, "rate_limited")


def test_minute_budgets_and_concurrency_caps_do_not_apply_to_chats(make_app, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    grant_chat(redis, ORIGIN, CHAT_AGENT)
    redis.hset(f"widget:limits:{ORIGIN}", mapping={"minutes_per_day": 0, "max_concurrent": 0})
    client = make_app(CONCURRENT_CALLS_TOTAL=1).test_client()
    call = client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})
    assert_error(call, 429, "budget_exhausted")
    assert [start_chat(client).status_code for _ in range(3)] == [201, 201, 201]
    assert not redis.keys("widget:live:*") and not redis.keys("widget:minutes:*")


def test_verification_on_a_chat_for_an_entry_that_requires_it(
    make_app, chatting, redis, fake_retell, usage_entries
):
    redis.hset(f"widget:limits:{ORIGIN}", "verify", "pow")
    client = make_app(POW_HMAC_KEY="pow-key").test_client()
    asked = start_chat(client)
    assert_error(asked, 403, "verification_required")
    assert asked.json["verify"]["provider"] == "pow"
    token = solve(asked.json["verify"]["challenge"])
    assert start_chat(client, {"verification": token}).status_code == 201
    assert_error(start_chat(client, {"verification": token}), 403, "verification_failed")  # once
    assert_error(start_chat(client, {"verification": "junk"}), 403, "verification_failed")
    assert {e["kind"] for e in usage_entries()} == {"chat"}
    assert [e["outcome"] for e in usage_entries()] == [
        "verification_required", "created", "verification_failed", "verification_failed",
    ]  # fmt: skip
    assert len([r for r in fake_retell.requests if r["path"] == "/create-chat"]) == 1


def test_a_verification_token_admits_one_call_or_one_chat(make_app, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    grant_chat(redis, ORIGIN, CHAT_AGENT)
    redis.hset(f"widget:limits:{ORIGIN}", "verify", "pow")
    client = make_app(POW_HMAC_KEY="pow-key").test_client()
    token = solve(start_chat(client).json["verify"]["challenge"])
    assert start_chat(client, {"verification": token}).status_code == 201
    call = client.post("/api/create-web-call", json={"verification": token},
                       headers={"Origin": ORIGIN})  # fmt: skip
    assert_error(call, 403, "verification_failed")


def test_every_attempt_is_one_usage_entry(client, chatting, fake_retell, usage_entries, redis):
    expected = []

    def attempt(outcome, body=None, origin=ORIGIN):
        start_chat(client, body, origin=origin)
        expected.append(outcome)

    attempt("created")
    attempt("origin_denied", origin="https://evil.example")
    attempt("agent_denied", {"agent_id": "agent_other"})
    attempt("invalid", {"agent_id": CHAT_AGENT, "x": 1})
    redis.sadd(f"widget:chat-agents:{ORIGIN}", "agent_chat_fail_create_500")
    attempt("upstream_error", {"agent_id": "agent_chat_fail_create_500"})
    attempt("invalid")  # two chat agents now: agent_id is required
    entries = usage_entries()
    assert [e["outcome"] for e in entries] == expected
    assert {e["kind"] for e in entries} == {"chat"}
    created = entries[0]
    assert created["chat_id"].startswith("chat_") and int(created["upstream_ms"]) >= 0
    assert created["call_id"] == "" and created["messages"] == ""
    assert len(created["ip"]) == 32  # HMAC, as for calls


def test_a_redis_error_on_a_record_gives_the_chat_up(client, chatting, fake_retell, monkeypatch):
    import redis as redis_lib

    ledger = client.application.extensions["chats"]

    def broken(*args, **kwargs):
        raise redis_lib.ConnectionError("gone")

    monkeypatch.setattr(ledger, "created", broken)
    assert_error(start_chat(client), 503, "unavailable")
    ends = [r for r in fake_retell.requests if r["path"].startswith("/end-chat/")]
    assert len(ends) == 1  # the chat Retell made is ended, not left open


def expire(redis, chat_id, ago_ms=120_000):
    """As if the chat's token had run out ago_ms ago (past the sweep's grace)."""
    redis.zadd("widget:chats:live", {chat_id: int(time.time() * 1000) - ago_ms})


def test_a_chat_nobody_ended_is_closed_by_the_next_start(client, chatting, redis, usage_entries):
    first = start_chat(client).json
    send(client, first["chat_token"], "one")
    send(client, first["chat_token"], "two")
    expire(redis, first["chat_id"], ago_ms=30_000)  # within the grace: not yet
    start_chat(client)
    assert [e["outcome"] for e in usage_entries()] == ["created", "created"]
    expire(redis, first["chat_id"])
    start_chat(client)
    outcomes = [(e["outcome"], e["chat_id"] == first["chat_id"]) for e in usage_entries()]
    assert outcomes == [("created", True), ("created", False), ("created", False),
                        ("expired", True)]  # fmt: skip
    swept = usage_entries()[-1]
    assert (swept["kind"], swept["messages"], swept["entry"]) == ("chat", "2", ORIGIN)
    assert swept["agent_id"] == CHAT_AGENT and swept["status"] == ""
    assert_error(send(client, first["chat_token"]), 409, "chat_ended")
    end = client.post("/api/chat/end", json={"chat_token": first["chat_token"]},
                      headers={"Origin": ORIGIN})  # fmt: skip
    assert end.status_code == 204
    assert [e["outcome"] for e in usage_entries()].count("expired") == 1  # one end entry
    assert [e["outcome"] for e in usage_entries()].count("ended") == 0


def seed_live_chats(redis, n, expired=True):
    now = int(time.time() * 1000)
    for i in range(n):
        redis.hset(f"widget:chat:chat_seed{i}", mapping={
            "entry": ORIGIN, "origin": ORIGIN, "agent_id": CHAT_AGENT, "messages": str(i),
            "ended": "0"})  # fmt: skip
        redis.zadd("widget:chats:live", {f"chat_seed{i}": now + (-120_000 if expired else 60_000)})


def test_the_sweep_is_bounded_on_the_request_path_and_the_cli_does_the_rest(
    client, runner, chatting, redis, usage_entries, fake_retell
):
    seed_live_chats(redis, 25)
    assert start_chat(client).status_code == 201
    assert [e["outcome"] for e in usage_entries()].count("expired") == 20
    result = runner.invoke(args=["chats", "sweep"])
    assert result.exit_code == 0, result.output
    assert "5 closed" in result.stderr
    expired = [e for e in usage_entries() if e["outcome"] == "expired"]
    assert sorted(e["chat_id"] for e in expired) == sorted(f"chat_seed{i}" for i in range(25))
    assert redis.zcard("widget:chats:live") == 1  # only the live one
    assert runner.invoke(args=["chats", "sweep"]).stderr.startswith("0 closed")
    ends = [r for r in fake_retell.requests if r["path"].startswith("/end-chat/")]
    assert len(ends) == 5  # the CLI ends them upstream (404 here: the fake never had them)
    assert "not ended upstream" in result.stderr


def test_the_cli_sweep_leaves_live_chats_alone(runner, chatting, redis, usage_entries):
    seed_live_chats(redis, 3, expired=False)
    assert runner.invoke(args=["chats", "sweep"]).exit_code == 0
    assert usage_entries() == [] and redis.zcard("widget:chats:live") == 3


def test_round_trips(client, chatting, round_trips):
    token = start_chat(client).json["chat_token"]  # loads both scripts
    send(client, token)
    client.post("/api/chat/end", json={"chat_token": start_chat(client).json["chat_token"]},
                headers={"Origin": ORIGIN})  # fmt: skip
    with round_trips() as count:
        assert start_chat(client).status_code == 201
    assert count() == 2  # admission, then the record (usage entry, live set, sweep)
    with round_trips() as count:
        assert send(client, token).status_code == 200
    assert count() == 1
    with round_trips() as count:
        assert start_chat(client, origin="https://evil.example").status_code == 403
    assert count() == 1
    with round_trips() as count:
        assert client.post("/api/chat/end", json={"chat_token": token},
                           headers={"Origin": ORIGIN}).status_code == 204  # fmt: skip
    assert count() == 1


def test_cli_grants_chat_agents_apart_and_lists_them(runner, redis):
    ok = runner.invoke(args=["agents", "grant", "--chat", "https://Shop.example", CHAT_AGENT])
    assert ok.exit_code == 0, ok.output
    assert redis.smembers("widget:chat-agents:https://shop.example") == {CHAT_AGENT}
    assert redis.sismember("widget:origins", "https://shop.example")
    assert not redis.exists("widget:agents:https://shop.example")
    runner.invoke(args=["agents", "grant", "https://shop.example", AGENT])
    listed = runner.invoke(args=["agents", "list", "https://shop.example"]).output.splitlines()
    assert listed == [AGENT, f"{CHAT_AGENT}\t(chat)"]
    chats = runner.invoke(args=["agents", "list", "--chat", "https://shop.example"]).output
    assert chats.split() == [CHAT_AGENT]
    assert runner.invoke(args=["origins", "check"]).exit_code == 0
    runner.invoke(args=["agents", "revoke", "--chat", "https://shop.example", CHAT_AGENT])
    assert not redis.smembers("widget:chat-agents:https://shop.example")
    assert redis.smembers("widget:agents:https://shop.example") == {AGENT}


def test_cli_a_chat_only_origin_is_fine_and_removing_it_drops_both_grants(runner, redis):
    runner.invoke(args=["agents", "grant", "--chat", "https://a.com", CHAT_AGENT])
    assert runner.invoke(args=["origins", "check"]).exit_code == 0  # chat agents count
    result = runner.invoke(args=["origins", "list"])
    row = result.stdout.splitlines()[0].split("\t")
    assert (row[1], row[-2], row[-1]) == ("(no agents)", CHAT_AGENT, "1000")
    runner.invoke(args=["limits", "set", "https://a.com", "chats_per_day=40"])
    assert runner.invoke(args=["origins", "list"]).stdout.split("\t")[-1].strip() == "40"
    runner.invoke(args=["origins", "remove", "https://a.com"])
    assert not redis.exists("widget:chat-agents:https://a.com")


def test_cli_limits_take_chats_per_day_for_entries_and_agents(runner, redis):
    assert runner.invoke(args=["limits", "set", "https://a.com", "chats_per_day=0"]).exit_code == 0
    assert redis.hget("widget:limits:https://a.com", "chats_per_day") == "0"
    agent = runner.invoke(args=["limits", "set", "--agent", CHAT_AGENT, "chats_per_day=-1"])
    assert agent.exit_code == 0
    assert redis.hget(f"widget:limits:agent:{CHAT_AGENT}", "chats_per_day") == "-1"
    bad = runner.invoke(args=["limits", "set", "https://a.com", "chats_per_day=lots"])
    assert bad.exit_code != 0
