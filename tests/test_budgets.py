"""Minute budgets and concurrency caps: reserved at admission, released on an upstream
failure, settled by call_ended; exact under concurrency. Real redis-server, fake Retell."""

import datetime as dt
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import AGENT, ORIGIN, post, post_http
from tests.test_webhooks import deliver

MINUTE = 60_000


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def this_month() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


def used(redis, scope=f"origin:{ORIGIN}", period=None) -> int:
    return int(redis.get(f"widget:minutes:{scope}:{period or today()}") or 0)


def sent_max_duration(fake_retell):
    body = fake_retell.requests[-1]["body"]
    return body.get("agent_override", {}).get("agent", {}).get("max_call_duration_ms")


def end(client, fake_retell, call_id, duration_ms):
    call = {"call_id": call_id, "duration_ms": duration_ms}
    assert deliver(client, fake_retell.api_key, "call_ended", call).status_code == 204


@pytest.fixture
def allowed(allow_origin):
    allow_origin(ORIGIN, AGENT)


def test_a_call_reserves_what_is_left_and_retell_is_told(make_app, redis, allowed, fake_retell):
    client = make_app(MINUTES_PER_ORIGIN_DAY=10).test_client()
    first = post(client)
    assert first.status_code == 201
    assert used(redis) == 10 * MINUTE  # the whole budget: shorter than Retell's default hour
    assert sent_max_duration(fake_retell) == 10 * MINUTE
    end(client, fake_retell, first.json["call_id"], 93_000)
    assert used(redis) == 93_000  # the reservation is replaced by the real length
    assert post(client).status_code == 201
    assert sent_max_duration(fake_retell) == 10 * MINUTE - 93_000


def test_no_budget_means_no_override_unless_capped(make_app, redis, allowed, fake_retell):
    assert post(make_app().test_client()).status_code == 201
    assert sent_max_duration(fake_retell) is None
    assert redis.keys("widget:minutes:*") == []
    assert post(make_app(MAX_CALL_DURATION_MS=120_000).test_client()).status_code == 201
    assert sent_max_duration(fake_retell) == 120_000


def test_less_than_a_minute_left_is_budget_exhausted(
    make_app, redis, allowed, fake_retell, usage_entries
):
    client = make_app(MINUTES_PER_ORIGIN_DAY=2, MAX_CALL_DURATION_MS=90_000).test_client()
    assert post(client).status_code == 201  # reserves 90 s, 30 s are left
    refused = post(client)
    assert refused.status_code == 429 and refused.json["error"] == "budget_exhausted"
    midnight = dt.datetime.combine(
        dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(), dt.UTC
    )
    to_midnight = (midnight - dt.datetime.now(dt.UTC)).total_seconds()
    assert abs(int(refused.headers["Retry-After"]) - to_midnight) <= 2
    assert refused.json["retry_after"] == int(refused.headers["Retry-After"])
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert len(fake_retell.requests) == 1
    assert used(redis) == 90_000  # the refusal reserved nothing
    entry = usage_entries()[-1]
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "budget_exhausted", "429", "budget_exhausted",
    )  # fmt: skip


def test_a_monthly_agent_budget_counts_across_origins(make_app, redis, allow_origin, fake_retell):
    allow_origin(ORIGIN, AGENT)
    allow_origin("https://client-b.com", AGENT)
    redis.hset(f"widget:limits:agent:{AGENT}", "minutes_per_month", 3)
    client = make_app(MAX_CALL_DURATION_MS=MINUTE).test_client()
    statuses = [post(client, origin=o).status_code for o in [ORIGIN, "https://client-b.com"] * 2]
    assert statuses == [201, 201, 201, 429]
    assert used(redis, f"agent:{AGENT}", this_month()) == 3 * MINUTE


def test_a_stored_minus_one_lifts_the_default_and_zero_pauses(make_app, redis, allowed):
    client = make_app(MINUTES_PER_ORIGIN_DAY=1, MAX_CALL_DURATION_MS=MINUTE).test_client()
    redis.hset(f"widget:limits:{ORIGIN}", "minutes_per_day", -1)
    assert [post(client).status_code for _ in range(3)] == [201, 201, 201]
    redis.hset(f"widget:limits:{ORIGIN}", "minutes_per_day", 0)
    assert post(client).json["error"] == "budget_exhausted"


@pytest.mark.parametrize(
    "behaviour", [{"behaviour": "error", "status": 500}, {"behaviour": "garbage"}]
)
def test_an_upstream_failure_gives_the_reservation_back(
    make_app, redis, allowed, fake_retell, behaviour
):
    client = make_app(MINUTES_PER_ORIGIN_DAY=5, CONCURRENT_CALLS_PER_ORIGIN=1).test_client()
    fake_retell.set_behaviour(**behaviour)
    assert post(client).status_code == 502
    assert used(redis) == 0
    assert redis.zcard(f"widget:live:origin:{ORIGIN}") == 0
    fake_retell.set_behaviour("ok")
    assert post(client).status_code == 201  # neither the minutes nor the slot were lost


def test_settlement_lands_in_the_period_it_was_reserved_in(make_app, redis, allowed, fake_retell):
    client = make_app(MINUTES_PER_ORIGIN_DAY=60).test_client()
    call_id = post(client).json["call_id"]
    # Make the reservation yesterday's, as if the call started just before midnight UTC.
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    today_key = f"widget:minutes:origin:{ORIGIN}:{today()}"
    old_key = f"widget:minutes:origin:{ORIGIN}:{yesterday}"
    redis.rename(today_key, old_key)
    counters = json.loads(redis.hget(f"widget:call:{call_id}", "counters"))
    redis.hset(
        f"widget:call:{call_id}",
        "counters",
        json.dumps([old_key if c == today_key else c for c in counters]),
    )
    end(client, fake_retell, call_id, 4 * MINUTE)
    assert int(redis.get(old_key)) == 4 * MINUTE
    assert redis.get(today_key) is None  # today's budget is untouched


def test_a_concurrency_cap_is_busy_until_a_call_ends(make_app, redis, allowed, fake_retell):
    redis.hset(f"widget:limits:{ORIGIN}", "max_concurrent", 2)
    client = make_app().test_client()
    first, second = post(client), post(client)
    busy = post(client)
    assert busy.status_code == 429 and busy.json["error"] == "busy"
    assert 1 <= int(busy.headers["Retry-After"]) <= 60
    assert set(redis.zrange(f"widget:live:origin:{ORIGIN}", 0, -1)) == {
        first.json["call_id"], second.json["call_id"],
    }  # fmt: skip
    end(client, fake_retell, first.json["call_id"], 1000)
    assert post(client).status_code == 201


def test_a_reservation_that_runs_out_frees_its_slot(make_app, redis, allowed):
    client = make_app(CONCURRENT_CALLS_PER_ORIGIN=1).test_client()
    call_id = post(client).json["call_id"]
    assert post(client).json["error"] == "busy"
    redis.zadd(f"widget:live:origin:{ORIGIN}", {call_id: 1})  # as if its hour had passed
    assert post(client).status_code == 201


def test_the_total_cap_spans_every_origin(make_app, allow_origin):
    allow_origin(ORIGIN, AGENT)
    allow_origin("https://client-b.com", AGENT)
    client = make_app(CONCURRENT_CALLS_TOTAL=1).test_client()
    assert post(client).status_code == 201
    assert post(client, origin="https://client-b.com").json["error"] == "busy"


def test_admitting_and_recording_still_cost_two_round_trips(make_app, allowed, round_trips):
    client = make_app(MINUTES_PER_ORIGIN_DAY=600, CONCURRENT_CALLS_PER_ORIGIN=5).test_client()
    post(client)  # loads both scripts
    with round_trips() as count:
        assert post(client).status_code == 201
    assert count() == 2
    with round_trips() as count:
        assert post(client, origin="https://evil.com").status_code == 403
    assert count() == 1


def hundred_at_once(url, body=None):
    barrier = threading.Barrier(100)

    def one(_):
        barrier.wait()
        return post_http(url) if body is None else post_http(url, body)

    with ThreadPoolExecutor(max_workers=100) as pool:
        return [r.json().get("error") or r.status_code for r in pool.map(one, range(100))]


def test_100_at_once_against_a_3_minute_budget_reserve_3_minutes(
    serve_app, redis, allowed, fake_retell
):
    fake_retell.set_behaviour(delay=0.05)
    served = serve_app(MINUTES_PER_ORIGIN_DAY=3, MAX_CALL_DURATION_MS=MINUTE)
    answers = hundred_at_once(served.url)
    assert answers.count(201) == 3 and answers.count("budget_exhausted") == 97
    assert len(fake_retell.requests) == 3
    assert used(redis) == 3 * MINUTE


def test_100_at_once_against_a_cap_of_3_make_3_calls(serve_app, redis, allowed, fake_retell):
    fake_retell.set_behaviour(delay=0.05)
    redis.hset(f"widget:limits:{ORIGIN}", "max_concurrent", 3)
    answers = hundred_at_once(serve_app().url)
    assert answers.count(201) == 3 and answers.count("busy") == 97
    assert len(fake_retell.requests) == 3
    assert redis.zcard(f"widget:live:origin:{ORIGIN}") == 3


def test_the_fakes_signed_webhooks_settle_a_call_end_to_end(serve_app, redis, allowed, fake_retell):
    """Real HTTP both ways: the fake signs on its own (its code, not ours), the app verifies."""
    served = serve_app(MINUTES_PER_ORIGIN_DAY=60, CONCURRENT_CALLS_PER_ORIGIN=2)
    fake_retell.webhook_url = f"{served.url}/api/retell-webhook"
    call_id = post_http(served.url).json()["call_id"]
    assert used(redis) == 60 * MINUTE and redis.zcard(f"widget:live:origin:{ORIGIN}") == 1
    deliveries = fake_retell.end_call(call_id, duration_ms=125_000)
    assert [(d["event"], d["status"]) for d in deliveries] == [
        ("call_started", 204), ("call_ended", 204), ("call_analyzed", 204),
    ]  # fmt: skip
    assert used(redis) == 125_000
    assert redis.zcard(f"widget:live:origin:{ORIGIN}") == 0
    record = redis.hgetall(f"widget:call:{call_id}")
    assert (record["settled"], record["duration_ms"]) == ("1", "125000")
    assert (
        int(float(record["cost_cents"])) == fake_retell.calls[call_id]["call_cost"]["combined_cost"]
    )


def test_reconcile_settles_a_call_whose_webhook_never_came(make_app, redis, allowed, fake_retell):
    app = make_app(MINUTES_PER_ORIGIN_DAY=600)
    client, runner = app.test_client(), app.test_cli_runner()
    ended, live = post(client).json["call_id"], post(client).json["call_id"]
    fake_retell.end_call(ended, duration_ms=42_000)  # no webhook_url: nothing is delivered
    fake_retell.start_call(live)
    assert used(redis) == 2 * 60 * MINUTE  # both still hold a whole hour each
    for call_id in (ended, live):  # as if both reservations had run out
        redis.zadd("widget:calls:open", {call_id: 1})
    result = runner.invoke(args=["calls", "reconcile"])
    assert result.exit_code == 0, result.output
    assert f"{ended}: accepted" in result.output and f"{live}: still ongoing" in result.output
    assert redis.hget(f"widget:call:{ended}", "duration_ms") == "42000"
    assert redis.zscore("widget:calls:open", live) == 1  # not settled: checked again later
    [event] = [e for _, e in redis.xrange("widget:call-events")]
    assert (event["call_id"], event["request_id"]) == (ended, "reconcile")
    # A late webhook for the reconciled call changes nothing.
    end(client, fake_retell, ended, 99_000)
    assert redis.hget(f"widget:call:{ended}", "duration_ms") == "42000"


def test_reconcile_waits_when_retell_does_not_answer(make_app, redis, allowed, fake_retell):
    app = make_app(MINUTES_PER_ORIGIN_DAY=600)
    call_id = post(app.test_client()).json["call_id"]
    redis.zadd("widget:calls:open", {call_id: 1})
    fake_retell.get_call_status = 500
    result = app.test_cli_runner().invoke(args=["calls", "reconcile"])
    assert result.exit_code == 1 and "try again later" in result.output
    assert redis.hget(f"widget:call:{call_id}", "settled") == "0"
