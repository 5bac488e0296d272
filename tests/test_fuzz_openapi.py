"""docs/openapi.yaml against the real server, by schema-driven fuzzing.

schemathesis (4.x) generates requests from the spec, valid ones and invalid ones, and sends
them over real HTTP to the real app (a threaded werkzeug server on loopback, a real
redis-server, the fake Retell); every built-in check judges every answer. The origin the
spec gives as its example is allowlisted with exactly one agent, so the happy path (201,
204) is reached and its answers are checked too.

Bounded and reproducible: a fixed seed, derandomized, no example database, MAX_EXAMPLES
per operation (the whole file runs in seconds).

The chat routes that take a chat token cannot be reached by a random token: a generated
token that the spec calls valid is swapped for a real chat's (a fresh chat each time), so
their happy path is checked as well; the case stays exactly as valid as it was generated.
The same for feedback: a well-formed call_id becomes a call just minted through the gateway.

A second, table-driven test sends edge values that random generation rarely draws (a
trailing newline, non-ASCII digits, null) and asserts that the server refuses exactly what
the spec's own schemas refuse.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import hypothesis
import jsonschema_rs
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
# The spec's example Origin, allowlisted with exactly one agent: a generated request that
# sends it with no agent_id (or this agent) and a valid body is a 201.
ORIGIN = SPEC["components"]["parameters"]["Origin"]["schema"]["examples"][0]
AGENT = "agent_abc"
SEED = 20261201
MAX_EXAMPLES = 100
MAX_BODY = 8 * 1024  # docs/openapi.yaml, CreateWebCallRequest: 8192 bytes as sent
# Each route's body limit, as sent (docs/openapi.yaml); the webhook's is 1 MiB.
BODY_LIMITS = {"/api/create-web-call": MAX_BODY, "/api/chat": MAX_BODY,
               "/api/chat/messages": 32 * 1024, "/api/chat/end": MAX_BODY,
               "/api/feedback": 16 * 1024}  # fmt: skip

# 413 is how the spec says an over-8-KiB body is refused, before any field is read and
# whatever the fields hold. JSON Schema cannot say "at most 8192 bytes once serialized", and
# the field limits alone allow more (20 keys x 200 characters, escaped, in two maps), so
# schemathesis, which does not know 413, would count a 413 as wrong both for valid data and
# for invalid data. Both checks get 413 added to their default lists, and body_size_limit
# below makes 413 stricter than either default: answered exactly when the body is too large.
NEGATIVE_REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]  # fmt: skip
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "checks": {
            "enabled": True,  # every built-in check (the default, said out loud)
            "negative_data_rejection": {"expected-statuses": NEGATIVE_REJECTED},
            "positive_data_acceptance": {"expected-statuses": POSITIVE_ACCEPTED},
        },
        "generation": {
            "mode": "all",  # positive and negative data
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
    }
)
schema = schemathesis.openapi.from_path(SPEC_PATH, config=CONFIG)


@schemathesis.check
def body_size_limit(ctx, response, case):
    """413 exactly when the body sent is over the route's limit (unless the origin or media
    type is refused first: 403, 415). The webhook takes up to 1 MiB."""
    limit = BODY_LIMITS.get(case.path)
    if limit is None or case.method.upper() != "POST":
        return None
    sent = response.request.body or b""
    size = len(sent.encode() if isinstance(sent, str) else sent)
    if response.status_code == 413:
        assert size > limit, f"413 for a body of {size} bytes (the limit is {limit})"
    elif size > limit:
        assert response.status_code in (403, 415), (
            f"{response.status_code} for a body of {size} bytes (over {limit}: expected 413)"
        )
    return None


# What the fuzzer must have reached, so the happy path's answers were checked too.
HAPPY = {("POST", "/api/create-web-call"): 201, ("OPTIONS", "/api/create-web-call"): 204,
         ("POST", "/api/chat"): 201, ("OPTIONS", "/api/chat"): 204,
         ("POST", "/api/chat/messages"): 200, ("OPTIONS", "/api/chat/messages"): 204,
         ("POST", "/api/chat/end"): 204, ("OPTIONS", "/api/chat/end"): 204,
         ("GET", "/api/chat/history"): 200, ("OPTIONS", "/api/chat/history"): 204,
         ("POST", "/api/feedback"): 201, ("OPTIONS", "/api/feedback"): 204}  # fmt: skip
TOKEN_BODIES = ("/api/chat/messages", "/api/chat/end")
HISTORY = SPEC["paths"]["/api/chat/history"]["get"]["parameters"]
BEARER = re.compile(
    next(p for p in HISTORY if p.get("name") == "Authorization")["schema"]["pattern"]
)
CALL_ID = re.compile(SPEC["components"]["schemas"]["FeedbackRequest"]["properties"]["call_id"]
                     ["pattern"])  # fmt: skip


@pytest.fixture
def api(request, serve_app, allow_origin, redis):
    """The served app (.url) and the statuses this operation's examples got (.statuses)."""
    allow_origin(ORIGIN, AGENT)
    redis.sadd(f"widget:chat-agents:{ORIGIN}", AGENT)  # the same id is its one chat agent too
    # No daily cap, and per-IP limits of 1000/min: a limit is never the answer.
    served = serve_app(
        RATE_LIMIT_PER_ORIGIN_DAY=0, RATE_LIMIT_CHATS_PER_ORIGIN_DAY=0,
        RATE_LIMIT_CHATS_PER_IP="1000 per minute", CHAT_MAX_MESSAGES=0,
        CHAT_MESSAGES_PER_MINUTE=0, RATE_LIMIT_FEEDBACK_PER_IP="1000 per minute",
        LOG_LEVEL="WARNING",
    )  # fmt: skip
    served.statuses = collections.defaultdict(collections.Counter)
    failed = request.session.testsfailed
    yield served
    if request.session.testsfailed == failed:  # this operation passed: did it get far?
        for operation, status in HAPPY.items():
            if operation in served.statuses:
                got = dict(served.statuses[operation])
                assert served.statuses[operation][status], f"{operation}: no {status} in {got}"


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


@schema.parametrize()
@hypothesis.seed(SEED)
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # One served app per operation, shared by that operation's examples, is intended.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_spec(case, api, session):
    use_a_real_chat(case, api, session)
    response = case.call_and_validate(base_url=api.url, session=session, timeout=10)
    api.statuses[(case.method.upper(), case.path)][response.status_code] += 1


def use_a_real_chat(case, api, session) -> None:
    """A chat token the spec calls valid becomes a fresh real chat's token, and a call id
    a fresh real call's."""
    if case.method.upper() == "OPTIONS":
        return
    if case.path == "/api/feedback" and isinstance(case.body, dict):
        call_id = case.body.get("call_id")
        if isinstance(call_id, str) and CALL_ID.search(call_id):
            case.body["call_id"] = _fresh_call(api, session)
    elif case.path in TOKEN_BODIES and isinstance(case.body, dict):
        token = case.body.get("chat_token")
        if isinstance(token, str) and 1 <= len(token) <= 1024:
            case.body["chat_token"] = _fresh_chat(api, session)
    elif case.path == "/api/chat/history" and BEARER.search(
        str((case.headers or {}).get("Authorization", ""))
    ):
        case.headers["Authorization"] = "Bearer " + _fresh_chat(api, session)


def _fresh_call(api, session) -> str:
    answer = session.post(
        f"{api.url}/api/create-web-call", json={}, headers={"Origin": ORIGIN}, timeout=10
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["call_id"]


def _fresh_chat(api, session) -> str:
    answer = session.post(f"{api.url}/api/chat", json={}, headers={"Origin": ORIGIN}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()["chat_token"]


# --- edge values: the server refuses what the spec's schemas refuse, and only that --------


def _validator(schema_fragment: dict) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for({**schema_fragment, "components": SPEC["components"]})


BODY = _validator({"$ref": "#/components/schemas/CreateWebCallRequest"})
VERSION = _validator(
    next(
        p["schema"]
        for p in SPEC["paths"]["/api/widget-version"]["get"]["parameters"]
        if p["name"] == "v"
    )
)
RESPONSE_REQUEST_ID = re.compile(SPEC["components"]["headers"]["RequestId"]["schema"]["pattern"])

BODIES = [
    {},
    {"agent_id": AGENT},
    {"agent_id": None},
    {"metadata": None},
    {"dynamic_variables": None},
    {"agent_id": ""},
    {"agent_id": AGENT + "\n"},  # Python's `$` matches before a final newline: fullmatch
    {"agent_id": "agent_\u0663"},
    {"agent_id": "a" * 128},
    {"agent_id": "a" * 129},
    {"metadata": {"k": "x" * 200}},
    {"metadata": {"k": "x" * 201}},
    {"metadata": {"": "x"}},
    {"metadata": {"k" * 65: "x"}},
    {"metadata": {f"k{i}": "x" for i in range(20)}},
    {"metadata": {f"k{i}": "x" for i in range(21)}},
    {"metadata": {"k": 1}},
    {"metadata": {"k": {"nested": "x"}}},
    {"dynamic_variables": ["x"]},
    {"other": 1},
    {"consent_version": "2026-01"},
    {"consent_version": "x" * 64},
    {"consent_version": "x" * 65},
    {"consent_version": ""},
    {"consent_version": None},
    {"consent_version": "v1\n"},
    {"consent_version": "v 1"},
    {"consent_version": "\u0663"},
    {"consent_version": 1},
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: json.dumps(b)[:60])
def test_create_web_call_refuses_exactly_what_the_spec_refuses(body, make_app, allow_origin):
    allow_origin(ORIGIN, AGENT)
    client = make_app(RATE_LIMIT_PER_ORIGIN_DAY=0, LOG_LEVEL="WARNING").test_client()
    response = client.post("/api/create-web-call", json=body, headers={"Origin": ORIGIN})
    if not BODY.is_valid(body):
        expected = 400
    elif body.get("agent_id", AGENT) != AGENT:
        expected = 403  # well formed, but not granted to this origin
    else:
        expected = 201
    assert response.status_code == expected, response.get_json()
    if expected == 400:
        assert response.get_json()["error"] == "invalid_request"


VERSIONS = [
    None,
    "",
    "1",
    "1.2",
    "1.2.3",
    "v1.2.3-beta.1",
    "1.2.3+build.5",
    "9999.9999.9999",
    "10000",
    "1.2.3.4",
    "x",
    "1.",
    "1.0.0-",
    " 1.0.0",
    "1.0.0\n",
    "\u0663",
    "1.\u0663",
]  # the last three: Python's `$` and Unicode `\d` would let them in


@pytest.mark.parametrize("v", VERSIONS, ids=repr)
def test_widget_version_refuses_exactly_what_the_spec_refuses(v, client):
    response = client.get("/api/widget-version", query_string={} if v is None else {"v": v})
    valid = v is None or VERSION.is_valid(v)
    assert response.status_code == (200 if valid else 400), response.get_json()
    if valid:
        assert response.get_json()["current"] == (v or None)


@pytest.mark.parametrize(
    "given", ["req-1", "a" * 64, "a" * 65, "has space", "semi;colon", "é", ""], ids=repr
)
def test_any_request_id_is_accepted_and_a_malformed_one_replaced(given, client):
    response = client.get("/api/health", headers={"X-Request-ID": given})
    assert response.status_code == 200
    answered = response.headers["X-Request-ID"]
    assert RESPONSE_REQUEST_ID.match(answered)
    assert (answered == given) == bool(re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", given))


MESSAGE = _validator({"$ref": "#/components/schemas/ChatMessageRequest"})
CONTENTS = ["a", " a ", "x" * 2000, "x" * 2001, "", " ", "\t\n ", "\u00a0", "\u3000",
            "\u00a0a", "é" * 2000, "👋", None, 5, ["a"]]  # fmt: skip


@pytest.mark.parametrize("content", CONTENTS, ids=lambda c: repr(c)[:16])
def test_chat_messages_refuse_exactly_what_the_spec_refuses(content, make_app, redis):
    redis.sadd("widget:origins", ORIGIN)
    redis.sadd(f"widget:chat-agents:{ORIGIN}", AGENT)
    client = make_app(LOG_LEVEL="WARNING").test_client()
    token = client.post("/api/chat", json={}, headers={"Origin": ORIGIN}).get_json()["chat_token"]
    body = {"chat_token": token, "content": content}
    response = client.post("/api/chat/messages", json=body, headers={"Origin": ORIGIN})
    assert response.status_code == (200 if MESSAGE.is_valid(body) else 400), response.get_json()


FEEDBACK = _validator({"$ref": "#/components/schemas/FeedbackRequest"})
FEEDBACK_BODIES = [
    {"rating": "up"}, {"rating": "down", "comment": "x" * 1000},
    {"rating": "up", "comment": "x" * 1001}, {"rating": "up", "comment": ""},
    {"rating": "up", "comment": " \r\n\t\u0000"}, {"rating": "up", "comment": "👋" * 1000},
    {"rating": "up", "comment": None}, {"rating": "Up"}, {"rating": "up "}, {"rating": None},
    {"rating": 1}, {}, {"rating": "up", "other": 1}, {"rating": "up", "call_id": "call_1\n"},
    {"rating": "up", "call_id": ""}, {"rating": "up", "call_id": "c" * 129},
    {"rating": "up", "call_id": "call_\u0663"}, {"rating": "up", "call_id": None},
]  # fmt: skip


@pytest.mark.parametrize("body", FEEDBACK_BODIES, ids=lambda b: json.dumps(b)[:50])
def test_feedback_refuses_exactly_what_the_spec_refuses(body, make_app, allow_origin):
    allow_origin(ORIGIN, AGENT)
    client = make_app(LOG_LEVEL="WARNING").test_client()
    call_id = client.post("/api/create-web-call", json={}, headers={"Origin": ORIGIN})
    body = {"call_id": call_id.get_json()["call_id"], **body}
    response = client.post("/api/feedback", json=body, headers={"Origin": ORIGIN})
    assert response.status_code == (201 if FEEDBACK.is_valid(body) else 400), response.get_json()
