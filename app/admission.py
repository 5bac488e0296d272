"""Who may start a call, decided in one Redis round trip (see admission.lua).

The script checks the origin against its candidate allowlist entries, the agent against
that entry's grants, and every rate limit at once (all or nothing, so a refused request
spends no budget), and writes the usage entry itself when it says no.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import redis

from app.origins import InvalidOrigin, candidate_entries, canonical_entry

log = logging.getLogger(__name__)
SCRIPT = (Path(__file__).with_name("admission.lua")).read_text()


@dataclasses.dataclass(frozen=True)
class Decision:
    # ok | allowed | origin_denied | invalid | agent_denied | agent_required | rate_limited
    outcome: str
    entry: str = ""
    agent_id: str = ""
    limit: int = 0
    remaining: int = 0
    reset: int = 0
    retry_after: int = 0


class Admission:
    def __init__(self, client: redis.Redis, settings):
        self.prefix = settings.redis_key_prefix
        self.settings = settings
        self.script = client.register_script(SCRIPT)
        self.ip_limits = ",".join(f"{n}:{w}" for n, w in settings.rate_limit_per_ip)

    def check(
        self,
        *,
        mode: str,
        origin: str | None,
        implicit: bool = False,
        agent_id: str = "",
        body_status: int = 0,
        body_code: str = "",
        ip_bucket: str = "",
        usage_fields: dict | None = None,
    ) -> Decision:
        """Raises redis.RedisError when Redis cannot answer (the caller fails closed)."""
        candidates = candidate_entries(origin) if origin else []
        fields = [str(v) for pair in (usage_fields or {}).items() for v in pair]
        args = [
            self.prefix,
            mode,
            "1" if implicit and origin else "0",
            len(candidates),
            *candidates,
            agent_id,
            body_status or "",
            body_code,
            ip_bucket,
            self.ip_limits,
            self.settings.rate_limit_per_origin_day,
            self.settings.rate_limit_per_agent_day,
            self.settings.usage_stream_maxlen,
            *fields,
        ]
        reply = self.script(keys=[], args=args)
        *values, problems = reply
        if problems:
            # A wrong-type key or a failed usage write: the request still failed closed.
            log.warning("redis problems during admission: %s", problems)
        outcome, entry, *rest = values
        if outcome in ("ok", "rate_limited"):
            agent, limit, remaining, reset, retry_after = rest
            return Decision(
                outcome, entry, agent, int(limit), int(remaining), int(reset), int(retry_after)
            )
        return Decision(outcome, entry, rest[0] if rest else "")


def allowlist_problems(client: redis.Redis, key) -> list[str]:
    """What is wrong with the stored allowlist, one line each (two round trips in all)."""
    origins_key = key("origins")
    key_type = client.type(origins_key)
    if key_type not in ("set", "none"):
        return [f"{origins_key} is a {key_type}, not a set: every origin is refused"]
    problems, entries = [], []
    for entry in sorted(client.smembers(origins_key)):
        try:
            canonical = canonical_entry(entry)
        except InvalidOrigin as exc:
            problems.append(f"invalid entry {entry!r} is ignored: {exc}")
            continue
        if canonical != entry:
            problems.append(f"entry {entry!r} matches nothing: store it as {canonical!r}")
        else:
            entries.append(entry)
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.type(key("agents", entry))
        pipe.scard(key("agents", entry))
    replies = pipe.execute(raise_on_error=False)
    for entry, agents_type, size in zip(entries, replies[::2], replies[1::2], strict=True):
        if agents_type not in ("set", "none"):
            problems.append(f"{key('agents', entry)} is a {agents_type}, not a set: no agent")
        elif not isinstance(size, int) or size == 0:
            problems.append(f"origin {entry} has no agents: it can start no call")
    return problems


def log_allowlist_problems(client: redis.Redis, key) -> None:
    """At start-up: invalid entries never widen access, but operators should hear of them."""
    try:
        for line in allowlist_problems(client, key):
            log.warning("allowlist: %s", line)
    except redis.RedisError as exc:
        log.warning("allowlist not checked at start-up: %s", type(exc).__name__)
