"""create-web-call against a real redis-server and the fake Retell over real HTTP."""

import json
import socket

import pytest

from tests.helpers import AGENT, ORIGIN, assert_error, post


@pytest.fixture
def allowed(allow_origin):
    allow_origin(ORIGIN, AGENT)


def test_v3_success_shape_and_what_is_sent_upstream(client, allowed, fake_retell):
    response = post(
        client,
        {"agent_id": AGENT, "metadata": {"plan": "pro"}, "dynamic_variables": {"name": "Ana"}},
        headers={"Referer": "https://client-a.com/pricing"},
    )
    assert response.status_code == 201
    body = response.json
    assert set(body) == {
        "access_token",
        "call_id",
        "transport",
        "expires_at",
        "ice_servers",
        "gateway_url",
    }
    assert body["transport"] == "gateway"
    assert body["gateway_url"] == f"https://gateway.example/webrtc-proxy/{body['call_id']}"
    assert body["ice_servers"] == [{"urls": ["stun:127.0.0.1:3478"]}]
    sent = fake_retell.requests[-1]
    assert sent["path"] == "/v3/create-web-call"
    assert sent["headers"]["Authorization"] == f"Bearer {fake_retell.api_key}"
    assert sent["body"] == {
        "agent_id": AGENT,
        "metadata": {"plan": "pro", "origin": ORIGIN, "page_url": "https://client-a.com/pricing"},
        "retell_llm_dynamic_variables": {"name": "Ana"},
    }


def test_v3_gateway_url_from_upstream_url(client, allowed, fake_retell):
    fake_retell.gateway_url = "https://edge.retell.test/webrtc"
    body = post(client, {"agent_id": AGENT}).json
    assert body["gateway_url"] == f"https://edge.retell.test/webrtc/{body['call_id']}"


def test_server_metadata_cannot_be_spoofed(client, allowed, fake_retell):
    post(client, {"metadata": {"origin": "https://evil.com"}})
    assert fake_retell.requests[-1]["body"]["metadata"]["origin"] == ORIGIN


def test_v2_success_has_the_same_shape(make_app, allowed, fake_retell):
    client = make_app(RETELL_API_VERSION="v2").test_client()
    response = post(client, {"agent_id": AGENT})
    assert response.status_code == 201
    assert set(response.json) == {"access_token", "call_id", "transport"}
    assert response.json["transport"] == "livekit"
    assert fake_retell.requests[-1]["path"] == "/v2/create-web-call"


def test_max_call_duration_is_sent_as_agent_override(make_app, allowed, fake_retell):
    client = make_app(MAX_CALL_DURATION_MS="300000").test_client()
    assert post(client, {}).status_code == 201
    override = fake_retell.requests[-1]["body"]["agent_override"]
    assert override == {"agent": {"max_call_duration_ms": 300000}}


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "\xff\xfe", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "[1, 2]", "content_type": "application/json"}, 400, "invalid_request"),
        ({"data": '"text"', "content_type": "application/json"}, 400, "invalid_request"),
        ({"data": "", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "agent_id=x", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": "agent_id=x"}, 415, "unsupported_media_type"),
        (
            {"data": json.dumps({"x": "y" * 9000}), "content_type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)  # fmt: skip
def test_bad_bodies(client, allowed, fake_retell, kwargs, status, code):
    response = post(client, **kwargs)
    assert_error(response, status, code)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert fake_retell.requests == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_id": AGENT, "extra": 1}, "extra"),
        ({"agent_id": 5}, "agent_id"),
        ({"agent_id": ""}, "agent_id"),
        ({"agent_id": "a" * 129}, "agent_id"),
        ({"agent_id": "agent/../x"}, "agent_id"),
        ({"agent_id": AGENT, "metadata": "x"}, "metadata"),
        ({"agent_id": AGENT, "metadata": {"k": 1}}, "metadata.k"),
        ({"agent_id": AGENT, "metadata": {"k": {"n": "v"}}}, "metadata.k"),
        ({"agent_id": AGENT, "metadata": {"k": "v" * 201}}, "metadata.k"),
        ({"agent_id": AGENT, "metadata": {f"k{i}": "v" for i in range(21)}}, "metadata"),
        ({"agent_id": AGENT, "dynamic_variables": {"n": 3}}, "dynamic_variables.n"),
        ({"agent_id": AGENT, "dynamic_variables": ["a"]}, "dynamic_variables"),
    ],
)
def test_invalid_fields_are_named(client, allowed, fake_retell, body, field):
    response = post(client, body)
    assert_error(response, 400, "invalid_request")
    assert field in response.json["message"]
    assert fake_retell.requests == []


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ({"behaviour": "error", "status": 400}, 502, "upstream_error"),
        ({"behaviour": "error", "status": 401}, 502, "upstream_unauthorized"),
        ({"behaviour": "error", "status": 402}, 503, "upstream_payment_required"),
        ({"behaviour": "error", "status": 422}, 404, "agent_not_found"),
        ({"behaviour": "error", "status": 429}, 503, "upstream_rate_limited"),
        ({"behaviour": "error", "status": 500}, 502, "upstream_error"),
        ({"behaviour": "error", "status": 500, "error_key": "error"}, 502, "upstream_error"),
        ({"behaviour": "garbage"}, 502, "upstream_error"),
        ({"behaviour": "huge"}, 502, "upstream_error"),
        ({"behaviour": "no_token"}, 502, "upstream_error"),
        ({"behaviour": "close"}, 502, "upstream_error"),
    ],
)  # fmt: skip
def test_upstream_errors_map_to_stable_codes(
    client, allowed, fake_retell, usage_entries, behaviour, status, code
):
    fake_retell.set_behaviour(**behaviour)
    response = post(client, {"agent_id": AGENT})
    assert_error(response, status, code)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    text = response.get_data(as_text=True)
    assert "Invalid API key" not in text and "padding" not in text  # upstream body not echoed
    assert len(fake_retell.requests) == 1  # never retried
    entry = usage_entries()[-1]
    assert (entry["outcome"], entry["error"], entry["status"]) == (
        "upstream_error",
        code,
        str(status),
    )


def test_upstream_rate_limit_passes_retry_after(client, allowed, fake_retell):
    fake_retell.set_behaviour("error", status=429, retry_after="17")
    response = post(client, {"agent_id": AGENT})
    assert_error(response, 503, "upstream_rate_limited")
    assert response.headers["Retry-After"] == "17"


def test_unauthorized_upstream_is_logged_loudly(client, allowed, fake_retell, caplog):
    fake_retell.set_behaviour("error", status=401)
    post(client, {"agent_id": AGENT})
    assert any(
        r.levelname == "ERROR" and "RETELL_API_KEY" in r.getMessage() for r in caplog.records
    )


def test_read_timeout_is_504_and_not_retried(make_app, allowed, fake_retell):
    client = make_app(UPSTREAM_READ_TIMEOUT="0.3").test_client()
    fake_retell.set_behaviour("hang")
    response = post(client, {"agent_id": AGENT})
    assert_error(response, 504, "upstream_timeout")
    assert len(fake_retell.requests) == 1


@pytest.fixture
def blackhole_url():
    """A loopback port whose accept queue is full, so new connections hang in SYN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for sock in [*fillers, listener]:
        sock.close()


def test_connect_timeout_is_504(make_app, allowed, blackhole_url):
    client = make_app(RETELL_API_BASE=blackhole_url, UPSTREAM_CONNECT_TIMEOUT="0.3").test_client()
    assert_error(post(client, {"agent_id": AGENT}), 504, "upstream_timeout")


def test_connection_refused_is_502(make_app, allowed):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_app(RETELL_API_BASE=f"http://127.0.0.1:{port}").test_client()
    assert_error(post(client, {"agent_id": AGENT}), 502, "upstream_error")


def test_api_answers_json_for_404_405_and_500(client, allowed, monkeypatch, usage_entries):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    response = client.get("/api/create-web-call")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]

    def boom(*args):
        raise RuntimeError("kaboom")

    monkeypatch.setattr("app.http.calls.retell_client.create_web_call", boom)
    response = post(client, {"agent_id": AGENT})
    assert_error(response, 500, "internal_error")
    assert "kaboom" not in response.get_data(as_text=True)
    entry = usage_entries()[-1]
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "unavailable",
        "500",
        "internal_error",
    )


def test_request_id_is_honoured_or_minted(client, allowed):
    given = post(client, {"agent_id": AGENT}, headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    minted = post(client, {"agent_id": AGENT}, headers={"X-Request-ID": "bad id <script>"})
    assert len(minted.headers["X-Request-ID"]) == 32


def test_the_api_key_appears_in_no_response_log_or_stream_entry(
    client, allowed, fake_retell, caplog, capfd, redis
):
    key = fake_retell.api_key
    responses = [post(client, {"agent_id": AGENT})]
    for status in (400, 401, 402, 422, 429, 500):
        fake_retell.set_behaviour("error", status=status)
        responses.append(post(client, {"agent_id": AGENT}))
    responses.append(post(client, {"agent_id": "other"}))
    responses.append(post(client, {"agent_id": AGENT}, origin="https://evil.com"))
    responses.append(client.get("/api/health/ready"))
    for response in responses:
        assert key not in response.get_data(as_text=True)
        assert key not in str(response.headers)
    captured = capfd.readouterr()
    assert '"path": "/api/create-web-call"' in captured.err  # the log lines were captured
    assert key not in captured.out + captured.err + caplog.text
    stream = redis.xrange("widget:usage")
    assert len(stream) == 9
    assert key not in json.dumps(stream)


def test_log_formatter_redacts_the_key_even_if_someone_logs_it(app, fake_retell, capfd):
    import logging

    logging.getLogger("careless").error("oops %s", fake_retell.api_key)
    err = capfd.readouterr().err
    assert fake_retell.api_key not in err and "[redacted]" in err


@pytest.mark.parametrize("depth", [939, 940, 3000])
@pytest.mark.parametrize("listed", [True, False])
def test_deeply_nested_bodies_are_4xx_and_recorded(
    client, allow_origin, fake_retell, usage_entries, capsys, depth, listed
):
    # 1,880 bytes of brackets at depth 940 once raised RecursionError: a 500 and no entry.
    origin = ORIGIN if listed else "https://evil.test"
    if listed:
        allow_origin(ORIGIN, AGENT)
    data = "[" * depth + "]" * depth
    response = post(client, origin=origin, data=data, content_type="application/json")
    status, code = (400, "invalid_request") if listed else (403, "origin_not_allowed")
    assert_error(response, status, code)
    [entry] = usage_entries()
    assert (entry["outcome"], entry["status"]) == (
        ("invalid", "400") if listed else ("origin_denied", "403")
    )
    assert "Traceback" not in capsys.readouterr().err
    assert fake_retell.requests == []


@pytest.mark.parametrize("field", ["agent_id", "metadata", "dynamic_variables"])
def test_null_is_not_a_value(client, allowed, fake_retell, field):
    body = {"agent_id": AGENT, field: None}
    response = post(client, body)
    assert_error(response, 400, "invalid_request")
    assert field in response.json["message"]
    assert fake_retell.requests == []


def test_an_unknown_admission_outcome_refuses(client, app, allowed, fake_retell, usage_entries):
    from app.policy.admission import Decision

    gate = app.extensions["admission"]
    gate.decide = lambda request: Decision(outcome="maybe", entry=ORIGIN, agent_id=AGENT)
    assert_error(post(client), 500, "internal_error")
    assert fake_retell.requests == []
    [entry] = usage_entries()
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "unavailable", "500", "internal_error",
    )  # fmt: skip
