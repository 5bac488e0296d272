"""The fake Retell's chat API (docs/retell.md, "Chat API"), wired into devtools/fakes/retell.py.

Endpoints (no version prefix; Bearer key as for calls; errors {"status":"error","message"}):
- POST /create-chat {agent_id, agent_version?, metadata?, retell_llm_dynamic_variables?}
  -> 201 the chat object {chat_id: "chat_<hex>", agent_id, chat_status: "ongoing",
  chat_type: "api_chat", version, start_timestamp, transcript, message_with_tool_calls,
  metadata?, retell_llm_dynamic_variables?}. An opening message is NOT in this answer
  (whether Retell puts one there is unconfirmed): read GET /get-chat after creating.
- POST /create-chat-completion {chat_id, content} -> 201 {messages: [...]}: only this
  turn's items, the user's item first, each with role, message_id ("msg_<hex>"),
  created_timestamp (ms); user/agent items carry content. Retell's SDK says the input
  message is not echoed back: agents configured with include_user_message=False do that.
  Unknown chat: 404; ended chat: 400 {"message": "Chat already ended"}.
- PATCH /end-chat/{chat_id} -> 204, no body (the SDK expects none); ending twice is 204 too.
- GET /get-chat/{chat_id} -> 200 the chat object, the whole history in
  message_with_tool_calls (tool items included); ended chats have end_timestamp.

Agents (any agent_id that is not configured behaves like agent_chat_echo):
- agent_chat_echo: replies "You said: <content>".
- agent_chat_opening: echo, and the chat starts with OPENING (an agent item in get-chat).
- agent_chat_slow: echo after SLOW_SECONDS (2 s); agent_chat_slow_<seconds> (e.g.
  agent_chat_slow_0.5) after that many seconds. Waits in its own thread: others go on.
- agent_chat_tools: the turn is user, node_transition, tool_call_invocation,
  tool_call_result, agent ("You said: ..."), node_transition.
- agent_chat_markup: replies MARKUP (an <img onerror>, an <a href>, a <script>).
- agent_chat_unknown: create answers 404 {"message": "Agent not found"}.
- agent_chat_fail_<when>_<what>: when = create | completion; what = a status (401, 402,
  404, 400, 422, 429 (with Retry-After: 1), 500, ...), garbage (201 text/html, not JSON),
  huge (201, valid JSON padded over 64 KB), close (connection dropped, no answer) or hang
  (no answer until reset()/stop(), at most 60 s). garbage/huge happen after the work:
  the chat exists, the turn is in its history.

Configuring (like FakeRetell.set_behaviour): fake.chat.set_agent(agent_id, **config), or
POST /_fake/chat/agents/<agent_id> with the config as JSON (loopback, no auth) -> 200 the
effective config (GET there reads it). Config keys (left out: default): reply "echo" |
"tools" | "markup"; text (a fixed reply instead of the echo); opening (str | null); delay (seconds
before each completion answers); fail null | "error" | "garbage" | "huge" | "close" |
"hang"; status (for "error", default 500); retry_after (str | null); error_key ("message",
or "error_message" / "error"); on "create" | "completion" | "both" (where fail applies);
include_user_message (default true). A config applies from the next request on, also to
chats already created with that agent. fake.reset() / POST /_fake/chat/reset forget the
chats, the log and configured agents.

Reading: fake.chat.chats (chat_id -> chat object), fake.chat.get_chat(chat_id), and
fake.chat.log, one entry per chat API request, in order of answer: {at, method, path,
endpoint ("create-chat" | "create-chat-completion" | "end-chat" | "get-chat"), agent_id,
chat_id, content (completions), status}; also GET /_fake/chat/log -> {log, chats}. Chat
API requests are also appended to fake.requests like the call endpoints'. The call
endpoints' set_behaviour() does not apply to chat.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time

ECHO_PREFIX = "You said: "
OPENING = "Hi! I'm the fake chat agent. How can I help?"
MARKUP = (
    '<img src=x onerror=alert(1)> <a href="https://x.example">link</a> '
    "<script>alert(2)</script> &amp; <b>bold</b>"
)
SLOW_SECONDS = 2.0
HUGE_BYTES = 70 * 1024  # over the 64 KB an upstream answer may have
ENDED_STATUS, ENDED_MESSAGE = 400, "Chat already ended"  # Retell's exact answer: unconfirmed
MESSAGES = {400: "Invalid request body", 401: "Invalid API key", 404: "Not found",
            402: "Trial ended, please add a payment method", 422: "Unprocessable entity",
            429: "Rate limited", 500: "Internal server error"}  # fmt: skip
DEFAULTS: dict = {"reply": "echo", "text": None, "opening": None, "delay": 0.0, "fail": None,
                  "status": 500, "retry_after": None, "error_key": "message", "on": "both",
                  "include_user_message": True}  # fmt: skip
BUILTIN: dict[str, dict] = {
    "agent_chat_echo": {},
    "agent_chat_opening": {"opening": OPENING},
    "agent_chat_slow": {"delay": SLOW_SECONDS},
    "agent_chat_tools": {"reply": "tools"},
    "agent_chat_markup": {"reply": "markup"},
    "agent_chat_unknown": {"fail": "error", "status": 404, "on": "create"},
}
_CHOICES = {
    "reply": ("echo", "tools", "markup"),
    "fail": (None, "error", "garbage", "huge", "close", "hang"),
    "on": ("create", "completion", "both"),
    "error_key": ("message", "error_message", "error"),
}
_STR_OR_NONE = (str, type(None))
_TYPES = {"text": _STR_OR_NONE, "opening": _STR_OR_NONE, "retry_after": _STR_OR_NONE,
          "delay": (int, float), "status": int, "include_user_message": bool}  # fmt: skip
_FAIL_ID = re.compile(r"^agent_chat_fail_(create|completion)_([45]\d\d|garbage|huge|close|hang)$")
_SLOW_ID = re.compile(r"^agent_chat_slow_(\d+(?:\.\d+)?)$")
_ID_PATH = re.compile(r"^/(end-chat|get-chat)/(?P<chat_id>[^/]+)$")
_HOOK_AGENT = re.compile(r"^/_fake/chat/agents/(?P<agent_id>[^/]+)$")
_NOT_FOUND = b'{"status":"error","message":"Not found"}'


def _now_ms() -> int:
    return int(time.time() * 1000)


def _item(role: str, **fields) -> dict:
    return {"message_id": "msg_" + secrets.token_hex(8), "role": role, **fields,
            "created_timestamp": _now_ms()}  # fmt: skip


def check_config(config) -> str | None:
    """Why config is not a valid agent config (None when it is)."""
    if not isinstance(config, dict):
        return "config must be an object"
    for key, value in config.items():
        if key in _CHOICES:
            if value not in _CHOICES[key]:
                return f"{key} must be one of {_CHOICES[key]}"
        elif key not in _TYPES:
            return f"unknown key {key}"
        elif not isinstance(value, _TYPES[key]) or isinstance(value, bool) != (_TYPES[key] is bool):
            return f"{key} has the wrong type"
    if config.get("delay", 0) < 0 or not 400 <= config.get("status", 500) <= 599:
        return "delay must be >= 0 and status 4xx/5xx"
    return None


class ChatFake:
    """The chat state of one FakeRetell; every method is thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.chats: dict[str, dict] = {}
        self.log: list[dict] = []
        self.agents: dict[str, dict] = {}
        self.release = threading.Event()  # ends slow waits and hangs
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.chats.clear()
            self.log.clear()
            self.agents.clear()
            self.release.set()
            self.release = threading.Event()

    def set_agent(self, agent_id: str, **config) -> dict:
        """Configure agent_id (replaces any earlier config); returns the effective one."""
        problem = check_config(config)
        if problem:
            raise ValueError(problem)
        with self.lock:
            self.agents[agent_id] = {**DEFAULTS, **config}
            return dict(self.agents[agent_id])

    def agent(self, agent_id: str) -> dict:
        """The effective config of agent_id: set_agent's, else built-in or by its id."""
        with self.lock:
            if agent_id in self.agents:
                return dict(self.agents[agent_id])
        config = dict(BUILTIN.get(agent_id, {}))
        if match := _FAIL_ID.match(agent_id):
            what = match[2]
            config.update(on=match[1], fail="error" if what.isdigit() else what)
            if what.isdigit():
                config.update(status=int(what), retry_after="1" if what == "429" else None)
        elif match := _SLOW_ID.match(agent_id):
            config["delay"] = float(match[1])
        return {**DEFAULTS, **config}

    def get_chat(self, chat_id: str) -> dict:
        """A copy of the chat as get-chat answers it (KeyError if unknown)."""
        with self.lock:
            return copy.deepcopy(self.chats[chat_id])

    def create(self, body: dict, config: dict) -> dict:
        chat = {
            "chat_id": "chat_" + secrets.token_hex(12),
            "agent_id": body["agent_id"],
            "chat_status": "ongoing",
            "chat_type": "api_chat",
            "version": body.get("agent_version", 1),
            "start_timestamp": _now_ms(),
            "transcript": "",
            "message_with_tool_calls": [],
        }
        for key in ("metadata", "retell_llm_dynamic_variables"):
            if key in body:
                chat[key] = body[key]
        answer = copy.deepcopy(chat)
        if config["opening"] is not None:
            self._append(chat, [_item("agent", content=config["opening"])])
        with self.lock:
            self.chats[chat["chat_id"]] = chat
        return answer

    def end_chat(self, chat_id: str) -> None:
        """Ended: no more answers. KeyError if unknown; a second end changes nothing."""
        with self.lock:
            chat = self.chats[chat_id]
            if chat["chat_status"] == "ongoing":
                chat.update(chat_status="ended", end_timestamp=_now_ms())

    def turn(self, chat_id: str, user: dict, config: dict) -> list[dict] | None:
        """Answer one user item: the turn's items, kept in history; None if the chat ended."""
        content = user["content"]
        text = config["text"] or (MARKUP if config["reply"] == "markup" else ECHO_PREFIX + content)
        items = [user]
        if config["reply"] == "tools":
            call_id = "tool_call_" + secrets.token_hex(6)
            arguments = json.dumps({"query": content}, ensure_ascii=False)
            items += [
                _item("node_transition", former_node_id="start", former_node_name="Start",
                      new_node_id="lookup", new_node_name="Look up", transition_type="normal"),
                _item("tool_call_invocation", tool_call_id=call_id, name="lookup",
                      arguments=arguments),
                _item("tool_call_result", tool_call_id=call_id, successful=True,
                      content=json.dumps({"found": True, "echo": content}, ensure_ascii=False)),
                _item("agent", content=text),
                _item("node_transition", former_node_id="lookup", former_node_name="Look up",
                      new_node_id="start", new_node_name="Start", transition_type="normal"),
            ]  # fmt: skip
        else:
            items.append(_item("agent", content=text))
        with self.lock:
            chat = self.chats.get(chat_id)
            if chat is None or chat["chat_status"] != "ongoing":
                return None
            self._append(chat, items)
        return copy.deepcopy(items if config["include_user_message"] else items[1:])

    @staticmethod
    def _append(chat: dict, items: list[dict]) -> None:
        chat["message_with_tool_calls"].extend(items)
        for item in items:
            if item["role"] in ("agent", "user"):
                chat["transcript"] += f"{item['role'].capitalize()}: {item['content']}\n"


# -- HTTP ---------------------------------------------------------------------------------
def route(handler, method: str, body) -> bool:
    """Answer handler's request if it is a chat endpoint or hook; False if it is neither."""
    fake = handler.server.fake
    path = handler.path.split("?", 1)[0]
    if path.startswith("/_fake/chat/"):
        _hook(handler, fake.chat, method, path, body)
        return True
    match = _ID_PATH.match(path)
    endpoint = match[1] if match else path.lstrip("/")
    allowed = {"create-chat": "POST", "create-chat-completion": "POST", "end-chat": "PATCH",
               "get-chat": "GET"}  # fmt: skip
    if allowed.get(endpoint) != method:
        return False
    request = {"method": method, "path": handler.path, "headers": dict(handler.headers),
               "body": body, "at": time.time()}  # fmt: skip
    with fake.lock:
        fake.requests.append(request)
    entry = {"at": request["at"], "method": method, "path": handler.path, "endpoint": endpoint,
             "agent_id": None, "chat_id": match["chat_id"] if match else None}  # fmt: skip
    status = _serve(handler, fake, endpoint, body, entry)
    with fake.chat.lock:
        fake.chat.log.append({**entry, "status": status})
    return True


def _serve(handler, fake, endpoint: str, body, entry: dict) -> int | None:
    chat: ChatFake = fake.chat
    if handler.headers.get("Authorization") != f"Bearer {fake.api_key}":
        return _error(handler, 401)
    if endpoint in ("end-chat", "get-chat"):
        try:
            if endpoint == "end-chat":
                chat.end_chat(entry["chat_id"])
            found = chat.get_chat(entry["chat_id"])
        except KeyError:
            return _send(handler, 404, _NOT_FOUND)
        entry["agent_id"] = found["agent_id"]
        if endpoint == "end-chat":
            return _send(handler, 204, b"")
        return _send(handler, 200, found)
    if endpoint == "create-chat":
        if not _valid_create(body):
            return _error(handler, 400)
        entry["agent_id"] = body["agent_id"]
        config = chat.agent(body["agent_id"])
        failure = _failure(handler, chat, config, "create")
        if failure is not False:
            return failure
        return _answer(handler, config, "create", chat.create(body, config))
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) and body[k] for k in ("chat_id", "content")
    ):
        return _error(handler, 400)
    entry.update(chat_id=body["chat_id"], content=body["content"])
    user = _item("user", content=body["content"])  # stamped when it arrived
    with chat.lock:
        found = chat.chats.get(body["chat_id"])
        agent_id, ongoing = (
            (found["agent_id"], found["chat_status"] == "ongoing") if found else (None, False)
        )
    if found is None:
        return _send(handler, 404, _NOT_FOUND)
    entry["agent_id"] = agent_id
    config = chat.agent(agent_id)
    if not ongoing:
        return _ended(handler, config)
    if config["delay"]:
        chat.release.wait(config["delay"])
    failure = _failure(handler, chat, config, "completion")
    if failure is not False:
        return failure
    messages = chat.turn(body["chat_id"], user, config)
    if messages is None:  # ended (or forgotten by reset) while the agent was thinking
        return _ended(handler, config)
    return _answer(handler, config, "completion", {"messages": messages})


def _valid_create(body) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("agent_id"), str):
        return False
    version = body.get("agent_version", 1)
    variables = body.get("retell_llm_dynamic_variables", {})
    return (
        isinstance(version, int)
        and not isinstance(version, bool)
        and isinstance(body.get("metadata", {}), dict)
        and isinstance(variables, dict)
        and all(isinstance(v, str) for v in variables.values())
    )


def _applies(config: dict, stage: str) -> bool:
    return config["fail"] is not None and config["on"] in (stage, "both")


def _failure(handler, chat: ChatFake, config: dict, stage: str):
    """Answer the config's failure before any work; False if there is none here."""
    if not _applies(config, stage) or config["fail"] in ("garbage", "huge"):
        return False
    if config["fail"] == "hang":
        chat.release.wait(60)
        return _error(handler, 500, config["error_key"])
    if config["fail"] == "close":
        handler.close_connection = True
        handler.wfile.flush()
        handler.connection.shutdown(2)
        return None
    status = config["status"]
    headers = {"Retry-After": config["retry_after"]} if config["retry_after"] else None
    message = "Agent not found" if (status, stage) == (404, "create") else None
    return _error(handler, status, config["error_key"], headers, message)


def _answer(handler, config: dict, stage: str, payload: dict) -> int:
    """201 payload, or its garbage/huge form when the config fails so at this stage."""
    if _applies(config, stage) and config["fail"] == "garbage":
        return _send(handler, 201, b"<html>not json", "text/html")
    if _applies(config, stage) and config["fail"] == "huge":
        payload = {**payload, "padding": "x" * HUGE_BYTES}
    return _send(handler, 201, payload)


def _ended(handler, config: dict) -> int:
    return _error(handler, ENDED_STATUS, config["error_key"], message=ENDED_MESSAGE)


def _error(handler, status: int, key="message", headers=None, message=None) -> int:
    body = {"status": "error", key: message or MESSAGES.get(status, "Error")}
    return _send(handler, status, body, headers=headers)


def _send(handler, status: int, body, content_type="application/json", headers=None) -> int:
    if not isinstance(body, bytes):
        body = json.dumps(body, ensure_ascii=False).encode()
    handler.send_response(status)
    if status != 204:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
    return status


def _hook(handler, chat: ChatFake, method: str, path: str, body) -> None:
    """/_fake/chat/...: loopback test hooks, no auth, not logged."""
    match = _HOOK_AGENT.match(path)
    if method == "POST" and match:
        try:
            config = chat.set_agent(match["agent_id"], **(body if body is not None else {}))
        except (TypeError, ValueError) as exc:
            return _send(handler, 400, {"status": "error", "message": str(exc)})
        return _send(handler, 200, {"agent_id": match["agent_id"], **config})
    if method == "GET" and match:
        return _send(handler, 200, {"agent_id": match["agent_id"], **chat.agent(match["agent_id"])})
    if method == "GET" and path == "/_fake/chat/log":
        with chat.lock:
            answer = {"log": copy.deepcopy(chat.log), "chats": copy.deepcopy(chat.chats)}
        return _send(handler, 200, answer)
    if method == "POST" and path == "/_fake/chat/reset":
        chat.reset()
        return _send(handler, 204, b"")
    return _send(handler, 404, _NOT_FOUND)
