"""What is wrong with the stored allowlist: reported at start-up and by `origins check`.

Invalid entries never widen access (matching is by exact membership), but operators
should hear of them.
"""

from __future__ import annotations

import logging

import redis

from app.policy.origins import InvalidOrigin, canonical_entry

log = logging.getLogger(__name__)


def allowlist_problems(
    client: redis.Redis, key, verify: tuple[str, dict] = ("none", {})
) -> list[str]:
    """What is wrong with the stored allowlist, one line each (two round trips in all).

    verify: (VERIFY_DEFAULT, which providers have their keys), from the Verifier.
    """
    default, ready = verify
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
        pipe.hget(key("limits", entry), "verify")
        pipe.type(key("chat-agents", entry))
        pipe.scard(key("chat-agents", entry))
    replies = pipe.execute(raise_on_error=False)
    for i, entry in enumerate(entries):
        agents_type, size, policy, chat_type, chat_size = replies[i * 5 : i * 5 + 5]
        if agents_type not in ("set", "none"):
            problems.append(f"{key('agents', entry)} is a {agents_type}, not a set: no agent")
        if chat_type not in ("set", "none"):
            problems.append(f"{key('chat-agents', entry)} is a {chat_type}, not a set: no agent")
        voice = isinstance(size, int) and size > 0
        chat = isinstance(chat_size, int) and chat_size > 0
        if agents_type in ("set", "none") and not voice and not chat:
            problems.append(f"origin {entry} has no agents: it can start no call or chat")
        policy = policy if isinstance(policy, str) and policy else default
        if not ready.get(policy, policy == "none"):
            problems.append(
                f"origin {entry} asks for verify={policy}, which is not configured: "
                "it refuses every call (503 verification_unavailable)"
            )
    return problems


def log_allowlist_problems(client: redis.Redis, key, verify=("none", {})) -> None:
    """At start-up; a Redis that does not answer yet is not fatal."""
    try:
        for line in allowlist_problems(client, key, verify):
            log.warning("allowlist: %s", line)
    except redis.RedisError as exc:
        log.warning("allowlist not checked at start-up: %s", type(exc).__name__)
