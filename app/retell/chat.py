"""The chat client: create-chat, create-chat-completion, end-chat, get-chat (no version prefix).

Only agent (and, in a history, user) messages with text ever leave this module: tool calls,
tool results and node transitions stay here. A completion is never retried (the visitor's
message would be sent twice) and waits CHAT_READ_TIMEOUT, since the agent's tools may run.
"""

from __future__ import annotations

import logging

from app.retell.upstream import UNUSABLE, UPSTREAM_ID, RetellHttp, UpstreamFailure

log = logging.getLogger(__name__)

CHAT_ID = UPSTREAM_ID  # fullmatch
MAX_TURN_BYTES = 256 * 1024  # one turn: its messages, tool traffic included
MAX_HISTORY_BYTES = 2 * 1024 * 1024  # a whole chat, every tool call and result included
ENDED_STATUSES = ("ended", "error")


class ChatClient(RetellHttp):
    extension = "retell_chat"

    def create_chat(
        self, agent_id: str, metadata: dict, dynamic_variables: dict
    ) -> tuple[str, list[dict], int]:
        """(chat id, the agent's opening messages, upstream ms); raises UpstreamFailure.

        Whether a chat opens with an agent message is not documented, so the new chat's
        history is read once; if that read fails the chat still stands, without them."""
        body: dict = {"agent_id": agent_id, "metadata": metadata}
        if dynamic_variables:
            body["retell_llm_dynamic_variables"] = dynamic_variables
        data, latency_ms = self._call("POST", "/create-chat", body)
        chat_id = data.get("chat_id") if isinstance(data, dict) else None
        if not isinstance(chat_id, str) or not CHAT_ID.fullmatch(chat_id):
            log.warning("upstream create-chat answered with an unusable body")
            raise UpstreamFailure(UNUSABLE, latency_ms)
        try:
            history, read_ms = self._history(chat_id)
        except UpstreamFailure as exc:
            log.warning("opening messages of a new chat not read: %s", exc.kind)
            return chat_id, [], latency_ms + exc.latency_ms
        opening = agent_messages(history.get("message_with_tool_calls"), ("agent",))
        return chat_id, opening, latency_ms + read_ms

    def create_chat_completion(self, chat_id: str, content: str) -> tuple[list[dict], int]:
        """(this turn's agent messages, upstream ms); raises UpstreamFailure. Never retried."""
        data, latency_ms = self._call(
            "POST",
            "/create-chat-completion",
            {"chat_id": chat_id, "content": content},
            read_timeout=self.settings.chat_read_timeout,
            max_bytes=MAX_TURN_BYTES,
        )
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            log.warning("upstream create-chat-completion answered with an unusable body")
            raise UpstreamFailure(UNUSABLE, latency_ms)
        return agent_messages(messages, ("agent",)), latency_ms

    def end_chat(self, chat_id: str) -> int:
        """Upstream ms; raises UpstreamFailure (callers treat it as best effort)."""
        _, latency_ms = self._call("PATCH", f"/end-chat/{_checked(chat_id)}")
        return latency_ms

    def get_chat(self, chat_id: str) -> dict:
        """{"ended": bool, "messages": [{role: agent|user, content}]}; raises UpstreamFailure."""
        data, _ = self._history(chat_id)
        status = data.get("chat_status")
        return {
            "ended": status in ENDED_STATUSES,
            "messages": agent_messages(data.get("message_with_tool_calls"), ("agent", "user")),
        }

    def _history(self, chat_id: str) -> tuple[dict, int]:
        data, latency_ms = self._call(
            "GET", f"/get-chat/{_checked(chat_id)}", max_bytes=MAX_HISTORY_BYTES
        )
        if not isinstance(data, dict):
            log.warning("upstream get-chat answered with an unusable body")
            raise UpstreamFailure(UNUSABLE, latency_ms)
        return data, latency_ms


def agent_messages(items, roles: tuple[str, ...]) -> list[dict]:
    """The text messages of those roles, as {role, content}; everything else is dropped."""
    kept = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("role") not in roles:
            continue
        content = item.get("content")
        if isinstance(content, str) and content:
            kept.append({"role": item["role"], "content": content})
    return kept


def _checked(chat_id: str) -> str:
    """Only ids of our own shape go into a URL path."""
    if not CHAT_ID.fullmatch(chat_id):
        raise UpstreamFailure(UNUSABLE, 0)
    return chat_id
