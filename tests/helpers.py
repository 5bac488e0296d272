"""Constants and request helpers the test modules share (conftest.py holds the fixtures)."""

from __future__ import annotations

import requests

from devtools.ports import wait_until  # noqa: F401 -- the one polling helper, re-exported

ORIGIN = "https://client-a.com"
AGENT = "agent_abc"
CREATE = "/api/create-web-call"
AGENT_BODY = {"agent_id": AGENT}


def post(client, body=AGENT_BODY, origin=ORIGIN, headers=None, **kwargs):
    """create-web-call through a Flask test client. body=None sends no JSON (use data=...);
    origin=None sends no Origin header."""
    all_headers = {"Origin": origin} if origin is not None else {}
    all_headers.update(headers or {})
    if body is not None and "data" not in kwargs:
        kwargs["json"] = body
    return client.post(CREATE, headers=all_headers, **kwargs)


def post_http(base_url, body=AGENT_BODY, origin=ORIGIN, headers=None):
    """create-web-call over real HTTP (requests), for servers on loopback."""
    return requests.post(
        f"{base_url}{CREATE}",
        json=body,
        headers={"Origin": origin, **(headers or {})},
        timeout=10,
    )


def assert_error(response, status, code):
    """A JSON error with a stable code and a message (Flask test response)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert response.json["error"] == code
    assert isinstance(response.json["message"], str) and response.json["message"]


# Chat (app/http/chat.py): the fake's echoing chat agent, granted with widget:chat-agents.
CHAT_AGENT = "agent_chat_echo"


def grant_chat(redis, origin=ORIGIN, *agent_ids) -> None:
    """The redis-cli lines the README documents: allow the origin, grant chat agents."""
    redis.sadd("widget:origins", origin)
    redis.sadd(f"widget:chat-agents:{origin}", *(agent_ids or (CHAT_AGENT,)))


def chat_headers(origin=ORIGIN, token=None) -> dict:
    headers = {"Origin": origin}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def start_chat(client, body=None, origin=ORIGIN, headers=None):
    """POST /api/chat through a Flask test client (body {} unless given)."""
    return client.post("/api/chat", json={} if body is None else body,
                       headers={**chat_headers(origin), **(headers or {})})  # fmt: skip


def send(client, token, content="Hello", origin=ORIGIN):
    """POST /api/chat/messages through a Flask test client."""
    body = {"chat_token": token, "content": content}
    return client.post("/api/chat/messages", json=body, headers=chat_headers(origin))


# Feedback (app/http/feedback.py): a visitor's rating of a call the gateway minted.
FEEDBACK = "/api/feedback"


def feedback(client, call_id, rating="up", origin=ORIGIN, **more):
    """POST /api/feedback through a Flask test client; more: other body fields (comment)."""
    body = {"call_id": call_id, "rating": rating, **more}
    return client.post(FEEDBACK, json=body, headers={"Origin": origin})
