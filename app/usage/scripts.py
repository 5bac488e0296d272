"""Our Lua scripts as Redis runs them: common.lua (the request, problems, the stream
writers, the reply) in front of each, since a script cannot load another."""

from __future__ import annotations

from pathlib import Path

COMMON = Path(__file__).with_name("common.lua").read_text()


def load(path: Path) -> str:
    """The text of the script at `path`, common.lua first."""
    return COMMON + path.read_text()
