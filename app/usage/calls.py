"""The call ledger: what a minted call holds and how it is settled (calls.lua).

Admission reserves minutes and live slots; `created` writes the call record that
attributes every later webhook (never anything the browser sent); `released` gives a
reservation back when Retell did not mint the call; `event` applies a verified webhook.
"""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from app.policy.admission import JOIN_WINDOW_MS, Decision
from app.usage import scripts
from app.usage.entry import UsageEntry
from app.usage.ledger import Ledger
from app.usage.stream import write_failures

log = logging.getLogger(__name__)
SCRIPT = scripts.load(Path(__file__).with_name("calls.lua"))
RECORD_TTL_MS = 7 * 86_400_000  # a call record (and its webhook dedupe keys) lives a week
# The call-events stream: one entry per accepted webhook event, in this order.
EVENT_FIELDS = (
    "ts", "event", "call_id", "entry", "origin", "agent_id", "duration_ms",
    "disconnection_reason", "cost_cents", "request_id",
)  # fmt: skip


class CallLedger(Ledger):
    name = "call ledger"

    def __init__(self, client: redis.Redis, settings):
        fixed = {"record_ttl_ms": RECORD_TTL_MS, "join_window_ms": JOIN_WINDOW_MS}
        super().__init__(client, settings, SCRIPT, fixed)

    def _run(self, payload: dict) -> str:
        return self._reply(payload)["outcome"]

    def _write(self, payload: dict, entry: UsageEntry) -> None:
        """One round trip that also writes the usage entry; a failure is logged, not raised,
        and what it asked is spooled for replay (app/usage/spool.py)."""
        payload = {**payload, "usage": entry.fields()}
        try:
            self._run(payload)
        except redis.RedisError as exc:
            write_failures.add()
            log.error("call ledger not written (%s): %s", type(exc).__name__, entry.outcome)
            self.spool.keep("calls", payload, exc)

    def replay(self, payload: dict, marker: str) -> str:
        """A spooled `created` or `released`, applied once per marker (else "duplicate").
        Raises redis.RedisError."""
        return self._run({**payload, "replay": marker})

    def created(self, decision: Decision, call_id: str, origin: str, entry: UsageEntry) -> None:
        self._write(
            {
                "op": "created",
                "call_id": call_id,
                "entry": decision.entry,
                "origin": origin,
                "agent_id": decision.agent_id,
                "minted_ms": decision.minted_ms,
                "reserved_ms": decision.reserved_ms,
                "counters": list(decision.counters),
                "live": list(decision.live),
                "pending": decision.pending,
            },
            entry,
        )

    def released(self, decision: Decision, entry: UsageEntry) -> None:
        self._write(
            {
                "op": "released",
                "reserved_ms": decision.reserved_ms,
                "counters": list(decision.counters),
                "live": list(decision.live),
                "pending": decision.pending,
            },
            entry,
        )

    def event(self, call_id: str, event: str, values: dict[str, str]) -> str:
        """accepted | duplicate | unknown. Raises redis.RedisError (the caller answers 503)."""
        payload = {
            "op": "event",
            "call_id": call_id,
            "event": event,
            "order": EVENT_FIELDS,
            "values": {k: "" if v is None else str(v) for k, v in values.items()},
        }
        return self._run(payload)
