"""What the widget is told: items {id, role, content, final}, each change once.

An item is final once a later one exists or the call has ended; Retell may still replace
it by id after that (it is then sent again, final still true, and replaces it again).
"""

from __future__ import annotations

import json

from app.retell.monitor import Item


def public(state: dict) -> dict:
    return {k: state[k] for k in ("id", "role", "content", "final")}


def merge(known: dict[str, dict], items: list[Item]) -> list[dict]:
    """Applies Retell's items to `known` (id -> state); returns the changed states in time
    order. Unchanged repeats (a snapshot after a reconnect) change nothing."""
    changed: dict[str, dict] = {}
    for item in items:
        old = known.get(item.id)
        if old and (old["role"], old["content"], old["t"]) == (
            item.role,
            item.content,
            item.time_sec,
        ):
            continue
        known[item.id] = changed[item.id] = {
            "id": item.id,
            "role": item.role,
            "content": item.content,
            "final": bool(old and old["final"]),
            "t": item.time_sec,
        }
    if known:
        ordered = sorted(known.values(), key=lambda s: s["t"])
        for state in ordered[:-1]:  # a later item exists
            if not state["final"]:
                state["final"] = True
                changed[state["id"]] = state
    return sorted(changed.values(), key=lambda s: s["t"])


def finish(known: dict[str, dict]) -> list[dict]:
    """The call ended: every item is final."""
    changed = []
    for state in sorted(known.values(), key=lambda s: s["t"]):
        if not state["final"]:
            state["final"] = True
            changed.append(state)
    return changed


def encode(state: dict) -> str:
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False)


def decode(text: str) -> dict | None:
    try:
        state = json.loads(text)
    except ValueError:
        return None
    return state if isinstance(state, dict) and {"id", "t"} <= state.keys() else None
