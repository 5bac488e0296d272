"""The fake Retell's chat API (devtools/fakes/retell_chat.py), over real HTTP on loopback:
shapes, per-turn messages, history, ending, the key, each agent and each error."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.fakes.retell_chat import ECHO_PREFIX, HUGE_BYTES, MARKUP, OPENING

CHAT_ID = re.compile(r"^chat_[0-9a-f]+$")
ITEM_ROLES = {"agent", "user", "tool_call_invocation", "tool_call_result", "node_transition"}


class Answer:
    def __init__(self, status: int, headers, raw: bytes):
        self.status, self.headers, self.raw = status, headers, raw

    @property
    def json(self):
        return json.loads(self.raw)


def hit(fake, method: str, path: str, body=None, *, key=None, raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if key != "":
        headers["Authorization"] = f"Bearer {key or fake.api_key}"
    request = urllib.request.Request(f"{fake.url}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Answer(exc.code, exc.headers, exc.read())


def create(fake, agent_id="agent_chat_echo", **body) -> dict:
    answer = hit(fake, "POST", "/create-chat", {"agent_id": agent_id, **body})
    assert answer.status == 201, answer.raw
    return answer.json


def say(fake, chat_id: str, content: str, **kwargs) -> Answer:
    return hit(
        fake, "POST", "/create-chat-completion", {"chat_id": chat_id, "content": content}, **kwargs
    )


def get_chat(fake, chat_id: str) -> dict:
    answer = hit(fake, "GET", f"/get-chat/{chat_id}")
    assert answer.status == 200, answer.raw
    return answer.json


def error(answer: Answer, status: int, message: str | None = None) -> None:
    assert answer.status == status, answer.raw
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json
    assert body["status"] == "error" and isinstance(body["message"], str)
    if message:
        assert body["message"] == message


def check_item(item: dict) -> None:
    assert item["role"] in ITEM_ROLES
    assert item["message_id"].startswith("msg_")
    assert isinstance(item["created_timestamp"], int)
    assert item["created_timestamp"] > time.time() * 1000 - 60_000
    if item["role"] in ("agent", "user"):
        assert isinstance(item["content"], str)


def test_create_chat_answers_the_chat_object(fake_retell):
    variables = {"name": "Zoë"}
    chat = create(fake_retell, "agent_x", metadata={"origin": "https://a.example"},
                  retell_llm_dynamic_variables=variables, agent_version=3)  # fmt: skip
    assert CHAT_ID.match(chat["chat_id"])
    assert chat["agent_id"] == "agent_x" and chat["chat_status"] == "ongoing"
    assert chat["chat_type"] == "api_chat" and chat["version"] == 3
    assert chat["metadata"] == {"origin": "https://a.example"}
    assert chat["retell_llm_dynamic_variables"] == variables
    assert abs(chat["start_timestamp"] - time.time() * 1000) < 60_000
    assert chat["message_with_tool_calls"] == [] and "end_timestamp" not in chat
    assert get_chat(fake_retell, chat["chat_id"]) == chat == fake_retell.chat.chats[chat["chat_id"]]
    bare = create(fake_retell)  # nothing sent: omitted, as for calls
    assert "metadata" not in bare and "retell_llm_dynamic_variables" not in bare
    assert bare["chat_id"] != chat["chat_id"]
    # Recorded like the call endpoints' requests, with the key the gateway sent.
    first = fake_retell.requests[0]
    assert (first["method"], first["path"]) == ("POST", "/create-chat")
    assert first["headers"]["Authorization"] == f"Bearer {fake_retell.api_key}"


def test_each_completion_answers_only_its_own_turn(fake_retell):
    chat_id = create(fake_retell)["chat_id"]
    first = say(fake_retell, chat_id, "Hello")
    assert first.status == 201 and first.headers["Content-Type"] == "application/json"
    second = say(fake_retell, chat_id, "Grüße 👋")
    for answer, content in ((first, "Hello"), (second, "Grüße 👋")):
        user, agent = answer.json["messages"]
        assert (user["role"], user["content"]) == ("user", content)
        assert (agent["role"], agent["content"]) == ("agent", ECHO_PREFIX + content)
        check_item(user), check_item(agent)
    history = get_chat(fake_retell, chat_id)["message_with_tool_calls"]
    assert history == first.json["messages"] + second.json["messages"]
    assert len({item["message_id"] for item in history}) == 4
    assert [i["created_timestamp"] for i in history] == sorted(
        i["created_timestamp"] for i in history
    )
    transcript = get_chat(fake_retell, chat_id)["transcript"]
    assert (
        transcript
        == "User: Hello\nAgent: You said: Hello\nUser: Grüße 👋\nAgent: You said: Grüße 👋\n"
    )


def test_opening_message_is_in_get_chat_not_in_the_create_answer(fake_retell):
    chat = create(fake_retell, "agent_chat_opening")
    assert chat["message_with_tool_calls"] == []
    (opening,) = get_chat(fake_retell, chat["chat_id"])["message_with_tool_calls"]
    assert (opening["role"], opening["content"]) == ("agent", OPENING)
    check_item(opening)
    messages = say(fake_retell, chat["chat_id"], "hi").json["messages"]
    assert [m["role"] for m in messages] == ["user", "agent"]  # the opening is not repeated
    assert len(get_chat(fake_retell, chat["chat_id"])["message_with_tool_calls"]) == 3


def test_end_chat_then_no_more_answers(fake_retell):
    chat_id = create(fake_retell)["chat_id"]
    say(fake_retell, chat_id, "one")
    ended = hit(fake_retell, "PATCH", f"/end-chat/{chat_id}")
    assert ended.status == 204 and ended.raw == b""
    chat = get_chat(fake_retell, chat_id)
    assert chat["chat_status"] == "ended" and chat["end_timestamp"] >= chat["start_timestamp"]
    error(say(fake_retell, chat_id, "two"), 400, "Chat already ended")
    assert len(get_chat(fake_retell, chat_id)["message_with_tool_calls"]) == 2  # not recorded
    assert hit(fake_retell, "PATCH", f"/end-chat/{chat_id}").status == 204  # again: no change
    assert get_chat(fake_retell, chat_id)["end_timestamp"] == chat["end_timestamp"]


def test_an_end_while_the_agent_thinks_refuses_the_answer(fake_retell):
    chat_id = create(fake_retell, "agent_chat_slow_0.4")["chat_id"]
    pending = ThreadPoolExecutor(1).submit(say, fake_retell, chat_id, "hi")
    time.sleep(0.1)
    assert hit(fake_retell, "PATCH", f"/end-chat/{chat_id}").status == 204
    error(pending.result(5), 400, "Chat already ended")


@pytest.mark.parametrize("key", ["", "wrong"])
def test_every_endpoint_checks_the_key(fake_retell, key):
    chat_id = create(fake_retell)["chat_id"]
    answers = [
        hit(fake_retell, "POST", "/create-chat", {"agent_id": "agent_a"}, key=key),
        say(fake_retell, chat_id, "hi", key=key),
        hit(fake_retell, "PATCH", f"/end-chat/{chat_id}", key=key),
        hit(fake_retell, "GET", f"/get-chat/{chat_id}", key=key),
        hit(fake_retell, "GET", "/get-chat/chat_nope", key=key),
    ]
    for answer in answers:
        error(answer, 401, "Invalid API key")
    assert list(fake_retell.chat.chats) == [chat_id]
    chat = get_chat(fake_retell, chat_id)
    assert chat["chat_status"] == "ongoing" and chat["message_with_tool_calls"] == []


def test_unknown_chats_and_agents_are_404(fake_retell):
    not_found = {"status": "error", "message": "Not found"}
    for answer in (
        say(fake_retell, "chat_nope", "hi"),
        hit(fake_retell, "GET", "/get-chat/chat_nope"),
        hit(fake_retell, "PATCH", "/end-chat/chat_nope"),
    ):
        assert (answer.status, answer.json) == (404, not_found)
    error(hit(fake_retell, "POST", "/create-chat", {"agent_id": "agent_chat_unknown"}), 404,
          "Agent not found")  # fmt: skip
    assert fake_retell.chat.chats == {}
    assert hit(fake_retell, "PATCH", "/v2/get-call/x").status == 404  # PATCH elsewhere


@pytest.mark.parametrize(
    "body",
    [None, [], {}, {"agent_id": 7}, {"agent_id": "a", "agent_version": True},
     {"agent_id": "a", "agent_version": "1"}, {"agent_id": "a", "metadata": "x"},
     {"agent_id": "a", "retell_llm_dynamic_variables": {"n": 1}}],
)  # fmt: skip
def test_create_refuses_a_bad_body(fake_retell, body):
    raw = b"{not json" if body is None else None
    error(hit(fake_retell, "POST", "/create-chat", body, raw=raw), 400, "Invalid request body")
    assert fake_retell.chat.chats == {}


def test_completion_refuses_a_bad_body(fake_retell):
    chat_id = create(fake_retell)["chat_id"]
    for body in ({}, {"chat_id": chat_id}, {"chat_id": chat_id, "content": ""},
                 {"chat_id": chat_id, "content": 5}, {"content": "hi"}, ["hi"]):  # fmt: skip
        error(hit(fake_retell, "POST", "/create-chat-completion", body), 400)
    error(hit(fake_retell, "POST", "/create-chat-completion", raw=b"{nope"), 400)
    assert get_chat(fake_retell, chat_id)["message_with_tool_calls"] == []


def test_tool_agent_wraps_its_answer_in_tool_traffic(fake_retell):
    chat_id = create(fake_retell, "agent_chat_tools")["chat_id"]
    messages = say(fake_retell, chat_id, "opening hours?").json["messages"]
    assert [m["role"] for m in messages] == [
        "user", "node_transition", "tool_call_invocation", "tool_call_result", "agent",
        "node_transition",
    ]  # fmt: skip
    for item in messages:
        check_item(item)
    _, before, invocation, result, agent, after = messages
    assert invocation["tool_call_id"] == result["tool_call_id"]
    assert json.loads(invocation["arguments"]) == {"query": "opening hours?"}
    assert invocation["name"] and isinstance(result["content"], str)
    assert "content" not in before and before["new_node_id"] == after["former_node_id"]
    assert agent["content"] == ECHO_PREFIX + "opening hours?"
    assert get_chat(fake_retell, chat_id)["message_with_tool_calls"] == messages
    assert "lookup" not in get_chat(fake_retell, chat_id)["transcript"]  # tool traffic: no text


def test_markup_agent_replies_with_html(fake_retell):
    chat_id = create(fake_retell, "agent_chat_markup")["chat_id"]
    _, agent = say(fake_retell, chat_id, "hi").json["messages"]
    assert agent["content"] == MARKUP
    assert "<img src=x onerror=alert(1)>" in MARKUP and '<a href="https://x.example">' in MARKUP


def test_slow_agent_does_not_hold_up_other_requests(fake_retell):
    fake_retell.chat.set_agent("agent_slowish", delay=0.6)
    slow_id = create(fake_retell, "agent_slowish")["chat_id"]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(say, fake_retell, slow_id, "wait")
        time.sleep(0.1)
        fast_id = create(fake_retell)["chat_id"]
        assert say(fake_retell, fast_id, "quick").status == 201
        assert time.monotonic() - started < 0.5  # answered while the slow one thinks
        assert slow.result(5).status == 201
    assert time.monotonic() - started >= 0.6
    assert fake_retell.chat.agent("agent_chat_slow")["delay"] == 2.0
    assert fake_retell.chat.agent("agent_chat_slow_1.5")["delay"] == 1.5


STATUSES = [401, 402, 404, 400, 422, 429, 500]


@pytest.mark.parametrize("status", STATUSES)
def test_each_error_on_create(fake_retell, status):
    answer = hit(
        fake_retell, "POST", "/create-chat", {"agent_id": f"agent_chat_fail_create_{status}"}
    )
    error(answer, status)
    assert answer.headers.get("Retry-After") == ("1" if status == 429 else None)
    assert fake_retell.chat.chats == {}


@pytest.mark.parametrize("status", STATUSES)
def test_each_error_on_completion(fake_retell, status):
    chat_id = create(fake_retell, f"agent_chat_fail_completion_{status}")["chat_id"]
    answer = say(fake_retell, chat_id, "hi")
    error(answer, status)
    assert answer.headers.get("Retry-After") == ("1" if status == 429 else None)
    assert get_chat(fake_retell, chat_id)["message_with_tool_calls"] == []  # turn not kept


@pytest.mark.parametrize("stage", ["create", "completion"])
def test_garbage_and_huge_answers(fake_retell, stage):
    for what in ("garbage", "huge"):
        agent_id = f"agent_chat_fail_{stage}_{what}"
        if stage == "create":
            answer = hit(fake_retell, "POST", "/create-chat", {"agent_id": agent_id})
        else:
            answer = say(fake_retell, create(fake_retell, agent_id)["chat_id"], "hi")
        assert answer.status == 201
        if what == "garbage":
            assert answer.headers["Content-Type"] == "text/html"
            with pytest.raises(ValueError):
                json.loads(answer.raw)
        else:
            assert len(answer.raw) > HUGE_BYTES > 64 * 1024
            assert "chat_id" in answer.json if stage == "create" else "messages" in answer.json
    # The work was done: Retell created the chats / kept the turns, only the answer broke.
    chats = fake_retell.chat.chats.values()
    assert len(chats) == 2
    if stage == "completion":
        assert all(len(c["message_with_tool_calls"]) == 2 for c in chats)


@pytest.mark.parametrize("stage", ["create", "completion"])
def test_a_dropped_connection(fake_retell, stage):
    agent_id = f"agent_chat_fail_{stage}_close"
    chat_id = create(fake_retell, agent_id)["chat_id"] if stage == "completion" else None
    path, body = ("/create-chat", {"agent_id": agent_id}) if stage == "create" else (
        "/create-chat-completion", {"chat_id": chat_id, "content": "hi"})  # fmt: skip
    host, port = fake_retell.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    auth = {"Authorization": f"Bearer {fake_retell.api_key}"}
    connection.request("POST", path, json.dumps(body), auth)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        connection.getresponse()
    connection.close()


def test_hang_until_reset(fake_retell):
    chat_id = create(fake_retell)["chat_id"]
    fake_retell.chat.set_agent("agent_chat_echo", fail="hang", on="completion")
    pending = ThreadPoolExecutor(1).submit(say, fake_retell, chat_id, "hi")
    time.sleep(0.2)
    assert not pending.done()
    fake_retell.chat.reset()
    error(pending.result(5), 500)


def test_http_hooks_configure_agents_and_show_the_log(fake_retell):
    chat_id = create(fake_retell, "agent_custom")["chat_id"]
    config = {"text": "Fixed <b>reply</b>", "status": 429, "retry_after": "7",
              "error_key": "error_message", "include_user_message": False}  # fmt: skip
    hooked = hit(fake_retell, "POST", "/_fake/chat/agents/agent_custom", config, key="")
    assert hooked.status == 200 and hooked.json["text"] == "Fixed <b>reply</b>"
    assert hooked.json["reply"] == "echo" and hooked.json["fail"] is None  # defaults
    assert hit(fake_retell, "GET", "/_fake/chat/agents/agent_custom", key="").json == hooked.json
    # Applies to the chat created before; the input message is not echoed back.
    (agent,) = say(fake_retell, chat_id, "hi").json["messages"]
    assert (agent["role"], agent["content"]) == ("agent", "Fixed <b>reply</b>")
    assert len(get_chat(fake_retell, chat_id)["message_with_tool_calls"]) == 2
    hit(fake_retell, "POST", "/_fake/chat/agents/agent_custom", {"fail": "error", "status": 429,
         "retry_after": "7", "error_key": "error_message"}, key="")  # fmt: skip
    refused = say(fake_retell, chat_id, "again")
    assert refused.status == 429 and refused.headers["Retry-After"] == "7"
    assert refused.json == {"status": "error", "error_message": "Rate limited"}
    for bad in (
        {"reply": "sing"},
        {"delay": -1},
        {"delay": True},
        {"colour": 1},
        {"status": 200},
        [],
    ):
        assert hit(fake_retell, "POST", "/_fake/chat/agents/x", bad, key="").status == 400
    hit(fake_retell, "PATCH", f"/end-chat/{chat_id}")
    log = hit(fake_retell, "GET", "/_fake/chat/log", key="").json
    assert log["log"] == fake_retell.chat.log
    assert [(e["endpoint"], e["status"]) for e in log["log"]] == [
        ("create-chat", 201), ("create-chat-completion", 201), ("get-chat", 200),
        ("create-chat-completion", 429), ("end-chat", 204),
    ]  # fmt: skip
    assert {e["agent_id"] for e in log["log"]} == {"agent_custom"}
    assert {e["chat_id"] for e in log["log"][1:]} == {chat_id}
    assert [e.get("content") for e in log["log"]] == [None, "hi", None, "again", None]
    assert log["chats"][chat_id]["chat_status"] == "ended"
    # Hooks are not API traffic.
    assert not any(r["path"].startswith("/_fake") for r in fake_retell.requests)
    assert hit(fake_retell, "POST", "/_fake/chat/reset", key="").status == 204
    assert fake_retell.chat.chats == {} and fake_retell.chat.log == []
    assert fake_retell.chat.agent("agent_custom")["text"] is None


def test_python_api_and_reset(fake_retell):
    with pytest.raises(ValueError):
        fake_retell.chat.set_agent("a", on="sometimes")
    fake_retell.chat.set_agent("agent_chat_markup", reply="echo")  # overrides a built-in
    chat_id = create(fake_retell, "agent_chat_markup")["chat_id"]
    assert say(fake_retell, chat_id, "x").json["messages"][1]["content"] == ECHO_PREFIX + "x"
    assert fake_retell.chat.get_chat(chat_id)["agent_id"] == "agent_chat_markup"
    fake_retell.reset()
    assert fake_retell.chat.chats == {} and fake_retell.chat.log == []
    assert fake_retell.chat.agent("agent_chat_markup")["reply"] == "markup"
    with pytest.raises(KeyError):
        fake_retell.chat.get_chat(chat_id)


def test_a_hundred_concurrent_completions(fake_retell):
    chats = [create(fake_retell)["chat_id"] for _ in range(10)]
    jobs = [(chats[i % 10], f"message {i}") for i in range(100)]
    barrier = threading.Barrier(100)

    def send(job):
        barrier.wait(10)
        return job, say(fake_retell, *job)

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(send, jobs))
    for (_, content), answer in results:
        assert answer.status == 201
        user, agent = answer.json["messages"]
        assert user["content"] == content and agent["content"] == ECHO_PREFIX + content
    histories = [get_chat(fake_retell, c)["message_with_tool_calls"] for c in chats]
    assert [len(h) for h in histories] == [20] * 10
    ids = [item["message_id"] for h in histories for item in h]
    assert len(set(ids)) == 200
    completions = [e for e in fake_retell.chat.log if e["endpoint"] == "create-chat-completion"]
    assert len(completions) == 100
