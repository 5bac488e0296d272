"""Who may call: the allowlist, agent grants and exact CORS, against a real redis-server."""

import shutil
import subprocess
import time

import pytest

from app.policy.allowlist import allowlist_problems
from tests.helpers import AGENT, ORIGIN, post, wait_until

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def preflight(client, origin, method="POST", headers="content-type"):
    return client.options(
        "/api/create-web-call",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def assert_refused(response, fake_retell, code="origin_not_allowed"):
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.json["error"] == code
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers.get("Vary", "")
    assert fake_retell.requests == []


@pytest.fixture
def prod_client(make_app):
    return make_app(APP_ENV="production").test_client()


@pytest.fixture
def allowed(allow_origin):
    allow_origin(ORIGIN, AGENT)
    allow_origin("https://*.wild.com", AGENT)
    allow_origin("https://ported.com:8443", AGENT)


LOOKALIKES = [
    "https://client-a.com.evil.com",  # suffix
    "https://evilclient-a.com",  # prefix
    "https://client-a.com-evil.com",
    "https://evil.com/https://client-a.com",  # embedded
    "https://evil.com?https://client-a.com",
    "https://client-a.com@evil.com",  # userinfo
    "https://evil.com@client-a.com",
    "http://client-a.com",  # scheme change (production refuses http)
    "https://client-a.com:444",  # port change
    "https://client-a.com/",  # trailing slash
    "https://client-a.com.",  # trailing dot
    "https://client-a.com/path",
    "https://сlient-a.com",  # Cyrillic 'с'
    "https://xn--lient-a-6fg.com",
    "null",
    "",
    "*",
    "https://client-a.com, https://client-a.com",  # duplicated header, as WSGI joins them
    "https://wild.com",  # apex of a wildcard entry
    "https://wild.com.evil.com",
    "https://evilwild.com",
    "https://a.evilwild.com",
    "http://a.wild.com",  # wildcard entry, other scheme
    "https://a.wild.com:8443",  # wildcard entry, other port
    "https://ported.com",  # entry has a port
    "https://*.wild.com",  # a wildcard is not an origin
    "file://",
    "https://client-a.com\t",
]


@pytest.mark.parametrize("origin", LOOKALIKES)
def test_attack_matrix_is_refused_without_cors_or_upstream_call(
    prod_client, allowed, fake_retell, origin, usage_entries
):
    assert_refused(post(prod_client, origin=origin), fake_retell)
    assert_refused(preflight(prod_client, origin), fake_retell)
    assert [e["outcome"] for e in usage_entries()] == ["origin_denied"]


def test_missing_origin_is_refused(prod_client, allowed, fake_retell):
    assert_refused(post(prod_client, origin=None), fake_retell)


def test_two_origin_headers_are_refused(prod_client, allowed, fake_retell):
    response = prod_client.post(
        "/api/create-web-call", json={"agent_id": AGENT},
        headers=[("Origin", ORIGIN), ("Origin", ORIGIN)],
    )  # fmt: skip
    assert_refused(response, fake_retell)


@pytest.mark.parametrize(
    "origin",
    [ORIGIN, "HTTPS://CLIENT-A.COM", "https://client-a.com:443", "https://a.wild.com",
     "https://a.b.c.wild.com", "https://ported.com:8443"],
)  # fmt: skip
def test_allowed_path_has_exact_headers(prod_client, allowed, fake_retell, origin):
    response = post(prod_client, origin=origin)
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert response.headers["Vary"] == "Origin"
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
    assert len(fake_retell.requests) == 1


def test_preflight_for_an_allowed_origin(prod_client, allowed, fake_retell):
    response = preflight(prod_client, ORIGIN)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Request-ID"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert response.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert fake_retell.requests == []


def test_preflight_max_age_is_configurable(make_app, allowed):
    client = make_app(CORS_MAX_AGE="60").test_client()
    assert preflight(client, ORIGIN).headers["Access-Control-Max-Age"] == "60"


def test_preflight_for_another_method_is_refused(prod_client, allowed, fake_retell):
    assert_refused(preflight(prod_client, ORIGIN, method="DELETE"), fake_retell)


def test_preflight_and_refusal_cost_one_round_trip_and_no_budget(
    prod_client, allowed, redis, fake_retell, round_trips
):
    preflight(prod_client, ORIGIN)  # loads the script once
    for request in (
        lambda: preflight(prod_client, ORIGIN),
        lambda: preflight(prod_client, "https://evil.com"),
        lambda: post(prod_client, origin="https://evil.com"),
        lambda: post(prod_client, {"agent_id": "agent_nobody"}, origin=ORIGIN),
        lambda: post(prod_client, {"agent_id": 5}, origin=ORIGIN),
    ):
        with round_trips() as count:
            request()
        assert count() == 1
    assert not redis.keys("widget:rl:*")


def test_text_plain_simple_post_from_refused_origin(prod_client, allowed, fake_retell):
    response = prod_client.post(
        "/api/create-web-call", data="{garbage", content_type="text/plain",
        headers={"Origin": "https://evil.com"},
    )  # fmt: skip
    assert_refused(response, fake_retell)


def test_agent_not_granted_looks_like_an_unknown_agent(
    prod_client, allowed, allow_origin, fake_retell
):
    allow_origin("https://other.com", "agent_other")
    allowed_elsewhere = "agent_other"
    denied = post(prod_client, {"agent_id": allowed_elsewhere}, origin=ORIGIN)
    unknown = post(prod_client, {"agent_id": "agent_nobody_has"}, origin=ORIGIN)
    assert denied.status_code == unknown.status_code == 403
    assert (
        denied.json
        == unknown.json
        == {
            "error": "agent_not_allowed",
            "message": denied.json["message"],
        }
    )
    assert denied.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert fake_retell.requests == []


def test_origin_without_agents_may_use_none(prod_client, allow_origin, fake_retell):
    allow_origin("https://empty.com")
    response = post(prod_client, origin="https://empty.com")
    assert response.status_code == 403 and response.json["error"] == "agent_not_allowed"
    response = post(prod_client, {}, origin="https://empty.com")
    assert response.status_code == 403 and response.json["error"] == "agent_not_allowed"


def test_omitted_agent_uses_the_only_one(prod_client, allowed, fake_retell):
    assert post(prod_client, {}, origin=ORIGIN).status_code == 201
    assert fake_retell.requests[-1]["body"]["agent_id"] == AGENT


def test_omitted_agent_with_several_is_a_clear_400(prod_client, allow_origin, fake_retell):
    allow_origin(ORIGIN, "agent_1", "agent_2")
    response = post(prod_client, {}, origin=ORIGIN)
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert "agent_id" in response.json["message"]


def test_wildcard_grants_belong_to_the_wildcard_entry(prod_client, allow_origin, fake_retell):
    allow_origin("https://*.shop.com", "agent_shop")
    allow_origin("https://eu.shop.com", "agent_eu")
    assert (
        post(prod_client, {"agent_id": "agent_shop"}, origin="https://us.shop.com").status_code
        == 201
    )
    # an exact entry wins over the wildcard, with its own grants
    assert (
        post(prod_client, {"agent_id": "agent_eu"}, origin="https://eu.shop.com").status_code == 201
    )
    eu_shop = post(prod_client, {"agent_id": "agent_shop"}, origin="https://eu.shop.com")
    assert eu_shop.json["error"] == "agent_not_allowed"


def test_http_needs_development_or_allow_insecure(make_app, allow_origin, fake_retell):
    allow_origin("http://plain.com", AGENT)
    prod = make_app(APP_ENV="production").test_client()
    assert_refused(post(prod, origin="http://plain.com"), fake_retell)
    insecure = make_app(APP_ENV="production", ALLOW_INSECURE_ORIGINS="1").test_client()
    assert post(insecure, origin="http://plain.com").status_code == 201
    dev = make_app(APP_ENV="development").test_client()
    assert post(dev, origin="http://plain.com").status_code == 201


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:9999"])
def test_development_allows_loopback_by_hostname(make_app, allow_origin, fake_retell, origin):
    allow_origin(origin, AGENT)  # grants are still needed
    redis_origin_removed = make_app(APP_ENV="development").test_client()
    redis_origin_removed.application.extensions["redis"].client.srem("widget:origins", origin)
    assert post(redis_origin_removed, origin=origin).status_code == 201
    fake_retell.reset()
    prod = make_app(APP_ENV="production", ALLOW_INSECURE_ORIGINS="1").test_client()
    assert_refused(post(prod, origin=origin), fake_retell)


@pytest.mark.parametrize("origin", ["http://localhost.evil.com", "http://evil-localhost:3000"])
def test_development_does_not_match_localhost_substrings(make_app, fake_retell, origin):
    dev = make_app(APP_ENV="development").test_client()
    assert_refused(post(dev, origin=origin), fake_retell)


@pytest.mark.parametrize(
    "entry", ["*", "null", "", "https://client-a.com/", "/.*/", "https://*", "client-a.com",
              "HTTPS://CLIENT-A.COM"],
)  # fmt: skip
def test_invalid_stored_entries_never_widen_access(make_app, redis, fake_retell, entry, caplog):
    redis.sadd("widget:origins", entry)
    redis.sadd(f"widget:agents:{entry}", AGENT)
    prod_client = make_app(APP_ENV="production").test_client()
    for origin in (ORIGIN, "https://evil.com"):
        assert_refused(post(prod_client, origin=origin), fake_retell)
    problems = allowlist_problems(redis, lambda *p: "widget:" + ":".join(p))
    assert any(repr(entry) in line for line in problems)
    assert any(repr(entry) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@pytest.mark.parametrize(
    ("key", "setup"),
    [
        ("widget:origins", lambda r, k: r.set(k, ORIGIN)),
        ("widget:origins", lambda r, k: r.hset(k, ORIGIN, "1")),
        (f"widget:agents:{ORIGIN}", lambda r, k: r.set(k, AGENT)),
        (f"widget:agents:{ORIGIN}", lambda r, k: r.lpush(k, AGENT)),
    ],
)
def test_wrong_type_keys_fail_closed(prod_client, redis, fake_retell, key, setup, caplog):
    redis.sadd("widget:origins", ORIGIN)
    redis.sadd(f"widget:agents:{ORIGIN}", AGENT)
    redis.delete(key)
    setup(redis, key)
    response = post(prod_client, origin=ORIGIN)
    assert response.status_code == 403
    assert fake_retell.requests == []
    assert "WRONGTYPE" in caplog.text


def test_redis_cli_edits_take_effect_within_a_second(prod_client, redis_server, redis, fake_retell):
    def cli(*args):
        subprocess.run([REDIS_CLI, "-p", str(redis_server.port), *args], check=True,
                       capture_output=True)  # fmt: skip

    new = "https://new-client.com"
    assert_refused(post(prod_client, origin=new), fake_retell)
    cli("SADD", "widget:origins", new)
    cli("SADD", f"widget:agents:{new}", AGENT)
    assert wait_until(lambda: post(prod_client, origin=new).status_code == 201, timeout=1.0)
    cli("SREM", "widget:origins", new)
    assert wait_until(lambda: post(prod_client, origin=new).status_code == 403, timeout=1.0)


def test_redis_stopped_fails_closed_fast(prod_client, allowed, redis_server, fake_retell):
    assert post(prod_client, origin=ORIGIN).status_code == 201
    redis_server.stop()
    try:
        for _ in range(3):
            started = time.monotonic()
            response = post(prod_client, origin=ORIGIN)
            assert time.monotonic() - started < 0.5
            assert response.status_code == 503 and response.json["error"] == "unavailable"
            assert "Access-Control-Allow-Origin" not in response.headers
            started = time.monotonic()
            assert preflight(prod_client, ORIGIN).status_code == 503
            assert time.monotonic() - started < 0.5
        assert len(fake_retell.requests) == 1
    finally:
        redis_server.start()
