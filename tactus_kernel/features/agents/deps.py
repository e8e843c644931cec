"""What a turn hands pydantic-ai as its deps (:class:`TurnDeps`).

A module of its own because the agent's declaration (spec.py: the Agent's
``deps_type``), the Lua tools (lua_tools.py: how a tool call finds its way
back to Lua) and the turn (turns.py: one per live turn) all name it, and
spec.py lies below the other two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class TurnDeps:
    """pydantic-ai deps of a turn: how a tool call finds its way back to Lua."""

    agent: str
    lua_ctx: Any
    calls: list[dict[str, Any]] = field(default_factory=list)
