"""The chat ledger: what a chat holds and how it ends (chats.lua), one round trip each.

Admission (admission.lua, kind "chat") decides whether a chat may start. `created` writes
the chat's record and its usage entry; `message` decides, and counts, each visitor
message; `ended` closes a chat once, with its end entry. A chat nobody ends (the tab was
closed) is closed by `sweep` once its token has expired: a few at a time inside every
chat start's record trip, and all of them from `flask --app wsgi chats sweep`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from app.usage import scripts
from app.usage.entry import UsageEntry
from app.usage.ledger import Ledger
from app.usage.stream import write_failures

log = logging.getLogger(__name__)
SCRIPT = scripts.load(Path(__file__).with_name("chats.lua"))
RECORD_TTL_MS = 7 * 86_400_000  # a chat record outlives its token by a week, for the sweep
SWEEP_BATCH = 20  # expired chats closed per chat start: bounded work on the request path
SWEEP_GRACE_MS = 60_000  # gateway hosts' clocks may differ from Redis's by this much


class ChatLedger(Ledger):
    name = "chat ledger"

    def __init__(self, client: redis.Redis, settings):
        fixed = {
            "record_ttl_ms": RECORD_TTL_MS,
            "sweep_batch": SWEEP_BATCH,
            "sweep_grace_ms": SWEEP_GRACE_MS,
            "per_minute": settings.chat_messages_per_minute,
            "max_messages": settings.chat_max_messages,
        }
        super().__init__(client, settings, SCRIPT, fixed)

    def _run(self, payload: dict) -> dict:
        """Raises redis.RedisError when Redis cannot answer."""
        reply = self._reply(payload)
        reply["swept"] = list(reply.get("swept") or [])  # cjson writes an empty list as {}
        return reply

    def created(
        self, chat_id: str, entry: str, agent_id: str, origin: str, expires_ms: int,
        usage: UsageEntry,
    ) -> list[str]:  # fmt: skip
        """The chat ids swept on the way. Raises redis.RedisError: a chat without its record
        could never be used, so the route gives up on it."""
        payload = {
            "op": "created",
            "chat_id": chat_id,
            "entry": entry,
            "agent_id": agent_id,
            "origin": origin,
            "expires_ms": expires_ms,
            "usage": usage.fields(),
            "request_id": usage.request_id,
        }
        return self._run(payload)["swept"]

    def failed(self, usage: UsageEntry) -> None:
        """A chat that did not start: its usage entry (and a sweep). Never raises; what
        Redis did not take is spooled for replay (app/usage/spool.py)."""
        payload = {"op": "failed", "usage": usage.fields(), "request_id": usage.request_id}
        try:
            self._run(payload)
        except redis.RedisError as exc:
            write_failures.add()
            log.error("chat usage entry not written (%s): %s", type(exc).__name__, usage.outcome)
            self.spool.keep("chats", payload, exc)

    def abandoned(self, usage: UsageEntry, exc: Exception) -> None:
        """A chat Retell made whose record Redis did not take (the route gives it up): its
        usage entry, spooled as a failed start."""
        payload = {"op": "failed", "usage": usage.fields(), "request_id": usage.request_id}
        self.spool.keep("chats", payload, exc)

    def replay(self, payload: dict, marker: str) -> str:
        """A spooled `failed`, applied once per marker (else "duplicate"). Raises
        redis.RedisError."""
        return self._run({**payload, "replay": marker})["outcome"]

    def message(self, chat_id: str, entry: str, agent_id: str, implicit: bool) -> dict:
        """{outcome: admitted | origin_denied | agent_denied | chat_ended | message_limit |
        rate_limited, listed, ...}; counts the message when admitted. Raises RedisError."""
        return self._run(_about(chat_id, entry, agent_id, implicit, op="message"))

    def status(self, chat_id: str, entry: str, agent_id: str, implicit: bool) -> dict:
        """{outcome: admitted | origin_denied | agent_denied, listed, ended}: the entry and
        agent checks, counting nothing. Raises RedisError."""
        return self._run(_about(chat_id, entry, agent_id, implicit, op="status"))

    def ended(
        self, chat_id: str, entry: str, agent_id: str, implicit: bool, usage: UsageEntry
    ) -> dict:
        """{outcome: ended | already | unknown, listed, messages}. Raises RedisError."""
        payload = _about(chat_id, entry, agent_id, implicit, op="ended")
        return self._run({**payload, "usage": usage.fields()})

    def sweep(self, request_id: str, batch: int = SWEEP_BATCH) -> tuple[list[str], bool]:
        """Closes up to `batch` chats whose token expired: (their ids, whether more may be
        due). Raises RedisError."""
        reply = self._run({"op": "sweep", "request_id": request_id, "batch": batch})
        return reply["swept"], reply.get("looked", 0) >= batch


def _about(chat_id: str, entry: str, agent_id: str, implicit: bool, op: str) -> dict:
    return {"op": op, "chat_id": chat_id, "entry": entry, "agent_id": agent_id,
            "implicit": bool(implicit)}  # fmt: skip
