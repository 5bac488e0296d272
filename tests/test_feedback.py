"""POST /api/feedback against a real redis-server and the fake Retell (calls minted through
the gateway): the contract and every error code. Concurrency over real HTTP, the usage
stream, round trips and fuzzing: test_feedback_limits.py."""

import json

import pytest

from app.usage.entry import FIELDS
from tests.helpers import AGENT, FEEDBACK, ORIGIN, assert_error, feedback, post
from tests.test_webhooks import deliver

OTHER = "https://other.example"


@pytest.fixture
def allowed(allow_origin):
    allow_origin(ORIGIN, AGENT)
    allow_origin(OTHER, AGENT)


def mint(client, origin=ORIGIN) -> str:
    """A call created through the gateway: its call id."""
    response = post(client, {}, origin=origin)
    assert response.status_code == 201, response.json
    return response.json["call_id"]


def feedback_entries(usage_entries) -> list[dict]:
    return [e for e in usage_entries() if e["kind"] == "feedback"]


# -- the contract -------------------------------------------------------------------------


def test_feedback_is_recorded_on_the_call_and_the_stream(client, allowed, redis, usage_entries):
    call_id = mint(client)
    response = feedback(client, call_id, "up", comment="Very helpful, thanks!")
    assert response.status_code == 201
    assert response.json == {"call_id": call_id, "rating": "up"}
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in response.headers["Vary"]
    assert response.headers["X-RateLimit-Limit"] == "10"  # RATE_LIMIT_FEEDBACK_PER_IP's default
    assert response.headers["X-RateLimit-Remaining"] == "9"
    record = redis.hgetall(f"widget:call:{call_id}")
    assert (record["feedback"], record["feedback_comment"]) == ("up", "Very helpful, thanks!")
    assert int(record["feedback_ms"]) >= int(record["minted_ms"])
    [entry] = feedback_entries(usage_entries)
    assert list(entry) == list(FIELDS)  # every field, in order
    assert (entry["outcome"], entry["status"], entry["error"]) == ("accepted", "201", "")
    assert (entry["origin"], entry["entry"], entry["agent_id"]) == (ORIGIN, ORIGIN, AGENT)
    assert (entry["call_id"], entry["rating"], entry["comment"]) == (
        call_id, "up", "Very helpful, thanks!",
    )  # fmt: skip
    assert len(entry["ip"]) == 32 and entry["request_id"] == response.headers["X-Request-ID"]


def test_down_without_a_comment_after_the_call_ended(client, allowed, redis, fake_retell):
    call_id = mint(client)
    ended = {"call_id": call_id, "duration_ms": 42_000}
    assert deliver(client, fake_retell.api_key, "call_ended", ended).status_code == 204
    response = feedback(client, call_id, "down")
    assert response.status_code == 201 and response.json["rating"] == "down"
    record = redis.hgetall(f"widget:call:{call_id}")
    assert (record["feedback"], record["feedback_comment"], record["settled"]) == ("down", "", "1")
    # A webhook after the feedback still finds its record.
    analyzed = {"call_id": call_id, "call_cost": {"combined_cost": 12}}
    assert deliver(client, fake_retell.api_key, "call_analyzed", analyzed).status_code == 204
    assert redis.hget(f"widget:call:{call_id}", "cost_cents") == "12"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("  padded  ", "padded"), ("two\r\nlines\rthree", "two\nlines\nthree"),
     ("tab\tkept", "tab\tkept"), ("bell\x07 nul\x00 esc\x1b del\x7f c1\x85", "bell nul esc del c1"),
     ("Grüße 👋 日本", "Grüße 👋 日本"), ("   \n\t ", ""), ("", ""),
     ("x" * 1000, "x" * 1000), ("👋" * 1000, "👋" * 1000)],
    ids=lambda v: repr(v)[:20],
)  # fmt: skip
def test_the_comment_is_stored_clean(client, allowed, redis, usage_entries, sent, stored):
    call_id = mint(client)
    assert feedback(client, call_id, comment=sent).status_code == 201
    assert redis.hget(f"widget:call:{call_id}", "feedback_comment") == stored
    assert feedback_entries(usage_entries)[-1]["comment"] == stored


def test_a_lone_surrogate_is_dropped_not_a_500(client, allowed, redis):
    call_id = mint(client)
    raw = json.dumps({"call_id": call_id, "rating": "up", "comment": "a\ud800b\udfff"})
    assert "\\ud800" in raw  # sent as an escape: valid JSON, but no UTF-8
    response = client.post(FEEDBACK, data=raw, content_type="application/json",
                           headers={"Origin": ORIGIN})  # fmt: skip
    assert response.status_code == 201
    assert redis.hget(f"widget:call:{call_id}", "feedback_comment") == "ab"


def test_a_wildcard_entry_takes_feedback_from_any_of_its_sites(client, allow_origin):
    allow_origin("https://*.client-b.com", AGENT)
    call_id = mint(client, "https://a.client-b.com")
    assert feedback(client, call_id, origin="https://b.client-b.com").status_code == 201


# -- every error code ---------------------------------------------------------------------


def test_an_unknown_call_and_another_sites_call_get_the_same_404(client, allowed, usage_entries):
    theirs = mint(client, OTHER)
    unknown = feedback(client, "call_nobody_minted")
    other = feedback(client, theirs)
    for response in (unknown, other):
        assert_error(response, 404, "unknown_call")
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert unknown.json == other.json  # nothing says which
    entries = feedback_entries(usage_entries)
    assert [(e["outcome"], e["status"], e["error"]) for e in entries] == [
        ("unknown_call", "404", "unknown_call")] * 2  # fmt: skip
    assert entries[1]["entry"] == ORIGIN and entries[1]["agent_id"] == ""  # not the other's
    assert feedback(client, theirs, origin=OTHER).status_code == 201  # its own site may


def test_a_second_feedback_is_409_and_changes_nothing(client, allowed, redis, usage_entries):
    call_id = mint(client)
    assert feedback(client, call_id, "up", comment="first").status_code == 201
    again = feedback(client, call_id, "down", comment="second")
    assert_error(again, 409, "feedback_exists")
    assert again.headers["Access-Control-Allow-Origin"] == ORIGIN
    record = redis.hgetall(f"widget:call:{call_id}")
    assert (record["feedback"], record["feedback_comment"]) == ("up", "first")
    last = feedback_entries(usage_entries)[-1]
    assert (last["outcome"], last["status"], last["rating"], last["comment"]) == (
        "feedback_exists", "409", "down", "second",
    )  # fmt: skip


def test_the_per_ip_limit_is_429_with_retry_after(make_app, allowed, usage_entries):
    client = make_app(RATE_LIMIT_FEEDBACK_PER_IP="2 per minute;100 per day").test_client()
    calls = [mint(client) for _ in range(3)]
    assert feedback(client, calls[0]).status_code == 201
    assert_error(feedback(client, "call_unknown"), 404, "unknown_call")  # a guess counts too
    limited = feedback(client, calls[1])
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json["retry_after"] == int(limited.headers["Retry-After"])
    assert limited.headers["X-RateLimit-Limit"] == "2"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert_error(feedback(client, calls[2]), 429, "rate_limited")  # a 429 does not count...
    outcomes = [e["outcome"] for e in feedback_entries(usage_entries)]
    assert outcomes == ["accepted", "unknown_call", "rate_limited", "rate_limited"]
    # ...and the calls' own limit is counted apart.
    assert post(client, {}).status_code == 201


def test_no_per_ip_limit_when_it_is_empty(make_app, allowed):
    client = make_app(RATE_LIMIT_FEEDBACK_PER_IP="").test_client()
    answers = [feedback(client, mint(client)) for _ in range(12)]
    assert {a.status_code for a in answers} == {201}
    assert "X-RateLimit-Limit" not in answers[0].headers


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "not an origin", None])
def test_a_refused_origin_gets_403_without_cors(client, allowed, usage_entries, origin):
    call_id = mint(client)
    headers = {} if origin is None else {"Origin": origin}
    response = client.post(FEEDBACK, json={"call_id": call_id, "rating": "up"}, headers=headers)
    assert_error(response, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]
    [entry] = feedback_entries(usage_entries)
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "origin_denied", "403", "origin_not_allowed",
    )  # fmt: skip


def test_two_origin_headers_are_refused(client, allowed):
    headers = [("Origin", ORIGIN), ("Origin", OTHER)]
    response = client.post(FEEDBACK, json={"call_id": "call_x", "rating": "up"}, headers=headers)
    assert_error(response, 403, "origin_not_allowed")


BAD_BODIES = [
    ({"data": "{not json"}, 400, "invalid_json", None),
    ({"data": "\xff\xfe"}, 400, "invalid_json", None),
    ({"data": ""}, 400, "invalid_json", None),
    ({"data": "[1, 2]"}, 400, "invalid_request", None),
    ({"data": "null"}, 400, "invalid_request", None),
    ({"data": '"up"'}, 400, "invalid_request", None),
    ({"data": "[" * 3000 + "]" * 3000}, 400, "invalid_request", None),
    ({"data": '{"a":' * 2000 + "1" + "}" * 2000}, 400, "invalid_request", None),
    ({"json": {"rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": None, "rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": 7, "rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": "", "rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": "c" * 129, "rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": "call/../x", "rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": "call_1\n", "rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": ["call_1"], "rating": "up"}}, 400, "invalid_request", "call_id"),
    ({"json": {"call_id": "call_1"}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": None}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": "Up"}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": "up "}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": 1}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": True}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": ["up"]}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": {"up": 1}}}, 400, "invalid_request", "rating"),
    ({"json": {"call_id": "call_1", "rating": "up", "comment": None}}, 400, "invalid_request",
     "comment"),
    ({"json": {"call_id": "call_1", "rating": "up", "comment": 5}}, 400, "invalid_request",
     "comment"),
    ({"json": {"call_id": "call_1", "rating": "up", "comment": ["a"]}}, 400, "invalid_request",
     "comment"),
    ({"json": {"call_id": "call_1", "rating": "up", "comment": "x" * 1001}}, 400,
     "invalid_request", "comment"),
    ({"json": {"call_id": "call_1", "rating": "up", "stars": 5}}, 400, "invalid_request",
     "stars"),
    ({"data": "call_id=x", "content_type": "text/plain"}, 415, "unsupported_media_type", None),
    ({"data": "call_id=x", "content_type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type", None),
    ({"json": {"call_id": "call_1", "rating": "up", "comment": "x" * 17000}}, 413,
     "payload_too_large", None),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "status", "code", "field"), BAD_BODIES,
                         ids=lambda v: repr(v)[:30])  # fmt: skip
def test_bad_bodies_get_a_clear_error_and_are_recorded(
    client, allowed, usage_entries, capsys, kwargs, status, code, field
):
    kwargs = {"content_type": "application/json", **kwargs} if "data" in kwargs else kwargs
    response = client.post(FEEDBACK, headers={"Origin": ORIGIN}, **kwargs)
    assert_error(response, status, code)
    if field:
        assert field in response.json["message"]
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN  # a listed site may read
    [entry] = feedback_entries(usage_entries)
    assert (entry["outcome"], entry["status"], entry["error"]) == ("invalid", str(status), code)
    assert "Traceback" not in capsys.readouterr().err


def test_a_bad_body_from_an_unlisted_origin_is_only_origin_not_allowed(client, allowed):
    response = client.post(FEEDBACK, data="{", content_type="application/json",
                           headers={"Origin": "https://evil.example"})  # fmt: skip
    assert_error(response, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_other_methods_are_a_json_405(client):
    for method in ("get", "put", "delete"):
        response = getattr(client, method)(FEEDBACK, headers={"Origin": ORIGIN})
        assert_error(response, 405, "method_not_allowed")
        assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}


def test_redis_down_is_503(client, allowed, redis_server, capsys):
    call_id = mint(client)
    redis_server.stop()
    try:
        response = feedback(client, call_id)
        assert_error(response, 503, "unavailable")
        preflight = client.options(
            FEEDBACK, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        )
        assert_error(preflight, 503, "unavailable")  # fmt: skip
    finally:
        redis_server.start()
    assert "Traceback" not in capsys.readouterr().err


def test_an_unknown_outcome_refuses_and_is_recorded(client, app, allowed, usage_entries):
    ledger = app.extensions["feedback"]
    ledger.decide = lambda request: {"outcome": "maybe"}
    assert_error(feedback(client, "call_1"), 500, "internal_error")
    [entry] = feedback_entries(usage_entries)
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "unavailable", "500", "internal_error",
    )  # fmt: skip


def test_preflight(client, allowed):
    asked = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    response = client.options(FEEDBACK, headers=asked)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Request-ID"
    assert "Origin" in response.headers["Vary"]
    wrong = client.options(FEEDBACK, headers={**asked, "Access-Control-Request-Method": "GET"})
    assert_error(wrong, 403, "origin_not_allowed")
    unlisted = client.options(FEEDBACK, headers={**asked, "Origin": "https://evil.example"})
    assert_error(unlisted, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in unlisted.headers
