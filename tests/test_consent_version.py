"""consent_version on create-web-call and on a chat's start: on the attempt's usage entry and
in the metadata that reaches the fake Retell (over HTTP), the gateway's value over the
browser's; bad values are 400 invalid_request."""

import pytest
import requests

from app.usage.entry import FIELDS
from tests.helpers import AGENT, CHAT_AGENT, ORIGIN, assert_error, grant_chat, post, start_chat


@pytest.fixture
def allowed(allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    grant_chat(redis, ORIGIN, CHAT_AGENT)


def sent_metadata(fake_retell, path="/v3/create-web-call") -> dict:
    return next(r for r in reversed(fake_retell.requests) if r["path"] == path)["body"]["metadata"]


def test_a_call_records_it_and_sends_it_as_metadata(client, allowed, fake_retell, usage_entries):
    body = {"consent_version": "2026-01", "metadata": {"plan": "pro"}}
    response = post(client, body, headers={"Referer": "https://client-a.com/pricing"})
    assert response.status_code == 201
    assert sent_metadata(fake_retell) == {
        "plan": "pro", "origin": ORIGIN, "page_url": "https://client-a.com/pricing",
        "consent_version": "2026-01",
    }  # fmt: skip
    [entry] = usage_entries()
    assert list(entry) == list(FIELDS)
    assert (entry["outcome"], entry["consent_version"]) == ("created", "2026-01")


def test_the_gateways_value_wins_over_the_browsers_metadata(client, allowed, fake_retell):
    post(client, {"consent_version": "v2", "metadata": {"consent_version": "forged"}})
    assert sent_metadata(fake_retell)["consent_version"] == "v2"
    # Absent, the browser's own value does not pass for the gateway's either.
    post(client, {"metadata": {"consent_version": "forged", "k": "v"}})
    assert sent_metadata(fake_retell) == {"k": "v", "origin": ORIGIN}


def test_absent_it_is_empty_on_the_entry(client, allowed, usage_entries):
    assert post(client, {}).status_code == 201
    assert usage_entries()[-1]["consent_version"] == ""


def test_a_refused_attempt_records_it_too(make_app, allowed, usage_entries):
    client = make_app(RATE_LIMIT_PER_IP="1 per minute").test_client()
    post(client, {"consent_version": "v1"})
    assert_error(post(client, {"consent_version": "v1"}), 429, "rate_limited")
    assert_error(post(client, {"agent_id": "agent_other", "consent_version": "v3"}), 403,
                 "agent_not_allowed")  # fmt: skip
    assert [(e["outcome"], e["consent_version"]) for e in usage_entries()] == [
        ("created", "v1"), ("rate_limited", "v1"), ("agent_denied", "v3"),
    ]  # fmt: skip


def test_over_real_http_it_reaches_retell(serve_app, allowed, fake_retell, usage_entries):
    served = serve_app()
    response = requests.post(f"{served.url}/api/create-web-call",
                             json={"consent_version": "consent-v1.2"},
                             headers={"Origin": ORIGIN}, timeout=10)  # fmt: skip
    assert response.status_code == 201
    assert sent_metadata(fake_retell)["consent_version"] == "consent-v1.2"
    assert usage_entries()[-1]["consent_version"] == "consent-v1.2"


def test_a_chat_start_takes_it_the_same_way(client, allowed, fake_retell, usage_entries):
    body = {"consent_version": "2026-02", "metadata": {"consent_version": "forged"}}
    assert start_chat(client, body).status_code == 201
    assert sent_metadata(fake_retell, "/create-chat") == {
        "origin": ORIGIN, "consent_version": "2026-02",
    }  # fmt: skip
    [entry] = usage_entries()
    assert (entry["kind"], entry["consent_version"]) == ("chat", "2026-02")


@pytest.mark.parametrize(
    "value",
    ["", " ", " v1", "v1 ", "v 1", "v1\n", "v1\t", "é", "\u0661", "x" * 65, None, 5, True,
     ["v1"], {"v": "1"}],
    ids=repr,
)  # fmt: skip
@pytest.mark.parametrize("route", ["call", "chat"])
def test_bad_values_are_400_and_recorded_without_it(
    client, allowed, fake_retell, usage_entries, value, route
):
    body = {"consent_version": value}
    response = post(client, body) if route == "call" else start_chat(client, body)
    assert_error(response, 400, "invalid_request")
    assert "consent_version" in response.json["message"]
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    [entry] = usage_entries()
    assert (entry["outcome"], entry["consent_version"]) == ("invalid", "")
    assert fake_retell.requests == []


@pytest.mark.parametrize("value", ["1", "x" * 64, "v2.1-beta+7", "2026-01-31", "!~#$%&'()*"])
def test_good_values(client, allowed, fake_retell, value):
    assert post(client, {"consent_version": value}).status_code == 201
    assert sent_metadata(fake_retell)["consent_version"] == value
