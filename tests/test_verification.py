"""Proving a person is there: proof of work (ALTCHA v1) and the three captchas against a fake
siteverify server, all through create-web-call on a real redis-server."""

import base64
import hashlib
import hmac
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.fakes.siteverify import SECRETS
from tests.helpers import AGENT, ORIGIN, assert_error, post, post_http

POW_KEY = "test-pow-key-0123456789"


def settings_for(siteverify) -> dict:
    config = {"POW_HMAC_KEY": POW_KEY, "POW_DIFFICULTY": 2000, "VERIFY_TIMEOUT": 0.5}
    for provider, secret in SECRETS.items():
        name = provider.upper()
        config[f"{name}_SITE_KEY"] = f"site-key-{provider}"
        config[f"{name}_SECRET_KEY"] = secret
        config[f"{name}_VERIFY_URL"] = siteverify.url_for(provider)
    return config


@pytest.fixture
def verifying(make_app, siteverify, allow_origin, redis):
    """verifying(provider, **settings) -> a test client for ORIGIN, which asks for provider."""

    def make(provider, **settings):
        allow_origin(ORIGIN, AGENT)
        redis.hset(f"widget:limits:{ORIGIN}", "verify", provider)
        return make_app(**{**settings_for(siteverify), **settings}).test_client()

    return make


def solve(challenge: dict) -> str:
    """What the widget does: try numbers from 0 until the hash matches (ALTCHA v1)."""
    for number in range(challenge["maxnumber"] + 1):
        digest = hashlib.sha256(f"{challenge['salt']}{number}".encode()).hexdigest()
        if digest == challenge["challenge"]:
            solution = {key: challenge[key] for key in ("algorithm", "challenge", "salt")}
            solution.update(number=number, signature=challenge["signature"])
            return base64.b64encode(json.dumps(solution).encode()).decode()
    raise AssertionError("no solution")


def challenge(client) -> dict:
    response = post(client)
    assert_error(response, 403, "verification_required")
    verify = response.json["verify"]
    assert verify["provider"] == "pow"
    return verify["challenge"]


def with_token(token, **body):
    return {"agent_id": AGENT, "verification": token, **body}


def test_a_pow_site_asks_then_admits_a_solved_challenge(
    verifying, fake_retell, usage_entries, round_trips
):
    client = verifying("pow")
    challenge(client)  # loads the script
    with round_trips() as count:
        first = challenge(client)
    assert count() == 1  # saying "verify first" costs one round trip
    assert set(first) == {"algorithm", "challenge", "maxnumber", "salt", "signature"}
    assert first["maxnumber"] == 2000 and "?expires=" in first["salt"] and first["salt"][-1] == "&"
    expected = hmac.new(POW_KEY.encode(), first["challenge"].encode(), hashlib.sha256)
    assert first["signature"] == expected.hexdigest()
    assert fake_retell.requests == []  # a script that cannot solve it never reaches Retell
    assert post(client, with_token(solve(first))).status_code == 201  # loads the record script
    token = solve(challenge(client))
    with round_trips() as count:
        assert post(client, with_token(token)).status_code == 201
    assert count() == 3  # two to decide (the token needs its entry's policy), one to record
    outcomes = [e["outcome"] for e in usage_entries()]
    assert outcomes == ["verification_required"] * 2 + [
        "created",
        "verification_required",
        "created",
    ]


def test_a_solution_works_once(verifying, fake_retell, usage_entries):
    client = verifying("pow")
    token = solve(challenge(client))
    assert post(client, with_token(token)).status_code == 201
    assert_error(post(client, with_token(token)), 403, "verification_failed")
    assert len(fake_retell.requests) == 1
    assert usage_entries()[-1]["outcome"] == "verification_failed"


def test_expired_foreign_or_wrong_solutions_are_refused(verifying, fake_retell, app):
    client = verifying("pow")
    verifier = client.application.extensions["verifier"]
    expired = verifier.pow_challenge(now=1_000_000_000)  # expired in 2001
    foreign = dict(challenge(client))
    foreign["signature"] = hmac.new(b"another key", foreign["challenge"].encode(), "sha256")
    foreign["signature"] = foreign["signature"].hexdigest()
    good = challenge(client)
    wrong_number = json.loads(base64.b64decode(solve(good)))
    wrong_number["number"] += 1
    for token in (
        solve(expired),
        solve(foreign),
        base64.b64encode(json.dumps(wrong_number).encode()).decode(),
        base64.b64encode(b"not json").decode(),
        "%%%not base64%%%",
    ):
        assert_error(post(client, with_token(token)), 403, "verification_failed")
    assert fake_retell.requests == []


def test_a_failed_check_spends_no_budget(verifying, redis, fake_retell):
    client = verifying("pow", RATE_LIMIT_PER_ORIGIN_DAY=1)
    for _ in range(5):
        challenge(client)
        assert_error(post(client, with_token("bm9wZQ==")), 403, "verification_failed")
    assert redis.keys("widget:rl:origin:*") == []
    assert post(client, with_token(solve(challenge(client)))).status_code == 201


def test_100_at_once_with_one_solution_admit_exactly_one(
    serve_app, siteverify, allow_origin, redis, fake_retell
):
    allow_origin(ORIGIN, AGENT)
    redis.hset(f"widget:limits:{ORIGIN}", "verify", "pow")
    served = serve_app(**settings_for(siteverify))
    first = post_http(served.url).json()["verify"]["challenge"]
    token = solve(first)
    barrier = threading.Barrier(100)

    def one(_):
        barrier.wait()
        response = post_http(served.url, with_token(token))
        return response.status_code if response.ok else response.json()["error"]

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(one, range(100)))
    assert answers.count(201) == 1 and answers.count("verification_failed") == 99
    assert len(fake_retell.requests) == 1


def test_the_default_applies_and_a_site_can_opt_out(make_app, siteverify, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)
    client = make_app(VERIFY_DEFAULT="pow", **settings_for(siteverify)).test_client()
    assert post(client).json["error"] == "verification_required"
    redis.hset(f"widget:limits:{ORIGIN}", "verify", "none")
    assert post(client).status_code == 201


@pytest.mark.parametrize("provider", ["turnstile", "hcaptcha", "recaptcha"])
def test_a_captcha_token_is_checked_at_its_provider_once(
    verifying, siteverify, fake_retell, provider
):
    client = verifying(provider)
    asked = post(client).json
    assert asked["verify"]["provider"] == provider
    assert asked["verify"]["site_key"] == f"site-key-{provider}"
    assert ("action" in asked["verify"]) == (provider == "recaptcha")
    token = siteverify.issue(provider, hostname="client-a.com")
    assert post(client, with_token(token)).status_code == 201
    sent = siteverify.requests[-1]
    assert (sent["secret"], sent["response"], sent["remoteip"]) == (
        SECRETS[provider], token, "127.0.0.1",
    )  # fmt: skip
    assert_error(post(client, with_token(token)), 403, "verification_failed")
    assert len(fake_retell.requests) == 1


@pytest.mark.parametrize(
    ("provider", "issue", "behaviour", "status", "code"),
    [
        ("turnstile", {"hostname": "evil.test"}, "ok", 403, "verification_failed"),
        ("turnstile", {"hostname": "client-a.com"}, "fail", 403, "verification_failed"),
        ("recaptcha", {"hostname": "client-a.com", "score": 0.3}, "ok", 403,
         "verification_failed"),
        ("recaptcha", {"hostname": "client-a.com", "action": "login"}, "ok", 403,
         "verification_failed"),
        ("hcaptcha", {"hostname": "client-a.com"}, "timeout", 503, "verification_unavailable"),
        ("hcaptcha", {"hostname": "client-a.com"}, "garbage", 503, "verification_unavailable"),
        ("turnstile", {"hostname": "client-a.com"}, "error", 503, "verification_unavailable"),
    ],
)  # fmt: skip
def test_captcha_refusals_fail_closed(
    verifying, siteverify, fake_retell, usage_entries, provider, issue, behaviour, status, code
):
    client = verifying(provider)
    token = siteverify.issue(provider, **issue)
    siteverify.set_behaviour(provider, behaviour)
    assert_error(post(client, with_token(token)), status, code)
    assert fake_retell.requests == []
    assert usage_entries()[-1]["outcome"] == code


def test_a_provider_without_keys_refuses_and_is_reported(make_app, allow_origin, redis, caplog):
    allow_origin(ORIGIN, AGENT)
    redis.hset(f"widget:limits:{ORIGIN}", "verify", "turnstile")
    app = make_app()
    assert_error(post(app.test_client()), 503, "verification_unavailable")
    assert "turnstile" in caplog.text  # said at start-up
    result = app.test_cli_runner().invoke(args=["origins", "check"])
    assert result.exit_code == 1 and "turnstile" in result.output


def test_no_secret_reaches_answers_logs_or_the_stream(
    verifying, siteverify, fake_retell, usage_entries, capsys
):
    client = verifying("turnstile")
    answers = [post(client).get_data(as_text=True)]
    token = siteverify.issue("turnstile", hostname="client-a.com")
    answers.append(post(client, with_token(token)).get_data(as_text=True))
    siteverify.set_behaviour("turnstile", "timeout")
    answers.append(post(client, with_token("x")).get_data(as_text=True))
    text = "".join(answers) + capsys.readouterr().err + json.dumps(usage_entries())
    for secret in (*SECRETS.values(), POW_KEY, fake_retell.api_key):
        assert secret not in text


def test_altchas_own_library_interoperates(verifying):
    """ALTCHA's Python library (2.3.0, v1 API) solves our challenges and checks our
    solutions, and a challenge it makes with our key is accepted here."""
    import datetime as dt

    import altcha

    client = verifying("pow")
    verifier = client.application.extensions["verifier"]
    ours = challenge(client)
    theirs = altcha.ChallengeV1(
        ours["algorithm"], ours["challenge"], ours["maxnumber"], ours["salt"], ours["signature"]
    )
    solution = altcha.solve_challenge_v1(theirs)
    payload = altcha.PayloadV1(
        ours["algorithm"], ours["challenge"], solution.number, ours["salt"], ours["signature"]
    )
    token = payload.to_base64()
    assert verifier.check_pow(token).startswith("pow:")
    assert altcha.verify_solution_v1(solve(ours), POW_KEY) == (True, None)
    made_there = altcha.create_challenge_v1(
        hmac_key=POW_KEY, max_number=2000,
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
    )  # fmt: skip
    as_json = {**made_there.to_dict(), "maxnumber": made_there.max_number}
    assert post(client, with_token(solve(as_json))).status_code == 201
