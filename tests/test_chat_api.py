"""The chat routes against a real redis-server and the fake Retell's chat API over HTTP."""

import base64
import json
import time

import pytest

from tests.helpers import (
    AGENT,
    CHAT_AGENT,
    ORIGIN,
    assert_error,
    chat_headers,
    grant_chat,
    send,
    start_chat,
)

OTHER = "https://other.example"


@pytest.fixture
def chatting(redis):
    grant_chat(redis, ORIGIN, CHAT_AGENT)


def token_of(client, **kwargs) -> str:
    response = start_chat(client, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.json["chat_token"]


def claims_of(token: str) -> dict:
    payload = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def completions(fake_retell) -> list[dict]:
    """The completion requests that reached the fake (on arrival, answered or not)."""
    return [r["body"] for r in fake_retell.requests if r["path"] == "/create-chat-completion"]


def test_start_shape_token_and_what_is_sent_upstream(client, chatting, fake_retell):
    body = {"metadata": {"plan": "pro"}, "dynamic_variables": {"name": "Ana"}}
    response = start_chat(client, body, headers={"Referer": "https://client-a.com/help"})
    assert response.status_code == 201
    assert set(response.json) == {"chat_id", "chat_token", "expires_at", "messages"}
    assert response.json["messages"] == []  # the echo agent says nothing first
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Cache-Control"] == "no-store"
    expires_at = response.json["expires_at"]
    assert abs(expires_at - (time.time() + 7200) * 1000) < 5000  # ms, CHAT_TOKEN_TTL
    claims = claims_of(response.json["chat_token"])
    assert claims == {"c": response.json["chat_id"], "e": ORIGIN, "a": CHAT_AGENT, "o": ORIGIN,
                      "exp": expires_at // 1000}  # fmt: skip
    create = next(r for r in fake_retell.requests if r["path"] == "/create-chat")
    assert create["headers"]["Authorization"] == f"Bearer {fake_retell.api_key}"
    assert create["body"] == {
        "agent_id": CHAT_AGENT,
        "metadata": {"plan": "pro", "origin": ORIGIN, "page_url": "https://client-a.com/help"},
        "retell_llm_dynamic_variables": {"name": "Ana"},
    }


def test_an_opening_message_comes_with_the_start(client, redis):
    grant_chat(redis, ORIGIN, "agent_chat_opening")
    response = start_chat(client)
    assert response.json["messages"] == [
        {"role": "agent", "content": "Hi! I'm the fake chat agent. How can I help?"}
    ]


def test_an_unread_opening_does_not_fail_the_start(client, redis, fake_retell, monkeypatch):
    grant_chat(redis, ORIGIN, "agent_chat_opening")
    fake_retell.chat.set_agent("agent_chat_opening", opening="Hello")
    from app.extensions import chat_client
    from app.retell.upstream import UpstreamFailure

    def no_history(chat_id):
        raise UpstreamFailure("timeout", 5)

    monkeypatch.setattr(chat_client, "_history", no_history)
    response = start_chat(client)
    assert response.status_code == 201 and response.json["messages"] == []


def test_grants_are_per_kind(client, allow_origin, redis):
    allow_origin(ORIGIN, AGENT)  # a voice agent only
    assert_error(start_chat(client), 403, "agent_not_allowed")
    assert_error(start_chat(client, {"agent_id": AGENT}), 403, "agent_not_allowed")
    grant_chat(redis, ORIGIN, CHAT_AGENT)
    assert start_chat(client).status_code == 201  # the one chat agent, agent_id omitted
    call = client.post("/api/create-web-call", json={"agent_id": CHAT_AGENT},
                       headers={"Origin": ORIGIN})  # fmt: skip
    assert_error(call, 403, "agent_not_allowed")  # a chat grant is not a voice grant
    redis.sadd(f"widget:chat-agents:{ORIGIN}", "agent_chat_tools")
    assert_error(start_chat(client), 400, "invalid_request")  # two: agent_id required
    assert start_chat(client, {"agent_id": "agent_chat_tools"}).status_code == 201


def test_an_unlisted_origin_gets_no_cors_and_no_chat(client, chatting, fake_retell):
    response = start_chat(client, origin="https://evil.example")
    assert_error(response, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert fake_retell.requests == []


def test_messages_are_answered_by_the_agent_only(client, chatting, fake_retell):
    token = token_of(client)
    response = send(client, token, "Grüße 👋")
    assert response.status_code == 200
    assert response.json == {"messages": [{"role": "agent", "content": "You said: Grüße 👋"}]}
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Cache-Control"] == "no-store"
    [turn] = completions(fake_retell)
    assert turn["content"] == "Grüße 👋"


def test_tool_traffic_never_reaches_the_browser(client, redis, fake_retell):
    grant_chat(redis, ORIGIN, "agent_chat_tools")
    token = token_of(client)
    response = send(client, token, "order 42")
    assert response.json == {"messages": [{"role": "agent", "content": "You said: order 42"}]}
    text = response.get_data(as_text=True)
    assert "tool_call" not in text and "lookup" not in text and "node" not in text
    history = client.get("/api/chat/history", headers=chat_headers(token=token)).json
    assert [m["role"] for m in history["messages"]] == ["user", "agent"]
    assert "tool_call" not in json.dumps(history)


def test_markup_passes_through_as_plain_json_text(client, redis, fake_retell):
    from devtools.fakes.retell_chat import MARKUP

    grant_chat(redis, ORIGIN, "agent_chat_markup")
    token = token_of(client)
    sent = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    response = send(client, token, sent)
    assert response.content_type == "application/json"
    assert response.json["messages"] == [{"role": "agent", "content": MARKUP}]
    assert completions(fake_retell)[0]["content"] == sent  # sent as typed


@pytest.mark.parametrize("where", ["origin", "altered", "purpose", "garbage"])
def test_a_token_from_elsewhere_is_refused(client, chatting, redis, app, fake_retell, where):
    grant_chat(redis, OTHER, CHAT_AGENT)
    token = token_of(client)
    origin = ORIGIN
    if where == "origin":  # another allowlisted site, same agent
        origin = OTHER
    elif where == "altered":
        claims = claims_of(token)
        claims["c"] = "chat_someone_else"
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = payload + "." + token.split(".")[1]
    elif where == "purpose":
        claims = claims_of(token)
        exp = claims.pop("exp")
        token = app.extensions["tokens"].sign("transcript", claims, exp)
    else:
        token = "not-a-token"
    response = send(client, token, origin=origin)
    assert_error(response, 403, "chat_token_invalid")
    assert response.headers["Access-Control-Allow-Origin"] == origin  # both are allowlisted
    history = client.get("/api/chat/history", headers=chat_headers(origin, token))
    assert_error(history, 403, "chat_token_invalid")
    assert_error(client.post("/api/chat/end", json={"chat_token": token},
                             headers={"Origin": origin}), 403, "chat_token_invalid")  # fmt: skip
    assert completions(fake_retell) == []


def test_an_expired_token_says_so_and_still_ends_its_chat(client, chatting, app, usage_entries):
    token = token_of(client)
    claims = claims_of(token)
    claims.pop("exp")
    expired = app.extensions["tokens"].sign("chat", claims, int(time.time()) - 1)
    response = send(client, expired)
    assert_error(response, 403, "chat_token_expired")
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    history = client.get("/api/chat/history", headers=chat_headers(token=expired))
    assert_error(history, 403, "chat_token_expired")
    end = client.post("/api/chat/end", json={"chat_token": expired}, headers={"Origin": ORIGIN})
    assert end.status_code == 204
    assert [e["outcome"] for e in usage_entries()] == ["created", "ended"]


def test_end_is_idempotent_and_recorded_once_with_its_message_count(
    client, chatting, fake_retell, usage_entries
):
    token = token_of(client)
    for text in ("one", "two", "three"):
        assert send(client, token, text).status_code == 200
    for _ in range(3):
        end = client.post("/api/chat/end", json={"chat_token": token}, headers={"Origin": ORIGIN})
        assert end.status_code == 204 and end.data == b""
        assert "Content-Type" not in end.headers
        assert end.headers["Access-Control-Allow-Origin"] == ORIGIN
    ends = [r for r in fake_retell.requests if r["path"].startswith("/end-chat/")]
    assert len(ends) == 1 and ends[0]["method"] == "PATCH"
    entries = usage_entries()
    assert [(e["kind"], e["outcome"]) for e in entries] == [("chat", "created"), ("chat", "ended")]
    ended = entries[1]
    assert (ended["messages"], ended["status"], ended["chat_id"]) == (
        "3",
        "204",
        entries[0]["chat_id"],
    )
    assert (ended["entry"], ended["agent_id"], ended["origin"]) == (ORIGIN, CHAT_AGENT, ORIGIN)
    assert_error(send(client, token), 409, "chat_ended")
    history = client.get("/api/chat/history", headers=chat_headers(token=token))
    assert history.status_code == 200 and history.json["ended"] is True


def test_an_upstream_end_failure_never_fails_the_end(client, chatting, fake_retell, caplog):
    token = token_of(client)
    fake_retell.chat.chats.clear()  # Retell forgot it: end-chat answers 404
    end = client.post("/api/chat/end", json={"chat_token": token}, headers={"Origin": ORIGIN})
    assert end.status_code == 204
    assert "end-chat upstream failed" in caplog.text


def test_history_has_agent_and_user_messages_and_needs_the_bearer_header(
    client, redis, fake_retell
):
    grant_chat(redis, ORIGIN, "agent_chat_opening")
    token = token_of(client)
    send(client, token, "Hi")
    response = client.get("/api/chat/history", headers=chat_headers(token=token))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json == {
        "chat_id": claims_of(token)["c"],
        "ended": False,
        "messages": [
            {"role": "agent", "content": "Hi! I'm the fake chat agent. How can I help?"},
            {"role": "user", "content": "Hi"},
            {"role": "agent", "content": "You said: Hi"},
        ],
    }
    for headers in ({"Origin": ORIGIN}, {"Origin": ORIGIN, "Authorization": f"Basic {token}"},
                    {"Origin": ORIGIN, "Authorization": "Bearer "}):  # fmt: skip
        missing = client.get("/api/chat/history", headers=headers)
        assert_error(missing, 401, "chat_token_invalid")
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.headers["Access-Control-Allow-Origin"] == ORIGIN
    query = client.get(f"/api/chat/history?chat_token={token}", headers={"Origin": ORIGIN})
    assert_error(query, 401, "chat_token_invalid")  # never from a URL


def test_history_marks_a_chat_ended_upstream(client, chatting, fake_retell):
    token = token_of(client)
    fake_retell.chat.end_chat(claims_of(token)["c"])
    history = client.get("/api/chat/history", headers=chat_headers(token=token))
    assert history.json["ended"] is True


def test_revoking_the_agent_or_the_origin_stops_the_chat(client, chatting, redis, fake_retell):
    token = token_of(client)
    redis.srem(f"widget:chat-agents:{ORIGIN}", CHAT_AGENT)
    assert_error(send(client, token), 403, "agent_not_allowed")
    redis.sadd(f"widget:chat-agents:{ORIGIN}", CHAT_AGENT)
    redis.srem("widget:origins", ORIGIN)
    response = send(client, token)
    assert_error(response, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in response.headers
    history = client.get("/api/chat/history", headers=chat_headers(token=token))
    assert_error(history, 403, "origin_not_allowed")
    assert completions(fake_retell) == []


BAD_BODIES = [
    ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
    ({"data": "\xff\xfe", "content_type": "application/json"}, 400, "invalid_json"),
    ({"data": "[1]", "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": "null", "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": "[" * 3000 + "]" * 3000, "content_type": "application/json"}, 400,
     "invalid_request"),
    ({"data": "chat_token=x", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ({"json": {"chat_token": "x" * 40000}}, 413, "payload_too_large"),
    ({"json": {"chat_token": None, "content": "hi"}}, 400, "invalid_request"),
    ({"json": {"chat_token": 5, "content": "hi"}}, 400, "invalid_request"),
    ({"json": {"chat_token": "x" * 1025, "content": "hi"}}, 400, "invalid_request"),
    ({"json": {"content": "hi"}}, 400, "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "status", "code"), BAD_BODIES)
@pytest.mark.parametrize("path", ["/api/chat/messages", "/api/chat/end"])
def test_bad_bodies_get_a_clear_error(client, chatting, capsys, path, kwargs, status, code):
    response = client.post(path, headers={"Origin": ORIGIN}, **kwargs)
    assert_error(response, status, code)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN  # a listed site may read
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "ok"),
    [("a", True), ("x" * 2000, True), ("é" * 2000, True), ("👋" * 2000, True),
     ("  hi  ", True), ("", False), ("   \n\t", False), ("x" * 2001, False), (None, False),
     (["hi"], False), ({"text": "hi"}, False), (7, False)],
    ids=lambda v: repr(v)[:12],
)  # fmt: skip
def test_content_is_1_to_2000_characters_with_some_text(client, chatting, content, ok):
    token = token_of(client)
    body = {"chat_token": token, "content": content}
    response = client.post("/api/chat/messages", json=body, headers={"Origin": ORIGIN})
    if ok:
        assert response.status_code == 200, response.get_json()
    else:
        assert_error(response, 400, "invalid_request")
        assert "content" in response.json["message"]


def test_unknown_fields_and_an_unlisted_origins_errors(client, chatting):
    token = token_of(client)
    extra = client.post("/api/chat/messages", json={"chat_token": token, "content": "a", "x": 1},
                        headers={"Origin": ORIGIN})  # fmt: skip
    assert_error(extra, 400, "invalid_request")
    assert "x" in extra.json["message"]
    unlisted = client.post("/api/chat/messages", data="{", content_type="application/json",
                           headers={"Origin": "https://evil.example"})  # fmt: skip
    assert_error(unlisted, 400, "invalid_json")
    assert "Access-Control-Allow-Origin" not in unlisted.headers
    no_origin = client.post("/api/chat/messages", json={"chat_token": token, "content": "a"})
    assert_error(no_origin, 403, "origin_not_allowed")


@pytest.mark.parametrize(
    ("agent", "status", "code"),
    [("agent_chat_fail_create_401", 502, "upstream_unauthorized"),
     ("agent_chat_fail_create_402", 503, "upstream_payment_required"),
     ("agent_chat_unknown", 404, "agent_not_found"),
     ("agent_chat_fail_create_429", 503, "upstream_rate_limited"),
     ("agent_chat_fail_create_500", 502, "upstream_error"),
     ("agent_chat_fail_create_garbage", 502, "upstream_error"),
     ("agent_chat_fail_create_huge", 502, "upstream_error"),
     ("agent_chat_fail_create_close", 502, "upstream_error")],
)  # fmt: skip
def test_create_failures_map_like_calls_and_are_recorded(
    client, redis, fake_retell, usage_entries, agent, status, code
):
    grant_chat(redis, ORIGIN, agent)
    response = start_chat(client)
    assert_error(response, status, code)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Invalid API key" not in response.get_data(as_text=True)
    creates = [r for r in fake_retell.requests if r["path"] == "/create-chat"]
    assert len(creates) == 1  # never retried
    [entry] = usage_entries()
    assert (entry["kind"], entry["outcome"], entry["status"], entry["error"]) == (
        "chat", "upstream_error", str(status), code,
    )  # fmt: skip
    assert not redis.exists("widget:chats:live")


@pytest.mark.parametrize(
    ("what", "status", "code"),
    [("401", 502, "upstream_unauthorized"), ("402", 503, "upstream_payment_required"),
     ("429", 503, "upstream_rate_limited"), ("500", 502, "upstream_error"),
     ("400", 502, "upstream_error"), ("404", 409, "chat_ended"), ("422", 409, "chat_ended"),
     ("garbage", 502, "upstream_error"), ("close", 502, "upstream_error")],
)  # fmt: skip
def test_completion_failures_map_like_calls_and_are_never_retried(
    client, redis, fake_retell, what, status, code
):
    grant_chat(redis, ORIGIN, f"agent_chat_fail_completion_{what}")
    token = token_of(client)
    response = send(client, token)
    assert_error(response, status, code)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    if what == "429":
        assert response.headers["Retry-After"] == "1"
    assert len(completions(fake_retell)) == 1


def test_a_large_turn_is_read_and_only_its_agent_text_kept(client, redis, fake_retell):
    grant_chat(redis, ORIGIN, "agent_chat_fail_completion_huge")  # 70 KB: tool results can be big
    response = send(client, token_of(client), "hi")
    assert response.json == {"messages": [{"role": "agent", "content": "You said: hi"}]}


def test_a_slow_agent_is_bounded_by_chat_read_timeout(make_app, redis, fake_retell):
    grant_chat(redis, ORIGIN, "agent_chat_slow_3")
    client = make_app(CHAT_READ_TIMEOUT="0.5", UPSTREAM_READ_TIMEOUT="5").test_client()
    token = token_of(client)
    started = time.monotonic()
    assert_error(send(client, token), 504, "upstream_timeout")
    assert time.monotonic() - started < 2
    assert len(completions(fake_retell)) == 1  # never retried


def test_a_slow_agent_within_chat_read_timeout_answers(make_app, redis, fake_retell):
    grant_chat(redis, ORIGIN, "agent_chat_slow_1")
    client = make_app(CHAT_READ_TIMEOUT="5", UPSTREAM_READ_TIMEOUT="0.3").test_client()
    token = token_of(client)
    assert send(client, token).status_code == 200  # its own timeout, not the calls' one


@pytest.mark.parametrize(
    ("path", "method"),
    [("/api/chat", "POST"), ("/api/chat/messages", "POST"), ("/api/chat/end", "POST"),
     ("/api/chat/history", "GET")],
)  # fmt: skip
def test_preflights_allow_the_route_method_with_authorization(client, chatting, path, method):
    asked = {"Origin": ORIGIN, "Access-Control-Request-Method": method,
             "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    response = client.options(path, headers=asked)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Methods"] == f"{method}, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == (
        "Authorization, Content-Type, X-Request-ID"
    )
    assert "Origin" in response.headers["Vary"]
    other = "GET" if method == "POST" else "POST"
    wrong = client.options(path, headers={**asked, "Access-Control-Request-Method": other})
    assert_error(wrong, 403, "origin_not_allowed")
    unlisted = client.options(path, headers={**asked, "Origin": "https://evil.example"})
    assert_error(unlisted, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in unlisted.headers


def test_redis_down_is_503_on_every_chat_route(client, chatting, redis_server, capsys):
    token = token_of(client)
    redis_server.stop()
    try:
        answers = [
            start_chat(client),
            send(client, token),
            client.post("/api/chat/end", json={"chat_token": token}, headers={"Origin": ORIGIN}),
            client.get("/api/chat/history", headers=chat_headers(token=token)),
        ]
        for response in answers:
            assert_error(response, 503, "unavailable")
        assert_error(send(client, "garbage"), 403, "chat_token_invalid")  # no Redis needed
    finally:
        redis_server.start()
    assert "Traceback" not in capsys.readouterr().err


def test_no_secret_in_any_answer_log_or_stream_entry(make_app, redis, fake_retell, caplog, capfd):
    signing_key = "test-signing-key-0123456789"
    client = make_app(TOKEN_SIGNING_KEY=signing_key).test_client()
    grant_chat(redis, ORIGIN, CHAT_AGENT, "agent_chat_fail_completion_401")
    token = token_of(client, body={"agent_id": CHAT_AGENT})
    responses = [send(client, token), send(client, token + "x"), send(client, token, origin=OTHER),
                 client.get("/api/chat/history", headers=chat_headers(token=token)),
                 client.post("/api/chat/end", json={"chat_token": token},
                             headers={"Origin": ORIGIN})]  # fmt: skip
    failing = token_of(client, body={"agent_id": "agent_chat_fail_completion_401"})
    responses.append(send(client, failing))
    responses.append(start_chat(client, {"agent_id": "agent_other"}))
    for response in responses:
        for secret in (fake_retell.api_key, signing_key):
            assert secret not in response.get_data(as_text=True)
            assert secret not in str(response.headers)
    captured = capfd.readouterr()
    assert '"path": "/api/chat/messages"' in captured.err  # the log lines were captured
    assert token not in captured.err  # the token is not logged either
    stream = json.dumps(redis.xrange("widget:usage"))
    for secret in (fake_retell.api_key, signing_key, token):
        assert secret not in captured.out + captured.err + caplog.text
        assert secret not in stream
