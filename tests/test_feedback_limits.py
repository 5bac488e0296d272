"""POST /api/feedback, all or nothing: one feedback per call and the per-IP limit under 100
simultaneous requests over real HTTP (a threaded server, a real redis-server), every attempt
on the usage stream, one round trip each, no secret anywhere, and no 5xx whatever the body."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import hypothesis
import pytest
import requests
from hypothesis import HealthCheck
from hypothesis import strategies as st

from app.usage.entry import FIELDS
from tests.helpers import AGENT, FEEDBACK, ORIGIN, feedback
from tests.test_feedback import OTHER, feedback_entries, mint


@pytest.fixture
def allowed(allow_origin):
    allow_origin(ORIGIN, AGENT)
    allow_origin(OTHER, AGENT)


def at_once(n, one):
    """n requests released together by a barrier, over real HTTP."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return one(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def http_feedback(base_url, call_id, rating="up", origin=ORIGIN):
    return requests.post(f"{base_url}{FEEDBACK}", json={"call_id": call_id, "rating": rating},
                         headers={"Origin": origin}, timeout=10)  # fmt: skip


# -- all or nothing under concurrency, over real HTTP ---------------------------------------


def test_one_feedback_per_call_under_100_simultaneous_posts(serve_app, allowed, redis,
                                                             usage_entries):  # fmt: skip
    served = serve_app(RATE_LIMIT_FEEDBACK_PER_IP="1000 per minute")
    call_id = mint(served.app.test_client())
    answers = at_once(100, lambda i: http_feedback(served.url, call_id, ("up", "down")[i % 2]))
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == 1 and statuses.count(409) == 99
    assert {a.json()["error"] for a in answers if a.status_code == 409} == {"feedback_exists"}
    [won] = [a.json() for a in answers if a.status_code == 201]
    assert redis.hget(f"widget:call:{call_id}", "feedback") == won["rating"]
    entries = feedback_entries(usage_entries)
    assert len(entries) == 100
    assert sorted(e["outcome"] for e in entries) == ["accepted"] + ["feedback_exists"] * 99


def test_the_per_ip_limit_is_exact_under_100_simultaneous_posts(serve_app, allowed,
                                                                 usage_entries):  # fmt: skip
    served = serve_app(RATE_LIMIT_FEEDBACK_PER_IP="7 per minute;50 per hour")
    minting = served.app.test_client()
    calls = [mint(minting) for _ in range(100)]
    answers = at_once(100, lambda i: http_feedback(served.url, calls[i]))
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == 7 and statuses.count(429) == 93
    limited = [a for a in answers if a.status_code == 429]
    assert {a.json()["error"] for a in limited} == {"rate_limited"}
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in limited)
    assert all(a.headers["X-RateLimit-Limit"] == "7" for a in limited)
    assert all(a.headers["Access-Control-Allow-Origin"] == ORIGIN for a in answers)
    outcomes = sorted(e["outcome"] for e in feedback_entries(usage_entries))
    assert outcomes == ["accepted"] * 7 + ["rate_limited"] * 93


# -- the usage stream, round trips, secrets -------------------------------------------------


def test_every_attempt_is_one_usage_entry_in_order(make_app, allowed, usage_entries):
    client = make_app(RATE_LIMIT_FEEDBACK_PER_IP="4 per minute").test_client()
    call_id = mint(client)
    expected = []

    def attempt(outcome, *args, **kwargs):
        feedback(client, *args, **kwargs)
        expected.append(outcome)

    attempt("origin_denied", call_id, origin="https://evil.example")
    attempt("invalid", call_id, "sideways")
    attempt("accepted", call_id, "up")
    attempt("feedback_exists", call_id, "down")
    attempt("unknown_call", "call_unknown")
    attempt("unknown_call", "call_unknown_2")
    attempt("rate_limited", call_id)
    entries = feedback_entries(usage_entries)
    assert [e["outcome"] for e in entries] == expected
    assert all(list(e) == list(FIELDS) for e in usage_entries())
    assert {e["kind"] for e in entries} == {"feedback"}
    assert {e["consent_version"] for e in entries} == {""}


def test_round_trips(client, allowed, round_trips):
    calls = [mint(client) for _ in range(2)]
    assert feedback(client, calls[0]).status_code == 201  # loads the script
    cases = [
        (lambda: feedback(client, calls[1]), 201),
        (lambda: feedback(client, calls[1]), 409),
        (lambda: feedback(client, "call_unknown"), 404),
        (lambda: feedback(client, calls[1], origin="https://evil.example"), 403),
        (lambda: feedback(client, calls[1], "meh"), 400),
        (lambda: client.options(FEEDBACK, headers={"Origin": ORIGIN,
                                                   "Access-Control-Request-Method": "POST"}), 204),
    ]  # fmt: skip
    for send, status in cases:
        with round_trips() as count:
            assert send().status_code == status
        assert count() == 1, status  # decided and recorded in the same one


def test_no_secret_in_any_answer_log_or_stream_entry(make_app, allowed, fake_retell, redis,
                                                     caplog, capfd):  # fmt: skip
    hash_key = "feedback-test-hash-key"
    client = make_app(USAGE_IP_HASH_KEY=hash_key).test_client()
    call_id = mint(client)
    responses = [feedback(client, call_id, comment="fine"), feedback(client, call_id),
                 feedback(client, "call_x"), feedback(client, call_id, origin=OTHER),
                 feedback(client, call_id, "bad")]  # fmt: skip
    for response in responses:
        for secret in (fake_retell.api_key, hash_key):
            assert secret not in response.get_data(as_text=True)
            assert secret not in str(response.headers)
    captured = capfd.readouterr()
    assert '"path": "/api/feedback"' in captured.err  # the log lines were captured
    stream = json.dumps(redis.xrange("widget:usage"))
    for secret in (fake_retell.api_key, hash_key):
        assert secret not in captured.out + captured.err + caplog.text
        assert secret not in stream
    assert "127.0.0.1" not in stream  # the address is hashed (USAGE_IP_MODE=hash)


# -- no 5xx, whatever the body -------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20,
)  # fmt: skip
FIELD_VALUES = st.one_of(JSON, st.sampled_from(["up", "down", "call_1", ""]))
BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {}, optional={"call_id": FIELD_VALUES, "rating": FIELD_VALUES, "comment": FIELD_VALUES,
                      "x": FIELD_VALUES},
    ),
)  # fmt: skip


@pytest.fixture
def unlimited(make_app):
    """A client without the per-IP feedback limit: every example reaches the call check."""
    return make_app(RATE_LIMIT_FEEDBACK_PER_IP="", LOG_LEVEL="WARNING").test_client()


@hypothesis.given(body=BODIES)
@hypothesis.settings(max_examples=300, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_no_body_is_a_5xx(unlimited, allowed, redis, body):
    redis.hset("widget:call:call_1", mapping={"entry": ORIGIN, "agent_id": AGENT})
    redis.hdel("widget:call:call_1", "feedback")
    response = unlimited.post(FEEDBACK, data=json.dumps(body), content_type="application/json",
                              headers={"Origin": ORIGIN})  # fmt: skip
    assert response.status_code in (201, 400, 404, 409), response.get_json()
    assert response.is_json and (response.status_code == 201 or response.json["error"])


@hypothesis.given(data=st.binary(max_size=300))
@hypothesis.settings(max_examples=200, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_no_bytes_are_a_5xx(unlimited, allowed, data):
    response = unlimited.post(FEEDBACK, data=data, content_type="application/json",
                           headers={"Origin": ORIGIN})  # fmt: skip
    assert response.status_code in (400, 404, 409, 429), response.get_json()
    assert response.is_json and response.json["error"]
